"""Checks everything a caller sends before any engine sees it.

``validate_forecast`` is the one entry point for a forecast request: the server's converters read the wire
message once into the plain ``*Input`` values below (presence kept as ``None``, unknown enum values kept as
their int), and this module checks them once and builds the ``ForecastQuery``, or raises
``InvalidRequest`` listing every violation with its field path, so a client learns all of its mistakes in
one round trip. Input accepted with a documented but possibly surprising meaning is not refused: it gets
a note, which the data plane returns as a response warning.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping, Sequence, TypeVar

import numpy as np

from .curve import (
    DEFAULT_QUANTILES,
    Curve,
    ForecastQuery,
    Goal,
    LrSchedule,
    RunInfo,
    ScheduleShape,
    SiblingRun,
    StopPolicy,
    SweepContext,
    XKind,
)
from .errors import FieldViolation, InvalidRequest

DEFAULT_QUERY_POINTS = 50
KNOWN_ENGINES = ("", "ensemble", "learned", "analytic")
SCHEDULE_END_SLACK = 0.01  # an explicit schedule ending this fraction or less before the forecast end covers it
# request ids are echoed in responses and logs: no control, format (e.g. bidi overrides) or line separators
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
E = TypeVar("E", Goal, XKind)


@dataclass(frozen=True)
class Limits:
    """Documented request limits (the curve, query and batch ones are also reported by GetModelInfo).

    Every size is bounded so a request cannot buy unbounded CPU or memory; the proto documents each."""

    max_curve_points: int = 100_000
    max_query_points: int = 10_000
    max_quantiles: int = 99
    # query points x quantile levels: bounds the response (10,000 x 99 would be about 20 MB, over the
    # 16 MiB message limit); 200,000 values is about 4 MB of response
    max_query_values: int = 200_000
    max_batch_requests: int = 1_000
    # an explicit LR schedule as fine as the finest curve: the engines resample it to <= 20,000 grid points
    max_schedule_points: int = 100_000
    max_labels: int = 64
    max_label_key_chars: int = 128
    max_label_value_chars: int = 1_024
    max_metric_chars: int = 256
    max_request_id_chars: int = 128
    # magnitudes: x-like quantities (steps, budgets, query x, schedule, per-step sizes) stay far from
    # overflow so every product and extension downstream is finite; metric values (and targets, bounds)
    # may be large but not near the double range.
    max_abs_x: float = 1e100
    max_abs_value: float = 1e300
    # sweep context: siblings per request and their curve points in all (a 1,000-trial sweep of 200-point
    # curves; about 3 MB on the wire); the points count in the admission cost
    max_sweep_siblings: int = 1_000
    max_sweep_points: int = 200_000
    max_hyperparameters: int = 64


# ---- the request as sent (plain values, not yet checked) -------------------------------------------
# Transient records built once per request and never changed: not frozen, since a frozen dataclass costs
# about 5x more to build and a 1,000-item batch builds thousands of them.
@dataclass
class CurveInput:
    """``Curve`` as sent; ``goal``/``x_kind`` are an int when the wire value has no domain meaning."""

    x: Sequence[float]
    values: Sequence[float]
    goal: Goal | int = Goal.MINIMIZE
    x_kind: XKind | int = XKind.STEP
    metric: str = ""
    lower_bound: float | None = None
    upper_bound: float | None = None
    lr: Sequence[float] = ()


@dataclass
class ScheduleInput:
    """``LrSchedule`` as sent; ``shape`` is None when unset, an int when the wire value is unknown."""

    shape: ScheduleShape | int | None
    peak_lr: float = 0.0
    final_lr: float = 0.0
    warmup_steps: float = 0.0
    decay_start: float = 0.0
    step_gamma: float = 0.0
    step_interval: float = 0.0
    steps: Sequence[float] = ()
    values: Sequence[float] = ()


@dataclass
class RunInput:
    """``RunInfo`` as sent; None means the optional field was not set."""

    total_steps: float | None = None
    schedule: ScheduleInput | None = None
    model_params: float | None = None
    tokens_per_step: float | None = None
    flops_per_step: float | None = None
    cost_per_step: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PolicyInput:
    """``StopPolicy`` as sent; None takes the server default. Field names match ``build_policy``."""

    min_prob_beat_incumbent: float | None = None
    min_relative_improvement: float | None = None
    min_points: int | None = None
    min_fraction_observed: float | None = None
    compute_weight: float | None = None
    keep_best_checkpoint: bool | None = None


@dataclass
class SiblingInput:
    """``SweepSibling`` as sent; ``budget`` None when unset."""

    curve: CurveInput
    run_id: str = ""
    budget: float | None = None
    finished: bool = False
    hyperparameters: Mapping[str, float] = field(default_factory=dict)


@dataclass
class SweepInput:
    """``SweepContext`` as sent."""

    sweep_id: str = ""
    siblings: Sequence[SiblingInput] = ()


@dataclass
class ForecastInput:
    """``ForecastRequest`` as sent."""

    curve: CurveInput
    run: RunInput = field(default_factory=RunInput)
    query_x: Sequence[float] = ()
    quantiles: Sequence[float] = ()
    target: float | None = None
    incumbent: float | None = None
    policy: PolicyInput = field(default_factory=PolicyInput)
    engine: str = ""
    request_id: str = ""
    sweep: SweepInput | None = None


class Violations:
    """Gathers violations so one response names every bad field, and notes (warnings) for accepted input."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []
        self.notes: list[str] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def note(self, text: str) -> None:
        """Accepted with a documented meaning the caller may not expect: say so in the response."""
        self.notes.append(text)

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidRequest(self.violations)


