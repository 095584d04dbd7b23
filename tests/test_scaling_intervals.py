"""Predictive intervals, compute-optimal intervals, checkpoint counts and the silent-failure warnings of
curvecast.scaling (issue 14), on synthetic data whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from curvecast.scaling import ScalingPoint, fit_scaling_law
from curvecast.scaling.cancel import Cancelled, CancelToken
from curvecast.scaling.fit import DEFAULT_DROP_EARLY, ScalingFit, _interval_warnings
from curvecast.scaling.laws import FORMS, at_start_values, fit_form

TRUTH = {"E": 1.8172, "A": 477.8, "B": 2143.4, "alpha": 0.3473, "beta": 0.3672}


def _law(N, D, t=TRUTH):
    return t["E"] + t["A"] / N ** t["alpha"] + t["B"] / D ** t["beta"]


def _misspecified(N, D):
    """The Chinchilla law plus a second N term it cannot represent (a slower-decaying size term):
    extrapolation error that a bootstrap over runs cannot see."""
    return _law(N, D) + 40 / N**0.2


def _grid(law, sizes, mults=(5, 10, 20, 40, 80), noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    return [ScalingPoint(float(N), float(m * N), float(law(N, m * N) * np.exp(rng.normal(0, noise))),
                         run_id=f"{N:.3g}-{m}") for N in sizes for m in mults]


def test_predictive_interval_covers_held_out_larger_models_where_the_bootstrap_does_not():
    sizes = np.geomspace(1e7, 1e10, 10)
    pts = _grid(_misspecified, sizes[:8])
    fit = fit_scaling_law(pts, bootstrap=30, seed=1)
    big = [p for p in _grid(_misspecified, sizes[8:], noise=0.0)]
    n, d, y = (np.array([getattr(p, k) for p in big]) for k in ("n_params", "tokens", "loss"))
    mean, blo, bhi = fit.predict(n, d)
    _, plo, phi = fit.predictive(n, d)
    boot_cover = np.mean((y >= blo) & (y <= bhi))
    pred_cover = np.mean((y >= plo) & (y <= phi))
    assert boot_cover < 0.5  # the sampling-error band misses the larger models
    assert pred_cover >= 0.8
    assert np.all(plo <= blo) and np.all(phi >= bhi) and np.all((plo <= mean) & (mean <= phi))
    assert fit.calibration.folds == 3 and fit.calibration.n_heldout > 0 and fit.calibration.kappa > 0
    # the model-error term grows with the distance beyond the data, and is the in-sample floor inside it
    w = [fit.predictive(N, 20 * N) for N in (1e9, 1e10, 1e11)]
    widths = [float(hi[0] / lo[0]) for _, lo, hi in w]
    assert widths[0] < widths[1] < widths[2]
    X = fit._X(1e8, 2e9)
    assert fit.calibration.half_width(X)[0] == pytest.approx(fit.calibration.floor)


def test_compute_optimal_intervals_contain_the_point_estimate():
    fit = fit_scaling_law(_grid(_law, np.geomspace(1e7, 3e9, 8)), bootstrap=20, seed=2)
    n, d, loss = fit.compute_optimal(1e23)
    iv = fit.compute_optimal_interval(1e23)
    for key, v in (("n_params", n), ("tokens", d), ("loss", loss)):
        lo, hi = iv[key]
        assert lo < v < hi, (key, lo, v, hi)
    assert iv["n_params"][1] / iv["n_params"][0] > 1.01  # a real interval, not a point


def test_drop_early_is_counted_and_warned():
    rng = np.random.default_rng(3)
    pts = [ScalingPoint(float(N), float(f * 40 * N), float(_law(N, f * 40 * N) * np.exp(rng.normal(0, 0.003))),
                        run_id=f"r{i}") for i, N in enumerate(np.geomspace(3e7, 3e9, 6)) for f in np.linspace(0.1, 1, 10)]
    fit = fit_scaling_law(pts, bootstrap=0, drop_early_fraction=0.25)
    kept = sum(1 for p in pts if p.tokens >= 0.25 * 40 * p.n_params * (1 - 1e-9))
    assert fit.n_points == kept and fit.n_dropped == len(pts) - kept > 0
    assert fit.drop_early_fraction == 0.25
    assert any(f"dropped {fit.n_dropped} of {len(pts)} checkpoints below 0.25" in w for w in fit.warnings)
    none = fit_scaling_law(pts, bootstrap=0, drop_early_fraction=0.0)
    assert none.n_dropped == 0 and not any("dropped" in w for w in none.warnings)


def test_irreducible_loss_at_its_lower_bound_is_warned():
    # a pure power law: no irreducible loss, so log E is driven to its bound
    law = lambda N, D: 480 / N**0.35 + 2100 / D**0.37  # noqa: E731
    fit = fit_scaling_law(_grid(law, np.geomspace(1e7, 1e9, 6), noise=0.001), bootstrap=0)
    assert fit.params["E"] < 1e-6
    assert any(w.startswith("E at its lower bound") for w in fit.warnings), fit.warnings


def test_dead_term_at_a_start_value_is_warned():
    # the loss does not depend on N: at large N the A/N^alpha term dies and alpha stays at its start, 2.0
    law = lambda N, D: 1.8 + 2100 / D**0.37  # noqa: E731
    fit = fit_scaling_law(_grid(law, np.geomspace(1e10, 1e12, 6), noise=0.0005), bootstrap=0)
    assert not at_start_values(FORMS["chinchilla"], fit.theta)  # restarted off the start value it was left at
    dead = [w for w in fit.warnings if "A/N^alpha term is at most" in w]
    assert dead and "not identified" in dead[0], fit.warnings
    # at smaller N the same data drive alpha to 0: the term becomes a constant that absorbs E
    flat = fit_scaling_law(_grid(law, np.geomspace(1e9, 1e11, 6), noise=0.0005), bootstrap=0)
    assert any(w.startswith("alpha = 0: the A/N^alpha term is a constant") for w in flat.warnings), flat.warnings
    healthy = fit_scaling_law(_grid(_law, np.geomspace(1e7, 1e9, 6)), bootstrap=0)
    assert not any("term is at most" in w or "is a constant" in w for w in healthy.warnings)


def test_too_few_sizes_warns_twice():
    fit = fit_scaling_law(_grid(_law, [1e8, 1e9], mults=(2, 5, 10, 20, 40, 80)), bootstrap=0)
    assert any("only 2 distinct model sizes" in w for w in fit.warnings)
    assert any("too few to measure out-of-sample error" in w for w in fit.warnings)
    assert fit.calibration.folds == 0


def test_influential_outliers_are_named_with_their_effect():
    pts = _grid(_law, np.geomspace(1e7, 1e9, 8))
    bad = [3, 11, 19, 27, 35]
    for i in bad:
        p = pts[i]
        pts[i] = ScalingPoint(p.n_params, p.tokens, p.loss * 1.5, run_id=p.run_id)
    fit = fit_scaling_law(pts, bootstrap=0)
    msg = [w for w in fit.warnings if "outlying point(s)" in w]
    assert msg, fit.warnings
    assert msg[0].startswith("5 outlying point(s)")
    for i in bad:
        assert f"points[{i}]" in msg[0]
    assert "changes" in msg[0] and "-fold" in msg[0]
    clean = fit_scaling_law(_grid(_law, np.geomspace(1e7, 1e9, 8)), bootstrap=0)
    assert not any("outlying" in w for w in clean.warnings)


def test_bootstrap_over_two_runs_is_flagged():
    rng = np.random.default_rng(5)
    pts = [ScalingPoint(float(N), float(f * 20 * N), float(_law(N, f * 20 * N) * np.exp(rng.normal(0, 0.003))), run_id=f"r{i}")
           for i, N in enumerate((1e8, 1e9)) for f in np.linspace(0.3, 1, 12)]
    fit = fit_scaling_law(pts, bootstrap=20, drop_early_fraction=0.0)
    assert any(w.startswith("only 2 runs: a bootstrap over so few runs") for w in fit.warnings), fit.warnings


def test_zero_width_and_outside_band_warnings():
    params = {"E": 1.8, "A": 400.0, "B": 2000.0}
    iv = {"E": (1.8, 1.8), "A": (100.0, 300.0), "B": (1500.0, 2500.0)}
    w = _interval_warnings(params, iv)
    assert any(m.startswith("zero-width bootstrap interval for E") for m in w)
    assert any("point estimate outside its own 95% bootstrap interval for A" in m for m in w)
    assert not any("for B" in m for m in w)


def test_prediction_outside_its_bootstrap_band_is_warned_and_the_band_widened():
    theta = np.array([6.2, 7.7, 0.6, 0.35, 0.37])
    boot = np.tile(theta + np.array([0.0, 0.0, 0.3, 0.0, 0.0]), (10, 1))  # every replicate has a larger E
    boot[:, 2] += np.linspace(0, 0.01, 10)
    fit = ScalingFit("chinchilla", {}, {}, 0.0, 0, 0, (), theta=theta, boot_theta=boot)
    mean, lo, hi = fit.predict(1e9, 2e10)
    assert lo[0] == pytest.approx(mean[0])  # widened down to the point estimate
    msgs = fit.band_warnings([1e9, 1e10], [2e10, 2e11])
    assert len(msgs) == 2 and "lies outside its bootstrap band" in msgs[0]


class _CancelAfter(CancelToken):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def check(self) -> None:
        super().check()
        if self.checks >= self.n:
            self.cancel("shutdown", "stop")
            super().check()


def test_calibration_and_diagnostics_check_the_cancel_token():
    pts = _grid(_law, np.geomspace(1e7, 1e9, 8))
    pts[5] = ScalingPoint(pts[5].n_params, pts[5].tokens, pts[5].loss * 1.5, run_id=pts[5].run_id)
    counter = CancelToken()
    fit_scaling_law(pts, bootstrap=0, cancel=counter)
    total = counter.checks
    main = CancelToken()
    from curvecast.scaling.laws import FitStats

    stats = FitStats()
    fit_scaling_law(pts, bootstrap=0, cancel=main, stats=stats)
    assert total > stats.main_evaluations + 10  # the calibration folds and the outlier refit are checked
    with pytest.raises(Cancelled):
        fit_scaling_law(pts, bootstrap=0, cancel=_CancelAfter(total - 3))


def test_response_carries_predictive_and_compute_optimal_intervals():
    from curvecast.server import converters

    fit = fit_scaling_law(_grid(_law, np.geomspace(1e7, 3e9, 8)), bootstrap=10, seed=3)
    resp = converters.scaling_response(fit, np.array([[7e10, 1.4e12]]), np.array([1e23]), "rid")
    p = resp.predictions[0]
    assert p.predictive_lower95 <= p.lower95 <= p.loss <= p.upper95 <= p.predictive_upper95
    assert p.predictive_upper95 > p.predictive_lower95
    c = resp.compute_optimal[0]
    assert c.n_params_lower95 < c.n_params < c.n_params_upper95
    assert c.tokens_lower95 < c.tokens < c.tokens_upper95
    assert c.loss_lower95 < c.loss < c.loss_upper95
    assert resp.calibration_folds == 3 and resp.calibration_heldout_points > 0 and resp.calibration_kappa >= 0
    assert resp.drop_early_fraction == pytest.approx(DEFAULT_DROP_EARLY) and resp.n_points_dropped == 0


def test_estimator_choice_keeps_approach3_on_a_well_specified_law():
    fit = fit_scaling_law(_grid(_law, np.geomspace(1e7, 3e9, 8)), bootstrap=0)
    assert fit.huber_delta == pytest.approx(1e-3)
    assert not any(w.startswith("estimator:") for w in fit.warnings)


def test_estimator_choice_on_porian_predicts_the_held_out_sizes_better_if_data_present():
    import os
    from pathlib import Path

    env = os.environ.get("CURVECAST_DATA")
    path = (Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data") / "porian" / "isoflop_N_D_loss.csv"
    if not path.exists():
        pytest.skip(f"{path} not found (set CURVECAST_DATA)")
    import pandas as pd

    from curvecast.scaling.laws import FORMS, fit_form, log_pred

    df = pd.read_csv(path)
    g = df[(df.source_file == "summary_df_owt2") & (df.config_idx == 0)]
    sizes = np.sort(g.N.unique())
    train, test = g[~g.N.isin(sizes[-2:])], g[g.N.isin(sizes[-2:])]
    pts = [ScalingPoint(float(r.N), float(r.D_tokens), float(r.loss)) for r in train.itertuples()]
    fit = fit_scaling_law(pts, bootstrap=0)
    assert fit.huber_delta == 1.0 and any(w.startswith("estimator: Huber delta 1") for w in fit.warnings)
    X = np.column_stack([np.log(train.N), np.log(train.D_tokens)])
    a3, _ = fit_form(FORMS["chinchilla"], X, np.log(train.loss.to_numpy()))
    Xt = np.column_stack([np.log(test.N), np.log(test.D_tokens)])
    y = test.loss.to_numpy()
    err_a3 = np.mean(np.abs(np.exp(log_pred(FORMS["chinchilla"], a3[None], Xt)[0]) - y) / y)
    err = np.mean(np.abs(fit.predict(test.N.to_numpy(), test.D_tokens.to_numpy())[0] - y) / y)
    assert err < err_a3


def test_no_answer_on_a_start_value_unless_it_is_the_optimum():
    law = FORMS["chinchilla"]
    # a flat coordinate (the N term dead at every point) left at its start: restarts move it off
    lN = np.log(np.geomspace(1e10, 1e12, 6)).repeat(5)
    lD = lN + np.log(np.tile([5.0, 10, 20, 40, 80], 6))
    X = np.column_stack([lN, lD])
    ly = np.log(1.8 + 2100 / np.exp(lD) ** 0.37)
    theta, _ = fit_form(law, X, ly)
    assert not at_start_values(law, theta), theta
    # an exponent whose optimum IS a start value (alpha = 0.5, noise-free): the restarts come back to it
    lN = np.log(np.geomspace(1e7, 1e9, 6)).repeat(5)
    lD = lN + np.log(np.tile([5.0, 10, 20, 40, 80], 6))
    X = np.column_stack([lN, lD])
    ly = np.log(1.8 + 480 / np.exp(lN) ** 0.5 + 2100 / np.exp(lD) ** 0.37)
    theta, _ = fit_form(law, X, ly)
    assert theta[3] == pytest.approx(0.5, abs=2e-3) and theta[4] == pytest.approx(0.37, abs=2e-3)
    # and the answer does not depend on where the grid starts: shifted starts give the same optimum
    shifted = law.__class__(law.name, law.param_names, tuple(tuple(v + 0.13 for v in g) for g in law.grid),
                            law.lo, law.hi, law.terms, law.needs)
    theta2, _ = fit_form(shifted, X, ly)
    assert np.allclose(theta2[3:], theta[3:], atol=2e-3)


def test_weights_and_huber_delta_enter_the_fit():
    pts = _grid(_law, np.geomspace(1e7, 1e9, 6))
    bad = ScalingPoint(3e8, 6e9, 9.0, run_id="bad")
    heavy = fit_scaling_law(pts + [bad], bootstrap=0, huber_delta=1.0)
    ignored = fit_scaling_law(pts + [ScalingPoint(bad.n_params, bad.tokens, bad.loss, "bad", weight=0.0)],
                              bootstrap=0, huber_delta=1.0)
    clean = fit_scaling_law(pts, bootstrap=0, huber_delta=1.0)
    assert heavy.huber_delta == 1.0 and not any(w.startswith("estimator:") for w in heavy.warnings)
    assert ignored.dropped == {"zero_weight": 1} and ignored.n_dropped == 1 and ignored.n_points == len(pts)
    assert any("weight 0" in w for w in ignored.warnings)
    assert ignored.params == pytest.approx(clean.params, rel=1e-6)
    assert abs(heavy.params["E"] - clean.params["E"]) > 1e-3  # least squares: the outlier pulls the fit
    half = fit_scaling_law([ScalingPoint(p.n_params, p.tokens, p.loss, p.run_id, weight=2.0) for p in pts],
                           bootstrap=0, huber_delta=1.0)  # a common scale of the weights changes nothing
    assert half.params == pytest.approx(clean.params, rel=1e-4)
    from curvecast.domain.errors import InvalidRequest

    for kwargs, field in (({"huber_delta": 0.0}, "huber_delta"), ({"drop_early_fraction": 1.0}, "drop_early_fraction")):
        with pytest.raises(InvalidRequest) as err:
            fit_scaling_law(pts, bootstrap=0, **kwargs)
        assert err.value.violations[0].field == field
    with pytest.raises(InvalidRequest) as err:
        fit_scaling_law(pts[:3] + [ScalingPoint(1e8, 1e9, 3.0, weight=-1.0)] + pts[3:], bootstrap=0)
    assert err.value.violations[0].field == "points[3].weight"


def test_kaplan_budgets_get_losses_with_intervals():
    from curvecast.server import converters

    law = lambda N, D: 1.7 + (3e8 / (6 * N * D)) ** 0.05 * 4  # noqa: E731
    pts = _grid(law, np.geomspace(1e7, 1e9, 8), noise=0.004)
    fit = fit_scaling_law(pts, form="kaplan", bootstrap=10)
    mean, lo, hi, plo, phi = fit.loss_at_compute([1e20, 1e23])
    truth = 1.7 + (3e8 / np.array([1e20, 1e23])) ** 0.05 * 4
    assert np.all(plo <= lo) and np.all(lo <= mean) and np.all(mean <= hi) and np.all(hi <= phi)
    assert plo[0] <= truth[0] <= phi[0] and np.allclose(mean, truth, rtol=0.02)
    assert phi[1] / plo[1] > phi[0] / plo[0]  # 200x beyond the data: the model-error term widens it
    resp = converters.scaling_response(fit, np.zeros((0, 2)), np.array([1e20, 1e23]), "")
    assert [c.flops for c in resp.compute_losses] == [1e20, 1e23] and not resp.compute_optimal
    assert resp.compute_losses[1].predictive_upper95 > resp.compute_losses[1].loss
    with pytest.raises(Exception):
        fit.compute_optimal(1e23)


def _isoflop_points(budgets=np.logspace(18, 21, 4), noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    pts = []
    for C in budgets:
        for N in np.geomspace(1e7, 1e10, 16):
            D = C / (6 * N)
            if 2 * N <= D:  # sensible token multipliers only; the minimum lies inside
                pts.append(ScalingPoint(float(N), float(D), float(_law(N, D) * np.exp(rng.normal(0, noise))),
                                        run_id=f"{C:.2g}-{N:.3g}"))
    return pts


def test_isoflop_approach2_recovers_the_compute_optimal_exponent():
    from curvecast.server import converters

    fit = fit_scaling_law(_isoflop_points(), bootstrap=0, isoflop=True)
    iso = fit.isoflop
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])  # N_opt ~ C^(beta / (alpha + beta))
    assert len(iso.profiles) == 4 and all(p.used for p in iso.profiles)
    lo, hi = iso.exponent_interval
    assert lo < iso.exponent < hi and abs(iso.exponent - a_true) < 0.05
    o = iso.compute_optimal(1e20)
    n3, _, _ = fit.compute_optimal(1e20)  # Approach 3 on the same points agrees within a factor 1.5
    assert o["n_params_lower95"] < o["n_params"] < o["n_params_upper95"] and 1 / 1.5 < o["n_params"] / n3 < 1.5
    assert 6 * o["n_params"] * o["tokens"] == pytest.approx(1e20)
    resp = converters.scaling_response(fit, np.zeros((0, 2)), np.array([1e20, 1e24]), "")
    assert len(resp.isoflop.budgets) == 4 and len(resp.isoflop.compute_optimal) == 2
    assert resp.isoflop.exponent == pytest.approx(iso.exponent)
    assert any(w.startswith("isoflop at C=1e+24: beyond the profiles") for w in resp.warnings)
    # two profiles: a line through two points has no interval, and says so
    two = fit_scaling_law(_isoflop_points(np.logspace(19, 20, 2)), bootstrap=0, isoflop=True)
    assert two.isoflop.exponent_interval[0] == two.isoflop.exponent_interval[1]
    assert any("zero-width" in w for w in two.warnings)
    assert fit_scaling_law(_isoflop_points(), bootstrap=0).isoflop is None


def test_noise_floor_counts_points_by_their_weight_in_the_fit():
    from curvecast.scaling.calibrate import _weighted_quantile

    v = np.array([0.01, 0.02, 0.03, 5.0, 6.0])
    assert _weighted_quantile(v, 0.95, None) == pytest.approx(np.quantile(v, 0.95))
    assert _weighted_quantile(v, 0.95, np.ones(5)) == pytest.approx(np.quantile(v, 0.95))
    # the two large residuals belong to points the fit all but ignores: they do not set the floor
    assert _weighted_quantile(v, 0.95, np.array([1.0, 1.0, 1.0, 1e-6, 1e-6])) == pytest.approx(0.03)
