"""Stop recommendations from a run's predictive distribution.

The order of checks is the order of certainty: a run that blew up or already reached its target is an
observation, not a forecast, so those win; then the caller's guards (too few points, too early); then
the forecast-based stops: unpromising (unlikely to beat the incumbent) before converged (unlikely to
beat its own best point, or expected relative gain below the threshold). Every recommendation carries the numbers behind it so callers can audit and re-threshold.

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
from ..domain.distribution import Marginals
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
    p_beat_incumbent: float | None  # calibrated (recalibration applied); None without an incumbent
    p_beat_incumbent_raw: float | None
    p_improve_own_best: float | None  # for a run that leads the sweep (or has no incumbent)
    p_target_within_budget: float | None  # None without a target
    expected_final: float | None  # forecast mean at the budget
    expected_improvement: float  # goal-oriented: > 0 means the run is expected to get better
    expected_relative_improvement: float
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
    return float(np.sum(0.5 * (not_reached[1:] + not_reached[:-1]) * np.diff(xs)))


def decide(
    query: ForecastQuery,
    final: Marginals | None,
    grid_marginals: Marginals | None = None,
    ctt: ComputeToTarget | None = None,
    *,
    compute_weight: float | None = None,
    recal_beat: Recalibration = IDENTITY,
    recal_target: Recalibration = IDENTITY,
    checkpoint_best: bool = True,
) -> Recommendation:
    """Recommend what to do with the run now.

    ``final``: marginals of the value at the budget (one x; None when no forecast is available, which
    still allows divergence and target checks). ``grid_marginals``: marginals on the decision grid
    (optional; sharpens P(beats incumbent) for runs whose best point is before the end and the
    present-level estimate). ``compute_weight`` overrides ``query.policy.compute_weight`` when given.
    A ``min_relative_improvement`` of 0 (or less) switches the relative-gain converged stop off.
    ``checkpoint_best``: the run's best point is kept (its value is its best, not its last), so a run
    that leads the sweep is stopped as converged once it is unlikely to beat its own best.
    """
    curve, run, policy = query.curve, query.run, query.policy
    goal, sign = curve.goal, curve.goal.sign
    last, budget = curve.last_x, query.horizon
    remaining_frac = float(np.clip((budget - last) / budget, 0.0, 1.0)) if budget > 0 else 0.0
    weight = float(getattr(policy, "compute_weight", 0.0) if compute_weight is None else compute_weight)
    prob_thr = max(float(policy.min_prob_beat_incumbent), weight * remaining_frac)
    imp_thr = float(policy.min_relative_improvement)

    steps = expected_steps_to_go(query, ctt)
    flops, cost = run.flops_for(steps), run.cost_for(steps)

    # ---- forecast numbers ------------------------------------------------------------------------
    p_raw = p_cal = None
    if query.incumbent is not None and len(curve.y) and _better(curve.best(), query.incumbent, goal):
        p_raw = p_cal = 1.0
    elif query.incumbent is not None and final is not None:
        p = float(p_beats(final, query.incumbent, goal)[-1])
        if grid_marginals is not None:
            inside = np.flatnonzero((grid_marginals.x > last) & (grid_marginals.x <= budget * (1 + 1e-9)))
            if len(inside):
                p = max(p, float(p_beats(grid_marginals.at(inside), query.incumbent, goal).max()))
        p_raw = float(np.clip(p, 0.0, 1.0))
        p_cal = float(recal_beat.apply(p_raw))
    # A run that leads (or has no incumbent) is only worth continuing if it can still improve on
    # its own best point: with the best checkpoint kept, a run past its best gains nothing.
    p_own = None
    leads = query.incumbent is None or (p_raw == 1.0)
    if checkpoint_best and leads and final is not None and len(curve.y):
        own = curve.best()
        p = float(p_beats(final, own, goal)[-1])
        if grid_marginals is not None:
            inside = np.flatnonzero((grid_marginals.x > last) & (grid_marginals.x <= budget * (1 + 1e-9)))
            if len(inside):
                p = max(p, float(p_beats(grid_marginals.at(inside), own, goal).max()))
        p_own = float(np.clip(p, 0.0, 1.0))
    p_target = None
    if ctt is not None:
        p_target = 1.0 if ctt.already_reached else float(recal_target.apply(ctt.p_within_budget))
    expected_final = float(final.mean[-1]) if final is not None and np.isfinite(final.mean[-1]) else None
    imp = rel = 0.0
    if expected_final is not None and len(curve.y):
        level = _current_level(curve, grid_marginals)
        imp = sign * (level - expected_final)
        scale = abs(level) if abs(level) > 1e-12 else float(np.ptp(curve.y)) or 1.0
        rel = imp / scale
    imp, rel = _finite(imp), _finite(rel)

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
            **kw,
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
    stop: tuple[Action, str, float] | None = None
    if p_cal is not None and p_cal < prob_thr:
        stop = (Action.STOP_UNPROMISING,
                f"P(beats incumbent {query.incumbent:g}) = {p_cal:.3f} < {prob_thr:.3f}", prob_thr)
    elif p_own is not None and p_own < prob_thr and remaining_frac > 0:
        stop = (Action.STOP_CONVERGED,
                f"P(improves on its best so far {curve.best():g}) = {p_own:.3f} < {prob_thr:.3f}", prob_thr)
    elif (final is not None and imp_thr > 0 and rel < imp_thr and remaining_frac > 0
          and not (p_target is not None and p_target >= 0.5)):
        stop = (Action.STOP_CONVERGED,
                f"expected remaining relative improvement {rel:.2e} < {imp_thr:.2e}", imp_thr)
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

    if final is None:
        reason = "no forecast available; continuing"
    elif p_cal is not None:
        reason = f"P(beats incumbent) = {p_cal:.3f} >= {prob_thr:.3f}, expected relative gain {rel:.2e}"
    else:
        reason = f"expected relative gain {rel:.2e} >= {imp_thr:.2e}"
    return rec(Action.CONTINUE, reason + ext_note, prob_thr, extend=extend, extend_to_x=extend_to)


def _better(a: float, b: float, goal: Goal) -> bool:
    return a < b if goal is Goal.MINIMIZE else a > b


def _finite(v: float) -> float:
    return float(v) if np.isfinite(v) else 0.0