def _check_response_size(c: Violations, query_x: np.ndarray | None, quantiles: Sequence[float] | None,
                         limits: Limits) -> None:
    """Each query point answers every level: the product, not either count, sizes the response."""
    if query_x is None or quantiles is None:
        return
    values = len(query_x) * len(quantiles)
    if values > limits.max_query_values:
        c.add("query_x", f"{len(query_x)} points x {len(quantiles)} quantile levels = {values} values; the limit "
              f"is {limits.max_query_values} (ask fewer points or fewer levels)")


# ---- the entry point -------------------------------------------------------------------------------
def validate_forecast(raw: ForecastInput, limits: Limits, policy_defaults: StopPolicy) -> ForecastQuery:
    """Check every field of one forecast request and build its query; raises InvalidRequest naming every
    bad field. Notes on accepted input travel in ``ForecastQuery.notes``."""
    c = Violations()
    curve = _curve(c, raw.curve, limits)
    run = _run(c, raw.run, curve, limits)
    query_x = build_query_x(c, raw.query_x, curve, run.total_steps, limits)
    quantiles = build_quantiles(c, raw.quantiles, limits)
    _check_response_size(c, query_x, quantiles, limits)
    policy = build_policy(c, policy_defaults, **vars(raw.policy))
    target = finite_scalar(c, "target", raw.target, limit=limits.max_abs_value)
    incumbent = finite_scalar(c, "incumbent", raw.incumbent, limit=limits.max_abs_value)
    check_engine(c, raw.engine)
    check_request_id(c, raw.request_id, limits)
    sweep = build_sweep(c, raw.sweep, curve, run.total_steps, limits) if raw.sweep is not None else None
    c.raise_if_any()
    assert curve is not None
    _note_schedule_end(c, run.schedule, _forecast_end(run.total_steps, query_x, curve))
    return ForecastQuery(curve=curve, run=run, x_query=query_x, quantiles=quantiles, target=target,
                         incumbent=incumbent, policy=policy, engine=raw.engine, notes=tuple(c.notes), sweep=sweep)


def _curve(c: Violations, raw: CurveInput, limits: Limits) -> Curve | None:
    goal = _known(c, "curve.goal", raw.goal, Goal.MINIMIZE)
    x_kind = _known(c, "curve.x_kind", raw.x_kind, XKind.STEP)
    return build_curve(c, raw.x, raw.values, goal=goal, x_kind=x_kind, metric=raw.metric,
                       lower_bound=raw.lower_bound, upper_bound=raw.upper_bound, lr=raw.lr, limits=limits)


