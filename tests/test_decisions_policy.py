"""Stop recommendations on synthetic marginals."""

import numpy as np
import pytest

from curvecast.decisions.compute_to_target import compute_to_target, decision_grid
from curvecast.decisions.calibration import Recalibration
from curvecast.decisions.policy import Action, decide, divergence_reason, expected_steps_to_go
from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo, StopPolicy
from curvecast.domain.distribution import Marginals


def _query(y, goal=Goal.MINIMIZE, total=100.0, incumbent=None, target=None, policy=None, run=None,
           diverged_at=None):
    x = np.arange(1, len(y) + 1, dtype=float) * 10.0
    curve = Curve(x=x, y=np.asarray(y, float), goal=goal, diverged_at=diverged_at)
    return ForecastQuery(curve=curve, run=run or RunInfo(total_steps=total), x_query=np.array([total]),
                         incumbent=incumbent, target=target, policy=policy or StopPolicy())


def _forecast(q, final_mean, std=0.02, start=None):
    """Linear path from the last value (or ``start``) to ``final_mean`` at the budget, flat after."""
    x = decision_grid(q)
    y0 = q.curve.y[-1] if start is None else start
    frac = np.clip((x - q.curve.last_x) / (q.horizon - q.curve.last_x), 0.0, 1.0)
    grid = Marginals.from_gaussian(x, y0 + frac * (final_mean - y0), np.full_like(x, std))
    final = grid.at(np.flatnonzero(np.isclose(x, q.horizon)))
    return final, grid


def test_unpromising_when_far_from_incumbent():
    q = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.0)
    final, grid = _forecast(q, 1.5)
    r = decide(q, final, grid)
    assert r.action is Action.STOP_UNPROMISING
    assert r.p_beat_incumbent < StopPolicy().min_prob_beat_incumbent
    assert r.threshold == pytest.approx(StopPolicy().min_prob_beat_incumbent)
    assert r.steps_saved == pytest.approx(60.0)
    assert "beats incumbent 1)" in r.reason


def test_continue_when_likely_to_win():
    q = _query([2.0, 1.5, 1.2, 1.1], incumbent=1.0)
    final, grid = _forecast(q, 0.8)
    r = decide(q, final, grid)
    assert r.action is Action.CONTINUE and r.p_beat_incumbent > 0.9
    assert r.expected_improvement == pytest.approx(0.3, abs=0.02)
    assert r.steps_saved == 0.0


def test_already_beating_incumbent_is_probability_one():
    q = _query([2.0, 0.9, 0.95, 0.97], incumbent=1.0)
    final, grid = _forecast(q, 0.97)
    r = decide(q, final, grid)
    assert r.p_beat_incumbent == 1.0


def test_converged_when_flat():
    q = _query([2.0, 1.0, 0.9, 0.9, 0.9], policy=StopPolicy(min_relative_improvement=0.001))
    final, grid = _forecast(q, 0.9 - 1e-5, std=0.001)
    r = decide(q, final, grid)
    assert r.action is Action.STOP_CONVERGED
    assert abs(r.expected_relative_improvement) < 1e-3


def test_maximize_mirrors_minimize():
    qa = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.5)
    qb = _query([-2.0, -1.8, -1.7, -1.65], incumbent=-1.5, goal=Goal.MAXIMIZE)
    fa, ga = _forecast(qa, 1.55, std=0.05)
    fb, gb = _forecast(qb, -1.55, std=0.05)
    ra, rb = decide(qa, fa, ga), decide(qb, fb, gb)
    assert ra.action is rb.action
    assert ra.p_beat_incumbent == pytest.approx(rb.p_beat_incumbent, abs=1e-9)
    assert ra.expected_improvement == pytest.approx(rb.expected_improvement, abs=1e-9)
    assert 0.05 < ra.p_beat_incumbent < 0.5


def test_nan_divergence_overrides_guards():
    q = _query([2.0, 1.8], incumbent=1.0, diverged_at=30.0, policy=StopPolicy(min_points=5))
    r = decide(q, None)
    assert r.action is Action.STOP_DIVERGED and "non-finite" in r.reason


def test_blow_up_detected_but_overfitting_is_not():
    blown = Curve(x=np.arange(1.0, 11.0), y=np.array([2.0, 1.5, 1.2, 1.0, 0.9, 0.95, 1.0, 3.0, 40.0, 1e6]))
    overfit = Curve(x=np.arange(1.0, 11.0), y=np.array([2.0, 1.5, 1.2, 1.0, 0.9, 0.92, 0.95, 1.0, 1.05, 1.1]))
    noisy_flat = Curve(x=np.arange(1.0, 11.0), y=0.69 + 0.01 * np.sin(np.arange(10.0) * 2.3))
    acc_collapse = Curve(x=np.arange(1.0, 9.0), y=np.array([0.1, 0.5, 0.8, 0.85, 0.86, 0.09, 0.1, 0.08]),
                         goal=Goal.MAXIMIZE)
    assert divergence_reason(blown)
    assert not divergence_reason(overfit)
    assert not divergence_reason(noisy_flat)
    assert divergence_reason(acc_collapse)
    # a real TaskSet winner: early spike to 1.3, recovers to 0.55 later
    spike = Curve(x=np.arange(1.0, 6.0), y=np.array([0.701, 1.303, 1.22, 1.165, 1.08]))
    assert not divergence_reason(spike)
    assert divergence_reason(Curve(x=np.arange(1.0, 8.0), y=np.array([0.70, 0.65, 0.60, 0.62, 5.0, 80.0, 1e34])))
    q = ForecastQuery(curve=blown, run=RunInfo(total_steps=50.0), x_query=np.array([50.0]))
    assert decide(q, None).action is Action.STOP_DIVERGED


