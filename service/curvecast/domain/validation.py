"""Checks everything a caller sends before any engine sees it.

Each function takes plain Python/numpy values and the field path they came from, and either returns a
consistent domain value or raises ``InvalidRequest`` listing every violation with its field path, so a
client learns all of its mistakes in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .curve import (
    DEFAULT_QUANTILES,
    Curve,
    ForecastQuery,
    Goal,
    LrSchedule,
    RunInfo,
    ScheduleShape,
    StopPolicy,
    XKind,
)
from .errors import FieldViolation, InvalidRequest

DEFAULT_QUERY_POINTS = 50


@dataclass(frozen=True)
class Limits:
    """Documented request limits (also reported by GetModelInfo)."""

    max_curve_points: int = 100_000
    max_query_points: int = 10_000
    max_quantiles: int = 99
    max_batch_requests: int = 1_000
    max_schedule_points: int = 1_000_000
    # magnitudes: x-like quantities (steps, budgets, query x, schedule, per-step sizes) stay far from
    # overflow so every product and extension downstream is finite; metric values (and targets, bounds)
    # may be large but not near the double range.
    max_abs_x: float = 1e100
    max_abs_value: float = 1e300


class Violations:
    """Gathers violations so one response names every bad field."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidRequest(self.violations)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _finite_scalar(c: Violations, field: str, value: float | None, *, positive: bool = False,
                   nonnegative: bool = False, limit: float | None = None) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not np.isfinite(v):
        c.add(field, f"must be finite, got {v}")
        return None
    if limit is not None and abs(v) > limit:
        c.add(field, f"magnitude must be at most {limit:g}, got {v}")
        return None
    if positive and v <= 0:
        c.add(field, f"must be > 0, got {v}")
        return None
    if nonnegative and v < 0:
        c.add(field, f"must be >= 0, got {v}")
        return None
    return v


def _increasing(c: Violations, field: str, x: np.ndarray, limit: float = Limits.max_abs_x) -> bool:
    if not np.all(np.isfinite(x)):
        i = _first_bad(~np.isfinite(x))
        c.add(f"{field}[{i}]", f"must be finite, got {x[i]}")
        return False
    if np.any(np.abs(x) > limit):
        i = _first_bad(np.abs(x) > limit)
        c.add(f"{field}[{i}]", f"magnitude must be at most {limit:g}, got {x[i]}")
        return False
    if len(x) > 1 and not np.all(np.diff(x) > 0):
        i = _first_bad(np.diff(x) <= 0) + 1
        c.add(f"{field}[{i}]", f"must be strictly increasing: {x[i]} follows {x[i - 1]}")
        return False
    return True


def build_curve(
    c: Violations,
    x: Sequence[float],
    values: Sequence[float],
    *,
    goal: Goal,
    x_kind: XKind,
    metric: str = "",
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    lr: Sequence[float] = (),
    limits: Limits = Limits(),
    field: str = "curve",
) -> Curve | None:
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(values, dtype=np.float64)
    if len(xs) == 0:
        c.add(f"{field}.x", "must not be empty: send at least one observed point")
        return None
    if len(xs) != len(ys):
        c.add(f"{field}.values", f"has {len(ys)} values but {field}.x has {len(xs)}")
        return None
    if len(xs) > limits.max_curve_points:
        c.add(f"{field}.x", f"has {len(xs)} points; the limit is {limits.max_curve_points} (subsample the curve)")
        return None
    if not _increasing(c, f"{field}.x", xs, limits.max_abs_x):
        return None
    finite = np.isfinite(ys)
    diverged_at = None
    if not finite.all():
        first_bad = _first_bad(~finite)
        if finite[first_bad:].any():
            i = first_bad
            c.add(f"{field}.values[{i}]", f"must be finite, got {ys[i]} (non-finite values are only accepted "
                  "at the end of a curve, meaning the run diverged)")
            return None
        if first_bad == 0:
            c.add(f"{field}.values[0]", "must be finite: a curve needs at least one finite value")
            return None
        diverged_at = float(xs[first_bad])
        xs, ys = xs[:first_bad], ys[:first_bad]
    if np.any(np.abs(ys) > limits.max_abs_value):
        c.add(f"{field}.values", f"magnitudes above {limits.max_abs_value:g} cannot be forecast; rescale the metric")
        return None
    lo = _finite_scalar(c, f"{field}.lower_bound", lower_bound, limit=limits.max_abs_value)
    hi = _finite_scalar(c, f"{field}.upper_bound", upper_bound, limit=limits.max_abs_value)
    if lo is not None and hi is not None and lo >= hi:
        c.add(f"{field}.upper_bound", f"must be greater than lower_bound ({lo}), got {hi}")
    elif len(ys) and ((lo is not None and np.any(ys < lo)) or (hi is not None and np.any(ys > hi))):
        i = _first_bad((ys < lo if lo is not None else False) | (ys > hi if hi is not None else False))
        c.add(f"{field}.values[{i}]", f"{ys[i]} lies outside the declared bounds [{lo}, {hi}]")
    lr_arr = None
    if len(lr):
        lr_arr = np.asarray(lr, dtype=np.float64)
        if len(lr_arr) != len(np.asarray(x)):
            c.add(f"{field}.lr", f"has {len(lr_arr)} values but {field}.x has {len(np.asarray(x))}")
            lr_arr = None
        elif not np.all(np.isfinite(lr_arr)) or np.any(lr_arr < 0) or np.any(lr_arr > limits.max_abs_x):
            i = _first_bad(~np.isfinite(lr_arr) | (lr_arr < 0) | (lr_arr > limits.max_abs_x))
            c.add(f"{field}.lr[{i}]", f"must be finite, >= 0 and <= {limits.max_abs_x:g}, got {lr_arr[i]}")
            lr_arr = None
        else:
            lr_arr = lr_arr[: len(xs)]
    return Curve(xs, ys, goal=goal, x_kind=x_kind, metric=metric, lower_bound=lo, upper_bound=hi,
                 diverged_at=diverged_at, lr=lr_arr)