def _run(c: Violations, raw: RunInput, curve: Curve | None, limits: Limits) -> RunInfo:
    big = limits.max_abs_x
    total = finite_scalar(c, "run.total_steps", raw.total_steps, positive=True, limit=big)
    check_budget(c, curve, total)
    return RunInfo(
        total_steps=total, schedule=_schedule(c, raw.schedule, total, curve, limits),
        model_params=finite_scalar(c, "run.model_params", raw.model_params, positive=True, limit=big),
        tokens_per_step=finite_scalar(c, "run.tokens_per_step", raw.tokens_per_step, positive=True, limit=big),
        flops_per_step=finite_scalar(c, "run.flops_per_step", raw.flops_per_step, positive=True, limit=big),
        cost_per_step=finite_scalar(c, "run.cost_per_step", raw.cost_per_step, nonnegative=True, limit=big),
        labels=check_labels(c, raw.labels, limits))


def _known(c: Violations, field: str, value: E | int, default: E) -> E:
    """The domain enum member, or ``default`` and a violation for a wire value with no meaning here."""
    if isinstance(value, type(default)):
        return value
    c.add(field, f"unknown enum value {value}")
    return default


# ---- scalars and arrays ----------------------------------------------------------------------------
def finite_scalar(c: Violations, field: str, value: float | None, *, positive: bool = False,
                  nonnegative: bool = False, limit: float | None = None) -> float | None:
    """The one check for an optional scalar: None stays None (unset); a bad value is named and dropped."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
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


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


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


# ---- the curve -------------------------------------------------------------------------------------
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
    if len(metric) > limits.max_metric_chars:
        c.add(f"{field}.metric", f"has {len(metric)} characters; the limit is {limits.max_metric_chars}")
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
    lo = finite_scalar(c, f"{field}.lower_bound", lower_bound, limit=limits.max_abs_value)
    hi = finite_scalar(c, f"{field}.upper_bound", upper_bound, limit=limits.max_abs_value)
    if lo is not None and hi is not None and lo >= hi:
        c.add(f"{field}.upper_bound", f"must be greater than lower_bound ({lo}), got {hi}")
    elif len(ys) and ((lo is not None and np.any(ys < lo)) or (hi is not None and np.any(ys > hi))):
        i = _first_bad((ys < lo if lo is not None else False) | (ys > hi if hi is not None else False))
        c.add(f"{field}.values[{i}]", f"{ys[i]} lies outside the declared bounds [{lo}, {hi}]")
    lr_arr = _curve_lr(c, lr, len(x), len(xs), limits, field)
    return Curve(xs, ys, goal=goal, x_kind=x_kind, metric=metric, lower_bound=lo, upper_bound=hi,
                 diverged_at=diverged_at, lr=lr_arr)


def _curve_lr(c: Violations, lr: Sequence[float], n_sent: int, n_kept: int, limits: Limits,
              field: str) -> np.ndarray | None:
    """Per-point LR: one per sent x (including a diverged tail), kept for the finite points only."""
    if not len(lr):
        return None
    lr_arr = np.asarray(lr, dtype=np.float64)
    if len(lr_arr) != n_sent:
        c.add(f"{field}.lr", f"has {len(lr_arr)} values but {field}.x has {n_sent}")
        return None
    bad = ~np.isfinite(lr_arr) | (lr_arr < 0) | (lr_arr > limits.max_abs_x)
    if bad.any():
        i = _first_bad(bad)
        c.add(f"{field}.lr[{i}]", f"must be finite, >= 0 and <= {limits.max_abs_x:g}, got {lr_arr[i]}")
        return None
    return lr_arr[:n_kept]


def check_budget(c: Violations, curve: Curve | None, total_steps: float | None,
                 field: str = "run.total_steps") -> None:
    if curve is not None and total_steps is not None and total_steps < curve.last_x:
        c.add(field, f"({total_steps}) is before the last observed x ({curve.last_x}); the budget must be at "
              "or after the observed curve")


def check_labels(c: Violations, labels: Mapping[str, str], limits: Limits,
                 field: str = "run.labels") -> Mapping[str, str]:
    """Labels are free-form and used nowhere, so only their size is bounded (count, key and value length)."""
    if len(labels) > limits.max_labels:
        c.add(field, f"has {len(labels)} labels; the limit is {limits.max_labels}")
        return {}
    for key, value in labels.items():
        if len(key) > limits.max_label_key_chars:
            c.add(field, f"key {key[:40]!r}... has {len(key)} characters; the limit is {limits.max_label_key_chars}")
        elif len(value) > limits.max_label_value_chars:
            c.add(field, f"the value of {key!r} has {len(value)} characters; the limit is "
                  f"{limits.max_label_value_chars}")
    return labels


# ---- the learning-rate schedule --------------------------------------------------------------------
_NEEDS_BUDGET = (ScheduleShape.COSINE, ScheduleShape.LINEAR, ScheduleShape.WSD)


def _schedule(c: Violations, raw: ScheduleInput | None, total_steps: float | None, curve: Curve | None,
              limits: Limits, field: str = "run.schedule") -> LrSchedule | None:
    if raw is None:
        return None
    if raw.shape is None:
        _check_no_schedule(c, raw, field)
        return None
    if not isinstance(raw.shape, ScheduleShape):
        c.add(f"{field}.shape", f"unknown enum value {raw.shape}")
        return None
    schedule = build_schedule(c, raw.shape, peak_lr=raw.peak_lr, final_lr=raw.final_lr, warmup_steps=raw.warmup_steps,
                              decay_start=raw.decay_start, step_gamma=raw.step_gamma,
                              step_interval=raw.step_interval, steps=raw.steps, values=raw.values,
                              total_steps=total_steps, limits=limits, field=field)
    if schedule is not None and schedule.shape is ScheduleShape.EXPLICIT and curve is not None:
        end = float(schedule.steps[-1])
        if end < curve.last_x:
            c.add(f"{field}.steps", f"ends at {end}, before the last observed x ({curve.last_x}): send the "
                  "schedule of the whole run, past and future")
            return None
    return schedule


def _check_no_schedule(c: Violations, raw: ScheduleInput, field: str) -> None:
    """An unset shape means "no schedule known": anything else sent with it would be silently ignored."""
    _explicit_points_only(c, "unset", raw.steps, raw.values, field)
    given = [name for name in ("peak_lr", "final_lr", "warmup_steps", "decay_start", "step_gamma", "step_interval")
             if getattr(raw, name) != 0]
    if given:
        c.add(f"{field}.shape", f"is unset (no schedule known) but {', '.join(given)} given; set the shape")


def _explicit_points_only(c: Violations, shape: str, steps: Sequence[float], values: Sequence[float],
                          field: str) -> None:
    for name, seq in (("steps", steps), ("values", values)):
        if len(seq):
            c.add(f"{field}.{name}", f"is only read for an explicit schedule; the shape is {shape} (send "
                  "SCHEDULE_SHAPE_EXPLICIT to use steps/values, or leave them empty)")


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
        return _explicit_schedule(c, steps, values, limits, field)
    n_before = len(c.violations)
    _explicit_points_only(c, shape.value, steps, values, field)
    big = limits.max_abs_x
    peak = finite_scalar(c, f"{field}.peak_lr", peak_lr, nonnegative=True, limit=big)
    final = finite_scalar(c, f"{field}.final_lr", final_lr, nonnegative=True, limit=big)
    warm = finite_scalar(c, f"{field}.warmup_steps", warmup_steps, nonnegative=True, limit=big)
    start = finite_scalar(c, f"{field}.decay_start", decay_start, nonnegative=True, limit=big)
    gamma = finite_scalar(c, f"{field}.step_gamma", step_gamma, nonnegative=True, limit=big)
    interval = finite_scalar(c, f"{field}.step_interval", step_interval, nonnegative=True, limit=big)
    if len(c.violations) > n_before:
        return None
    assert peak is not None and final is not None and warm is not None and start is not None
    assert gamma is not None and interval is not None
    if peak == 0:
        c.add(f"{field}.peak_lr", "must be > 0 for a parametric schedule")
    if shape in _NEEDS_BUDGET and total_steps is None:
        c.add("run.total_steps", f"is required for a {shape.value} schedule")
    if shape is ScheduleShape.STEP:
        _check_step_decay(c, gamma, interval, field)
    if total_steps is not None:
        _check_within_budget(c, shape, warm, start, total_steps, field)
    if len(c.violations) > n_before:
        return None
    if shape is ScheduleShape.WSD and start <= warm:
        c.note(f"{field}.decay_start ({start}) is not after the warm-up ({warm}): the WSD schedule has no "
               "stable phase and decays linearly from the end of the warm-up")
    return LrSchedule(shape, peak_lr=peak, final_lr=final, warmup_steps=warm, total_steps=float(total_steps or 0.0),
                      decay_start=start, step_gamma=gamma if gamma else 0.1, step_interval=interval)


def _check_step_decay(c: Violations, gamma: float, interval: float, field: str) -> None:
    """A step decay multiplies the LR by gamma every interval: gamma in (0, 1] (1 = constant), interval > 0."""
    if not 0.0 < gamma <= 1.0:
        c.add(f"{field}.step_gamma", f"must be in (0, 1] for a step schedule (the learning rate is multiplied "
              f"by it every step_interval), got {gamma}")
    if interval == 0:
        c.add(f"{field}.step_interval", "must be > 0 for a step schedule")


def _check_within_budget(c: Violations, shape: ScheduleShape, warm: float, start: float, total: float,
                         field: str) -> None:
    """The warm-up and a WSD cooldown's start lie within the run (at or before run.total_steps)."""
    if warm > total:
        c.add(f"{field}.warmup_steps", f"({warm}) is longer than the budget run.total_steps ({total}); the "
              "warm-up must end within the run")
    if shape is ScheduleShape.WSD and start > total:
        c.add(f"{field}.decay_start", f"({start}) is after the budget run.total_steps ({total}); the cooldown "
              "must start within the run")


