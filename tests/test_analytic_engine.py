"""Behaviour of the analytic engine on synthetic curves (no real data needed)."""

from __future__ import annotations

import numpy as np
import pytest

from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo, XKind
from curvecast.engines.analytic import AnalyticEngine
from curvecast.engines.analytic import engine as engine_mod
from curvecast.engines.analytic.engine import SHORT_WARNING
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import Engine, EngineForecast


def _query(x, y, xq, goal=Goal.MINIMIZE, target=None, run=None, **curve_kw) -> ForecastQuery:
    curve = Curve(x=np.asarray(x, float), y=np.asarray(y, float), goal=goal, **curve_kw)
    return ForecastQuery(curve=curve, run=run or RunInfo(), x_query=np.asarray(xq, float), target=target)


def _power(t):
    return 2.0 + 3.0 * (t / 10.0) ** -0.4


@pytest.fixture(scope="module")
def eng() -> AnalyticEngine:
    return AnalyticEngine()


def _one(eng, q) -> EngineForecast:
    res = eng.forecast([q])[0]
    assert isinstance(res, EngineForecast), res
    m = res.marginals
    assert np.all(np.isfinite(m.values)) and np.all(np.isfinite(m.mean))
    assert np.all(np.diff(m.values, axis=1) >= 0)
    return res


def test_implements_engine_protocol(eng):
    assert isinstance(eng, Engine)
    assert eng.name == "analytic" and eng.info().name == "analytic"


def test_power_law_extrapolation_is_accurate_and_covered(eng):
    rng = np.random.default_rng(0)
    x = np.arange(1, 201) * 10.0
    y = _power(x) + rng.normal(0, 0.01, len(x))
    xq = np.array([4000.0, 8000.0, 20000.0])
    res = _one(eng, _query(x, y, xq))
    med = res.marginals.quantile(0.5)
    lo, hi = res.marginals.quantile(0.05), res.marginals.quantile(0.95)
    truth = _power(xq)
    assert np.all(np.abs(med - truth) / truth < 0.02)
    assert np.all((lo <= truth) & (truth <= hi))
    # uncertainty grows with the horizon
    width = hi - lo
    assert width[-1] > width[0]


def test_accuracy_curve_respects_upper_bound_and_rises(eng):
    rng = np.random.default_rng(1)
    x = np.arange(1, 41, dtype=float)
    acc = 0.92 - 0.6 * np.exp(-x / 12.0) + rng.normal(0, 0.004, len(x))
    xq = np.array([40.0, 80.0, 160.0])
    res = _one(eng, _query(x, acc, xq, goal=Goal.MAXIMIZE, lower_bound=0.0, upper_bound=1.0))
    vals = res.marginals.values
    assert vals.max() <= 1.0 and vals.min() >= 0.0
    med = res.marginals.quantile(0.5)
    assert med[-1] >= med[0] - 0.005
    assert abs(med[-1] - 0.92) < 0.05
    assert res.marginals.quantile(0.05)[-1] <= 0.92 <= res.marginals.quantile(0.95)[-1]


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_curves_warn_and_stay_wide(eng, n):
    x, y = [10.0, 20.0][:n], [3.0, 2.6][:n]
    res = _one(eng, _query(x, y, [40.0, 400.0], lower_bound=0.0))
    assert SHORT_WARNING in res.warnings
    lo, hi = res.marginals.quantile(0.05), res.marginals.quantile(0.95)
    assert np.all(hi - lo > 0.1)
    assert res.marginals.values.min() >= 0.0


def test_constant_curve(eng):
    x = np.arange(1, 60, dtype=float)
    res = _one(eng, _query(x, np.full(len(x), 1.5), [100.0, 1000.0]))
    assert np.allclose(res.marginals.quantile(0.5), 1.5, atol=1e-3)


def test_spikes_do_not_derail_the_fit(eng):
    rng = np.random.default_rng(2)
    x = np.arange(1, 401) * 5.0
    y = _power(x) + rng.normal(0, 0.01, len(x))
    spikes = rng.choice(len(x), 12, replace=False)
    y[spikes] += rng.uniform(1.0, 5.0, len(spikes))
    xq = np.array([4000.0, 10000.0])
    res = _one(eng, _query(x, y, xq))
    assert np.all(np.abs(res.marginals.quantile(0.5) - _power(xq)) / _power(xq) < 0.03)