def build_schedule(
    c: Violations,
    shape: ScheduleShape,
    *,
    peak_lr: float = 0.0,
    final_lr: float = 0.0,
    warmup_steps: float = 0.0,
    decay_start: float = 0.0,
    step_gamma: float = 0.0,
    step_interval: float = 0.0,
    steps: Sequence[float] = (),
    values: Sequence[float] = (),
    total_steps: float | None = None,
    limits: Limits = Limits(),
    field: str = "run.schedule",
) -> LrSchedule | None:
    if shape is ScheduleShape.EXPLICIT:
        s = np.asarray(steps, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if len(s) == 0:
            c.add(f"{field}.steps", "must not be empty for an explicit schedule")
            return None
        if len(s) != len(v):
            c.add(f"{field}.values", f"has {len(v)} values but {field}.steps has {len(s)}")
            return None
        if len(s) > limits.max_schedule_points:
            c.add(f"{field}.steps", f"has {len(s)} points; the limit is {limits.max_schedule_points}")
            return None
        if not _increasing(c, f"{field}.steps", s, limits.max_abs_x):
            return None
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > limits.max_abs_x):
            i = _first_bad(~np.isfinite(v) | (v < 0) | (v > limits.max_abs_x))
            c.add(f"{field}.values[{i}]", f"must be finite, >= 0 and <= {limits.max_abs_x:g}, got {v[i]}")
            return None
        return LrSchedule(ScheduleShape.EXPLICIT, peak_lr=float(v.max()), final_lr=float(v[-1]),
                          total_steps=float(s[-1]), steps=s, values=v)
    n_before = len(c.violations)
    big = limits.max_abs_x
    peak = _finite_scalar(c, f"{field}.peak_lr", peak_lr, nonnegative=True, limit=big)
    final = _finite_scalar(c, f"{field}.final_lr", final_lr, nonnegative=True, limit=big)
    warm = _finite_scalar(c, f"{field}.warmup_steps", warmup_steps, nonnegative=True, limit=big)
    start = _finite_scalar(c, f"{field}.decay_start", decay_start, nonnegative=True, limit=big)
    gamma = _finite_scalar(c, f"{field}.step_gamma", step_gamma, nonnegative=True, limit=big)
    interval = _finite_scalar(c, f"{field}.step_interval", step_interval, nonnegative=True, limit=big)
    if len(c.violations) > n_before:
        return None
    if peak == 0:
        c.add(f"{field}.peak_lr", "must be > 0 for a parametric schedule")
        return None
    if shape in (ScheduleShape.COSINE, ScheduleShape.LINEAR, ScheduleShape.WSD) and total_steps is None:
        c.add("run.total_steps", f"is required for a {shape.value} schedule")
        return None
    if shape is ScheduleShape.STEP and (interval == 0 or gamma == 0):
        c.add(f"{field}.step_interval", "step schedules need step_interval > 0 and step_gamma > 0")
        return None
    return LrSchedule(shape, peak_lr=peak or 0.0, final_lr=final or 0.0, warmup_steps=warm or 0.0,
                      total_steps=float(total_steps or 0.0), decay_start=start or 0.0,
                      step_gamma=gamma if gamma else 0.1, step_interval=interval or 0.0)