def _explicit_schedule(c: Violations, steps: Sequence[float], values: Sequence[float], limits: Limits,
                       field: str) -> LrSchedule | None:
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(s) == 0:
        c.add(f"{field}.steps", "must not be empty for an explicit schedule")
        return None
    if len(s) != len(v):
        c.add(f"{field}.values", f"has {len(v)} values but {field}.steps has {len(s)}")
        return None
    if len(s) > limits.max_schedule_points:
        c.add(f"{field}.steps", f"has {len(s)} points; the limit is {limits.max_schedule_points} (subsample "
              "the schedule)")
        return None
    if not _increasing(c, f"{field}.steps", s, limits.max_abs_x):
        return None
    bad = ~np.isfinite(v) | (v < 0) | (v > limits.max_abs_x)
    if bad.any():
        i = _first_bad(bad)
        c.add(f"{field}.values[{i}]", f"must be finite, >= 0 and <= {limits.max_abs_x:g}, got {v[i]}")
        return None
    peak = float(v.max())
    if peak == 0:
        c.add(f"{field}.values", "are all 0: a schedule needs a learning rate > 0 somewhere")
        return None
    return LrSchedule(ScheduleShape.EXPLICIT, peak_lr=peak, final_lr=float(v[-1]), total_steps=float(s[-1]),
                      steps=s, values=v)


