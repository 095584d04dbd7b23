"""The learned engine: ONNX parity with torch, artifact integrity, sane and batch-invariant forecasts."""

from __future__ import annotations

import json
from dataclasses import replace
import shutil
from pathlib import Path

import numpy as np
import pytest

from curvecast.domain.curve import Curve, ForecastQuery, Goal, LrSchedule, RunInfo, ScheduleShape
from curvecast.engines.base import EngineForecast
from curvecast.engines.learned import LearnedEngine, ModelLoadError
from curvecast.engines.learned.engine import (ANCHOR_CANDIDATES, ANCHORS, bar_log_density, bar_mean, bar_quantiles, choose_anchors, group_cost,
                                              plan_groups, prepare)

MODELS = Path(__file__).resolve().parents[1] / "service" / "curvecast" / "models"
CARD = MODELS / "model-card.json"


def _model_path() -> Path:
    if not CARD.exists():
        pytest.skip("no exported model in service/curvecast/models")
    return MODELS / json.loads(CARD.read_text())["file"]


@pytest.fixture(scope="module")
def engine() -> LearnedEngine:
    return LearnedEngine.load(_model_path(), providers=["CPUExecutionProvider"], threads=1)


def loss_query(n: int = 30, budget: float = 100.0, schedule: LrSchedule | None = None, seed: int = 0) -> ForecastQuery:
    x = np.linspace(1.0, budget * n / 100.0, n)
    y = 2.0 + 3.0 * (x / budget * 100.0) ** -0.5 + np.random.default_rng(seed).normal(0, 0.01, n)
    return ForecastQuery(Curve(x, y, Goal.MINIMIZE, lower_bound=0.0),
                         RunInfo(total_steps=budget, schedule=schedule), np.array([0.4, 0.7, 1.0]) * budget)


def acc_query(n: int = 20) -> ForecastQuery:
    x = np.arange(1.0, n + 1)
    y = 0.9 - 0.6 * np.exp(-x / 10.0)
    return ForecastQuery(Curve(x, y, Goal.MAXIMIZE, lower_bound=0.0, upper_bound=1.0), RunInfo(total_steps=100.0),
                         np.array([30.0, 60.0, 100.0]))


# ---- torch vs onnxruntime ------------------------------------------------------------------------
def test_onnx_matches_torch_on_random_padded_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.export import export_onnx
    from training.model import CurvePFN, ModelConfig

    torch.manual_seed(0)
    model = CurvePFN(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, n_buckets=50, d_dec=64),
                     torch.linspace(-1.0, 2.0, 51)).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for b, n, m in [(1, 1, 1), (3, 17, 9), (5, 40, 120)]:  # shapes unlike the export example
        cx = rng.uniform(0, 1, (b, n, 5)).astype(np.float32)
        cy = rng.normal(0.5, 0.5, (b, n)).astype(np.float32)
        mask = (rng.uniform(size=(b, n)) < 0.7).astype(np.float32)
        mask[:, 0] = 1.0
        qx = rng.uniform(0, 1.2, (b, m, 5)).astype(np.float32)
        got, borders = sess.run(None, {"ctx_x": cx, "ctx_y": cy, "ctx_mask": mask, "qry_x": qx})
        with torch.no_grad():
            ref = model(*(torch.from_numpy(a) for a in (cx, cy, mask, qx)))[0].numpy()
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(borders, np.linspace(-1.0, 2.0, 51), atol=1e-6)


def test_numpy_bar_distribution_matches_torch():
    torch = pytest.importorskip("torch")
    from training.model import bar_log_density as torch_ld

    rng = np.random.default_rng(1)
    borders = np.sort(rng.uniform(-1, 2, 21))
    lp = np.log(rng.dirichlet(np.ones(20), size=7))
    z = rng.uniform(-2, 3, 7)
    ref = torch_ld(torch.tensor(lp), torch.tensor(borders), torch.tensor(z)).numpy()
    np.testing.assert_allclose(bar_log_density(lp, borders, z), ref, rtol=1e-10, atol=1e-10)


