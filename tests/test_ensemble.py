"""The stacked ensemble (engines/ensemble.py): cells and their backoff, the stacking file's integrity,
what the data plane answers with it, and the prior-horizon warning only for x the caller asked."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo, XKind
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.ensemble import (DEFAULT_STACKING, GLOBAL, WILD, Cell, CellKey, StackingModel, combine,
                                        disagreement, load_stacking, widen)
from curvecast.engines.registry import EngineRegistry


def _query(n: int = 20, budget: float = 100.0, goal: Goal = Goal.MINIMIZE, x_kind: XKind = XKind.STEP,
           x_query: np.ndarray | None = None) -> ForecastQuery:
    x = np.linspace(1.0, budget * n / 100.0, n)
    y = 2.0 + 3.0 / np.sqrt(x) if goal is Goal.MINIMIZE else 0.9 - 0.5 / np.sqrt(x)
    xq = np.array([50.0, 100.0]) if x_query is None else x_query
    return ForecastQuery(Curve(x, y, goal, x_kind), RunInfo(total_steps=budget), xq)


def _gauss(x: np.ndarray, mu: float, sd: float) -> Marginals:
    return Marginals.from_gaussian(x, np.full(len(x), mu), np.full(len(x), sd))


def _model(cells: dict[str, Cell], edge: float = 1.0) -> StackingModel:
    return StackingModel(("analytic", "learned"), (0.15, 0.3, 0.6), edge, cells)


def _cell(w: float, spread: float = 1.0) -> Cell:
    return Cell((("analytic", 1.0 - w), ("learned", w)), spread)


def test_features_pick_the_cutoff_kind_points_and_agreement():
    m = _model({GLOBAL.text(): _cell(0.5)})
    x = np.array([50.0, 100.0])
    agree = {"analytic": _gauss(x, 2.0, 0.1), "learned": _gauss(x, 2.01, 0.1)}
    far = {"analytic": _gauss(x, 2.0, 0.1), "learned": _gauss(x, 3.0, 0.1)}
    k = m.key(_query(n=20), agree, 1)
    assert (k.cutoff, k.kind, k.x_kind, k.points, k.agreement) == ("1", "loss", "steps", "many", "agree")
    k = m.key(_query(n=5, goal=Goal.MAXIMIZE, x_kind=XKind.EPOCH), far, 1)
    assert (k.cutoff, k.kind, k.x_kind, k.points, k.agreement) == ("0", "accuracy", "epochs", "few", "disagree")
    assert m.key(_query(n=90), agree, 1).cutoff == "3"
    # disagreement: gap between medians over the mean 90% half-width
    assert disagreement([far["analytic"].at(1), far["learned"].at(1)]) == pytest.approx(1.0 / (1.6449 * 0.1), rel=1e-3)


def test_cells_back_off_to_coarser_ones_and_finally_the_global_cell():
    fine = CellKey("1", "loss", "steps", "many", "agree")
    m = _model({GLOBAL.text(): _cell(0.1), CellKey("1", WILD, WILD, WILD, WILD).text(): _cell(0.4),
                fine.text(): _cell(0.9)})
    assert m.cell(fine)[0].weights == _cell(0.9).weights
    assert m.cell(CellKey("1", "loss", "steps", "many", "disagree"))[1] == "1|*|*|*|*"
    assert m.cell(CellKey("2", "accuracy", "epochs", "few", "agree"))[1] == GLOBAL.text()


def test_combine_uses_the_cell_weights_and_spread():
    x = np.array([50.0, 100.0])
    a = EngineForecast(_gauss(x, 2.0, 0.1), "analytic")
    lrn = EngineForecast(_gauss(x, 2.05, 0.1), "learned")
    q = _query()
    only_analytic = combine(q, [(a, 0.75), (lrn, 0.25)], 1, _model({GLOBAL.text(): _cell(0.0)}))
    np.testing.assert_allclose(only_analytic.marginals.values, a.marginals.values)
    assert dict(only_analytic.weights) == {"analytic": 1.0, "learned": 0.0} and only_analytic.cell == GLOBAL.text()
    wide = combine(q, [(a, 0.75), (lrn, 0.25)], 1, _model({GLOBAL.text(): _cell(0.0, spread=1.3)}))
    band = lambda m: m.quantile(0.95) - m.quantile(0.05)  # noqa: E731
    np.testing.assert_allclose(band(wide.marginals), 1.3 * band(a.marginals), rtol=1e-9)
    np.testing.assert_allclose(wide.marginals.quantile(0.5), a.marginals.quantile(0.5))
    half = combine(q, [(a, 0.75), (lrn, 0.25)], 1, _model({GLOBAL.text(): _cell(0.5)}))
    med = half.marginals.quantile(0.5)
    assert np.all((med > 2.0) & (med < 2.05))  # between the two engines
    # no model, or one for other engines: the caller's fixed weights
    fixed = combine(q, [(a, 0.75), (lrn, 0.25)], 1, None)
    assert dict(fixed.weights) == {"analytic": 0.75, "learned": 0.25} and fixed.cell == ""
    other = StackingModel(("analytic", "other"), (0.5,), 1.0, {GLOBAL.text(): _cell(1.0)})
    assert combine(q, [(a, 0.75), (lrn, 0.25)], 1, other).cell == ""


def test_widen_keeps_the_median_and_scales_the_band():
    m = _gauss(np.array([1.0]), 5.0, 2.0)
    w = widen(m, 0.5)
    assert w.quantile(0.5)[0] == pytest.approx(5.0)
    assert w.quantile(0.95)[0] - w.quantile(0.05)[0] == pytest.approx(0.5 * (m.quantile(0.95)[0] - m.quantile(0.05)[0]))
    assert widen(m, 1.0) is m


def test_stacking_file_round_trips_and_a_tampered_one_is_refused(tmp_path):
    m = _model({GLOBAL.text(): _cell(0.3, 1.15), "0|*|*|*|*": _cell(0.05)}, edge=0.25)
    text = m.to_json()
    back = StackingModel.from_json(text)
    assert back.cells == m.cells and back.disagreement_edge == 0.25 and len(back.sha256) == 64
    tampered = json.loads(text)
    tampered["cells"][GLOBAL.text()]["weights"]["learned"] = 0.9
    with pytest.raises(ValueError, match="sha256"):
        StackingModel.from_json(json.dumps(tampered))
    assert load_stacking(str(tmp_path / "absent.json")) is None
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    assert load_stacking(str(bad)) is None  # refused (logged): the fixed mixture answers
    good = tmp_path / "good.json"
    good.write_text(text)
    assert load_stacking(str(good)).cells == m.cells


def test_the_bundled_stacking_file_is_valid_and_fits_the_bundled_model():
    if not DEFAULT_STACKING.exists():
        pytest.skip("no stacking file bundled")
    model = load_stacking()
    card = json.loads((DEFAULT_STACKING.parent / "model-card.json").read_text())
    assert model is not None and model.learned_sha256 == card["sha256"]
    for cell in model.cells.values():
        assert sum(w for _, w in cell.weights) == pytest.approx(1.0) and cell.spread > 0
    assert "loso" in model.provenance and model.provenance["split"] == "tune"


# ---- through the data plane ------------------------------------------------------------------------
class FakeEngine:
    """A named engine answering N(mu, sd) everywhere; reports a prior horizon like the learned engine."""

    def __init__(self, name: str, mu: float, version: str = "fake", limit: float | None = None) -> None:
        self.name, self.mu, self.version, self.limit = name, mu, version, limit

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.version, "test")

    def forecast(self, queries):
        out = []
        for q in queries:
            x = np.asarray(q.x_query, np.float64)
            details = {} if self.limit is None else {"prior_limit_x": self.limit}
            out.append(EngineForecast(_gauss(x, self.mu, 0.05), self.name, (), details))
        return out


def _forecast(query: ForecastQuery, settings: DataPlaneSettings, learned_version: str = "curvecast-pfn@abc"):
    reg = EngineRegistry()
    reg.put(FakeEngine("analytic", 2.0))
    reg.put(FakeEngine("learned", 2.2, learned_version, limit=1.05 * query.run.total_steps))

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(2), replace(settings, retime_first_batch=False))
        try:
            return await dp.forecast(query)
        finally:
            await dp.close()

    return asyncio.run(go())


def test_dataplane_answers_the_ensemble_with_the_stacking_cell():
    stack = replace(_model({GLOBAL.text(): _cell(1.0)}), learned_sha256="abc")
    q = replace(_query(), engine="ensemble")
    res = _forecast(q, DataPlaneSettings(stacking=stack))
    assert {u.name: u.weight for u in res.engines} == {"analytic": 0.0, "learned": 1.0}
    np.testing.assert_allclose(res.predictions.quantile(0.5), 2.2, atol=1e-6)
    # a stacking model fitted for another learned model is not used: the fixed mixture answers
    res = _forecast(q, DataPlaneSettings(stacking=stack), learned_version="curvecast-pfn@zzz")
    assert {u.name: u.weight for u in res.engines} == {"learned": 0.25, "analytic": 0.75}


def test_prior_horizon_warning_only_for_asked_x_beyond_the_budget():
    inside = replace(_query(x_query=np.array([50.0, 100.0])), engine="learned")
    res = _forecast(inside, DataPlaneSettings(stacking=None))
    # the engine was asked the decision grid up to 4x the budget, but the caller was not
    assert not any("training prior" in w for w in res.warnings)
    beyond = replace(_query(x_query=np.array([50.0, 300.0])), engine="learned")
    res = _forecast(beyond, DataPlaneSettings(stacking=None))
    assert any("outside the learned engine's training prior" in w for w in res.warnings)


# ---- the fit (bench/stacking.py) ---------------------------------------------------------------------
def test_fit_picks_per_cell_weights_and_backs_off_where_a_cell_has_one_source():
    from bench import stacking as S

    rng = np.random.default_rng(0)
    n = 400
    sources = np.array(["a", "b"] * (n // 2))
    cutoff_bin = np.where(np.arange(n) % 4 < 2, "0", "3")
    kinds = np.where(sources == "a", "loss", "accuracy")  # one source per kind: those cells cannot be fitted
    keys = [CellKey(c, k, "steps", "many", "agree") for c, k in zip(cutoff_bin, kinds)]
    w = S.WEIGHTS[None, :, None]
    best = np.where(cutoff_bin == "0", 0.8, 0.1)[:, None, None]  # the truth: learned early, analytic late
    ll = -((w - best) ** 2) * 10 + rng.normal(0, 0.01, (n, 1, 1)) + np.zeros((n, len(S.WEIGHTS), len(S.SPREADS)))
    ll[:, :, 1:] -= 1.0  # widening only costs here
    err = 0.01 + 0.0 * ll
    tab = S.TaskTable(sources, np.where(cutoff_bin == "0", 0.1, 0.8), keys, np.zeros(n), ll, err, np.ones_like(ll), np.ones(n))
    cells = S.fit_cells(tab, np.arange(n), keys, min_tasks=50, err_weight=1.0)
    assert dict(cells["0|*|*|*|*"].weights)["learned"] == pytest.approx(0.8)
    assert dict(cells["3|*|*|*|*"].weights)["learned"] == pytest.approx(0.1)
    assert all(c.spread == 1.0 for c in cells.values())
    assert "0|loss|*|many|*" not in cells and GLOBAL.text() in cells  # one source only: backed off