def _forecast_end(total_steps: float | None, query_x: np.ndarray, curve: Curve) -> float:
    """The furthest x the answer speaks about: the budget, or the last queried x beyond it."""
    end = total_steps if total_steps is not None else (float(query_x[-1]) if len(query_x) else curve.last_x)
    return max(end, float(query_x[-1])) if len(query_x) else end


def _note_schedule_end(c: Violations, schedule: LrSchedule | None, end: float, field: str = "run.schedule") -> None:
    """An explicit schedule that stops short of the forecast is held at its last value: say so, unless the
    gap is within SCHEDULE_END_SLACK of the end (steps 0..999 for a budget of 1000 are the whole run)."""
    if schedule is None or schedule.shape is not ScheduleShape.EXPLICIT:
        return
    assert schedule.steps is not None and schedule.values is not None
    last = float(schedule.steps[-1])
    if end - last > SCHEDULE_END_SLACK * abs(end):
        c.note(f"{field}.steps end at {last}, before the forecast reaches {end}: the learning rate is taken as "
               f"constant at its last value ({float(schedule.values[-1])}) from there")


# ---- where to predict, which quantiles, the policy -------------------------------------------------
def build_query_x(c: Violations, query_x: Sequence[float], curve: Curve | None, total_steps: float | None,
                  limits: Limits, field: str = "query_x") -> np.ndarray:
    q = np.asarray(query_x, dtype=np.float64)
    if len(q):
        if len(q) > limits.max_query_points:
            c.add(field, f"has {len(q)} points; the limit is {limits.max_query_points}")
            return q[:0]
        if _increasing(c, field, q, limits.max_abs_x) and q[0] <= 0:  # increasing: q[0] is the smallest
            c.add(f"{field}[0]", f"must be > 0, got {q[0]}")
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