def test_long_irregular_curve_is_subsampled(eng):
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.exponential(3.0, 20000)) + 1.0
    y = _power(x) + rng.normal(0, 0.02, len(x))
    res = _one(eng, _query(x, y, [x[-1], 2 * x[-1]]))
    assert res.details["fit_points"] <= 48
    assert abs(res.marginals.quantile(0.5)[0] - _power(x[-1])) < 0.03


def test_queries_outside_any_sane_range_stay_finite(eng):
    x = np.arange(10, 100, dtype=float)
    y = _power(x)
    _one(eng, _query(x, y, [0.0, 1e-6, 1e15]))


def test_diverged_run_warns(eng):
    x = np.arange(1, 30, dtype=float)
    res = _one(eng, _query(x, _power(x * 10), [40.0, 60.0], diverged_at=30.0))
    assert any("diverged" in w for w in res.warnings)
    # a dead run is not forecast to improve on its best
    assert res.marginals.quantile(0.5)[-1] >= _power(290.0) - 1e-6


def test_lower_bound_is_respected(eng):
    x = np.arange(1, 50, dtype=float)
    y = 0.05 + 0.5 * x**-1.5
    res = _one(eng, _query(x, y, [100.0, 1e4], lower_bound=0.0))
    assert res.marginals.values.min() >= 0.0


def test_numerical_failure_falls_back_with_warning(eng, monkeypatch):
    def boom(*a, **k):
        raise FloatingPointError("synthetic failure")

    monkeypatch.setattr(engine_mod, "fit_all", boom)
    x = np.arange(1, 30, dtype=float)
    res = _one(eng, _query(x, _power(x), [60.0]))
    assert any("failed" in w for w in res.warnings)


def test_empty_curve_is_an_error_not_a_crash(eng):
    q = _query([], [], [1.0])
    res = eng.forecast([q])[0]
    assert isinstance(res, Exception)


def test_steps_to_target(eng):
    x = np.arange(1, 201) * 10.0
    y = _power(x)
    target = float(_power(6000.0))
    res = _one(eng, _query(x, y, [6000.0], target=target, run=RunInfo(total_steps=20000.0)))
    d = res.details
    assert d["target_prob_reachable"] > 0.5
    assert 4000.0 < d["target_x_q50"] < 9000.0
    assert d["target_prob_by_horizon"] > 0.5


def test_process_pool_matches_in_process():
    x = np.arange(1, 80, dtype=float)
    qs = [_query(x, _power(x * k), [100.0, 200.0]) for k in (1.0, 2.0, 3.0)]
    local = AnalyticEngine().forecast(qs)
    pooled_engine = AnalyticEngine(workers=1)
    try:
        pooled = pooled_engine.forecast(qs)
    finally:
        pooled_engine.close()
    for a, b in zip(local, pooled):
        assert np.allclose(a.marginals.values, b.marginals.values)


def test_random_curves_never_raise_or_emit_non_finite(eng):
    """Seeded fuzz: odd lengths, spacings, scales, signs, bounds, schedules and targets."""
    from curvecast.domain.curve import LrSchedule, ScheduleShape

    rng = np.random.default_rng(7)
    queries = []
    for i in range(24):
        n = int(rng.choice([3, 5, 9, 30, 400]))
        x = np.cumsum(rng.exponential(1.0, n)) * 10 ** rng.uniform(-2, 5)
        if i % 5 == 0:
            x = x - x[0]
        y = [
            rng.normal(0, 1, n) * 10 ** rng.uniform(-6, 6),
            np.exp(rng.normal(0, 5, n)),
            2 + 3 * np.arange(1, n + 1) ** -0.5 + rng.standard_cauchy(n) * 0.01,
            np.linspace(5, -5, n),
        ][i % 4]
        goal = Goal.MINIMIZE if i % 2 else Goal.MAXIMIZE
        lb = float(np.min(y)) - 1.0 if i % 3 == 0 else None
        run = RunInfo()
        if i % 4 == 1:
            total = float(x[-1] * 3 + 1)
            run = RunInfo(total_steps=total, schedule=LrSchedule(ScheduleShape.COSINE, peak_lr=1e-3, warmup_steps=float(x[min(2, n - 1)]), total_steps=total))
        curve = Curve(x=x, y=y, goal=goal, lower_bound=lb)
        xq = np.sort(np.concatenate([[0.0], x[-1] * rng.uniform(0, 50, 4)]))
        queries.append(ForecastQuery(curve=curve, run=run, x_query=xq, target=float(np.median(y)) if i % 3 == 1 else None))
    with np.errstate(all="raise"):  # nothing may leak out of the engine's own errstate
        results = eng.forecast(queries)
    for q, res in zip(queries, results):
        assert isinstance(res, EngineForecast)
        assert np.all(np.isfinite(res.marginals.values)) and np.all(np.isfinite(res.marginals.mean))
        assert all(np.isfinite(v) for v in res.details.values())
        if q.curve.lower_bound is not None:
            assert res.marginals.values.min() >= q.curve.lower_bound


