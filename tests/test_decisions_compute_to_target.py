"""Compute-to-target on synthetic Gaussian marginals."""

import numpy as np
import pytest

from curvecast.decisions.compute_to_target import compute_to_target, decision_grid
from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo
from curvecast.domain.distribution import Marginals


def _query(y, target, goal=Goal.MINIMIZE, total=100.0, run=None, diverged_at=None):
    x = np.arange(1, len(y) + 1, dtype=float) * 10.0
    curve = Curve(x=x, y=np.asarray(y, float), goal=goal, diverged_at=diverged_at)
    return ForecastQuery(curve=curve, run=run or RunInfo(total_steps=total), x_query=np.array([total]),
                         target=target)


def _power_forecast(q, scale=1.0, std=0.02, a=1.0, c=0.5):
    """Loss a*x^-0.5 + c on the decision grid, with constant noise (maximise: negated)."""
    x = decision_grid(q, n=64, extension=4.0)
    mean = a * (x / 10.0) ** -0.5 + c
    if q.curve.goal is Goal.MAXIMIZE:
        mean = -mean
    return Marginals.from_gaussian(x, mean * scale, np.full_like(x, std))


def test_decision_grid_covers_budget_and_extension():
    q = _query([1.0, 0.9, 0.8], target=0.5)
    g = decision_grid(q, n=64, extension=4.0)
    assert len(g) == 64 and np.all(np.diff(g) > 0)
    assert g[0] > 30.0 and np.isclose(g[-1], 400.0)
    assert np.any(np.isclose(g, 100.0))


def test_decision_grid_when_budget_spent():
    q = _query([1.0, 0.9, 0.8], target=0.5, total=20.0)
    g = decision_grid(q, n=8)
    assert g[0] > 30.0 and np.all(np.diff(g) > 0)


def test_probability_is_monotone_even_if_marginals_widen():
    q = _query([1.5, 1.2, 1.1], target=0.9)
    x = decision_grid(q)
    # mean falls then rises; width grows: single-x probabilities go up then down
    mean = 0.95 + 0.2 * np.abs(np.log(x / 150.0))
    m = Marginals.from_gaussian(x, mean, 0.02 + 0.001 * x)
    ctt = compute_to_target(q, m)
    assert np.all(np.diff(ctt.grid_p) >= -1e-12)
    assert ctt.p_within_horizon >= max(ctt.grid_p) - 1e-12
    levels = [s.x for s in ctt.quantiles if s.within_horizon]
    assert levels == sorted(levels)


def test_quantiles_match_gaussian_crossing():
    q = _query([1.6, 1.2, 1.08], target=0.8, run=RunInfo(total_steps=100.0, flops_per_step=2.0,
                                                          cost_per_step=0.5))
    ctt = compute_to_target(q, _power_forecast(q, std=0.01))
    # noiseless crossing: x^-0.5 + 0.5 = 0.8  ->  x/10 = 11.1  -> x = 111
    med = ctt.median()
    assert med.within_horizon and not med.within_budget
    assert abs(med.x - 111.1) < 6.0
    assert ctt.p_within_budget < 0.5 < ctt.p_within_horizon
    assert med.remaining == pytest.approx(med.x - 30.0)
    assert med.remaining_flops == pytest.approx(2.0 * med.remaining)
    assert med.total_cost == pytest.approx(0.5 * med.x)


def test_already_reached():
    q = _query([1.0, 0.6, 0.7], target=0.65)
    ctt = compute_to_target(q, _power_forecast(q))
    assert ctt.already_reached and ctt.p_within_budget == 1.0
    assert ctt.reached_x == 20.0
    assert all(s.remaining == 0.0 and s.within_budget for s in ctt.quantiles)


def test_impossible_target_flagged_not_faked():
    q = _query([1.6, 1.2, 1.08], target=0.1)
    ctt = compute_to_target(q, _power_forecast(q))
    assert ctt.p_within_horizon < 1e-3
    assert all(not s.within_horizon for s in ctt.quantiles)
    assert all(np.isfinite(s.x) and s.x == ctt.horizon_x for s in ctt.quantiles)


def test_maximize_mirrors_minimize():
    qmin = _query([1.6, 1.2, 1.08], target=0.8)
    qmax = _query([-1.6, -1.2, -1.08], target=-0.8, goal=Goal.MAXIMIZE)
    a = compute_to_target(qmin, _power_forecast(qmin))
    b = compute_to_target(qmax, _power_forecast(qmax))
    assert a.p_within_budget == pytest.approx(b.p_within_budget, abs=1e-9)
    assert [s.x for s in a.quantiles] == pytest.approx([s.x for s in b.quantiles])


def test_diverged_run_never_reaches():
    q = _query([1.6, 1.2, 1.08], target=0.8, diverged_at=40.0)
    ctt = compute_to_target(q, _power_forecast(q))
    assert ctt.p_within_budget == 0.0 and ctt.p_within_horizon == 0.0


def test_no_target_gives_none():
    q = _query([1.6, 1.2], target=None)
    assert compute_to_target(q, _power_forecast(q)) is None


def test_vectorised_cdf_matches_marginals_cdf():
    def cdf_at(m, v):  # Marginals.cdf is the vectorised path; cdf_grid the per-row reference
        return m.cdf(v)

    rng = np.random.default_rng(3)
    x = np.arange(1.0, 9.0)
    samples = rng.standard_normal((500, 8)) * np.linspace(0.1, 2.0, 8) + np.linspace(0, 1, 8)
    samples[:, 2] = 0.3  # a degenerate (zero-width) row
    m = Marginals.from_samples(x, samples)
    for v in (-10.0, -1.0, 0.0, 0.3, 0.5, 1.7, 25.0):
        np.testing.assert_allclose(cdf_at(m, v), m.cdf_grid(np.full((8, 1), v))[:, 0], atol=1e-12)
