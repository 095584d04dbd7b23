"""The stop policy's defects of issue 13: what "result" means, the leader, and honest reason strings."""

import re

import numpy as np
import pytest

from curvecast.decisions.calibration import Recalibration
from curvecast.decisions.compute_to_target import decision_grid
from curvecast.decisions.policy import Action, _cmp, decide, expected_gain
from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo, StopPolicy
from curvecast.domain.distribution import Marginals


def _query(y, total=100.0, incumbent=None, goal=Goal.MINIMIZE, **policy):
    x = np.arange(1, len(y) + 1, dtype=float) * 10.0
    return ForecastQuery(curve=Curve(x=x, y=np.asarray(y, float), goal=goal), run=RunInfo(total_steps=total),
                         x_query=np.array([total]), incumbent=incumbent, policy=StopPolicy(**policy))


def _path(q, fn, std=0.02):
    """Marginals on the decision grid with mean fn(x), and the final (at the budget) one."""
    x = decision_grid(q)
    grid = Marginals.from_gaussian(x, fn(x), np.full_like(x, std))
    return grid.at(np.flatnonzero(np.isclose(x, q.horizon))), grid


def test_best_so_far_beating_incumbent_is_not_certain_without_checkpoint():
    """Defect 1: the best so far (0.9) beats the incumbent (1.0) but the run's last value (1.3) does not,
    and it is forecast to end at 1.5: without a checkpoint its result is its last value, P is ~0."""
    q = _query([2.0, 0.9, 1.2, 1.3], incumbent=1.0)
    final, grid = _path(q, lambda x: 1.3 + 0.2 * np.clip((x - 40) / 60, 0, 1))
    kept = decide(q, final, grid, checkpoint_best=True)
    assert kept.p_beat_incumbent == 1.0 and kept.leads and kept.action is Action.CONTINUE
    last = decide(q, final, grid, checkpoint_best=False)
    assert last.result == "last_value" and not last.leads
    assert last.p_beat_incumbent < 1e-3
    assert last.action is Action.STOP_UNPROMISING and "value at the budget beats incumbent 1)" in last.reason
    # the policy's own field decides when the caller does not override it
    q_last = _query([2.0, 0.9, 1.2, 1.3], incumbent=1.0, keep_best_checkpoint=False)
    assert decide(q_last, final, grid).p_beat_incumbent == pytest.approx(last.p_beat_incumbent)


def test_result_meaning_decides_which_probability():
    """Defect 2: a path that dips below the incumbent mid-budget and ends above it. The best checkpoint
    beats it (max over the grid); the value at the budget does not (final marginal only)."""
    q = _query([2.0, 1.5, 1.3], incumbent=1.0)
    dip = lambda x: 1.3 - 0.6 * np.sin(np.pi * np.clip((x - 30) / 70, 0, 1))  # noqa: E731  0.7 at x=65, 1.3 at 100
    final, grid = _path(q, dip, std=0.05)
    kept, last = decide(q, final, grid, checkpoint_best=True), decide(q, final, grid, checkpoint_best=False)
    assert kept.p_beat_incumbent > 0.99 and kept.action is Action.CONTINUE
    assert last.p_beat_incumbent < 1e-3 and last.action is Action.STOP_UNPROMISING
    assert kept.expected_improvement > 0.5 > last.expected_improvement  # both about their own result


def test_leader_without_incumbent_is_never_stopped_unasked():
    """Defect 3: the first run of a sweep (no incumbent) on a plateau is the leader: CONTINUE."""
    q = _query([2.0, 1.0, 0.9, 0.9, 0.9])
    final, grid = _path(q, lambda x: 0.9 + 0.02 * np.clip((x - 50) / 50, 0, 1) + 0.005, std=0.001)
    r = decide(q, final, grid)
    assert r.leads and r.action is Action.CONTINUE and r.p_improve_own_best < 0.05
    assert r.threshold == 0.0 and "min_relative_improvement > 0" in r.reason
    asked = decide(_query([2.0, 1.0, 0.9, 0.9, 0.9], min_relative_improvement=0.01), final, grid)
    assert asked.action is Action.STOP_CONVERGED


def test_leader_is_not_stopped_as_unpromising_on_last_value():
    """A run whose present value already beats the incumbent is the leader even without a checkpoint."""
    q = _query([2.0, 1.2, 0.95, 0.9], incumbent=1.0)
    final, grid = _path(q, lambda x: 0.9 + 0.3 * np.clip((x - 40) / 60, 0, 1))  # overfits to 1.2
    r = decide(q, final, grid, checkpoint_best=False)
    assert r.leads and r.p_beat_incumbent < 0.01 and r.action is Action.CONTINUE


def test_expected_improvement_is_never_negative():
    """Defect 4: the proto says expected_improvement >= 0; an overfitting run used to get a negative one."""
    q = _query([2.0, 0.9, 0.95, 0.97])
    final, grid = _path(q, lambda x: 0.97 + 0.2 * np.clip((x - 40) / 60, 0, 1), std=0.01)
    for ckpt in (True, False):
        r = decide(q, final, grid, checkpoint_best=ckpt)
        assert r.expected_improvement >= 0.0 and r.expected_relative_improvement >= 0.0
        assert r.expected_relative_improvement == pytest.approx(r.expected_improvement / 0.9)


