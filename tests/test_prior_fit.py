"""The curve statistics measure what they claim, and the fit recovers known prior hyperparameters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from training import fit_prior as F
from training import prior2 as P2
from training.curve_stats import Curve, curve_stats, stats_table, summarise


def _power_law(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(1.0, n + 1)
    return x, 2.0 + 3.0 * x**-0.5


def test_noise_level_and_tails_are_measured():
    rng = np.random.default_rng(0)
    x, y = _power_law()
    gauss = [curve_stats(Curve(x, y * np.exp(0.01 * rng.normal(size=len(x))))) for _ in range(20)]
    heavy = [curve_stats(Curve(x, y * np.exp(0.01 * rng.standard_t(2.5, size=len(x))))) for _ in range(20)]
    assert abs(np.median([s["noise"] for s in gauss]) - np.log10(0.01)) < 0.15
    assert np.median([s["tail"] for s in heavy]) > np.median([s["tail"] for s in gauss]) + 0.5
    assert 2.3 < np.median([s["tail"] for s in gauss]) < 3.5  # Gaussian q95/q50 = 2.9


def test_autocorrelation_and_loss_dependent_noise_are_measured():
    rng = np.random.default_rng(1)
    x, y = _power_law()
    e = np.zeros(len(x))
    for k in range(1, len(x)):
        e[k] = 0.8 * e[k - 1] + 0.6 * rng.normal()
    white = curve_stats(Curve(x, y * np.exp(0.01 * rng.normal(size=len(x)))))
    ar = curve_stats(Curve(x, y * np.exp(0.01 * e)))
    assert ar["lag1"] > white["lag1"] + 0.3
    falling = 10.0 * x**-0.8
    prop = curve_stats(Curve(x, falling * np.exp(0.02 * rng.normal(size=len(x)))))
    shrinking = curve_stats(Curve(x, falling * np.exp(0.02 * (falling / falling[0]) * rng.normal(size=len(x)))))
    # proportional noise reads about 1 (the smooth's error at the steep start biases it up a little)
    assert 0.7 < prop["kappa"] < 1.5 and shrinking["kappa"] > prop["kappa"] + 0.6


def test_shape_overfit_and_cooldown_statistics():
    x, y = _power_law()
    base = curve_stats(Curve(x, y))
    assert base["drop_decade"] > 0 and base["curvature"] > 0 and base["overfit"] == 0.0
    u_shape = y + 1e-5 * np.maximum(x - 250, 0) ** 2
    assert curve_stats(Curve(x, u_shape))["overfit"] == 1.0
    lr = np.where(x < 400, 1.0, np.maximum(1.0 - (x - 400) / 100, 0.01))
    cooled = y * np.where(x < 400, 1.0, 1.0 - 0.05 * (1.0 - lr))
    assert 0.02 < curve_stats(Curve(x, cooled, lr))["cooldown"] < 0.08
    assert np.isnan(curve_stats(Curve(x, y, np.ones_like(x)))["cooldown"])  # constant LR: no cooldown


def test_short_curves_give_shape_but_no_noise_statistics():
    s = curve_stats(Curve(np.arange(1.0, 8), np.linspace(3, 2, 7)))
    assert np.isnan(s["noise"]) and np.isfinite(s["drop_decade"])
    assert all(np.isnan(v) for v in curve_stats(Curve(np.arange(1.0, 4), np.ones(3))).values())


def _synthetic_real(p: P2.Prior2Params, n: int = 160, length: int = 150) -> dict[str, list[Curve]]:
    return {"synth": F.prior2_draws(p, np.full(n, length), seed=123)}


def test_fit_recovers_a_known_noise_level_from_prior_draws():
    truth = replace(P2.Prior2Params(), noise_log_mu=-3.0)
    grids = {"noise_log_mu": list(np.linspace(-6.0, -1.0, 11))}
    fitted, d = F.fit(_synthetic_real(truth), P2.Prior2Params(), names=("noise_log_mu",), grids=grids, sweeps=1)
    assert abs(fitted.noise_log_mu - truth.noise_log_mu) <= 0.5
    assert fitted.noise_log_mu != P2.Prior2Params().noise_log_mu  # it moved off the -4.5 default


def test_fit_recovers_a_known_overfitting_rate():
    truth = replace(P2.Prior2Params(), overfit_prob=0.4)
    grids = {"overfit_prob": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
    fitted, _ = F.fit(_synthetic_real(truth, n=300), P2.Prior2Params(), names=("overfit_prob",), grids=grids, sweeps=1)
    assert abs(fitted.overfit_prob - 0.4) <= 0.1 + 1e-9  # within one grid step


def test_discrepancy_is_zero_for_identical_summaries_and_grows_with_distance():
    real = _synthetic_real(P2.Prior2Params(), n=60)
    summ = summarise(stats_table(real["synth"]))
    scales = F.pooled_scales(real)
    assert F.discrepancy(summ, summ, scales) == 0.0
    far = summarise(stats_table(F.prior2_draws(replace(P2.Prior2Params(), noise_log_mu=-1.0), np.full(60, 150), 1)))
    near = summarise(stats_table(F.prior2_draws(P2.Prior2Params(), np.full(60, 150), 1)))
    assert F.discrepancy(far, summ, scales) > F.discrepancy(near, summ, scales)