def test_bar_quantiles_are_consistent_with_the_bucket_masses():
    borders = np.linspace(0.0, 1.0, 11)
    probs = np.full((1, 10), 0.1)
    q = bar_quantiles(probs, borders, np.array([0.15, 0.5, 0.85]))
    np.testing.assert_allclose(q[0], [0.15, 0.5, 0.85], atol=1e-12)
    # tails: half-normal with its median at the outer border
    q = bar_quantiles(probs, borders, np.array([0.05, 0.95]))
    np.testing.assert_allclose(q[0], [0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(bar_mean(probs, borders), [0.5], atol=1e-12)


def test_bar_quantiles_tails_match_the_half_normal_where_mass_sits_in_the_outer_buckets():
    borders = np.linspace(0.0, 1.0, 11)
    probs = np.array([[0.5] + [0.0] * 8 + [0.5], [0.1] * 10])
    q = bar_quantiles(probs, borders, np.array([0.01, 0.25, 0.75, 0.99]))
    s = 0.1 / 0.6744897501960817  # tail scale: the outer bucket's width is the half-normal's median
    from scipy import special

    np.testing.assert_allclose(q[0], [0.1 - s * special.ndtri(0.99), 0.1 - s * special.ndtri(0.75),
                                      0.9 + s * special.ndtri(0.75), 0.9 + s * special.ndtri(0.99)], rtol=1e-9)
    np.testing.assert_allclose(q[1, 1:3], [0.25, 0.75], atol=1e-12)


# ---- batching plan -------------------------------------------------------------------------------
def _check_plan(sizes, max_batch):
    groups = plan_groups(sizes, max_batch)
    assert groups[0][0] == 0 and groups[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))  # contiguous, no gaps or overlaps
    assert all(0 < stop - start <= max_batch for start, stop in groups)
    return groups


def test_plan_groups_splits_mixed_context_lengths():
    sizes = [(10, 12)] * 32 + [(96, 12)] * 32
    assert _check_plan(sizes, 64) == [(0, 32), (32, 64)]
    rng = np.random.default_rng(0)
    sizes = sorted((int(n), int(m)) for n, m in zip(rng.integers(1, 97, 300), rng.integers(1, 100, 300)))
    groups = _check_plan(sizes, 64)

    def total(gs):
        return sum(group_cost(b - a, sizes[b - 1][0], max(m for _, m in sizes[a:b])) for a, b in gs)

    fixed = [(s, min(s + 64, len(sizes))) for s in range(0, len(sizes), 64)]
    assert total(groups) < 0.9 * total(fixed)


def test_plan_groups_keeps_equal_lengths_together_and_handles_edges():
    assert _check_plan([(40, 20)] * 64, 64) == [(0, 64)]  # nothing to gain from splitting
    assert len(_check_plan([(40, 20)] * 130, 64)) == 3
    assert plan_groups([], 64) == []
    assert plan_groups([(1, 0)], 64) == [(0, 1)]


# ---- anchors: the model runs at a few positions, the rest are interpolated -----------------------
def test_long_query_lists_are_interpolated_between_fixed_anchors(engine):
    exact = LearnedEngine(engine.runtime, engine.card, anchors=ANCHOR_CANDIDATES)
    base = loss_query(n=30, budget=1000.0)
    xq = np.random.default_rng(3).permutation(np.linspace(base.curve.last_x + 5.0, 1500.0, 120))  # unsorted
    q = ForecastQuery(base.curve, base.run, np.concatenate([xq, xq[:5]]))  # and repeated
    got, ref = (e.forecast([q])[0].marginals for e in (engine, exact))
    p = prepare(q)
    assert len(p.qry_x) <= ANCHORS < len(q.x_query)
    np.testing.assert_array_equal(got.values[-5:], got.values[:5])
    assert np.all(np.diff(got.values, axis=1) >= 0.0)
    # a smooth forecast: interpolation stays within a small fraction of the 90% band width
    band = ref.quantile([0.05, 0.95])
    width = band[:, 1] - band[:, 0]
    assert np.all(np.mean(np.abs(got.values - ref.values), axis=1) <= 0.05 * width)
    assert np.all(np.abs(got.mean - ref.mean) <= 0.05 * width)


def test_anchors_do_not_depend_on_the_queried_x(engine):
    """The anchors come from the curve and its plan: an x's answer is the same bits whatever else is asked."""
    base = loss_query(n=30, budget=1000.0)
    x0 = 512.3
    sets = [np.array([x0]), np.array([x0, 700.0]), np.sort(np.r_[x0, np.linspace(310.0, 4000.0, 60)]),
            np.r_[x0, 20000.0]]  # the last one also runs a far-away position exactly
    rows = []
    for xs in sets:
        m = engine.forecast([ForecastQuery(base.curve, base.run, xs)])[0].marginals
        i = int(np.flatnonzero(m.x == x0)[0])
        rows.append((m.values[i], m.mean[i]))
    for vals, mean in rows[1:]:
        np.testing.assert_array_equal(vals, rows[0][0])
        assert mean == rows[0][1]
    t = prepare(ForecastQuery(base.curve, base.run, sets[2])).qry_x[:, 0]
    assert np.array_equal(t, prepare(ForecastQuery(base.curve, base.run, sets[1])).qry_x[:, 0])
    assert 1.0 in t  # the budget is always an anchor


def test_anchors_bracket_schedule_breakpoints_and_short_lists_run_exactly():
    t = np.linspace(0.1, 1.0, 200)
    assert choose_anchors(np.column_stack([t, np.ones_like(t), t, 0 * t, 0 * t])[:ANCHORS], ANCHORS) is None
    # WSD: constant LR, then a linear decay to 0 from t = 0.8
    lr = np.clip((1.0 - t) / 0.2, 0.0, 1.0)
    s2 = np.maximum(t - 0.8, 0.0) * 5.0
    def gap_at_decay(feats):
        ta = np.sort(t[choose_anchors(feats, 24)])
        assert ta[0] == t[0] and ta[-1] == t[-1] and len(ta) <= 24
        i = np.searchsorted(ta, 0.8)
        return ta[i] - ta[i - 1]

    plain = gap_at_decay(np.column_stack([t, np.ones_like(t), t, 0 * t, 0 * t]))
    assert gap_at_decay(np.column_stack([t, lr, t, s2, np.ones_like(t)])) < 0.6 * plain


# ---- artifact integrity --------------------------------------------------------------------------
def _copy_model(tmp_path: Path) -> Path:
    src = _model_path()
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(CARD, tmp_path / CARD.name)
    return tmp_path / src.name


def _tamper(path: Path) -> None:
    """Flip one byte in the middle of the file: same size, different sha256."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_model_is_refused(tmp_path):
    path = _copy_model(tmp_path)
    _tamper(path)
    with pytest.raises(ModelLoadError, match="sha256"):
        LearnedEngine.load(path, warmup=False)


def test_truncated_or_missing_model_is_refused(tmp_path):
    path = _copy_model(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="truncated"):
        LearnedEngine.load(path, warmup=False)
    path.unlink()
    with pytest.raises(ModelLoadError, match="does not exist"):
        LearnedEngine.load(path, warmup=False)


def test_missing_card_is_refused(tmp_path):
    path = _copy_model(tmp_path)
    (tmp_path / CARD.name).unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        LearnedEngine.load(path, warmup=False)


def test_directory_load_and_info(engine):
    assert engine.info().provider == "CPUExecutionProvider"
    assert engine.info().version.endswith(json.loads(CARD.read_text())["sha256"][:12])
    assert LearnedEngine.load(MODELS, threads=1, warmup=False).card["sha256"] == engine.card["sha256"]


# ---- forecasts -----------------------------------------------------------------------------------
def test_loss_curve_marginals_are_sane(engine):
    q = loss_query()
    (res,) = engine.forecast([q])
    assert isinstance(res, EngineForecast)
    m = res.marginals
    assert np.isfinite(m.values).all() and np.isfinite(m.mean).all()
    assert np.all(m.values >= 0.0)  # the loss's lower bound
    med = m.quantile(0.5)
    last = q.curve.y[-5:].mean()
    assert np.all(med < last + 0.1) and np.all(med > 0.5 * last)  # keeps near or below the last loss
    lo, hi = m.quantile(0.05), m.quantile(0.95)
    assert np.all(lo < med) and np.all(med < hi)
    assert m.cdf(last + 1.0)[-1] > 0.9  # a much higher final loss is unlikely


def test_accuracy_curve_marginals_are_sane(engine):
    q = acc_query()
    (res,) = engine.forecast([q])
    m = res.marginals
    assert np.all((m.values >= 0.0) & (m.values <= 1.0))
    med = m.quantile(0.5)
    assert med[-1] > q.curve.y[-1] - 0.05  # an accuracy curve still rising keeps rising
    assert med[-1] <= 1.0


def test_batch_with_mixed_lengths_equals_one_by_one(engine):
    queries = [loss_query(5), acc_query(40), loss_query(30, budget=1000.0), loss_query(150), acc_query(3)]
    queries.append(ForecastQuery(queries[0].curve, queries[0].run, np.linspace(10, 100, 25)))
    batch = engine.forecast(queries)
    for q, b in zip(queries, batch):
        (single,) = engine.forecast([q])
        np.testing.assert_allclose(b.marginals.values, single.marginals.values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.marginals.mean, single.marginals.mean, rtol=1e-5, atol=1e-6)
    assert batch[3].details["observed_points"] == 150 and batch[3].details["context_points"] == 96


def test_a_bad_query_fails_alone(engine):
    bad = ForecastQuery(Curve(np.array([]), np.array([])), RunInfo(), np.array([1.0]))
    res = engine.forecast([loss_query(), bad, acc_query()])
    assert isinstance(res[0], EngineForecast) and isinstance(res[2], EngineForecast)
    assert isinstance(res[1], Exception)


def test_cooldown_ahead_is_anticipated(engine):
    """A WSD run with its cooldown still ahead should be forecast to end lower than a constant-LR run."""
    budget = 10000.0
    wsd = LrSchedule(ScheduleShape.WSD, peak_lr=1e-3, final_lr=0.0, warmup_steps=200, total_steps=budget,
                     decay_start=8000)
    const = LrSchedule(ScheduleShape.CONSTANT, peak_lr=1e-3, warmup_steps=200, total_steps=budget)
    end_wsd = engine.forecast([loss_query(50, budget, wsd)])[0].marginals.quantile(0.5)[-1]
    end_const = engine.forecast([loss_query(50, budget, const)])[0].marginals.quantile(0.5)[-1]
    assert end_wsd < end_const


# ---- int8 variant -------------------------------------------------------------------------------
def test_quantized_variant_is_listed_verified_and_close_to_float(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime.quantization")
    from curvecast.engines.learned.engine import sha256_of
    from training.export import export_onnx
    from training.model import CurvePFN, ModelConfig
    from training.quantize import main as quantize_main

    torch.manual_seed(0)
    model = CurvePFN(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, n_buckets=50, d_dec=64),
                     torch.linspace(-1.0, 2.0, 51)).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    (tmp_path / "model-card.json").write_text(json.dumps(
        {"name": "m", "file": path.name, "sha256": sha256_of(path), "size_bytes": path.stat().st_size}))
    q_path = tmp_path / "m-int8.onnx"
    q_path.write_bytes(path.read_bytes())
    with pytest.raises(ModelLoadError, match="describes"):  # not listed in the card: refused
        LearnedEngine.load(q_path, warmup=False)
    quantize_main(["--model", str(path)])
    card = json.loads((tmp_path / "model-card.json").read_text())
    assert card["sha256"] == sha256_of(path) and card["variants"]["m-int8.onnx"]["sha256"] == sha256_of(q_path)
    assert q_path.stat().st_size < path.stat().st_size

    fp = LearnedEngine.load(path, threads=1)
    q8 = LearnedEngine.load(q_path, threads=1)
    assert q8.card["file"] == q_path.name and q8.card["variant_of"] == fp.card["sha256"]
    assert q8.info().version != fp.info().version
    rng = np.random.default_rng(0)
    cx = rng.uniform(0, 1, (3, 20, 5)).astype(np.float32)
    cy = rng.uniform(0, 1, (3, 20)).astype(np.float32)
    qx = rng.uniform(0, 1, (3, 8, 5)).astype(np.float32)
    args = (cx, cy, np.ones((3, 20), np.float32), qx)
    lp_f, lp_q = fp.runtime.run(*args), q8.runtime.run(*args)
    assert 0.0 < np.abs(lp_f - lp_q).max() < 0.1  # really quantised, still close

    _tamper(q_path)
    with pytest.raises(ModelLoadError, match="sha256"):
        LearnedEngine.load(q_path, warmup=False)


def test_budget_point_is_always_computed_exactly(engine):
    x = np.arange(1.0, 41.0) * 25.0
    y = 2.0 + 3.0 * x**-0.3
    xq = np.concatenate([np.linspace(1001.0, 4000.0, 50), np.geomspace(4000.0, 16000.0, 13)[1:]])
    q = ForecastQuery(curve=Curve(x, y), run=RunInfo(total_steps=4000.0), x_query=xq)
    p = prepare(q)
    assert p.fill is not None  # more positions than anchors: interpolated
    lo, hi, w = p.fill
    k = int(np.flatnonzero(xq == 4000.0)[0])
    assert w[k] in (0.0, 1.0) or lo[k] == hi[k]  # the budget row is an anchor, not a blend
    exact = engine.forecast([replace(q, x_query=np.array([4000.0]))])[0].marginals
    got = engine.forecast([q])[0].marginals.at(k)
    np.testing.assert_allclose(got.values, exact.values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-300, 1e-12, 1e290])
def test_tiny_and_huge_magnitudes_are_normalised_like_ordinary_ones(engine, scale):
    """A 1e-300 loss used to come back as 0 / 1e287 (the value transform's absolute spread floor)."""
    q = loss_query()
    ref = engine.forecast([q])[0].marginals
    c = q.curve
    scaled = ForecastQuery(Curve(c.x, c.y * scale, c.goal, lower_bound=0.0), q.run, q.x_query)
    got = engine.forecast([scaled])[0].marginals
    np.testing.assert_allclose(got.values / scale, ref.values, rtol=1e-5)
    np.testing.assert_allclose(got.mean / scale, ref.mean, rtol=1e-5)


# ---- bounds are limits (issue 17) -----------------------------------------------------------------
def _slow_loss(lower_bound):
    x = np.arange(1, 31) * 10.0
    y = 3.0 + 0.4 * (x / 10) ** -0.5 + np.random.default_rng(0).normal(0, 0.005, len(x))
    return ForecastQuery(Curve(x, y, lower_bound=lower_bound), RunInfo(total_steps=1000.0), np.array([500.0, 1000.0]))


def test_a_far_declared_floor_is_a_limit_not_a_target(engine, monkeypatch):
    """A loss near 3 with lower_bound=0: the bound once made the model read the curve as far from where
    it is heading and forecast a large further drop. Now the forecast drop stays close to the one
    without a bound: its excess is under half of what using the declared bound verbatim gives."""
    from curvecast.engines.learned import normalization as nz

    last = _slow_loss(None).curve.y[-5:].mean()

    def drop(lower_bound):
        m = engine.forecast([_slow_loss(lower_bound)])[0].marginals
        return last - np.stack([m.quantile(0.5), m.quantile(0.05)])

    free, limited = drop(None), drop(0.0)
    assert nz.value_transform(_slow_loss(0.0).curve.y, True, 0.0, None).mode == "far-lower-bound"
    monkeypatch.setattr(nz, "FAR_BOUND_SPREADS", np.inf)  # the rule before issue 17: the bound is the target
    target = drop(0.0)
    assert np.all(limited - free < 0.5 * (target - free))
    near = nz.value_transform(np.array([4.0, 2.0, 1.0]), True, 0.0, None)  # a floor within 2 spreads is used
    assert near.mode == "lower-bound"
    np.testing.assert_allclose(near.forward(np.array([0.0, 7.0 / 3.0])), [1.0, 0.0], atol=1e-12)


def test_no_loss_is_forecast_below_its_inferred_floor(engine):
    """Without a declared bound a minimised metric that was never negative is forecast >= 0."""
    rng = np.random.default_rng(1)
    x = np.arange(1, 41) * 10.0
    y = np.abs(0.3 * (x / 10) ** -0.7 + rng.normal(0, 0.02, len(x)))
    (res,) = engine.forecast([ForecastQuery(Curve(x, y), RunInfo(total_steps=2000.0), np.linspace(500, 2000, 4))])
    assert np.all(res.marginals.values >= 0.0) and np.all(res.marginals.mean >= 0.0)


# ---- long curves are summarised, not cut (issue 17) ----------------------------------------------
def test_summarise_context_keeps_the_tail_and_block_medians_of_the_rest():
    from curvecast.engines.learned.engine import MAX_CONTEXT, TAIL_KEEP, summarise_context

    x = np.arange(1.0, 20_001.0)
    y = 2.0 + 10.0 / np.sqrt(x)
    y[5000] = 1e3  # one spike: a median ignores it
    cx, cy = summarise_context(x, y)
    assert len(cx) == MAX_CONTEXT and np.all(np.diff(cx) > 0)
    np.testing.assert_array_equal(cx[-TAIL_KEEP:], x[-TAIL_KEEP:])
    np.testing.assert_array_equal(cy[-TAIL_KEEP:], y[-TAIL_KEEP:])
    assert cy.max() < 3.0
    np.testing.assert_allclose(cy[:-TAIL_KEEP], 2.0 + 10.0 / np.sqrt(cx[:-TAIL_KEEP]), rtol=1e-4)  # on the curve
    short_x, short_y = x[:50], y[:50]
    assert summarise_context(short_x, short_y)[0] is short_x


def test_a_raw_per_step_curve_forecasts_like_its_block_means(engine):
    """20,000 noisy per-step points and their 1%-block means give about the same forecast at the budget
    (the old 96-point pick read single noisy steps as the curve's shape)."""
    rng = np.random.default_rng(5)
    budget = 100_000.0
    x = np.arange(1.0, 20_001.0)
    y = 2.5 + 4.0 * (x / 100.0) ** -0.4 + rng.normal(0.0, 0.15, len(x))
    blocks = np.arange(len(x)) // 1000
    bx = np.bincount(blocks, x) / np.bincount(blocks)
    by = np.bincount(blocks, y) / np.bincount(blocks)
    raw, means = engine.forecast([
        ForecastQuery(Curve(x, y, lower_bound=0.0), RunInfo(total_steps=budget), np.array([budget])),
        ForecastQuery(Curve(bx, by, lower_bound=0.0), RunInfo(total_steps=budget), np.array([budget])),
    ])
    truth = 2.5 + 4.0 * (budget / 100.0) ** -0.4
    med_raw, med_means = raw.marginals.quantile(0.5)[0], means.marginals.quantile(0.5)[0]
    assert abs(med_raw - truth) / truth < 0.05 and abs(med_raw - med_means) / truth < 0.05
    assert raw.details["observed_points"] == 20_000 and raw.details["context_points"] == 96