# ---- calibration guards (spread.py, plausible draws, fallback, planned cool-downs, LR-law holdout) ------
def test_short_flat_prefix_then_big_drop_is_not_a_catastrophic_miss(eng):
    """A clipped law used to pile samples on one value: zero-width tails and log-densities of -1e9."""
    x = np.arange(1.0, 6.0)
    y = np.array([2.216, 2.200, 2.184, 2.189, 2.166])
    xq = np.array([25.0, 51.0])
    res = _one(eng, _query(x, y, xq, lower_bound=0.0))
    truth = np.array([1.94, 1.73])  # the run kept learning: far below anything the prefix suggests
    scale = float(np.ptp(y))
    assert np.all(res.marginals.log_pdf(truth) + np.log(scale) > -10.0)
    # and the outer quantiles are distinct (no collapsed tail)
    assert np.all(np.diff(res.marginals.values[:, [0, 1, -2, -1]], axis=1) > 0)


def test_accuracy_jump_after_plateau_has_finite_honest_density(eng):
    x = np.array([45.0, 64.0, 91.0, 128.0, 181.0, 256.0])
    acc = np.array([0.2242, 0.2316, 0.2356, 0.2552, 0.2624, 0.2724])
    res = _one(eng, _query(x, acc, [1024.0, 1620.0], goal=Goal.MAXIMIZE, lower_bound=0.0, upper_bound=1.0))
    lp = res.marginals.log_pdf(np.array([0.7328, 0.8145]))
    assert np.all(lp > -15.0)


def test_wide_component_keeps_median_and_adds_tails():
    from curvecast.engines.analytic.spread import WIDE_WEIGHT, with_wide_component

    rng = np.random.default_rng(0)
    s = rng.normal(0.0, 0.01, (1000, 3))
    out = with_wide_component(s, 0.0, 0.1, np.array([1.0, 2.0, 10.0]))
    assert len(out) - len(s) == pytest.approx(WIDE_WEIGHT * len(out), abs=1)
    assert np.allclose(np.median(out, axis=0), np.median(s, axis=0), atol=0.002)
    q999 = np.quantile(out, 0.999, axis=0)
    assert np.all(q999 > 5 * np.quantile(s, 0.999, axis=0))
    assert q999[2] > q999[0]  # wider further out


def test_implausible_parameter_draws_are_replaced():
    from curvecast.engines.analytic.fit import fit_all, make_problem
    from curvecast.engines.analytic.prep import prepare

    x = np.arange(1, 41, dtype=float)
    y = _power(x * 10) + np.random.default_rng(4).normal(0, 0.005, len(x))
    pb = make_problem(prepare(Curve(x=x, y=y)))
    fit = next(f for f in fit_all(pb, ("pow3",))[0] if f.name == "pow3")
    draws = np.repeat(fit.params[None], 4, axis=0)
    draws[1, 0] += 5.0  # asymptote far off: misses every observed point
    draws[2, 2] += 1e-4  # a negligible change: kept
    out = engine_mod._plausible(fit, draws, pb, np.random.default_rng(0))
    assert not np.any(np.all(out == draws[1], axis=1))
    assert np.array_equal(out[2], draws[2]) and np.array_equal(out[0], draws[0])


