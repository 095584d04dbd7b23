"""Stop recommendations from a run's predictive distribution.

The order of checks is the order of certainty: a run that blew up or already reached its target is an
observation, not a forecast, so those win; then the caller's guards (too few points, too early); then
the forecast-based stops: unpromising (unlikely to beat the incumbent) before converged (unlikely to
beat its own best point, or expected relative gain below the threshold). Every recommendation carries the numbers behind it so callers can audit and re-threshold.

What a run's *result* is decides every probability: with the best checkpoint kept it is the best point
the run will have shown (P = max over the in-budget grid, 1 once the best so far beats the incumbent);
without it, its value at the budget (P from the final marginal only). The leader (no incumbent yet, or
its result so far beats the incumbent) is never stopped as unpromising, and as converged only when the
caller asks for converged stops (``min_relative_improvement`` > 0): killing the leader is the one error
model selection cannot recover from.

Cost awareness: ``compute_weight`` (w) trades saved compute against the risk of killing the eventual
winner. Stopping with a fraction f of the budget left saves f budgets; the policy accepts a risk of up
to ``w * f`` of killing a winner for it, so the effective threshold on P(beats incumbent) is
``max(min_prob_beat_incumbent, w * f)``: early in a run, stopping buys more and the bar rises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from ..domain.curve import Curve, ForecastQuery, Goal
from ..domain.distribution import LEVELS, Marginals
from .calibration import IDENTITY, Recalibration
from .compute_to_target import ComputeToTarget, first_reached_x, p_past_target

_TAIL = 3  # points that must all be bad before a blow-up is called (robust to single spikes)


class Action(enum.Enum):
    CONTINUE = "continue"
    STOP_UNPROMISING = "stop_unpromising"
    STOP_CONVERGED = "stop_converged"
    STOP_DIVERGED = "stop_diverged"
    TARGET_REACHED = "target_reached"

    @property
    def is_stop(self) -> bool:
        return self is not Action.CONTINUE


@dataclass(frozen=True)
class Recommendation:
    action: Action
    reason: str  # one line, for humans
    p_beat_incumbent: float | None  # P(result beats incumbent), recalibrated; None without an incumbent
    p_beat_incumbent_raw: float | None
    p_improve_own_best: float | None  # P(result improves on the run's best so far)
    p_target_within_budget: float | None  # recalibrated; None without a target
    expected_final: float | None  # forecast mean at the budget
    expected_improvement: float  # E[max(0, gain of the result over the best so far)], metric units, >= 0
    expected_relative_improvement: float  # expected_improvement / |best so far|, >= 0
    threshold: float  # the threshold that decided (probability or relative improvement)
    prob_threshold: float  # effective P(beats incumbent) threshold (cost-aware)
    improvement_threshold: float
    steps_saved: float  # expected steps saved by stopping now
    flops_saved: float | None
    cost_saved: float | None
    extend: bool = False  # target unlikely within the budget but likely with more steps
    extend_to_x: float | None = None  # median x at which the target is reached, when extend
    blocked_by: str = ""  # guard that turned a stop into CONTINUE ("min_points", "min_fraction_observed")
    would_stop: Action | None = None  # the stop that a guard blocked
    # P(target within budget) before recalibration: compute_to_target.prob_within_budget shows this one
    p_target_within_budget_raw: float | None = None
    result: str = "best_checkpoint"  # what the probabilities are about: "best_checkpoint" | "last_value"
    leads: bool = False  # no incumbent, or the result so far already beats it (never stopped unasked)


def divergence_reason(curve: Curve) -> str:
    """Why the run counts as diverged, or "" when it does not.

    Non-finite values end the run. A blow-up is a tail of ``_TAIL`` points that are all (a) worse than
    the best so far by more than 90% of everything the run had gained, by more than 25% of the best
    value and by more than a few times the point-to-point noise, and (b) back at (or beyond) the worst
    level seen before. Overfitting that rises part of the way back, and an early transient spike the
    run has already recovered from, are not blow-ups (TaskSet has both among its eventual winners).
    """
    if curve.diverged:
        return f"non-finite values from x={curve.diverged_at:g}"
    y = np.asarray(curve.y, dtype=np.float64)
    if len(y) < _TAIL + 2:
        return ""
    g = curve.goal.sign * y  # lower is better
    head, tail = g[:-_TAIL], g[-_TAIL:]
    best = float(head.min())
    span = max(float(g[0] - best), 0.0)
    # noise from second differences: blind to a smooth trend; sigma = median|d2| / (0.6745 * sqrt(6))
    noise = float(np.median(np.abs(np.diff(head, 2)))) / 1.652 if len(head) > 2 else 0.0
    margin = max(0.9 * span, 0.25 * abs(best), 5.0 * noise, 1e-12)
    gap = float(tail.min() - best)
    if gap > margin and float(tail.min()) >= float(head.max()) - 0.1 * span:
        worst = float(curve.goal.sign * tail.min())
        return f"last {_TAIL} values all worse than the best {curve.goal.sign * best:.4g} (now {worst:.4g})"
    return ""


def _current_level(curve: Curve, grid: Marginals | None) -> float:
    """Denoised present value: the forecast mean just after the last point, else a tail median."""
    if grid is not None and len(grid.x):
        after = np.flatnonzero(grid.x > curve.last_x)
        if len(after):
            v = float(grid.mean[after[0]])
            if np.isfinite(v):
                return v
    return float(np.median(curve.y[-3:])) if len(curve.y) else 0.0


def p_beats(marginals: Marginals, incumbent: float, goal: Goal) -> np.ndarray:
    """P(value at each x is better than the incumbent)."""
    return p_past_target(marginals, incumbent, goal)


def expected_steps_to_go(query: ForecastQuery, ctt: ComputeToTarget | None) -> float:
    """Expected steps the run would still use: up to the budget, or until it reaches its target.

    With a target, E[min(T, budget)] - last = integral over the remaining budget of P(not reached by t).
    """
    last, budget = query.curve.last_x, query.horizon
    remaining = max(budget - last, 0.0)
    if ctt is None or remaining <= 0:
        return remaining
    if ctt.already_reached:
        return 0.0
    if not ctt.grid_x:
        return remaining
    px = np.concatenate(([last], np.asarray(ctt.grid_x)))
    pp = np.concatenate(([0.0], np.asarray(ctt.grid_p)))
    xs = np.concatenate((px[px < budget], [budget]))
    ps = np.interp(xs, px, pp)
    not_reached = 1.0 - ps
    with np.errstate(all="ignore"):  # subnormal or extreme x grids can overflow the trapezoid
        steps = float(np.sum(0.5 * (not_reached[1:] + not_reached[:-1]) * np.diff(xs)))
    # an integral of a probability over the remaining budget lies in [0, remaining]; off it, the grid
    # arithmetic failed (fuzzer: x near 1e-322 gave -inf): assume the whole remaining budget
    return min(max(steps, 0.0), remaining) if np.isfinite(steps) else remaining


def decide(
    query: ForecastQuery,
    final: Marginals | None,
    grid_marginals: Marginals | None = None,
    ctt: ComputeToTarget | None = None,
    *,
    compute_weight: float | None = None,
    recal_beat: Recalibration = IDENTITY,
    recal_target: Recalibration = IDENTITY,
    checkpoint_best: bool | None = None,
) -> Recommendation:
    """Recommend what to do with the run now.

    ``final``: marginals of the value at the budget (one x; None when no forecast is available, which
    still allows divergence and target checks). ``grid_marginals``: marginals on the decision grid
    (optional; with the best checkpoint kept, P(beats incumbent) is taken over every in-budget x, and
    the present level is read from it). ``compute_weight`` overrides ``query.policy.compute_weight``.
    ``checkpoint_best`` (default ``query.policy.keep_best_checkpoint``) says what the run's *result* is:
    its best point (True) or its value at the budget (False); every probability and the expected
    improvement are about that result. A run that leads (no incumbent, or its result so far already
    beats it) is never stopped as unpromising, and as converged only when asked
    (``min_relative_improvement`` > 0): in model selection, stopping the leader is the costliest error.
    """
    curve, run, policy = query.curve, query.run, query.policy
    goal = curve.goal
    last, budget = curve.last_x, query.horizon
    ckpt = bool(getattr(policy, "keep_best_checkpoint", True) if checkpoint_best is None else checkpoint_best)
    remaining_frac = float(np.clip((budget - last) / budget, 0.0, 1.0)) if budget > 0 else 0.0
    weight = float(getattr(policy, "compute_weight", 0.0) if compute_weight is None else compute_weight)
    prob_thr = max(float(policy.min_prob_beat_incumbent), weight * remaining_frac)
    imp_thr = float(policy.min_relative_improvement)
    converged_asked = imp_thr > 0

    steps = expected_steps_to_go(query, ctt)
    flops, cost = run.flops_for(steps), run.cost_for(steps)

    # ---- forecast numbers: all about the run's result (best checkpoint, or the value at the budget) ----
    result = _result_marginals(curve, final, grid_marginals, budget, ckpt)
    have_y = len(curve.y) > 0
    best = curve.best() if have_y else None
    # the result the run would have if stopped now: its best point, or its (denoised) present value
    now = (best if ckpt else _current_level(curve, grid_marginals)) if have_y else None
    leads = query.incumbent is None or (now is not None and _better(now, query.incumbent, goal))
    p_raw = p_cal = None
    if query.incumbent is not None and ckpt and best is not None and _better(best, query.incumbent, goal):
        p_raw = p_cal = 1.0  # the kept checkpoint already beats it: an observation
    elif query.incumbent is not None and result is not None:
        p_raw = float(np.clip(p_beats(result, query.incumbent, goal).max(), 0.0, 1.0))
        p_cal = float(np.clip(recal_beat.apply(p_raw), 0.0, 1.0))
    p_own = None
    if result is not None and best is not None:
        p_own = float(np.clip(p_beats(result, best, goal).max(), 0.0, 1.0))
    p_target = p_target_raw = None
    if ctt is not None:
        p_target_raw = 1.0 if ctt.already_reached else float(ctt.p_within_budget)
        p_target = 1.0 if ctt.already_reached else float(recal_target.apply(ctt.p_within_budget))
    expected_final = float(final.mean[-1]) if final is not None and np.isfinite(final.mean[-1]) else None
    imp = rel = 0.0
    if result is not None and best is not None:
        imp = float(expected_gain(result, best, goal).max())
        scale = abs(best) if abs(best) > 1e-12 else float(np.ptp(curve.y)) or 1.0
        rel = imp / scale
    imp, rel = max(_finite(imp), 0.0), max(_finite(rel), 0.0)

    def rec(action: Action, reason: str, threshold: float, **kw) -> Recommendation:
        return Recommendation(
            action=action, reason=reason, p_beat_incumbent=p_cal, p_beat_incumbent_raw=p_raw,
            p_improve_own_best=p_own,
            p_target_within_budget=p_target, expected_final=expected_final, expected_improvement=imp,
            expected_relative_improvement=rel, threshold=float(threshold), prob_threshold=prob_thr,
            improvement_threshold=imp_thr,
            steps_saved=0.0 if action is Action.CONTINUE else float(steps),
            flops_saved=None if flops is None else (0.0 if action is Action.CONTINUE else float(flops)),
            cost_saved=None if cost is None else (0.0 if action is Action.CONTINUE else float(cost)),
            p_target_within_budget_raw=p_target_raw, result="best_checkpoint" if ckpt else "last_value",
            leads=leads, **kw,
        )

    # ---- observations first ----------------------------------------------------------------------
    why = divergence_reason(curve)
    if why and (curve.diverged or len(curve.y) >= policy.min_points):
        return rec(Action.STOP_DIVERGED, f"diverged: {why}", 0.0)
    if query.target is not None and len(curve.y):
        hit = first_reached_x(curve, query.target)
        if hit is not None:
            return rec(Action.TARGET_REACHED, f"target {query.target:g} reached at x={hit:g}", float(query.target))

    extend, extend_to = False, None
    if ctt is not None and not ctt.already_reached and ctt.p_within_budget < 0.5 <= ctt.p_within_horizon:
        med = ctt.median()
        extend, extend_to = True, (med.x if med is not None and med.within_horizon else None)
    ext_note = f"; target likely reachable by x={extend_to:.4g} beyond the budget" if extend and extend_to else ""

    # ---- forecast-based stops --------------------------------------------------------------------
    what = "best checkpoint" if ckpt else "value at the budget"
    own = f"P({what} improves on its best so far {best:g})" if best is not None else ""
    gain = (f"expected relative improvement of its {what} on its best so far {best:g}" if best is not None else "")
    target_likely = p_target is not None and p_target >= 0.5
    stop: tuple[Action, str, float] | None = None
    if result is not None and remaining_frac > 0:
        if not leads and p_cal is not None and p_cal < prob_thr:
            stop = (Action.STOP_UNPROMISING,
                    f"P({what} beats incumbent {query.incumbent:g}) = {_cmp(p_cal, '<', prob_thr)}", prob_thr)
        elif converged_asked and not target_likely and p_own is not None and p_own < prob_thr:
            stop = (Action.STOP_CONVERGED, f"{own} = {_cmp(p_own, '<', prob_thr)}", prob_thr)
        elif converged_asked and not target_likely and rel < imp_thr:
            stop = (Action.STOP_CONVERGED, f"{gain} = {_cmp(rel, '<', imp_thr)}", imp_thr)
    if stop is not None:
        guard = ""
        if len(curve.y) < policy.min_points:
            guard = "min_points"
        elif budget > 0 and last / budget < policy.min_fraction_observed:
            guard = "min_fraction_observed"
        if guard:
            return rec(Action.CONTINUE, f"would stop ({stop[1]}) but {guard} not met{ext_note}", stop[2],
                       extend=extend, extend_to_x=extend_to, blocked_by=guard, would_stop=stop[0])
        return rec(stop[0], stop[1] + ext_note, stop[2], extend=extend, extend_to_x=extend_to)

    # ---- continue: say which rule let it go on, with the numbers it compared ----------------------
    threshold = prob_thr
    if result is None:
        reason = "no forecast available; continuing"
    elif remaining_frac <= 0:
        reason = f"at the budget (x={last:g} of {budget:g}): no compute left to save; continuing"
    elif not leads and p_cal is not None:
        reason = f"P({what} beats incumbent {query.incumbent:g}) = {_cmp(p_cal, '>=', prob_thr)}"
    else:
        lead = ("no incumbent yet" if query.incumbent is None
                else f"leads: result so far {now:g} beats incumbent {query.incumbent:g}")
        if not converged_asked:
            threshold = imp_thr
            reason = f"{lead}; a leader is not stopped as converged unless min_relative_improvement > 0"
        elif target_likely:
            reason = f"{lead}; P(target within budget) = {p_target:.3g} >= 0.5, so not stopped as converged"
        else:
            threshold = imp_thr
            reason = f"{lead}; {gain} = {_cmp(rel, '>=', imp_thr)}"
    return rec(Action.CONTINUE, reason + ext_note, threshold, extend=extend, extend_to_x=extend_to)


def _result_marginals(curve: Curve, final: Marginals | None, grid: Marginals | None, budget: float,
                      ckpt: bool) -> Marginals | None:
    """Marginals the result's probabilities are read from: the value at the budget, plus (best
    checkpoint) every grid x inside the budget, since the run then keeps its best point wherever it is
    (the max over x of P(better at x) is a lower bound on P(its best beats it))."""
    if final is None:
        return None
    if not ckpt or grid is None:
        return final
    inside = np.flatnonzero((grid.x > curve.last_x) & (grid.x <= budget * (1 + 1e-9)))
    if not len(inside):
        return final
    g = grid.at(inside)
    return Marginals(np.concatenate((g.x, final.x)), np.concatenate((g.values, final.values)),
                     np.concatenate((g.mean, final.mean)))


def expected_gain(marginals: Marginals, ref: float, goal: Goal) -> np.ndarray:
    """E[max(0, improvement on ``ref``)] per x, in metric units (>= 0): the integral over probability
    levels of how far each quantile is past ``ref`` (tails beyond the outermost levels ignored)."""
    g = goal.sign * (ref - marginals.values)  # > 0 where the quantile is better than ref
    pos = np.maximum(g, 0.0)
    return np.trapezoid(pos, LEVELS, axis=-1) if pos.ndim > 1 else np.trapezoid(pos, LEVELS)


def _cmp(a: float, op: str, b: float) -> str:
    """``a op b`` with as few significant digits (3 or more) as keep the printed numbers true to the
    comparison: 0.0199 < 0.02 never reads "0.020 < 0.020"."""
    for d in range(3, 17):
        sa, sb = f"{a:.{d}g}", f"{b:.{d}g}"
        if (sa != sb) or a == b:
            return f"{sa} {op} {sb}"
    return f"{a!r} {op} {b!r}"


def _better(a: float, b: float, goal: Goal) -> bool:
    return a < b if goal is Goal.MINIMIZE else a > b


def _finite(v: float) -> float:
    return float(v) if np.isfinite(v) else 0.0
