"""Compute-to-target: when will a run's metric get past the caller's target, in steps, FLOPs and money.

For a forecast of a (noisy) monotone improvement, "the target is reached by x" is the event "the value
at x is past the target", so P(reached by x) follows from the marginal CDFs at each x. Marginals are
not jointly monotone (an engine may widen its band over time), so the running maximum over x is used:
it is the tightest monotone curve that is never below any single-x probability. Quantiles of the
steps needed are read off that curve. A quantile the curve never reaches within the forecast grid is
flagged ``within_horizon=False`` and carries the grid end as a lower bound, never a fake number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..domain.curve import Curve, ForecastQuery, Goal
from ..domain.distribution import Marginals

DEFAULT_STEP_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


def decision_grid(query: ForecastQuery, n: int = 64, extension: float = 4.0, n_inside: int | None = None) -> np.ndarray:
    """Dense x grid for decisions: from just after the last observed x to ``horizon * extension``.

    ``n_inside`` points (half by default) are spaced linearly inside the budget (where stop decisions
    need resolution), the rest geometrically beyond it (where compute-to-target only needs orders of
    magnitude). The budget itself is always a grid point, so P(target within budget) needs no
    interpolation.
    """
    if n < 2:
        raise ValueError("decision_grid needs n >= 2")
    if extension < 1.0:
        raise ValueError("extension must be >= 1")
    if n_inside is not None and not 1 <= n_inside < n:
        raise ValueError("n_inside must be in [1, n)")
    last = query.curve.last_x
    horizon = query.horizon
    if horizon <= last:  # budget already spent: only look beyond it
        end = max(last, 1.0) * extension if last > 0 else extension
        if end <= last:
            return np.array([last + 1.0])
        return _geom_or_lin(last, end, n)
    n_in = n if extension == 1.0 else (n_inside or max(n // 2, 1))
    inside = np.linspace(last, horizon, n_in + 1)[1:]
    if extension == 1.0:
        return inside
    outside = _geom_or_lin(horizon, horizon * extension, n - n_in)
    return np.concatenate([inside, outside])


def _geom_or_lin(start: float, end: float, n: int) -> np.ndarray:
    """``n`` points in (start, end], geometric when both ends are positive."""
    if start > 0:
        return np.geomspace(start, end, n + 1)[1:]
    return np.linspace(start, end, n + 1)[1:]


@dataclass(frozen=True)
class StepsQuantile:
    """The ``level`` quantile of the x at which the target is first reached.

    ``x`` is absolute (curve units); ``remaining`` counts from the last observed x. When
    ``within_horizon`` is False the target is not reached with this probability anywhere on the
    forecast grid and ``x`` is only a lower bound (the grid end).
    """

    level: float
    x: float
    remaining: float
    within_horizon: bool
    within_budget: bool
    remaining_flops: float | None = None
    remaining_cost: float | None = None
    total_flops: float | None = None
    total_cost: float | None = None


@dataclass(frozen=True)
class ComputeToTarget:
    target: float
    already_reached: bool
    p_within_budget: float  # P(target reached by the budget / horizon)
    p_within_horizon: float  # P(target reached by the end of the forecast grid)
    budget_x: float
    horizon_x: float  # last x of the forecast grid
    quantiles: tuple[StepsQuantile, ...]
    reached_x: float | None = None  # first observed x past the target, when already reached
    # P(reached by x) on the forecast grid (monotone); kept for plots and the policy's savings maths.
    grid_x: tuple[float, ...] = ()
    grid_p: tuple[float, ...] = ()

    def median(self) -> StepsQuantile | None:
        for q in self.quantiles:
            if abs(q.level - 0.5) < 1e-9:
                return q
        return None


def past_target(values: np.ndarray, target: float, goal: Goal) -> np.ndarray:
    """Whether each value is at or past the target under the goal."""
    return values <= target if goal is Goal.MINIMIZE else values >= target


def p_past_target(marginals: Marginals, target: float, goal: Goal) -> np.ndarray:
    """P(value at each x is at or past the target), per x."""
    cdf = marginals.cdf(float(target))  # already a probability in [0, 1], never NaN
    return cdf if goal is Goal.MINIMIZE else 1.0 - cdf


def first_reached_x(curve: Curve, target: float) -> float | None:
    hit = past_target(curve.y, target, curve.goal)
    return float(curve.x[int(np.argmax(hit))]) if hit.any() else None


def compute_to_target(
    query: ForecastQuery,
    grid: Marginals,
    levels: tuple[float, ...] = DEFAULT_STEP_QUANTILES,
) -> ComputeToTarget | None:
    """Distribution of the compute needed to reach ``query.target``; None when no target is set.

    ``grid`` holds marginals at x beyond the last observed point (see :func:`decision_grid`). A run
    that diverged and has not reached the target is given probability 0: it will not get there.
    """
    if query.target is None:
        return None
    target = float(query.target)
    curve, run = query.curve, query.run
    last, budget = curve.last_x, query.horizon
    reached = first_reached_x(curve, target) if len(curve.y) else None
    if reached is not None:
        qs = tuple(_steps_quantile(level, reached, last, budget, True, run) for level in levels)
        return ComputeToTarget(
            target=target, already_reached=True, p_within_budget=1.0, p_within_horizon=1.0,
            budget_x=budget, horizon_x=float(grid.x[-1]) if len(grid.x) else last, quantiles=qs,
            reached_x=reached, grid_x=tuple(grid.x.tolist()), grid_p=(1.0,) * len(grid.x),
        )

    keep = grid.x > last
    xs = grid.x[keep]
    if len(xs) == 0 or curve.diverged:
        p = np.zeros(len(xs))
    else:
        p = np.maximum.accumulate(p_past_target(grid.at(np.flatnonzero(keep)), target, curve.goal))
    # The curve from "now" (probability 0: not observed past the target) through the grid.
    px = np.concatenate(([last], xs))
    pp = np.concatenate(([0.0], p))
    horizon_x = float(px[-1])
    p_budget = float(np.interp(budget, px, pp)) if budget <= horizon_x else float(pp[-1])
    qs = []
    for level in levels:
        if pp[-1] >= level and pp[-1] > 0:
            i = int(np.argmax(pp >= level))
            lo_p, hi_p = pp[i - 1], pp[i]
            frac = 1.0 if hi_p <= lo_p else (level - lo_p) / (hi_p - lo_p)
            x = float(px[i - 1] + frac * (px[i] - px[i - 1]))
            qs.append(_steps_quantile(level, x, last, budget, True, run))
        else:
            qs.append(_steps_quantile(level, horizon_x, last, budget, False, run))
    return ComputeToTarget(
        target=target, already_reached=False, p_within_budget=_prob(p_budget),
        p_within_horizon=_prob(pp[-1]), budget_x=budget, horizon_x=horizon_x, quantiles=tuple(qs),
        grid_x=tuple(xs.tolist()), grid_p=tuple(np.clip(p, 0.0, 1.0).tolist()),
    )


def _prob(v: float) -> float:
    return float(min(max(float(v), 0.0), 1.0))


def _steps_quantile(level: float, x: float, last: float, budget: float, within: bool, run) -> StepsQuantile:
    remaining = max(x - last, 0.0)
    return StepsQuantile(
        level=float(level), x=float(x), remaining=float(remaining), within_horizon=within,
        within_budget=bool(within and x <= budget + 1e-9),
        remaining_flops=run.flops_for(remaining), remaining_cost=run.cost_for(remaining),
        total_flops=run.flops_for(x), total_cost=run.cost_for(x),
    )