def test_expected_gain_matches_gaussian_closed_form():
    m = Marginals.from_gaussian(np.array([1.0]), np.array([1.0]), np.array([0.1]))
    # E[max(0, 1 - Y)] for Y ~ N(1, 0.1) = 0.1 * phi(0) = 0.0399
    assert float(expected_gain(m, 1.0, Goal.MINIMIZE)[0]) == pytest.approx(0.1 / np.sqrt(2 * np.pi), rel=0.03)
    assert float(expected_gain(m, 0.5, Goal.MINIMIZE)[0]) == pytest.approx(0.0, abs=1e-9)
    assert float(expected_gain(m, 1.5, Goal.MAXIMIZE)[0]) == pytest.approx(0.0, abs=1e-9)


def test_cmp_never_prints_a_false_comparison():
    assert _cmp(0.01996, "<", 0.02) == "0.02 < 0.02".replace("0.02 <", "0.01996 <")
    assert _cmp(0.0199999, "<", 0.02) == "0.0199999 < 0.02"
    assert _cmp(0.5, ">=", 0.02) == "0.5 >= 0.02"
    assert _cmp(0.02, ">=", 0.02) == "0.02 >= 0.02"


_CMP = re.compile(r"= ([-+0-9.e]+) (<|>=) ([-+0-9.e]+)")


def _check_reason(r):
    """Every comparison in the text holds on its printed numbers, and its right side is the threshold."""
    found = _CMP.findall(r.reason)
    for a, op, b in found:
        a, b = float(a), float(b)
        assert (a < b) if op == "<" else (a >= b), r.reason
        assert b == pytest.approx(r.threshold, rel=1e-3, abs=1e-12), (r.reason, r.threshold)
    return found


@pytest.mark.parametrize("total", [100.0, 40.0, 1e99])
@pytest.mark.parametrize("incumbent", [None, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("ckpt", [True, False])
@pytest.mark.parametrize("imp_thr", [0.0, 0.01])
def test_reasons_are_consistent_with_fields(total, incumbent, ckpt, imp_thr):
    """Defect 4: no "gain -1.24e-01 >= 0.00e+00" (budget 1e99), none at budget = last x, threshold field
    = the number the text compares with, no "0.020 < 0.020"."""
    q = _query([2.0, 1.5, 1.2, 1.1], total=total, incumbent=incumbent, min_relative_improvement=imp_thr)
    end = min(total, 400.0)
    final, grid = _path(q, lambda x: 1.1 + 0.15 * np.clip((x - 40) / max(end - 40, 1.0), 0, 1), std=0.05)
    if total == 40.0:  # at the budget: nothing left to save
        final = Marginals.from_gaussian(np.array([40.0]), np.array([1.1]), np.array([0.05]))
        grid = final
    r = decide(q, final, grid, checkpoint_best=ckpt)
    _check_reason(r)
    assert "e+00" not in r.reason and r.expected_improvement >= 0
    if total == 40.0:
        assert r.action is Action.CONTINUE and "no compute left" in r.reason


def test_threshold_rounding_is_honest_near_the_bar():
    """p = 0.01999 against 0.02: the text must not read "0.020 < 0.020"."""
    q = _query([2.0, 1.8, 1.7, 1.65], incumbent=1.45)
    final, grid = _path(q, lambda x: 1.65 - 0.15 * np.clip((x - 40) / 60, 0, 1), std=0.05)
    raw = decide(q, final, grid).p_beat_incumbent_raw
    # a recalibration that maps this raw p to 0.01999 exactly
    target = 0.01999
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    recal = Recalibration(kind="platt", a=1.0, b=float(logit(target) - logit(raw)))
    r = decide(q, final, grid, recal_beat=recal)
    assert r.p_beat_incumbent == pytest.approx(target, rel=1e-6)
    assert r.action is Action.STOP_UNPROMISING
    assert _check_reason(r) and "0.01999 < 0.02" in r.reason


def test_raw_and_recalibrated_target_probability_both_reported():
    """Defect 5 (CLI): compute_to_target shows the raw P(within budget), the recommendation the
    recalibrated one; the recommendation now carries both so a client can say why they differ."""
    from curvecast.decisions.compute_to_target import compute_to_target

    q = ForecastQuery(curve=Curve(x=np.array([10.0, 20.0, 30.0]), y=np.array([2.0, 1.6, 1.4])),
                      run=RunInfo(total_steps=100.0), x_query=np.array([100.0]), target=1.0)
    final, grid = _path(q, lambda x: 1.4 - 0.4 * np.clip((x - 30) / 70, 0, 1), std=0.1)
    ctt = compute_to_target(q, grid)
    squash = Recalibration(kind="platt", a=1.0, b=-0.5)
    r = decide(q, final, grid, ctt, recal_target=squash)
    assert r.p_target_within_budget_raw == pytest.approx(ctt.p_within_budget)
    assert r.p_target_within_budget == pytest.approx(float(squash.apply(ctt.p_within_budget)))
    assert r.p_target_within_budget < r.p_target_within_budget_raw