def test_short_curve_fallback_follows_latest_slope(eng):
    x = np.array([1.0, 2.0, 3.0])
    res = _one(eng, _query(x, [4.00, 3.69, 3.56], [6.0], lower_bound=0.0))
    med = float(res.marginals.quantile(0.5)[0])
    assert med < 3.56  # keeps improving, at the latest (slower) pace rather than the first drop's
    assert med > 3.56 - (3.69 - 3.56) / np.log(1.5) * np.log(2.0)
    # a stuck run is forecast to stay put, but may still start learning (the spread says so)
    stuck = _one(eng, _query(x, [4.85, 4.85, 4.85], [6.0], lower_bound=0.0))
    assert abs(float(stuck.marginals.quantile(0.5)[0]) - 4.85) < 0.02  # 0.4% of the level
    assert stuck.marginals.cdf(np.array([4.7]))[0] > 0.01


def test_planned_cooldown_after_the_cutoff_lowers_the_forecast(eng):
    from curvecast.domain.curve import LrSchedule, ScheduleShape

    x = np.linspace(1e9, 8e9, 6)
    y = 1.8 + 2.0 * (x / 1e9) ** -1.0
    xq = np.array([9e9, 1e10])
    sched = LrSchedule(ScheduleShape.WSD, peak_lr=1e-3, final_lr=0.0, warmup_steps=1e8, total_steps=1e10, decay_start=9.2e9)
    kw = dict(lower_bound=0.0, x_kind=XKind.TOKENS)
    plain = _one(eng, _query(x, y, xq, **kw))
    cooled = _one(eng, _query(x, y, xq, run=RunInfo(total_steps=1e10, schedule=sched), **kw))
    assert cooled.marginals.quantile(0.5)[-1] < plain.marginals.quantile(0.5)[-1] - 0.01
    assert cooled.marginals.quantile(0.05)[-1] < plain.marginals.quantile(0.05)[-1]
    # the cool-down has not started by the first queried x -> no change there
    assert abs(cooled.marginals.quantile(0.5)[0] - plain.marginals.quantile(0.5)[0]) < 0.01


def test_planned_lr_drop_is_in_peak_units():
    from curvecast.domain.curve import LrSchedule, ScheduleShape
    from curvecast.engines.analytic.spread import planned_lr_drop

    cos = LrSchedule(ScheduleShape.COSINE, peak_lr=2.0, final_lr=0.0, warmup_steps=0.0, total_steps=100.0)
    d = planned_lr_drop(cos, 50.0, np.array([40.0, 50.0, 100.0]))
    assert d[0] == 0.0 and d[1] == 0.0 and d[2] == pytest.approx(0.5, abs=1e-6)


def test_lr_law_holdout_growth_flags_an_unidentified_annealing_strength():
    from curvecast.engines.analytic import lr_engine
    from curvecast.engines.analytic.lr_laws import features

    total = 4000
    t = np.arange(total + 1)
    lr = np.where(t < 2500, 1.0, np.clip((total - t) / (total - 2500), 0.0, 1.0))  # decays after the holdout cut
    f = features(lr)
    steps = np.arange(100, 3001, 100)
    smooth = 2.0 + 3.0 * f.s1[steps] ** -0.5 - lr_engine.TISSUE_PRIOR.center * f.s2[steps]  # as the prior expects
    # a strong drop once the LR decays, which the early part of the curve cannot know about
    annealed = smooth - 0.3 * f.s2[steps] / f.s2[steps].max()
    with np.errstate(all="ignore"):  # as inside the engine
        g_smooth = lr_engine._holdout_growth(f, steps, smooth)
        g_annealed = lr_engine._holdout_growth(f, steps, annealed)
        g_short = lr_engine._holdout_growth(f, steps[:6], smooth[:6])
    assert 0.0 <= g_smooth < g_annealed
    assert g_short == 0.0  # too short to split


# ---- the fast paths give bit-identical answers to the plain algorithms they replace ------------------
def _reference_holdout_stats(pred, pb):
    """The one-family-at-a-time holdout statistics the fused version must reproduce exactly."""
    if len(pb.masks) < 2:
        return None, 0.0
    errs, rates = [], []
    for k in range(1, len(pb.masks)):
        out = pb.masks[k] == 0
        e = pred[k, out] - pb.z[out]
        rms = float(np.sqrt(np.mean(e * e)))
        errs.append(rms)
        noise2 = float(np.mean(pb.noise_sd[out] ** 2))
        horizon = float(np.mean(np.log(pb.u[out] / pb.cuts[k])))
        rates.append(np.sqrt(max(rms * rms - noise2, 0.0)) / max(horizon, 1e-3))
    return float(np.mean(errs)), float(np.mean(rates))


