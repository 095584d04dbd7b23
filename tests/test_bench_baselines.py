"""Baselines fit what they claim to fit, on synthetic curves with a known answer, and honour the Engine protocol."""

from __future__ import annotations

import numpy as np
import pytest

from bench.baselines import BestOfFamiliesEngine, LastValueEngine, Pow3LSEngine, RobustPow3Engine, fit_pow3
from bench.cache import CachedEngine
from bench.data import CurveRecord, synthetic_curves
from bench.empirical import EmpiricalSpreadEngine
from bench.families import FAMILIES, Prefix, fit_robust, select_family
from bench.tasks import make_tasks
from curvecast.domain.curve import Goal, XKind
from curvecast.engines.base import Engine, EngineForecast


def test_pow3_recovers_parameters():
    x = np.arange(1.0, 41.0)
    y = 2.0 + 3.0 * (x / 40.0) ** -0.5
    c, a, alpha, shift, rss = fit_pow3(x, y)
    assert shift == 0.0 and rss < 1e-3
    assert abs(alpha - 0.5) < 0.05 and abs(c - 2.0) < 0.1


def test_pow3_handles_x_starting_at_zero():
    x = np.arange(0.0, 30.0)
    y = 1.0 + 2.0 / np.sqrt(x + 1.0)
    c, a, alpha, shift, rss = fit_pow3(x, y)
    assert shift == 1.0 and rss < 1e-3


def test_pow3_ls_extrapolates_clean_power_law():
    x = np.arange(1.0, 101.0)
    rec = CurveRecord("p", "s", x, 1.5 + 2.0 * x**-0.7, budget=100.0)
    (task,) = make_tasks([rec], (0.4,))
    (res,) = Pow3LSEngine().forecast([task.query])
    assert isinstance(res, EngineForecast)
    assert abs(float(res.marginals.quantile(0.5)[-1]) - rec.final) < 0.01


def test_last_value_spread_widens_with_horizon_and_respects_bounds():
    tasks = make_tasks(synthetic_curves(6, seed=0), (0.2,))
    eng = LastValueEngine()
    for e in (eng, Pow3LSEngine(), RobustPow3Engine(), BestOfFamiliesEngine(), EmpiricalSpreadEngine()):
        assert isinstance(e, Engine)
    for t, res in zip(tasks, eng.forecast([t.query for t in tasks])):
        assert isinstance(res, EngineForecast)
        q = res.marginals.quantile([0.05, 0.95])
        width = q[:, 1] - q[:, 0]
        assert np.all(np.diff(width) >= -1e-12) and width[-1] > width[0]
        if t.query.curve.upper_bound is not None:
            assert np.all(res.marginals.values <= t.query.curve.upper_bound)
        assert np.allclose(res.marginals.quantile(0.5), t.y_obs[-1], atol=1e-9) or t.query.curve.upper_bound is not None


# ---- robust pow3 -------------------------------------------------------------------------------------
def _pow3_curve(seed: int, spikes: bool) -> tuple[np.ndarray, np.ndarray]:
    """y = 2 + 3 (x/60)^-0.5 with Gaussian noise 0.01 and, optionally, four +1.0 loss spikes."""
    x = np.arange(1.0, 61.0)
    y = 2.0 + 3.0 * (x / 60.0) ** -0.5 + np.random.default_rng(seed).normal(0.0, 0.01, len(x))
    if spikes:
        y[[12, 25, 38, 50]] += 1.0
    return x, y