def build_query_x(c: Violations, query_x: Sequence[float], curve: Curve | None, total_steps: float | None,
                  limits: Limits, field: str = "query_x") -> np.ndarray:
    q = np.asarray(query_x, dtype=np.float64)
    if len(q):
        if len(q) > limits.max_query_points:
            c.add(field, f"has {len(q)} points; the limit is {limits.max_query_points}")
            return q[:0]
        _increasing(c, field, q, limits.max_abs_x)
        return q
    if curve is None:
        return q
    last = curve.last_x
    end = total_steps if total_steps is not None else (2.0 * last if last > 0 else 1.0)
    if end <= last:  # the budget is already used up: forecast the budget point itself
        return np.array([end])
    return np.linspace(last, end, DEFAULT_QUERY_POINTS + 1)[1:]


def build_quantiles(c: Violations, quantiles: Sequence[float], limits: Limits,
                    field: str = "quantiles") -> tuple[float, ...]:
    if not len(quantiles):
        return DEFAULT_QUANTILES
    if len(quantiles) > limits.max_quantiles:
        c.add(field, f"has {len(quantiles)} levels; the limit is {limits.max_quantiles}")
        return DEFAULT_QUANTILES
    for i, q in enumerate(quantiles):
        if not (np.isfinite(q) and 0.0 < q < 1.0):
            c.add(f"{field}[{i}]", f"must be strictly between 0 and 1, got {q}")
    return tuple(float(q) for q in quantiles)


def build_policy(c: Violations, defaults: StopPolicy, *, min_prob_beat_incumbent: float | None = None,
                 min_relative_improvement: float | None = None, min_points: int | None = None,
                 min_fraction_observed: float | None = None, compute_weight: float | None = None,
                 keep_best_checkpoint: bool | None = None, field: str = "policy") -> StopPolicy:
    def prob(name: str, v: float | None, default: float) -> float:
        if v is None:
            return default
        if not (np.isfinite(v) and 0.0 <= v <= 1.0):
            c.add(f"{field}.{name}", f"must be in [0, 1], got {v}")
            return default
        return float(v)

    rel = defaults.min_relative_improvement
    if min_relative_improvement is not None:
        if not (np.isfinite(min_relative_improvement) and 0 <= min_relative_improvement <= Limits.max_abs_value):
            c.add(f"{field}.min_relative_improvement", f"must be >= 0 and <= {Limits.max_abs_value:g}, got "
                  f"{min_relative_improvement}")
        else:
            rel = float(min_relative_improvement)
    points = defaults.min_points
    if min_points is not None:
        if min_points < 1:
            c.add(f"{field}.min_points", f"must be >= 1, got {min_points}")
        else:
            points = int(min_points)
    weight = defaults.compute_weight
    if compute_weight is not None:
        if not (np.isfinite(compute_weight) and 0 <= compute_weight <= 1e3):
            c.add(f"{field}.compute_weight", f"must be in [0, 1000], got {compute_weight}")
        else:
            weight = float(compute_weight)
    return StopPolicy(
        compute_weight=weight,
        keep_best_checkpoint=defaults.keep_best_checkpoint if keep_best_checkpoint is None else bool(keep_best_checkpoint),
        min_prob_beat_incumbent=prob("min_prob_beat_incumbent", min_prob_beat_incumbent,
                                     defaults.min_prob_beat_incumbent),
        min_relative_improvement=rel,
        min_points=points,
        min_fraction_observed=prob("min_fraction_observed", min_fraction_observed,
                                   defaults.min_fraction_observed),
    )


def check_budget(c: Violations, curve: Curve | None, total_steps: float | None,
                 field: str = "run.total_steps") -> None:
    if curve is not None and total_steps is not None and total_steps < curve.last_x:
        c.add(field, f"({total_steps}) is before the last observed x ({curve.last_x}); the budget must be at "
              "or after the observed curve")