def _reference_fit_basis(fam, pb):
    """The one-family-at-a-time fit the fused ``fit_all`` replaced (kept verbatim as the oracle)."""
    from curvecast.engines.analytic.fit import HUBER_K, ZOOM_ROUNDS
    from curvecast.engines.analytic.families import basis_predict

    tiny = 1e-300

    def linear(phi, w):
        z = pb.z
        if fam.pinned:
            psi = phi - 1.0 if pb.pin_start else phi
            a = np.maximum((w * psi * (z - pb.pin_base)).sum(-1) / np.maximum((w * psi * psi).sum(-1), tiny), 0.0)
            return (pb.pin_base - a if pb.pin_start else np.full_like(a, pb.pin_base)), a
        s0, wp = w.sum(-1), w * phi
        s1, s2, sz, szp = wp.sum(-1), (wp * phi).sum(-1), (w * z).sum(-1), (wp * z).sum(-1)
        det = s0 * s2 - s1 * s1
        ok = np.abs(det) > 1e-12 * np.maximum(s0 * s2, tiny)
        a = np.where(ok, (s0 * szp - s1 * sz) / np.where(ok, det, 1.0), 0.0)
        c = (sz - a * s1) / np.maximum(s0, tiny)
        out = (c < pb.c_lo) | (c > pb.c_hi)
        cc = np.clip(c, pb.c_lo, pb.c_hi)
        a = np.where(out, (szp - cc * s1) / np.maximum(s2, tiny), a)
        neg = a < 0
        return np.where(neg, np.clip(sz / np.maximum(s0, tiny), pb.c_lo, pb.c_hi), cc), np.where(neg, 0.0, a)

    def huber(r, d):
        ar = np.abs(r)
        return np.where(ar <= d, 0.5 * r * r, d * (ar - 0.5 * d))

    def irls(phi, delta):
        w0 = pb.masks[:, None, :] / (pb.scale * pb.scale)
        c, a = linear(phi, w0)
        r = (c[..., None] + a[..., None] * phi - pb.z) / pb.scale
        if delta is None:
            best = np.argmin((pb.masks[:, None, :] * r * r).sum(-1), axis=1)
            vals = [np.abs(r[k, best[k]][pb.masks[k] > 0]) for k in range(len(pb.masks))]
            delta = np.array([max(HUBER_K * (1.4826 * float(np.median(v))), 1e-9) for v in vals])
        d = delta[:, None, None]
        w = w0 * np.minimum(1.0, d / np.maximum(np.abs(r), tiny))
        c, a = linear(phi, w)
        r = (c[..., None] + a[..., None] * phi - pb.z) / pb.scale
        return c, a, (pb.masks[:, None, :] * huber(r, d)).sum(-1), delta, w

    K = len(pb.masks)
    grid = fam.grid()
    c, a, obj, delta, w = irls(fam.phi(grid, pb.u)[None], None)
    theta = grid[np.argmin(obj, axis=1)]
    p = fam.n_theta
    base = np.stack(np.meshgrid(*([np.linspace(-1.0, 1.0, 5)] * p), indexing="ij"), axis=-1).reshape(-1, p)
    for shrink in ZOOM_ROUNDS:
        local = np.clip(theta[:, None, :] + base[None] * (fam.step * shrink), np.asarray(fam.lo), np.asarray(fam.hi))
        c, a, obj, _, w = irls(fam.phi(local, pb.u), delta)
        best = np.argmin(obj, axis=1)
        theta = local[np.arange(K), best]
    idx = np.arange(K)
    params = np.column_stack([c[idx, best], a[idx, best], theta])
    return params, w[idx, best][0], basis_predict(fam, params, pb.u)


