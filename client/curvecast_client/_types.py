"""Small typed results returned by the SDK, so callers never handle raw protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class CurvecastError(Exception):
    """A call failed. ``code`` is the gRPC status name (e.g. "INVALID_ARGUMENT")."""

    def __init__(self, code: str, message: str, violations: tuple[FieldViolation, ...] = (),
                 retry_after_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.violations = violations
        self.retry_after_s = retry_after_s


class InvalidArgument(CurvecastError, ValueError):
    """Refused by the SDK before anything was sent (code INVALID_ARGUMENT, the bad field in ``violations``).
    Also a ValueError, like the SDK's other checks of its arguments; never worth retrying."""

    def __init__(self, field_name: str, description: str) -> None:
        super().__init__("INVALID_ARGUMENT", f"{field_name}: {description}", (FieldViolation(field_name, description),))

    def under(self, prefix: str) -> "InvalidArgument":
        """The same refusal with the field named from an enclosing message, e.g. ``requests[3].request_id``."""
        v = self.violations[0]
        return InvalidArgument(prefix + v.field, v.description)


@dataclass(frozen=True)
class PointForecast:
    x: float
    mean: float
    quantiles: dict[float, float]  # level -> value

    def quantile(self, level: float) -> float:
        return self.quantiles[min(self.quantiles, key=lambda lv: abs(lv - level))]

    @property
    def median(self) -> float:
        return self.quantile(0.5)


@dataclass(frozen=True)
class ComputeToTarget:
    target: float
    already_reached: bool
    prob_within_budget: float
    prob_within_horizon: float
    horizon_steps: float
    steps: dict[float, float]  # level -> total steps at which the target is first reached
    flops: dict[float, float]
    cost: dict[float, float]
    prob_beyond_horizon: float


@dataclass(frozen=True)
class Recommendation:
    action: str  # "continue", "stop_unpromising", "stop_converged", "stop_diverged", "target_reached"
    reason: str
    confidence: float
    prob_beat_incumbent: float | None
    prob_reach_target: float | None
    expected_improvement: float
    relative_improvement: float
    threshold: float
    steps_saved: float
    flops_saved: float | None
    cost_saved: float | None
    extend: bool

    @property
    def should_stop(self) -> bool:
        return self.action.startswith("stop") or self.action == "target_reached"


@dataclass(frozen=True)
class EngineUsage:
    name: str
    version: str
    provider: str
    weight: float


@dataclass(frozen=True)
class Forecast:
    predictions: list[PointForecast]
    final: PointForecast
    compute_to_target: ComputeToTarget | None
    recommendation: Recommendation
    engines: list[EngineUsage]
    warnings: list[str]
    request_id: str
    best_observed: float

    def plot(self, ax: Any = None, *, x: Any = None, y: Any = None, budget: float | None = None,
             target: float | None = None, incumbent: float | None = None, **kwargs: Any) -> Any:
        """Draw this forecast as a fan chart on a matplotlib axis (a new one if None) and return the axis.

        Pass the observed curve as ``x``/``y``; see ``curvecast_client.plot.draw_forecast``. Needs matplotlib."""
        from .plot import draw_forecast, require_matplotlib

        require_matplotlib()
        return draw_forecast(self, ax, x=x, y=y, budget=budget, target=target, incumbent=incumbent, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; quantile keys become strings like "0.05"."""

        def pf(p: PointForecast) -> dict[str, Any]:
            return {"x": p.x, "mean": p.mean, "quantiles": {f"{k:g}": v for k, v in p.quantiles.items()}}

        ctt = None
        if self.compute_to_target is not None:
            c = self.compute_to_target
            ctt = {"target": c.target, "already_reached": c.already_reached,
                   "prob_within_budget": c.prob_within_budget, "prob_within_horizon": c.prob_within_horizon,
                   "horizon_steps": c.horizon_steps, "prob_beyond_horizon": c.prob_beyond_horizon,
                   "steps": {f"{k:g}": v for k, v in c.steps.items()},
                   "flops": {f"{k:g}": v for k, v in c.flops.items()},
                   "cost": {f"{k:g}": v for k, v in c.cost.items()}}
        r = self.recommendation
        return {
            "predictions": [pf(p) for p in self.predictions],
            "final": pf(self.final),
            "compute_to_target": ctt,
            "recommendation": {k: getattr(r, k) for k in r.__dataclass_fields__},
            "model": {"engines": [e.__dict__ for e in self.engines]},
            "warnings": self.warnings,
            "request_id": self.request_id,
            "best_observed": self.best_observed,
        }


@dataclass(frozen=True)
class ScalingParameter:
    name: str
    value: float
    lower95: float
    upper95: float


@dataclass(frozen=True)
class ScalingFit:
    form: str
    parameters: dict[str, ScalingParameter]
    residual_rmse: float
    n_points: int
    n_runs: int
    # n_params, tokens, loss, lower95/upper95 (bootstrap band), predictive_lower95/upper95 (predictive interval)
    predictions: list[dict[str, float]]
    # flops, n_params, tokens, loss and their 95% intervals (n_params_lower95, ..., loss_upper95)
    compute_optimal: list[dict[str, float]]
    warnings: list[str]
    compute_losses: list[dict[str, float]] = field(default_factory=list)  # kaplan: flops, loss and intervals
    drop_early_fraction: float = 0.0  # checkpoints below this fraction of their run's final tokens were dropped
    n_points_dropped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason ("early_checkpoint", "zero_weight") -> count
    huber_delta: float = 0.0  # the Huber threshold used (log-loss units; 1e-3 is Approach 3)
    calibration: dict[str, float] = field(default_factory=dict)  # folds, heldout_points, kappa, floor
    isoflop: dict[str, Any] | None = None  # Approach 2 (when asked): budgets, exponent (+95%), compute_optimal

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "parameters": {k: v.__dict__ for k, v in self.parameters.items()},
                "residual_rmse": self.residual_rmse, "n_points": self.n_points, "n_runs": self.n_runs,
                "predictions": self.predictions, "compute_optimal": self.compute_optimal, "warnings": self.warnings,
                "compute_losses": self.compute_losses, "drop_early_fraction": self.drop_early_fraction,
                "n_points_dropped": self.n_points_dropped, "dropped": self.dropped, "huber_delta": self.huber_delta,
                "calibration": self.calibration, "isoflop": self.isoflop}


@dataclass(frozen=True)
class EngineStatus:
    name: str
    version: str
    provider: str
    available: bool
    detail: str


@dataclass(frozen=True)
class ModelInfo:
    server_version: str
    api_version: str
    engines: list[EngineStatus]
    default_engine: str
    default_quantiles: list[float]
    max_curve_points: int
    max_query_points: int
    max_batch_requests: int
    default_policy: dict[str, float | bool] = field(default_factory=dict)
    # FitScalingLaw's limits: points, bootstrap replicates and their product, predictions, compute budgets
    scaling_limits: dict[str, int] = field(default_factory=dict)
    # sweep context's limits: sibling runs per request and their curve points in all
    sweep_limits: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["engines"] = [e.__dict__ for e in self.engines]
        return d


@dataclass(frozen=True)
class Sibling:
    """Another trial of the same sweep, sent as sweep context with a forecast (``siblings=[...]``).

    ``x``/``y``: its curve so far (same metric, goal and x units as the forecast run); ``budget``: its
    planned budget in x units (None: the forecast run's ``total_steps``); ``finished``: it trained to its
    budget; ``hyperparameters``: optional numeric values, informational."""

    run_id: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    budget: float | None = None
    finished: bool = False
    hyperparameters: dict[str, float] = field(default_factory=dict)