def test_min_points_and_min_fraction_block_stops():
    final_args = ([2.0, 1.8, 1.7, 1.65], dict(incumbent=1.0))
    q = _query(final_args[0], policy=StopPolicy(min_points=6), **final_args[1])
    r = decide(q, *_forecast(q, 1.5))
    assert r.action is Action.CONTINUE and r.blocked_by == "min_points"
    assert r.would_stop is Action.STOP_UNPROMISING
    q = _query(final_args[0], policy=StopPolicy(min_fraction_observed=0.5), **final_args[1])
    r = decide(q, *_forecast(q, 1.5))
    assert r.action is Action.CONTINUE and r.blocked_by == "min_fraction_observed"


def test_target_reached():
    q = _query([2.0, 1.0, 0.7], target=0.8)
    final, grid = _forecast(q, 0.6)
    ctt = compute_to_target(q, grid)
    r = decide(q, final, grid, ctt)
    assert r.action is Action.TARGET_REACHED and r.steps_saved == 0.0


def test_extend_when_target_beyond_budget():
    q = _query([2.0, 1.6, 1.4], target=0.9, incumbent=0.5)
    x = decision_grid(q)
    grid = Marginals.from_gaussian(x, 1.4 - 0.5 * (x - 30.0) / (160.0 - 30.0), np.full_like(x, 0.02))
    final = grid.at(np.flatnonzero(np.isclose(x, 100.0)))
    ctt = compute_to_target(q, grid)
    r = decide(q, final, grid, ctt, recal_beat=Recalibration())
    assert r.extend and r.extend_to_x == pytest.approx(160.0, rel=0.05)
    assert r.p_target_within_budget < 0.5
    assert "beyond the budget" in r.reason


def test_savings_arithmetic():
    run = RunInfo(total_steps=100.0, flops_per_step=3.0, cost_per_step=0.25)
    q = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.0, run=run)
    r = decide(q, *_forecast(q, 1.5))
    assert r.action.is_stop
    assert r.steps_saved == pytest.approx(60.0)
    assert r.flops_saved == pytest.approx(180.0) and r.cost_saved == pytest.approx(15.0)
    # with a target certainly reached at x=70, the run would only have used 30 more steps
    qt = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.0, target=1.0, run=run)
    x = decision_grid(qt)
    grid = Marginals.from_gaussian(x, np.where(x < 70.0, 1.6, 0.5), np.full_like(x, 1e-3))
    ctt = compute_to_target(qt, grid)
    assert expected_steps_to_go(qt, ctt) == pytest.approx(30.0, abs=1.5)


def test_compute_weight_raises_threshold_early():
    q = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.45)
    final, grid = _forecast(q, 1.5, std=0.05)
    base = decide(q, final, grid)
    assert base.action is Action.CONTINUE
    costly = decide(q, final, grid, compute_weight=1.0)
    assert costly.prob_threshold == pytest.approx(0.6)
    assert costly.action is Action.STOP_UNPROMISING


def test_recalibration_applied():
    q = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.45)
    final, grid = _forecast(q, 1.5, std=0.05)
    squash = Recalibration(kind="platt", a=1.0, b=-4.0)
    r = decide(q, final, grid, recal_beat=squash)
    assert r.p_beat_incumbent < r.p_beat_incumbent_raw
    assert r.action is Action.STOP_UNPROMISING


def test_outputs_finite_without_forecast():
    q = _query([2.0, 1.8, 1.7], incumbent=1.0)
    r = decide(q, None)
    assert r.action is Action.CONTINUE and r.p_beat_incumbent is None
    assert np.isfinite([r.expected_improvement, r.expected_relative_improvement, r.steps_saved]).all()


def test_leader_past_its_best_is_stopped_as_converged_only_when_asked():
    q = _query([2.0, 0.9, 0.95, 0.97], incumbent=1.0)
    final, grid = _forecast(q, 1.1, std=0.02)  # overfitting: expected to get worse
    r = decide(q, final, grid)
    assert r.p_beat_incumbent == 1.0 and r.p_improve_own_best < 0.05 and r.leads
    assert r.action is Action.CONTINUE and "leads" in r.reason  # never kill the leader unasked
    qa = _query([2.0, 0.9, 0.95, 0.97], incumbent=1.0, policy=StopPolicy(min_relative_improvement=1e-3))
    r = decide(qa, final, grid)
    assert r.action is Action.STOP_CONVERGED and "best so far 0.9" in r.reason
    r2 = decide(qa, final, grid, checkpoint_best=False)  # last value 0.97 still leads; its result is at the budget
    assert r2.result == "last_value" and r2.p_beat_incumbent < 0.05


def test_leader_still_improving_continues():
    q = _query([2.0, 1.5, 1.2, 1.0], incumbent=1.1)
    final, grid = _forecast(q, 0.7)
    r = decide(q, final, grid)
    assert r.action is Action.CONTINUE and r.p_improve_own_best > 0.9