@pytest.mark.parametrize("case", range(6))
def test_fused_family_fits_equal_the_one_by_one_algorithm(case):
    from curvecast.engines.analytic import fit as fit_mod
    from curvecast.engines.analytic.families import BASIS_FAMILIES
    from curvecast.engines.analytic.prep import prepare

    rng = np.random.default_rng(case)
    n = [12, 30, 60, 200, 7, 45][case]
    x = np.arange(1, n + 1) * 10.0
    if case % 2:  # accuracy with a ceiling: pinned-start log_power
        y = 0.9 - 0.6 * (x / 10) ** -0.5 + rng.normal(0, 0.01, n)
        curve = Curve(x=x, y=y, goal=Goal.MAXIMIZE, lower_bound=0.0, upper_bound=1.0)
    else:
        y = 2 + 3 * (x / 10) ** -rng.uniform(0.2, 0.8) + rng.normal(0, 0.02 * (1 + case), n)
        curve = Curve(x=x, y=y, lower_bound=0.0 if case != 2 else None)
    with np.errstate(all="ignore"):
        pb = fit_mod.make_problem(prepare(curve))
        fused = fit_mod._fit_basis_all(list(BASIS_FAMILIES), pb)
        for fam, got in zip(BASIS_FAMILIES, fused):
            if fam.pinned and pb.pin_base is None:
                assert got is None
                continue
            params, w, pred = _reference_fit_basis(fam, pb)
            assert got is not None and np.array_equal(got.params, params[0]), fam.name
            assert np.array_equal(got.pred, pred)
            cov, rmse = fit_mod._laplace_basis(fam, params[0], w, pred[0], pb, float(np.mean((pb.noise_sd / pb.scale) ** 2)))
            assert np.array_equal(got.cov, cov) and got.rmse == rmse
        preds = np.stack([p.pred for p in fused if p is not None])
        many = fit_mod._holdout_stats_many(preds, pb)
        assert many == [_reference_holdout_stats(p, pb) for p in preds]


def test_prep_shortcuts_equal_plain_numpy():
    from curvecast.engines.analytic.prep import _bin, warmup_end

    rng = np.random.default_rng(3)
    for n in (401, 999, 4321, 20000):
        z = np.cumsum(rng.normal(size=n)) + rng.standard_cauchy(n) * 0.1
        blocks = np.array_split(np.arange(n), 400)
        zb = np.array([np.median(z[b]) for b in blocks])
        assert warmup_end(z) == int(blocks[warmup_end(zb)][0])
        u = np.cumsum(rng.exponential(1.0, n))
        u /= u[-1]
        us, zs, cs = _bin(u, z, 48)
        edges = np.linspace(u[0], u[-7], 43)
        idx = np.clip(np.searchsorted(edges, u[:-6], side="right") - 1, 0, 41)
        groups = [np.flatnonzero(idx == g) for g in range(42) if np.any(idx == g)]
        assert np.array_equal(us[:-6], [np.mean(u[g]) for g in groups])
        assert np.array_equal(zs[:-6], [np.median(z[g]) for g in groups])
        assert np.array_equal(cs[:-6], [len(g) for g in groups])


def test_sorted_median_and_wide_component_match_the_plain_forms():
    from curvecast.engines.analytic.spread import sorted_median, with_wide_component, with_wide_component_sorted

    rng = np.random.default_rng(5)
    for n in (999, 1000):
        s = rng.standard_cauchy((n, 7))
        s[3, 2] = np.nan
        assert np.array_equal(sorted_median(np.sort(s, axis=0)), np.median(s, axis=0), equal_nan=True)
        s[3, 2] = 0.0
        out, srt = with_wide_component_sorted(s, np.sort(s, axis=0), 0.1, 0.5, np.linspace(1, 3, 7))
        assert np.array_equal(out, with_wide_component(s, 0.1, 0.5, np.linspace(1, 3, 7)))
        assert np.array_equal(srt, np.sort(out, axis=0))