def _natural_pow3(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(asymptote, amplitude at x_last, alpha) of the robust pow3 fit, in the curve's own units."""
    pre = Prefix.from_curve(x, y, 1.0, 0.0)
    fit = fit_robust("pow3", pre)
    c, a_w, alpha = fit.theta
    return float(pre.y_of(c)), float(-pre.scale * a_w), float(alpha)


def test_robust_pow3_recovers_known_parameters_despite_spikes():
    for seed in range(3):
        asym, amp, alpha = _natural_pow3(*_pow3_curve(seed, spikes=True))
        assert abs(alpha - 0.5) < 0.05 and abs(asym - 2.0) < 0.1 and abs(amp - 3.0) < 0.1
        c_ls, _, alpha_ls, _, _ = fit_pow3(*_pow3_curve(seed, spikes=True))
        assert abs(c_ls - 2.0) > abs(asym - 2.0)  # plain least squares is pulled by the spikes


def test_robust_pow3_bootstrap_band_matches_the_noise():
    """On clean-noise pow3 data the 90% band of the next points covers the truth and is ~ +-1.64 sigma wide."""
    x = np.arange(1.0, 101.0)
    truth = 2.0 + 3.0 * (x / 100.0) ** -0.5
    covered, widths = [], []
    for seed in range(8):
        y = truth + np.random.default_rng(seed).normal(0.0, 0.02, len(x))
        (task,) = make_tasks([CurveRecord(f"p{seed}", "s", x, y, budget=100.0, lower_bound=0.0)], (0.8,))
        (res,) = RobustPow3Engine().forecast([task.query])
        q = res.marginals.quantile([0.05, 0.95])
        covered.append(np.mean((truth[80:] >= q[:, 0]) & (truth[80:] <= q[:, 1])))
        widths.append(float(np.median(q[:, 1] - q[:, 0])))
    assert np.mean(covered) > 0.9
    assert 2 * 1.645 * 0.02 * 0.7 < np.median(widths) < 2 * 1.645 * 0.02 * 1.6


def test_robust_pow3_asymptote_respects_the_metric_bound():
    """Two points of a steep drop: the fitted asymptote never goes below the loss's lower bound."""
    x, y = np.array([1.0, 2.0]), np.array([10.0, 4.0])
    pre = Prefix.from_curve(x, y, 1.0, 0.0)
    assert pre.y_of(fit_robust("pow3", pre).theta[0]) >= -1e-9


# ---- best of families ----------------------------------------------------------------------------------
TRUE_CURVES = {
    "pow3": lambda x: 2.0 + 0.3 * (x / 60.0) ** -0.6,
    "exp": lambda x: 1.0 + 2.0 * np.exp(-0.08 * x),
    "log_power": lambda x: 1.0 + 2.0 / (1.0 + (x / 15.0) ** 3),
}


@pytest.mark.parametrize("truth", sorted(TRUE_CURVES))
def test_best_of_families_picks_the_true_family(truth):
    x = np.arange(1.0, 61.0)
    expected = {"exp": {"exp4", "janoschek"}}.get(truth, {truth})
    picks = []
    for seed in range(12):
        y = TRUE_CURVES[truth](x) + np.random.default_rng(seed).normal(0.0, 0.003, len(x))
        sel = select_family(Prefix.from_curve(x, y, 1.0, 0.0))
        assert not sel.fallback and set(sel.errors) == set(FAMILIES)
        picks.append(sel.name in expected)
    assert np.mean(picks) >= 0.75, picks


def test_best_of_families_forecast_uses_the_selected_family():
    x = np.arange(1.0, 101.0)
    y = 1.0 + 2.0 * np.exp(-0.05 * x) + np.random.default_rng(0).normal(0.0, 0.002, len(x))
    (task,) = make_tasks([CurveRecord("e", "s", x, y, budget=100.0, lower_bound=0.0)], (0.4,))
    (res,) = BestOfFamiliesEngine().forecast([task.query])
    assert list(FAMILIES)[int(res.details["family_index"])] in ("exp4", "janoschek")
    med = res.marginals.quantile(0.5)
    assert abs(med[-1] - (1.0 + 2.0 * np.exp(-5.0))) < 0.02  # pow3 would still be falling here


def test_short_prefix_falls_back_to_pow3_without_failing():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.5, 2.3])
    assert select_family(Prefix.from_curve(x, y, 1.0, 0.0)).fallback
    rec = CurveRecord("s", "s", np.arange(1.0, 31.0), 2.0 + 1.0 / np.arange(1.0, 31.0), budget=30.0, lower_bound=0.0)
    tasks = make_tasks([rec], (0.1,))
    (res,) = BestOfFamiliesEngine().forecast([tasks[0].query])
    assert isinstance(res, EngineForecast) and res.details["fallback"] == 1.0


# ---- empirical spread ------------------------------------------------------------------------------------
def _line_curve(run_id: str, group: str, slope: float, budget: float = 100.0, level: float = 2.0) -> CurveRecord:
    """log(loss) linear in x / budget: a curve whose move from r0 to r is exactly slope * (r - r0)."""
    x = np.linspace(1.0, budget, 50)
    return CurveRecord(run_id, "src", x, level * np.exp(slope * x / budget), budget=budget, lower_bound=0.0, meta={"group": group})


def _siblings(n: int = 101) -> list[CurveRecord]:
    """Sibling slopes evenly spread over [-1, 0], in groups of their own, with different budgets."""
    return [_line_curve(f"sib{k}", f"g{k}", -k / (n - 1), budget=50.0 + k) for k in range(n)]


def test_empirical_spread_quantiles_are_the_siblings_moves():
    query = _line_curve("me", "mine", -0.5, level=3.0)
    recs = _siblings() + [query]
    tasks = make_tasks(recs, (0.4,))
    eng = EmpiricalSpreadEngine()
    eng.prepare(recs, tasks)
    (task,) = [t for t in tasks if t.run_id == "me"]
    (res,) = eng.forecast([task.query])
    assert res.details["n_siblings"] == 101
    r0 = task.x_obs[-1] / task.query.horizon
    span = 1.0 - r0  # from the anchor's relative position to the end
    h = 0.9 * (span / np.sqrt(12.0)) * 101 ** -0.2  # Silverman bandwidth of uniform moves on [-span, 0]
    for p, tol in ((0.05, 0.5 * h), (0.25, 0.1 * h), (0.5, 0.01 * h), (0.75, 0.1 * h), (0.95, 0.5 * h)):
        expected = np.log(task.y_obs[-1]) + (p - 1.0) * span  # slopes are uniform on [-1, 0]
        assert abs(np.log(float(res.marginals.quantile(p)[-1])) - expected) < tol, p


