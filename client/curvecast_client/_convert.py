"""Builds request messages from plain Python values and turns responses into the SDK's result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from curvecast_api.v1 import curvecast_pb2 as pb

from ._types import (
    ComputeToTarget,
    EngineStatus,
    EngineUsage,
    Forecast,
    InvalidArgument,
    ModelInfo,
    PointForecast,
    Recommendation,
    ScalingFit,
    ScalingParameter,
    Sibling,
)

GOALS = {"minimize": pb.GOAL_MINIMIZE, "min": pb.GOAL_MINIMIZE, "maximize": pb.GOAL_MAXIMIZE, "max": pb.GOAL_MAXIMIZE}
X_KINDS = {"step": pb.X_KIND_STEP, "epoch": pb.X_KIND_EPOCH, "samples": pb.X_KIND_SAMPLES, "tokens": pb.X_KIND_TOKENS}
SHAPES = {"constant": pb.SCHEDULE_SHAPE_CONSTANT, "cosine": pb.SCHEDULE_SHAPE_COSINE,
          "linear": pb.SCHEDULE_SHAPE_LINEAR, "wsd": pb.SCHEDULE_SHAPE_WSD, "step": pb.SCHEDULE_SHAPE_STEP,
          "explicit": pb.SCHEDULE_SHAPE_EXPLICIT}
ACTIONS = {pb.ACTION_CONTINUE: "continue", pb.ACTION_STOP_UNPROMISING: "stop_unpromising",
           pb.ACTION_STOP_CONVERGED: "stop_converged", pb.ACTION_STOP_DIVERGED: "stop_diverged",
           pb.ACTION_TARGET_REACHED: "target_reached", pb.ACTION_UNSPECIFIED: "unspecified"}
FORMS = {"chinchilla": pb.SCALING_FORM_CHINCHILLA, "gadre": pb.SCALING_FORM_GADRE, "kaplan": pb.SCALING_FORM_KAPLAN}
FORM_NAMES = {v: k for k, v in FORMS.items()}


@dataclass(frozen=True)
class Schedule:
    """A planned learning-rate schedule: a parametric shape, or explicit (step, lr) pairs."""

    shape: str = "constant"
    peak_lr: float = 0.0
    final_lr: float = 0.0
    warmup_steps: float = 0.0
    decay_start: float = 0.0
    step_gamma: float = 0.0
    step_interval: float = 0.0
    steps: Sequence[float] = field(default_factory=tuple)
    values: Sequence[float] = field(default_factory=tuple)

    @classmethod
    def explicit(cls, steps: Iterable[float], values: Iterable[float]) -> "Schedule":
        return cls(shape="explicit", steps=_floats(steps), values=_floats(values))

    def to_proto(self) -> pb.LrSchedule:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown schedule shape {self.shape!r}; one of {sorted(SHAPES)}")
        return pb.LrSchedule(shape=SHAPES[self.shape], peak_lr=self.peak_lr, final_lr=self.final_lr,
                             warmup_steps=self.warmup_steps, decay_start=self.decay_start,
                             step_gamma=self.step_gamma, step_interval=self.step_interval,
                             steps=_floats(self.steps), values=_floats(self.values))


def check_request_id(request_id: Any, field_name: str = "request_id") -> str:
    """The id travels as the ``x-request-id`` header too, and gRPC header values are printable ASCII: refuse
    anything else here, naming the field, rather than let the transport fail with "INTERNAL: Invalid metadata"."""
    if not isinstance(request_id, str):
        raise InvalidArgument(field_name, f"must be a string, got {type(request_id).__name__}")
    for i, ch in enumerate(request_id):
        if not " " <= ch <= "~":
            raise InvalidArgument(field_name, f"must be printable ASCII, like every gRPC header value; character {i} "
                                  f"is {ch!r}")
    return request_id


def _floats(values: Iterable[Any] | None) -> list[float]:
    return [] if values is None else [float(v) for v in values]


def forecast_request(
    x: Iterable[float],
    y: Iterable[float],
    *,
    goal: str = "minimize",
    x_kind: str = "step",
    metric: str = "",
    total_steps: float | None = None,
    query_x: Iterable[float] | None = None,
    quantiles: Iterable[float] | None = None,
    target: float | None = None,
    incumbent: float | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    lr: Iterable[float] | None = None,
    schedule: Schedule | Mapping[str, Any] | None = None,
    model_params: float | None = None,
    tokens_per_step: float | None = None,
    flops_per_step: float | None = None,
    cost_per_step: float | None = None,
    labels: Mapping[str, str] | None = None,
    policy: Mapping[str, float] | None = None,
    engine: str = "",
    request_id: str = "",
    siblings: Iterable[Sibling | Mapping[str, Any]] | None = None,
    sweep_id: str = "",
) -> pb.ForecastRequest:
    if goal not in GOALS:
        raise ValueError(f"goal must be 'minimize' or 'maximize', got {goal!r}")
    if x_kind not in X_KINDS:
        raise ValueError(f"x_kind must be one of {sorted(X_KINDS)}, got {x_kind!r}")
    curve = pb.Curve(x=_floats(x), values=_floats(y), goal=GOALS[goal], x_kind=X_KINDS[x_kind], metric=metric,
                     lr=_floats(lr))
    if lower_bound is not None:
        curve.lower_bound = float(lower_bound)
    if upper_bound is not None:
        curve.upper_bound = float(upper_bound)
    run = pb.RunInfo(labels=dict(labels or {}))
    for name, value in (("total_steps", total_steps), ("model_params", model_params),
                        ("tokens_per_step", tokens_per_step), ("flops_per_step", flops_per_step),
                        ("cost_per_step", cost_per_step)):
        if value is not None:
            setattr(run, name, float(value))
    if schedule is not None:
        sched = schedule if isinstance(schedule, Schedule) else Schedule(**dict(schedule))
        run.schedule.CopyFrom(sched.to_proto())
    req = pb.ForecastRequest(curve=curve, run=run, query_x=_floats(query_x), quantiles=_floats(quantiles),
                             engine=engine, request_id=check_request_id(request_id))
    if target is not None:
        req.target = float(target)
    if incumbent is not None:
        req.incumbent = float(incumbent)
    for name, value in (policy or {}).items():
        setattr(req.policy, name, value)
    if siblings is not None or sweep_id:
        _add_sweep(req, siblings or (), sweep_id)
    return req


def _add_sweep(req: pb.ForecastRequest, siblings: Iterable[Sibling | Mapping[str, Any]], sweep_id: str) -> None:
    """Sweep context: each sibling's curve takes the forecast curve's goal, x kind, metric and bounds."""
    req.sweep.sweep_id = sweep_id
    c = req.curve
    for s in siblings:
        sib = s if isinstance(s, Sibling) else Sibling(**dict(s))
        msg = req.sweep.siblings.add(run_id=str(sib.run_id), finished=bool(sib.finished),
                                     hyperparameters={str(k): float(v) for k, v in sib.hyperparameters.items()})
        msg.curve.CopyFrom(pb.Curve(x=_floats(sib.x), values=_floats(sib.y), goal=c.goal, x_kind=c.x_kind,
                                    metric=c.metric))
        for name in ("lower_bound", "upper_bound"):
            if c.HasField(name):
                setattr(msg.curve, name, getattr(c, name))
        if sib.budget is not None:
            msg.budget = float(sib.budget)


def forecast_batch_request(runs: Sequence[Mapping[str, Any]]) -> pb.ForecastBatchRequest:
    """One ForecastBatchRequest; an argument the SDK refuses is named with its item, e.g. ``requests[2].request_id``."""
    requests = []
    for i, run in enumerate(runs):
        try:
            requests.append(forecast_request(**dict(run)))
        except InvalidArgument as exc:
            raise exc.under(f"requests[{i}].") from None
    return pb.ForecastBatchRequest(requests=requests)


def _levels(qs: Iterable[pb.QuantileValue]) -> dict[float, float]:
    return {q.level: q.value for q in qs}


def _point(p: pb.PointForecast) -> PointForecast:
    return PointForecast(x=p.x, mean=p.mean, quantiles=_levels(p.quantiles))


def _opt(msg: Any, name: str) -> float | None:
    return getattr(msg, name) if msg.HasField(name) else None


def forecast_result(resp: pb.ForecastResponse) -> Forecast:
    ctt = None
    if resp.HasField("compute_to_target"):
        c = resp.compute_to_target
        ctt = ComputeToTarget(target=c.target, already_reached=c.already_reached,
                              prob_within_budget=c.prob_within_budget, prob_within_horizon=c.prob_within_horizon,
                              horizon_steps=c.horizon_steps, steps=_levels(c.steps.quantiles),
                              flops=_levels(c.flops.quantiles), cost=_levels(c.cost.quantiles),
                              prob_beyond_horizon=c.steps.prob_beyond_horizon)
    r = resp.recommendation
    rec = Recommendation(action=ACTIONS.get(r.action, "unspecified"), reason=r.reason, confidence=r.confidence,
                         prob_beat_incumbent=_opt(r, "prob_beat_incumbent"),
                         prob_reach_target=_opt(r, "prob_reach_target"),
                         expected_improvement=r.expected_improvement, relative_improvement=r.relative_improvement,
                         threshold=r.threshold, steps_saved=r.steps_saved, flops_saved=_opt(r, "flops_saved"),
                         cost_saved=_opt(r, "cost_saved"), extend=r.extend)
    return Forecast(predictions=[_point(p) for p in resp.predictions], final=_point(resp.final),
                    compute_to_target=ctt, recommendation=rec,
                    engines=[EngineUsage(e.name, e.version, e.provider, e.weight) for e in resp.engines],
                    warnings=list(resp.warnings), request_id=resp.request_id, best_observed=resp.best_observed)


def scaling_request(points: Iterable[Mapping[str, Any]], *, form: str = "chinchilla",
                    predict_at: Iterable[tuple[float, float]] = (), compute_budgets: Iterable[float] = (),
                    bootstrap: int | None = None, request_id: str = "", drop_early_fraction: float | None = None,
                    huber_delta: float | None = None, isoflop: bool = False) -> pb.FitScalingLawRequest:
    """Points are dicts with n_params, tokens, loss and optional run_id, flops, weight (default 1; 0 leaves
    the point out). ``drop_early_fraction`` (server default 0.5): each run's checkpoints below this fraction
    of its final tokens are dropped; ``huber_delta`` (log-loss units; default: the server chooses between
    Approach 3's 1e-3 and least squares); ``isoflop``: also fit Approach 2. The server validates values."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {sorted(FORMS)}, got {form!r}")
    req = pb.FitScalingLawRequest(form=FORMS[form], compute_budgets=_floats(compute_budgets),
                                  request_id=check_request_id(request_id), isoflop=bool(isoflop))
    for p in points:
        msg = req.points.add(n_params=float(p["n_params"]), tokens=float(p["tokens"]), loss=float(p["loss"]),
                             run_id=str(p.get("run_id", "")))
        if p.get("flops") is not None:
            msg.flops = float(p["flops"])
        if p.get("weight") is not None:
            msg.weight = float(p["weight"])
    for n, d in predict_at:
        req.predict_at.add(n_params=float(n), tokens=float(d))
    if bootstrap is not None:
        req.bootstrap = int(bootstrap)
    if drop_early_fraction is not None:
        req.drop_early_fraction = float(drop_early_fraction)
    if huber_delta is not None:
        req.huber_delta = float(huber_delta)
    return req


def _fields(msg, names: Iterable[str]) -> dict[str, Any]:
    return {k: getattr(msg, k) for k in names}


_OPT_FIELDS = ("flops", "n_params", "tokens", "loss", "n_params_lower95", "n_params_upper95", "tokens_lower95",
               "tokens_upper95", "loss_lower95", "loss_upper95")


def scaling_result(resp: pb.FitScalingLawResponse) -> ScalingFit:
    return ScalingFit(
        form=FORM_NAMES.get(resp.form, "chinchilla"),
        parameters={p.name: ScalingParameter(p.name, p.value, p.lower95, p.upper95) for p in resp.parameters},
        residual_rmse=resp.residual_rmse, n_points=resp.n_points, n_runs=resp.n_runs,
        predictions=[_fields(p, ("n_params", "tokens", "loss", "lower95", "upper95", "predictive_lower95",
                                 "predictive_upper95")) for p in resp.predictions],
        compute_optimal=[_fields(c, _OPT_FIELDS) for c in resp.compute_optimal],
        warnings=list(resp.warnings),
        compute_losses=[_fields(c, ("flops", "loss", "lower95", "upper95", "predictive_lower95",
                                    "predictive_upper95")) for c in resp.compute_losses],
        drop_early_fraction=resp.drop_early_fraction, n_points_dropped=resp.n_points_dropped,
        dropped={d.reason: d.count for d in resp.dropped}, huber_delta=resp.huber_delta,
        calibration={"folds": resp.calibration_folds, "heldout_points": resp.calibration_heldout_points,
                     "kappa": resp.calibration_kappa, "floor": resp.calibration_floor},
        isoflop=({"budgets": [_fields(b, ("flops", "n_points", "n_params_opt", "tokens_opt", "loss_opt", "used",
                                          "note")) for b in resp.isoflop.budgets],
                  "exponent": resp.isoflop.exponent, "exponent_lower95": resp.isoflop.exponent_lower95,
                  "exponent_upper95": resp.isoflop.exponent_upper95, "coefficient": resp.isoflop.coefficient,
                  "compute_optimal": [_fields(c, _OPT_FIELDS) for c in resp.isoflop.compute_optimal]}
                 if resp.HasField("isoflop") else None))


def model_info(resp: pb.ModelInfo) -> ModelInfo:
    p = resp.default_policy
    return ModelInfo(
        server_version=resp.server_version, api_version=resp.api_version,
        engines=[EngineStatus(e.name, e.version, e.provider, e.available, e.detail) for e in resp.engines],
        default_engine=resp.default_engine, default_quantiles=list(resp.default_quantiles),
        max_curve_points=resp.max_curve_points, max_query_points=resp.max_query_points,
        max_batch_requests=resp.max_batch_requests,
        default_policy={"min_prob_beat_incumbent": p.min_prob_beat_incumbent,
                        "min_relative_improvement": p.min_relative_improvement, "min_points": p.min_points,
                        "min_fraction_observed": p.min_fraction_observed, "compute_weight": p.compute_weight,
                        "keep_best_checkpoint": p.keep_best_checkpoint},
        scaling_limits={"max_points": resp.max_scaling_points, "max_bootstrap": resp.max_scaling_bootstrap,
                        "max_point_replicates": resp.max_scaling_point_replicates,
                        "max_predict_at": resp.max_scaling_predict_at,
                        "max_compute_budgets": resp.max_scaling_compute_budgets},
        sweep_limits={"max_siblings": resp.max_sweep_siblings, "max_points": resp.max_sweep_points})
