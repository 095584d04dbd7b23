"""Domain values describing one training run: its observed curve, its plan and what the caller asks.

These types know nothing about gRPC; ``validation.validate_forecast`` builds them from the values the
server's converters read off the wire, so every instance here is already consistent (finite, strictly
increasing x, ...).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


class Goal(enum.Enum):
    """Whether lower (a loss) or higher (an accuracy) values are better."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    @property
    def sign(self) -> float:
        """+1 for minimize, -1 for maximize: ``sign * value`` is always "lower is better"."""
        return 1.0 if self is Goal.MINIMIZE else -1.0


class XKind(enum.Enum):
    """What the curve's x axis counts."""

    STEP = "step"
    EPOCH = "epoch"
    SAMPLES = "samples"  # training-set size (sample-wise curves, e.g. LCDB)
    TOKENS = "tokens"


class ScheduleShape(enum.Enum):
    CONSTANT = "constant"
    COSINE = "cosine"
    LINEAR = "linear"
    WSD = "wsd"  # warmup, stable, then linear decay from decay_start to the end
    STEP = "step"  # multiply by step_gamma every step_interval after warmup
    EXPLICIT = "explicit"  # per-step values given


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate as a function of step, either explicit or parametric.

    Explicit values are interpolated linearly between given steps and held constant outside them.
    Parametric schedules warm up linearly from 0 to ``peak_lr`` over ``warmup_steps``.
    """

    shape: ScheduleShape
    peak_lr: float = 1.0
    final_lr: float = 0.0
    warmup_steps: float = 0.0
    total_steps: float = 0.0
    decay_start: float = 0.0  # WSD: step where the cooldown starts
    step_gamma: float = 0.1
    step_interval: float = 0.0
    steps: np.ndarray | None = None
    values: np.ndarray | None = None

    def lr_at(self, step: np.ndarray) -> np.ndarray:
        """Learning rate at each (possibly fractional) step."""
        s = np.asarray(step, dtype=np.float64)
        if self.shape is ScheduleShape.EXPLICIT:
            assert self.steps is not None and self.values is not None
            return np.interp(s, self.steps, self.values)
        peak, final, warm = self.peak_lr, self.final_lr, self.warmup_steps
        total = max(self.total_steps, warm + 1.0)
        lr = np.full_like(s, peak)
        if self.shape is ScheduleShape.COSINE:
            frac = np.clip((s - warm) / (total - warm), 0.0, 1.0)
            lr = final + 0.5 * (peak - final) * (1.0 + np.cos(np.pi * frac))
        elif self.shape is ScheduleShape.LINEAR:
            frac = np.clip((s - warm) / (total - warm), 0.0, 1.0)
            lr = peak + (final - peak) * frac
        elif self.shape is ScheduleShape.WSD:
            start = max(self.decay_start, warm)
            frac = np.clip((s - start) / max(total - start, 1.0), 0.0, 1.0)
            lr = peak + (final - peak) * frac
        elif self.shape is ScheduleShape.STEP:
            if self.step_interval > 0:
                k = np.floor(np.maximum(s - warm, 0.0) / self.step_interval)
                lr = peak * self.step_gamma**k
        if warm > 0:
            with np.errstate(over="ignore", divide="ignore"):  # a denormal warm-up length must not warn
                lr = np.where(s < warm, peak * np.clip(s / warm, 0.0, 1.0), lr)
        return lr

    @property
    def is_constant(self) -> bool:
        return self.shape is ScheduleShape.CONSTANT and self.warmup_steps <= 0

    def rescaled(self, k: float) -> "LrSchedule":
        """The same plan with every x multiplied by ``k`` (e.g. epochs -> steps)."""
        return replace(self, warmup_steps=self.warmup_steps * k, total_steps=self.total_steps * k,
                       decay_start=self.decay_start * k, step_interval=self.step_interval * k,
                       steps=None if self.steps is None else np.asarray(self.steps, dtype=np.float64) * k)


@dataclass(frozen=True)
class Curve:
    """An observed training curve: finite values at strictly increasing x.

    ``diverged`` is set when the caller's curve ended in non-finite values (the run blew up); those
    trailing points are dropped from ``x``/``y`` and ``diverged_at`` keeps the first bad x.
    """

    x: np.ndarray
    y: np.ndarray
    goal: Goal = Goal.MINIMIZE
    x_kind: XKind = XKind.STEP
    metric: str = ""
    lower_bound: float | None = None
    upper_bound: float | None = None
    diverged_at: float | None = None
    lr: np.ndarray | None = None  # learning rate actually used at each observed x, if known

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def last_x(self) -> float:
        return float(self.x[-1]) if len(self.x) else 0.0

    def best(self) -> float:
        """Best value seen so far under the goal."""
        return float(np.min(self.y)) if self.goal is Goal.MINIMIZE else float(np.max(self.y))


@dataclass(frozen=True)
class RunInfo:
    """What is known about the run beyond its curve. All optional; units documented in the proto."""

    total_steps: float | None = None  # budget, in the curve's x units
    schedule: LrSchedule | None = None
    model_params: float | None = None
    tokens_per_step: float | None = None
    flops_per_step: float | None = None
    cost_per_step: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def flops_for(self, steps: float) -> float | None:
        if self.flops_per_step is not None:
            return steps * self.flops_per_step
        if self.tokens_per_step is not None and self.model_params is not None:
            return 6.0 * self.model_params * self.tokens_per_step * steps
        return None

    def cost_for(self, steps: float) -> float | None:
        return None if self.cost_per_step is None else steps * self.cost_per_step


@dataclass(frozen=True)
class StopPolicy:
    """Knobs of the stop recommendation. Defaults were tuned on the decision benchmark (bench/sweeps.py,
    TaskSet/LCDB/ScAn-VLM tune tasks; docs/bench/sweeps): a run is stopped as unpromising when the
    recalibrated P(final beats incumbent) is below 2%; the expected-gain rule is off by default because it
    killed eventual winners on plateaus."""

    min_prob_beat_incumbent: float = 0.02  # stop-unpromising below this probability
    min_relative_improvement: float = 0.0  # stop-converged below this expected relative gain (0 = off)
    min_points: int = 2  # never recommend stopping on fewer observed points
    min_fraction_observed: float = 0.0  # never stop before this fraction of the budget
    compute_weight: float = 0.0  # accept up to this x (fraction of budget left) risk of killing a winner
    keep_best_checkpoint: bool = True  # the run's result is its best point, not its last


@dataclass(frozen=True)
class ForecastQuery:
    """One run to forecast, fully validated."""

    curve: Curve
    run: RunInfo
    x_query: np.ndarray
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    target: float | None = None
    incumbent: float | None = None
    policy: StopPolicy = field(default_factory=StopPolicy)
    engine: str = ""  # "" lets the service choose
    # validation's notes on input accepted with a documented meaning; answered as response warnings
    notes: tuple[str, ...] = ()
    sweep: "SweepContext | None" = None  # sibling runs of the same sweep (curvecast.sweep uses them)

    @property
    def horizon(self) -> float:
        """The x up to which the run is planned (budget), or the last queried x."""
        if self.run.total_steps is not None:
            return float(self.run.total_steps)
        return float(self.x_query[-1]) if len(self.x_query) else self.curve.last_x


@dataclass(frozen=True)
class SiblingRun:
    """Another run of the same sweep, validated: its curve (same goal and x kind as the query) and budget."""

    run_id: str
    curve: Curve
    budget: float  # in the sibling's x units (the query's total_steps when the caller left it unset)
    finished: bool = False  # trained to its budget
    hyperparameters: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepContext:
    """The sweep a forecast run belongs to: its siblings (never the run itself), passed with each call."""

    sweep_id: str = ""
    siblings: tuple[SiblingRun, ...] = ()