def test_empirical_spread_leaves_the_run_and_its_group_out():
    query = _line_curve("me", "mine", -0.5)
    same_group = [_line_curve(f"twin{k}", "mine", 3.0) for k in range(5)]  # would drag the forecast up
    base = _siblings()
    tasks_a = make_tasks(base + [query], (0.4,))
    tasks_b = make_tasks(base + same_group + [query], (0.4,))
    answers = []
    for recs, tasks in ((base + [query], tasks_a), (base + same_group + [query], tasks_b)):
        eng = EmpiricalSpreadEngine()
        eng.prepare(recs, tasks)
        (t,) = [t for t in tasks if t.run_id == "me"]
        (res,) = eng.forecast([t.query])
        assert all(s.run_id != "me" and s.group != "mine" for s in eng.siblings(t.query))
        answers.append(res.marginals.values)
    np.testing.assert_allclose(answers[0], answers[1])


def test_empirical_spread_never_reads_the_querys_own_future():
    futures = []
    for final in (0.1, 10.0):
        query = _line_curve("me", "g-me", -0.5)
        y = query.y.copy()
        y[-10:] = final  # only held-out points change
        query = CurveRecord("me", "src", query.x, y, budget=query.budget, lower_bound=0.0, meta={"group": "g-me"})
        recs = _siblings(20) + [query]
        tasks = make_tasks(recs, (0.4,))
        eng = EmpiricalSpreadEngine()
        eng.prepare(recs, tasks)
        (t,) = [t for t in tasks if t.run_id == "me"]
        futures.append(eng.forecast([t.query])[0].marginals.values)
    np.testing.assert_array_equal(futures[0], futures[1])


def test_empirical_spread_falls_back_to_leave_one_run_out_in_a_single_group():
    recs = [_line_curve(f"r{k}", "only", -k / 9.0) for k in range(10)]
    tasks = make_tasks(recs, (0.4,))
    eng = EmpiricalSpreadEngine()
    eng.prepare(recs, tasks)
    t = tasks[0]
    sibs = eng.siblings(t.query)
    assert len(sibs) == 9 and t.run_id not in {s.run_id for s in sibs}


def test_empirical_spread_on_accuracy_moves_the_gap_to_one():
    """Accuracy curves: moves are on log(1 - acc), so the forecast never passes 1."""
    recs = []
    for k in range(20):
        x = np.linspace(16.0, 4096.0, 12)
        acc = 1.0 - 0.5 * (x / 16.0) ** -(0.2 + 0.02 * k)
        recs.append(CurveRecord(f"a{k}", "acc", x, acc, Goal.MAXIMIZE, XKind.SAMPLES, 4096.0, "accuracy", lower_bound=0.0, upper_bound=1.0, meta={"group": f"d{k}"}))
    tasks = make_tasks(recs, (0.2,))
    eng = EmpiricalSpreadEngine()
    eng.prepare(recs, tasks)
    res = eng.forecast([t.query for t in tasks])
    for t, r in zip(tasks, res):
        assert isinstance(r, EngineForecast) and np.all(r.marginals.values < 1.0)
        assert r.marginals.quantile(0.5)[-1] > t.y_obs[-1]  # every sibling improved


def test_unprepared_empirical_spread_falls_back_with_a_warning():
    (task,) = make_tasks([_line_curve("me", "g", -0.5)], (0.4,))
    (res,) = EmpiricalSpreadEngine().forecast([task.query])
    assert isinstance(res, EngineForecast) and res.warnings


# ---- cache -------------------------------------------------------------------------------------------------
def test_cached_engine_serves_identical_answers_and_keeps_their_cost(tmp_path):
    tasks = make_tasks(synthetic_curves(2, seed=0), (0.4,))
    first = CachedEngine(RobustPow3Engine(), tmp_path)
    a = first.forecast([t.query for t in tasks])
    assert first.stats.misses == len(tasks) and first.stats.hits == 0
    second = CachedEngine(RobustPow3Engine(), tmp_path)
    b = second.forecast([t.query for t in tasks])
    assert second.stats.hits == len(tasks) and second.stats.misses == 0
    assert second.stats.compute_s == pytest.approx(first.stats.compute_s)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.marginals.values, rb.marginals.values)
        assert ra.details == rb.details
    other = make_tasks(synthetic_curves(2, seed=1), (0.4,))
    second.forecast([other[0].query])
    assert second.stats.misses == 1


def test_cached_engine_survives_a_locked_cache_file(tmp_path):
    """Another bench holding the write lock makes answers uncached, never failed."""
    import sqlite3

    tasks = make_tasks(synthetic_curves(1, seed=0), (0.4,))
    eng = CachedEngine(Pow3LSEngine(), tmp_path)
    eng._db.execute("PRAGMA busy_timeout = 10")  # do not wait the full minute in a test
    blocker = sqlite3.connect(eng.path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        (res,) = eng.forecast([tasks[0].query])
        assert isinstance(res, EngineForecast) and eng.stats.misses == 1
    finally:
        blocker.rollback()
        blocker.close()
    eng.forecast([tasks[0].query])  # the lock is gone: computed again and stored this time
    assert eng.stats.misses == 2
    eng.forecast([tasks[0].query])
    assert eng.stats.hits == 1
