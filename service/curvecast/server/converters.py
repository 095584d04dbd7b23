"""Wire <-> domain translation. The only place that knows both protobuf messages and domain types."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from curvecast_api.v1 import curvecast_pb2 as pb

from ..dataplane import ForecastResult
from ..decisions.compute_to_target import ComputeToTarget
from ..decisions.policy import Action, Recommendation
from ..domain.curve import ForecastQuery, Goal, ScheduleShape, StopPolicy, XKind
from ..domain.distribution import Marginals
from ..domain.errors import InvalidRequest
from ..domain.validation import (
    CurveInput,
    ForecastInput,
    Limits,
    PolicyInput,
    RunInput,
    ScheduleInput,
    SiblingInput,
    SweepInput,
    Violations,
    validate_forecast,
)
from ..domain.validation import finite_scalar as _finite  # the one finite-scalar check (scaling_request uses it)
from ..engines.base import EngineInfo

if TYPE_CHECKING:
    from ..scaling import ScalingFit, ScalingPoint
    from ..scaling.fit import ScalingInput
    from ..scaling.limits import ScalingLimits

_GOALS = {pb.GOAL_UNSPECIFIED: Goal.MINIMIZE, pb.GOAL_MINIMIZE: Goal.MINIMIZE, pb.GOAL_MAXIMIZE: Goal.MAXIMIZE}
_XKINDS = {pb.X_KIND_UNSPECIFIED: XKind.STEP, pb.X_KIND_STEP: XKind.STEP, pb.X_KIND_EPOCH: XKind.EPOCH,
           pb.X_KIND_SAMPLES: XKind.SAMPLES, pb.X_KIND_TOKENS: XKind.TOKENS}
_SHAPES = {pb.SCHEDULE_SHAPE_CONSTANT: ScheduleShape.CONSTANT, pb.SCHEDULE_SHAPE_COSINE: ScheduleShape.COSINE,
           pb.SCHEDULE_SHAPE_LINEAR: ScheduleShape.LINEAR, pb.SCHEDULE_SHAPE_WSD: ScheduleShape.WSD,
           pb.SCHEDULE_SHAPE_STEP: ScheduleShape.STEP, pb.SCHEDULE_SHAPE_EXPLICIT: ScheduleShape.EXPLICIT}
_ACTIONS = {Action.CONTINUE: pb.ACTION_CONTINUE, Action.STOP_UNPROMISING: pb.ACTION_STOP_UNPROMISING,
            Action.STOP_CONVERGED: pb.ACTION_STOP_CONVERGED, Action.STOP_DIVERGED: pb.ACTION_STOP_DIVERGED,
            Action.TARGET_REACHED: pb.ACTION_TARGET_REACHED}
_FORMS = {pb.SCALING_FORM_UNSPECIFIED: "chinchilla", pb.SCALING_FORM_CHINCHILLA: "chinchilla",
          pb.SCALING_FORM_GADRE: "gadre", pb.SCALING_FORM_KAPLAN: "kaplan"}
_FORMS_BACK = {v: k for k, v in _FORMS.items() if k != pb.SCALING_FORM_UNSPECIFIED}
MAX_REQUEST_ID = Limits.max_request_id_chars
_X_MAX = Limits.max_abs_x  # N, D, FLOPs and budgets, like every x-like quantity
_SCALING_MAX = np.array([Limits.max_abs_x, Limits.max_abs_x, Limits.max_abs_value])  # N, D, loss
_POLICY_FIELDS = tuple(f.name for f in fields(PolicyInput))


def _opt(msg, name: str) -> float | None:
    return getattr(msg, name) if msg.HasField(name) else None


def _enum(c: Violations, table: dict, value: int, field: str, default):
    if value not in table:
        c.add(field, f"unknown enum value {value}")
        return default
    return table[value]


def forecast_query(req: pb.ForecastRequest, limits: Limits, policy_defaults: StopPolicy) -> ForecastQuery:
    """Validate a ForecastRequest and build the domain query; raises InvalidRequest naming every bad field."""
    return validate_forecast(forecast_input(req), limits, policy_defaults)


def forecast_input(req: pb.ForecastRequest) -> ForecastInput:
    """Read the wire request once into plain values, checking nothing: unset optional fields become None,
    enum values with no domain meaning stay ints, so validation can name them."""
    pc, r, p = req.curve, req.run, req.policy
    curve = _curve_input(pc)
    run = RunInput(total_steps=_opt(r, "total_steps"),
                   schedule=_schedule_input(r.schedule) if r.HasField("schedule") else None,
                   model_params=_opt(r, "model_params"), tokens_per_step=_opt(r, "tokens_per_step"),
                   flops_per_step=_opt(r, "flops_per_step"), cost_per_step=_opt(r, "cost_per_step"),
                   labels=dict(r.labels))
    policy = PolicyInput(**{n: _opt(p, n) for n in _POLICY_FIELDS}) if req.HasField("policy") else PolicyInput()
    return ForecastInput(curve=curve, run=run, query_x=_floats(req.query_x), quantiles=tuple(req.quantiles),
                         target=_opt(req, "target"), incumbent=_opt(req, "incumbent"), policy=policy,
                         engine=req.engine, request_id=req.request_id,
                         sweep=_sweep_input(req.sweep) if req.HasField("sweep") else None)


def _curve_input(pc: pb.Curve) -> CurveInput:
    return CurveInput(x=_floats(pc.x), values=_floats(pc.values), goal=_GOALS.get(pc.goal, pc.goal),
                      x_kind=_XKINDS.get(pc.x_kind, pc.x_kind), metric=pc.metric,
                      lower_bound=_opt(pc, "lower_bound"), upper_bound=_opt(pc, "upper_bound"), lr=_floats(pc.lr))


def _sweep_input(sw: pb.SweepContext) -> SweepInput:
    return SweepInput(sweep_id=sw.sweep_id, siblings=[
        SiblingInput(curve=_curve_input(s.curve), run_id=s.run_id, budget=_opt(s, "budget"), finished=s.finished,
                     hyperparameters=dict(s.hyperparameters)) for s in sw.siblings])


def _schedule_input(s: pb.LrSchedule) -> ScheduleInput:
    shape = None if s.shape == pb.SCHEDULE_SHAPE_UNSPECIFIED else _SHAPES.get(s.shape, s.shape)
    return ScheduleInput(shape=shape, peak_lr=s.peak_lr, final_lr=s.final_lr, warmup_steps=s.warmup_steps,
                         decay_start=s.decay_start, step_gamma=s.step_gamma, step_interval=s.step_interval,
                         steps=_floats(s.steps), values=_floats(s.values))


def _floats(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) if len(values) else _NO_FLOATS


_NO_FLOATS = np.zeros(0)
_NO_FLOATS.flags.writeable = False  # shared by every request that leaves a repeated field empty


def prefix_violations(exc: InvalidRequest, prefix: str) -> InvalidRequest:
    return InvalidRequest([type(v)(f"{prefix}{v.field}", v.description) for v in exc.violations])


# ---- domain -> wire ---------------------------------------------------------------------------------
def _quantile_values(levels: Sequence[float], values: Sequence[float]) -> list[pb.QuantileValue]:
    return [pb.QuantileValue(level=float(lv), value=_safe(v)) for lv, v in zip(levels, values)]


def _safe(v: float) -> float:
    """Never put NaN/inf on the wire."""
    v = float(v)
    return v if math.isfinite(v) else (math.copysign(1.7976931348623157e308, v) if not math.isnan(v) else 0.0)


def _safe_list(a: np.ndarray) -> list:
    """``_safe`` for a whole array at once (the response builder is on every call's hot path)."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():  # rare: skip nan_to_num's overhead on the common path
        a = np.nan_to_num(a, nan=0.0, posinf=_MAX, neginf=-_MAX)
    return a.tolist()


_MAX = 1.7976931348623157e308


def _point_rows(m: Marginals, levels: Sequence[float]) -> Iterator[tuple[float, float, list[float]]]:
    return zip(_safe_list(m.x), _safe_list(m.mean), _safe_list(m.quantile(list(levels))))


def _fill_point(p: pb.PointForecast, x: float, mean: float, row: list[float], levels: list[float]) -> None:
    """Fill a PointForecast in place: about twice as fast as constructing messages and copying them in."""
    p.x, p.mean = x, mean
    add = p.quantiles.add
    for level, value in zip(levels, row):
        add(level=level, value=value)


def _ctt(ctt: ComputeToTarget) -> pb.ComputeToTarget:
    out = pb.ComputeToTarget(target=ctt.target, already_reached=ctt.already_reached,
                             prob_within_budget=ctt.p_within_budget, prob_within_horizon=ctt.p_within_horizon,
                             horizon_steps=ctt.horizon_x)
    beyond = 1.0 - ctt.p_within_horizon
    inside = [q for q in ctt.quantiles if q.within_horizon]
    out.steps.prob_beyond_horizon = beyond
    out.steps.quantiles.extend(_quantile_values([q.level for q in inside], [q.x for q in inside]))
    if inside and inside[0].total_flops is not None:
        out.flops.prob_beyond_horizon = beyond
        out.flops.quantiles.extend(_quantile_values([q.level for q in inside], [q.total_flops for q in inside]))
    if inside and inside[0].total_cost is not None:
        out.cost.prob_beyond_horizon = beyond
        out.cost.quantiles.extend(_quantile_values([q.level for q in inside], [q.total_cost for q in inside]))
    return out


def _confidence(rec: Recommendation) -> float:
    """The probability behind the action: of not beating the incumbent when stopping as unpromising,
    of beating it (or reaching the target) when continuing; observations (diverged, reached) are certain."""
    if rec.action in (Action.STOP_DIVERGED, Action.TARGET_REACHED):
        return 1.0
    p = rec.p_beat_incumbent if rec.p_beat_incumbent is not None else rec.p_target_within_budget
    if rec.action is Action.STOP_UNPROMISING and p is not None:
        return 1.0 - p
    if rec.action is Action.CONTINUE and p is not None:
        return p
    return 1.0 if rec.action is Action.STOP_CONVERGED else 0.5


def _recommendation(rec: Recommendation) -> pb.Recommendation:
    out = pb.Recommendation(action=_ACTIONS[rec.action], reason=rec.reason, confidence=_safe(_confidence(rec)),
                            expected_improvement=_safe(max(rec.expected_improvement, 0.0)),
                            relative_improvement=_safe(max(rec.expected_relative_improvement, 0.0)),
                            threshold=_safe(rec.threshold), steps_saved=_safe(rec.steps_saved), extend=rec.extend)
    if rec.p_beat_incumbent is not None:
        out.prob_beat_incumbent = _safe(rec.p_beat_incumbent)
    if rec.p_target_within_budget is not None:
        out.prob_reach_target = _safe(rec.p_target_within_budget)
    if rec.flops_saved is not None:
        out.flops_saved = _safe(rec.flops_saved)
    if rec.cost_saved is not None:
        out.cost_saved = _safe(rec.cost_saved)
    return out


def forecast_response(result: ForecastResult, request_id: str) -> pb.ForecastResponse:
    q = result.query
    resp = pb.ForecastResponse(
        recommendation=_recommendation(result.recommendation),
        engines=[pb.EngineUsage(name=e.name, version=e.version, provider=e.provider, weight=e.weight)
                 for e in result.engines],
        warnings=list(result.warnings), request_id=request_id, best_observed=_safe(q.curve.best()))
    levels = [float(v) for v in q.quantiles]
    for x, mean, row in _point_rows(result.predictions, levels):
        _fill_point(resp.predictions.add(), x, mean, row, levels)
    for x, mean, row in _point_rows(result.final, levels):
        _fill_point(resp.final, x, mean, row, levels)
    if result.compute_to_target is not None:
        resp.compute_to_target.CopyFrom(_ctt(result.compute_to_target))
    return resp


def batch_error(code: int, exc: BaseException) -> pb.BatchItemError:
    err = pb.BatchItemError(code=code, message=str(exc)[:500])
    if isinstance(exc, InvalidRequest):
        err.field_errors.extend(pb.FieldError(field=v.field, description=v.description) for v in exc.violations)
    return err


# ---- scaling -------------------------------------------------------------------------------------
def scaling_form(value: int) -> str:
    """The form a wire enum names (the default for unknown values: ``scaling_request`` refuses those)."""
    return _FORMS.get(value, "chinchilla")


def scaling_request(req: pb.FitScalingLawRequest, limits: "ScalingLimits | None" = None
                    ) -> tuple[list["ScalingPoint"], str, int, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``scaling_input`` as a tuple (points, form, bootstrap, predict_at, budgets, notes), without the
    fit options (kept for callers written before them)."""
    inp = scaling_input(req, limits)
    return list(inp.points), inp.form, inp.bootstrap, inp.at, inp.budgets, inp.notes


def scaling_input(req: pb.FitScalingLawRequest, limits: "ScalingLimits | None" = None) -> "ScalingInput":
    """Validate a FitScalingLawRequest into a ScalingInput: points, form, bootstrap, fit options,
    predict_at (k, 2), budgets and notes for the response. Sizes are checked against ``limits`` first,
    before anything is decoded into Python objects; then every value, naming the first ``MAX_LISTED`` bad
    point values and counting the rest."""
    from ..scaling import ScalingPoint
    from ..scaling.fit import DEFAULT_DROP_EARLY, ScalingInput
    from ..scaling.limits import MAX_LISTED, ScalingLimits

    limits = limits or ScalingLimits()
    c = Violations()
    n = len(req.points)
    notes: tuple[str, ...] = ()
    if req.HasField("bootstrap"):
        bootstrap = req.bootstrap
    else:
        bootstrap = limits.default_bootstrap(n)
        if bootstrap < 200:
            notes = (f"bootstrap defaulted to {bootstrap} replicates for {n} points (points x replicates are at "
                     f"most {limits.max_point_replicates})",)
    for v in limits.violations(n, bootstrap, len(req.predict_at), len(req.compute_budgets)):
        c.add(v.field, v.description)
    c.raise_if_any()  # too large: refused before the points are decoded
    form = _enum(c, _FORMS, req.form, "form", "chinchilla")
    values = np.array([(p.n_params, p.tokens, p.loss) for p in req.points], dtype=np.float64).reshape(-1, 3)
    with np.errstate(invalid="ignore"):
        # N, D (and FLOPs) like x-quantities stay far from overflow (6*N*D must be finite); losses like values
        bad = ~(np.isfinite(values) & (values > 0) & (values <= _SCALING_MAX))
    flops = [p.flops if p.HasField("flops") else None for p in req.points]
    bad_flops = [i for i, f in enumerate(flops) if f is not None and not (math.isfinite(f) and 0 < f <= _X_MAX)]
    weights = [p.weight if p.HasField("weight") else 1.0 for p in req.points]
    bad_weights = [i for i, w in enumerate(weights) if not (math.isfinite(w) and 0 <= w <= _X_MAX)]
    where = np.argwhere(bad)  # row-major: by point, then in field order
    listed = len(where) + len(bad_flops) + len(bad_weights)
    for i, j in where[:MAX_LISTED]:
        c.add(f"points[{i}].{('n_params', 'tokens', 'loss')[j]}",
              f"must be finite, > 0 and at most {_SCALING_MAX[j]:g}, got {values[i, j]}")
    room = max(MAX_LISTED - len(where), 0)
    for i in bad_flops[:room]:
        c.add(f"points[{i}].flops", f"must be finite, > 0 and at most {_X_MAX:g} when given, got {flops[i]}")
    for i in bad_weights[: max(room - len(bad_flops), 0)]:
        c.add(f"points[{i}].weight", f"must be finite, >= 0 and at most {_X_MAX:g} when given, got {weights[i]}")
    if listed > MAX_LISTED:
        c.add("points", f"{listed - MAX_LISTED} more bad values not listed")
    points = [] if listed else [ScalingPoint(n_params=float(v[0]), tokens=float(v[1]), loss=float(v[2]),
                                             run_id=p.run_id, flops=f, weight=float(w))
                                for v, p, f, w in zip(values, req.points, flops, weights)]
    drop = req.drop_early_fraction if req.HasField("drop_early_fraction") else DEFAULT_DROP_EARLY
    if not (math.isfinite(drop) and 0.0 <= drop < 1.0):
        c.add("drop_early_fraction", f"must be in [0, 1) (a fraction of each run's final tokens), got {drop}")
    delta = req.huber_delta if req.HasField("huber_delta") else None
    if delta is not None and not (math.isfinite(delta) and 0.0 < delta <= _X_MAX):
        c.add("huber_delta", f"must be finite and > 0 (log-loss units; 1e-3 is Approach 3), got {delta}")
    at = np.array([[q.n_params, q.tokens] for q in req.predict_at], dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        bad_at = ~(np.isfinite(at) & (at > 0) & (at <= _X_MAX)).all(axis=1)
    for i in np.flatnonzero(bad_at)[:MAX_LISTED]:
        c.add(f"predict_at[{i}]", f"n_params and tokens must be finite, > 0 and at most {_X_MAX:g}")
    budgets = np.array(req.compute_budgets, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad_budgets = ~(np.isfinite(budgets) & (budgets > 0) & (budgets <= _X_MAX))
    for i in np.flatnonzero(bad_budgets)[:MAX_LISTED]:
        c.add(f"compute_budgets[{i}]", f"must be finite, > 0 and at most {_X_MAX:g}, got {budgets[i]}")
    if len(req.request_id) > MAX_REQUEST_ID:
        c.add("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    c.raise_if_any()
    return ScalingInput(points=points, form=form, bootstrap=bootstrap, drop_early_fraction=float(drop),
                        huber_delta=delta, isoflop=bool(req.isoflop), at=at, budgets=budgets, notes=notes)


def scaling_response(fit: "ScalingFit", at: np.ndarray, budgets: np.ndarray, request_id: str,
                     notes: Sequence[str] = ()) -> pb.FitScalingLawResponse:
    resp = pb.FitScalingLawResponse(form=_FORMS_BACK.get(fit.form, pb.SCALING_FORM_UNSPECIFIED),
                                    residual_rmse=_safe(fit.residual_rmse), n_points=fit.n_points,
                                    n_runs=fit.n_runs, warnings=[*notes, *fit.warnings], request_id=request_id,
                                    drop_early_fraction=fit.drop_early_fraction, n_points_dropped=fit.n_dropped,
                                    huber_delta=fit.huber_delta)
    for reason, count in fit.dropped.items():
        resp.dropped.add(reason=reason, count=count)
    if fit.calibration is not None:
        cal = fit.calibration
        resp.calibration_folds, resp.calibration_heldout_points = cal.folds, cal.n_heldout
        resp.calibration_kappa, resp.calibration_floor = _safe(cal.kappa), _safe(cal.floor)
    for name, value in fit.params.items():
        lo, hi = fit.intervals.get(name, (value, value))
        resp.parameters.add(name=name, value=_safe(value), lower95=_safe(lo), upper95=_safe(hi))
    if len(at):
        mean, lo, hi = fit.predict(at[:, 0], at[:, 1])
        _, plo, phi = fit.predictive(at[:, 0], at[:, 1])
        resp.warnings.extend(fit.band_warnings(at[:, 0], at[:, 1]))
        for (n, d), m, l, h, pl, ph in zip(at, mean, lo, hi, plo, phi):
            resp.predictions.add(n_params=n, tokens=d, loss=_safe(m), lower95=_safe(l), upper95=_safe(h),
                                 predictive_lower95=_safe(pl), predictive_upper95=_safe(ph))
    if fit.isoflop is not None:
        _isoflop(resp.isoflop, fit.isoflop, budgets)
        for b in budgets:
            resp.warnings.extend(fit.isoflop.budget_warnings(float(b)))
    if fit.form == "kaplan" and len(budgets):  # L(C) has no N/D split: the loss each budget reaches
        mean, lo, hi, plo, phi = fit.loss_at_compute(budgets)
        for b, m, l, h, pl, ph in zip(budgets, mean, lo, hi, plo, phi):
            resp.compute_losses.add(flops=float(b), loss=_safe(m), lower95=_safe(l), upper95=_safe(h),
                                    predictive_lower95=_safe(pl), predictive_upper95=_safe(ph))
        budgets = budgets[:0]
    for b in budgets:
        n, d, loss = fit.compute_optimal(float(b))
        iv = fit.compute_optimal_interval(float(b))
        resp.compute_optimal.add(flops=float(b), n_params=_safe(n), tokens=_safe(d), loss=_safe(loss),
                                 n_params_lower95=_safe(iv["n_params"][0]), n_params_upper95=_safe(iv["n_params"][1]),
                                 tokens_lower95=_safe(iv["tokens"][0]), tokens_upper95=_safe(iv["tokens"][1]),
                                 loss_lower95=_safe(iv["loss"][0]), loss_upper95=_safe(iv["loss"][1]))
    return resp


def _isoflop(msg: pb.IsoFlopFit, iso, budgets: np.ndarray) -> None:
    for p in iso.profiles:
        msg.budgets.add(flops=_safe(p.flops), n_points=p.n_points, n_params_opt=_safe(p.n_opt),
                        tokens_opt=_safe(p.d_opt), loss_opt=_safe(p.loss_opt), used=p.used, note=p.note)
    msg.exponent, msg.coefficient = _safe(iso.exponent), _safe(iso.coefficient)
    msg.exponent_lower95, msg.exponent_upper95 = _safe(iso.exponent_interval[0]), _safe(iso.exponent_interval[1])
    if iso.n_line is None:
        return
    for b in budgets:
        o = iso.compute_optimal(float(b))
        msg.compute_optimal.add(flops=float(b), **{k: _safe(v) for k, v in o.items()})


def engine_status(info: EngineInfo) -> pb.EngineStatus:
    return pb.EngineStatus(name=info.name, version=info.version, provider=info.provider,
                           available=info.available, detail=info.detail)


def policy_message(p: StopPolicy) -> pb.StopPolicy:
    return pb.StopPolicy(min_prob_beat_incumbent=p.min_prob_beat_incumbent,
                         min_relative_improvement=p.min_relative_improvement, min_points=p.min_points,
                         min_fraction_observed=p.min_fraction_observed, compute_weight=p.compute_weight,
                         keep_best_checkpoint=p.keep_best_checkpoint)