@pytest.mark.parametrize("sign,z_target", [(1.0, 1.5), (-1.0, -2.0)])
def test_vapor_steps_to_target_matches_the_plain_bisection(sign, z_target):
    from curvecast.engines.analytic.families import vapor_predict, vapor_steps_to_target

    rng = np.random.default_rng(6)
    params = np.column_stack([rng.normal(1, 0.3, 200), rng.normal(0.2, 0.1, 200), rng.normal(-0.3 * sign, 0.2, 200)])
    params[7] = np.nan
    got = vapor_steps_to_target(params, z_target, sign)
    lo, hi = np.full(200, np.log(1e-3)), np.full(200, np.log(1e6))
    g = lambda lu: vapor_predict(params, np.exp(lu)[:, None], sign)[:, 0] - z_target  # noqa: E731  (the old step)
    with np.errstate(all="ignore"):
        g_lo, g_hi = g(lo), g(hi)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            left = g(mid) <= 0
            hi, lo = np.where(left, mid, hi), np.where(left, lo, mid)
    want = np.where(g_hi > 0, np.inf, np.where(g_lo <= 0, 0.0, np.exp(hi)))
    assert np.array_equal(got, want)
    assert np.isfinite(got).any() and np.isinf(got).any()


# ---- issue 12, item 5: tiny and huge magnitudes -----------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-30, 1e30, 1e290])
@pytest.mark.parametrize("schedule", [False, True], ids=["families", "lr-law"])
def test_tiny_and_huge_magnitudes_fit_like_ordinary_ones(eng, scale, schedule):
    """Values near 1e-300 used to give "vapor fit failed: Eigenvalues did not converge" and medians of
    1e286 x the level (decisions then spoke of a gain of 6.79e+285); near 1e200 an OverflowError."""
    from curvecast.decisions.policy import decide
    from curvecast.domain.curve import LrSchedule, ScheduleShape

    x = np.arange(1, 61) * 10.0
    y = _power(x) + np.random.default_rng(0).normal(0, 0.01, len(x))
    xq = np.array([800.0, 1200.0, 2400.0])
    plan = RunInfo(total_steps=2400.0)
    if schedule:
        plan = RunInfo(total_steps=2400.0, schedule=LrSchedule(ScheduleShape.COSINE, peak_lr=1e-3, warmup_steps=20.0, total_steps=2400.0))
    ref = _one(eng, _query(x, y, xq, lower_bound=0.0, target=2.45, run=plan))
    q = _query(x, y * scale, xq, lower_bound=0.0, target=2.45 * scale, run=plan)
    got = _one(eng, q)
    assert got.warnings == ref.warnings
    assert ("lr_law" in got.details) == ("lr_law" in ref.details) == schedule
    # the same answer up to Monte Carlo error (the draws are keyed by the values, which differ)
    central, outer = [0.25, 0.5, 0.75], [0.05, 0.95]
    np.testing.assert_allclose(got.marginals.quantile(central) / scale, ref.marginals.quantile(central), rtol=0.01)
    np.testing.assert_allclose(got.marginals.quantile(outer) / scale, ref.marginals.quantile(outer), rtol=0.03)
    assert got.details["noise_sd"] / scale == pytest.approx(ref.details["noise_sd"], rel=0.01)
    assert got.details["target_prob_by_horizon"] == pytest.approx(ref.details["target_prob_by_horizon"], abs=0.03)
    rec = decide(q, got.marginals.at(np.array([2])), got.marginals)
    assert abs(rec.expected_relative_improvement) < 0.2


def test_magnitude_normalisation_is_exact_and_leaves_ordinary_curves_alone():
    from curvecast.engines.magnitude import rescale, scale_exponent

    assert scale_exponent(np.array([0.5, 3.0, 70.0])) == 0
    e = scale_exponent(np.array([1e-300, 3e-300]))
    assert 0.5 < np.ldexp(2e-300, e) < 2.0  # a power of two that brings the values to ~1
    q = _query([1.0, 2.0], [1e-300, 2e-300], [3.0], lower_bound=0.0, target=1.5e-300)
    s = rescale(q)
    assert s.query.curve.y[1] == np.ldexp(2e-300, s.exp) and s.query.target == np.ldexp(1.5e-300, s.exp)
    assert s.query.curve.lower_bound == 0.0
    sub = rescale(_query([1.0, 2.0], [1e-319, 3e-319], [3.0]))  # subnormal values: beyond any float factor
    assert sub.exp > 1023 and np.all((sub.query.curve.y > 0.1) & (sub.query.curve.y < 10.0))
    back = sub.restore(EngineForecast(Marginals.from_gaussian(np.array([3.0]), sub.query.curve.y[-1:], np.array([0.1])), "analytic"))
    assert back.marginals.quantile(0.5)[0] == 3e-319
