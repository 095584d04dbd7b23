"""The scaling-law baselines of bench/scaling.py recover a known law and agree with their definitions."""

from __future__ import annotations

import numpy as np
from scipy import optimize

from bench.scaling import (
    BESIROGLU,
    approach3_fit,
    approach3_grid,
    approach3_objective,
    baseline_are,
    besiroglu_points,
    comparison,
    curve_fit_raw,
    drop_early,
    law_predict,
)
from curvecast.scaling import ScalingPoint


def _design(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts = besiroglu_points(seed)
    n = np.array([p.n_params for p in pts])
    d = np.array([p.tokens for p in pts])
    clean = law_predict(BESIROGLU, n, d)
    y = clean * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(n))) if noise else clean
    return n, d, y


def test_grid_is_the_standard_4500_points():
    g = approach3_grid()
    assert g.shape == (4500, 5)
    assert set(np.unique(g[:, 0])) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert set(np.unique(g[:, 2])) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(np.unique(g[:, 3])) == {0.0, 0.5, 1.0, 1.5, 2.0}


def test_approach3_gradient_is_exact():
    n, d, y = _design(0.01)
    ln, ld, ll = np.log(n), np.log(d), np.log(y)
    for p in (np.array([6.0, 7.5, 0.6, 0.35, 0.37]), np.array([10.0, 5.0, -0.5, 0.8, 0.2])):
        f = lambda q: approach3_objective(q, ln, ld, ll)[0]  # noqa: E731
        g = lambda q: approach3_objective(q, ln, ld, ll)[1]  # noqa: E731
        assert optimize.check_grad(f, g, p) < 1e-6 * max(1.0, np.linalg.norm(g(p)))


def test_approach3_recovers_a_known_law():
    n, d, y = _design(0.0)
    fit = approach3_fit(n, d, y, starts=16)
    for k, v in BESIROGLU.items():
        assert abs(fit[k] / v - 1.0) < 0.02, (k, fit[k], v)
    assert fit["objective"] < 1e-8


def test_curve_fit_recovers_a_known_law_and_differs_from_approach3_under_noise():
    n, d, y = _design(0.0)
    fit = curve_fit_raw(n, d, y)
    for k, v in BESIROGLU.items():
        assert abs(fit[k] / v - 1.0) < 0.02, (k, fit[k], v)
    n, d, y = _design(0.02, seed=3)
    a3, ls = approach3_fit(n, d, y, starts=16), curve_fit_raw(n, d, y)
    assert abs(a3["beta"] - ls["beta"]) > 1e-4  # different objectives, different optima


def test_baseline_are_and_drop_early():
    params = dict(BESIROGLU)
    pts = [ScalingPoint(1e9, 2e10, float(law_predict(params, 1e9, 2e10)) * 1.1)]
    assert abs(baseline_are(params, pts) - 0.1 / 1.1) < 1e-12
    run = [ScalingPoint(1e8, t, 3.0, run_id="r") for t in (1e9, 5e9, 1e10)] + [ScalingPoint(2e8, 4e9, 3.0)]
    kept = drop_early(run, 0.25)
    assert [p.tokens for p in kept] == [5e9, 1e10, 4e9]  # single-point runs are never dropped


def test_comparison_ratio_uses_the_best_baseline():
    out = {"porian": [{"chinchilla_are_pct": 2.0, "gadre_are_pct": 4.0, "approach3_are_pct": 4.0, "curve_fit_are_pct": 8.0}]}
    (row,) = comparison(out)
    assert row["best_baseline"] == "approach3" and row["chinchilla_ratio"] == 0.5 and row["gadre_ratio"] == 1.0