# ---- engine and request id -------------------------------------------------------------------------
def check_engine(c: Violations, engine: str, field: str = "engine") -> None:
    if engine not in KNOWN_ENGINES:
        c.add(field, f"unknown engine '{engine[:40]}'; use one of: ensemble, learned, analytic")


def check_request_id(c: Violations, request_id: str, limits: Limits = Limits(), field: str = "request_id") -> None:
    """The id is echoed in responses and logs, so it is short and printable (no newline can forge a log line)."""
    if len(request_id) > limits.max_request_id_chars:
        c.add(field, f"must be at most {limits.max_request_id_chars} characters")
        return
    if request_id.isascii() and request_id.isprintable():  # the common case, without a per-character loop
        return
    for i, ch in enumerate(request_id):
        if unicodedata.category(ch) in _UNPRINTABLE:
            c.add(field, f"must not contain control or format characters; found U+{ord(ch):04X} at index {i}")
            return


# ---- sweep context ---------------------------------------------------------------------------------
def build_sweep(c: Violations, raw: SweepInput, curve: Curve | None, total_steps: float | None,
                limits: Limits = Limits(), field: str = "sweep") -> SweepContext | None:
    """The siblings, each curve checked like the request's own; sizes bounded before any curve is read.
    A sibling's goal and x kind must be the run's: moves are only comparable on the same metric and axis."""
    check_request_id(c, raw.sweep_id, limits, f"{field}.sweep_id")
    sibs = list(raw.siblings)
    if len(sibs) > limits.max_sweep_siblings:
        c.add(f"{field}.siblings", f"has {len(sibs)} siblings; the limit is {limits.max_sweep_siblings} (send the "
              "most relevant ones, e.g. the finished and the longest running)")
        return None
    n_points = sum(len(s.curve.x) for s in sibs)
    if n_points > limits.max_sweep_points:
        c.add(f"{field}.siblings", f"have {n_points} curve points in all; the limit is {limits.max_sweep_points} "
              "(subsample the sibling curves)")
        return None
    out: list[SiblingRun] = []
    for i, s in enumerate(sibs):
        f = f"{field}.siblings[{i}]"
        check_request_id(c, s.run_id, limits, f"{f}.run_id")
        goal = _known(c, f"{f}.curve.goal", s.curve.goal, Goal.MINIMIZE)
        x_kind = _known(c, f"{f}.curve.x_kind", s.curve.x_kind, XKind.STEP)
        if curve is not None and goal is not curve.goal:
            c.add(f"{f}.curve.goal", f"is {goal.name} but the forecast curve's goal is {curve.goal.name}")
        if curve is not None and x_kind is not curve.x_kind:
            c.add(f"{f}.curve.x_kind", f"is {x_kind.name} but the forecast curve's x_kind is {curve.x_kind.name}")
        sc = build_curve(c, s.curve.x, s.curve.values, goal=goal, x_kind=x_kind, metric=s.curve.metric,
                         lower_bound=s.curve.lower_bound, upper_bound=s.curve.upper_bound, lr=s.curve.lr,
                         limits=limits, field=f"{f}.curve")
        budget = finite_scalar(c, f"{f}.budget", s.budget, positive=True, limit=limits.max_abs_x)
        if s.budget is None:
            budget = total_steps
            if total_steps is None:
                c.add(f"{f}.budget", "must be set when run.total_steps is not (the relative position is x / budget)")
        hp = dict(s.hyperparameters)
        if len(hp) > limits.max_hyperparameters:
            c.add(f"{f}.hyperparameters", f"has {len(hp)} entries; the limit is {limits.max_hyperparameters}")
        else:
            for k, v in hp.items():
                if len(k) > limits.max_label_key_chars:
                    c.add(f"{f}.hyperparameters", f"key {k[:40]!r}... has {len(k)} characters; the limit is "
                          f"{limits.max_label_key_chars}")
                elif not math.isfinite(v):
                    c.add(f"{f}.hyperparameters", f"value of {k[:40]!r} must be finite, got {v}")
        if sc is not None and budget is not None:
            out.append(SiblingRun(run_id=s.run_id, curve=sc, budget=float(budget), finished=bool(s.finished),
                                  hyperparameters=hp))
    return SweepContext(sweep_id=raw.sweep_id, siblings=tuple(out))
