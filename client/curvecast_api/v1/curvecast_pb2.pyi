from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Goal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GOAL_UNSPECIFIED: _ClassVar[Goal]
    GOAL_MINIMIZE: _ClassVar[Goal]
    GOAL_MAXIMIZE: _ClassVar[Goal]

class XKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    X_KIND_UNSPECIFIED: _ClassVar[XKind]
    X_KIND_STEP: _ClassVar[XKind]
    X_KIND_EPOCH: _ClassVar[XKind]
    X_KIND_SAMPLES: _ClassVar[XKind]
    X_KIND_TOKENS: _ClassVar[XKind]

class ScheduleShape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_SHAPE_UNSPECIFIED: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_CONSTANT: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_COSINE: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_LINEAR: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_WSD: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_STEP: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_EXPLICIT: _ClassVar[ScheduleShape]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_CONTINUE: _ClassVar[Action]
    ACTION_STOP_UNPROMISING: _ClassVar[Action]
    ACTION_STOP_CONVERGED: _ClassVar[Action]
    ACTION_STOP_DIVERGED: _ClassVar[Action]
    ACTION_TARGET_REACHED: _ClassVar[Action]

class ScalingForm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCALING_FORM_UNSPECIFIED: _ClassVar[ScalingForm]
    SCALING_FORM_CHINCHILLA: _ClassVar[ScalingForm]
    SCALING_FORM_GADRE: _ClassVar[ScalingForm]
    SCALING_FORM_KAPLAN: _ClassVar[ScalingForm]
GOAL_UNSPECIFIED: Goal
GOAL_MINIMIZE: Goal
GOAL_MAXIMIZE: Goal
X_KIND_UNSPECIFIED: XKind
X_KIND_STEP: XKind
X_KIND_EPOCH: XKind
X_KIND_SAMPLES: XKind
X_KIND_TOKENS: XKind
SCHEDULE_SHAPE_UNSPECIFIED: ScheduleShape
SCHEDULE_SHAPE_CONSTANT: ScheduleShape
SCHEDULE_SHAPE_COSINE: ScheduleShape
SCHEDULE_SHAPE_LINEAR: ScheduleShape
SCHEDULE_SHAPE_WSD: ScheduleShape
SCHEDULE_SHAPE_STEP: ScheduleShape
SCHEDULE_SHAPE_EXPLICIT: ScheduleShape
ACTION_UNSPECIFIED: Action
ACTION_CONTINUE: Action
ACTION_STOP_UNPROMISING: Action
ACTION_STOP_CONVERGED: Action
ACTION_STOP_DIVERGED: Action
ACTION_TARGET_REACHED: Action
SCALING_FORM_UNSPECIFIED: ScalingForm
SCALING_FORM_CHINCHILLA: ScalingForm
SCALING_FORM_GADRE: ScalingForm
SCALING_FORM_KAPLAN: ScalingForm

class Curve(_message.Message):
    __slots__ = ("x", "values", "x_kind", "goal", "metric", "lower_bound", "upper_bound", "lr")
    X_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    X_KIND_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    UPPER_BOUND_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    x: _containers.RepeatedScalarFieldContainer[float]
    values: _containers.RepeatedScalarFieldContainer[float]
    x_kind: XKind
    goal: Goal
    metric: str
    lower_bound: float
    upper_bound: float
    lr: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, x: _Optional[_Iterable[float]] = ..., values: _Optional[_Iterable[float]] = ..., x_kind: _Optional[_Union[XKind, str]] = ..., goal: _Optional[_Union[Goal, str]] = ..., metric: _Optional[str] = ..., lower_bound: _Optional[float] = ..., upper_bound: _Optional[float] = ..., lr: _Optional[_Iterable[float]] = ...) -> None: ...

class LrSchedule(_message.Message):
    __slots__ = ("shape", "peak_lr", "final_lr", "warmup_steps", "decay_start", "step_gamma", "step_interval", "steps", "values")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PEAK_LR_FIELD_NUMBER: _ClassVar[int]
    FINAL_LR_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    DECAY_START_FIELD_NUMBER: _ClassVar[int]
    STEP_GAMMA_FIELD_NUMBER: _ClassVar[int]
    STEP_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    shape: ScheduleShape
    peak_lr: float
    final_lr: float
    warmup_steps: float
    decay_start: float
    step_gamma: float
    step_interval: float
    steps: _containers.RepeatedScalarFieldContainer[float]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Union[ScheduleShape, str]] = ..., peak_lr: _Optional[float] = ..., final_lr: _Optional[float] = ..., warmup_steps: _Optional[float] = ..., decay_start: _Optional[float] = ..., step_gamma: _Optional[float] = ..., step_interval: _Optional[float] = ..., steps: _Optional[_Iterable[float]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("total_steps", "schedule", "model_params", "tokens_per_step", "flops_per_step", "cost_per_step", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    MODEL_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    FLOPS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    COST_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    total_steps: float
    schedule: LrSchedule
    model_params: float
    tokens_per_step: float
    flops_per_step: float
    cost_per_step: float
    labels: _containers.ScalarMap[str, str]
    def __init__(self, total_steps: _Optional[float] = ..., schedule: _Optional[_Union[LrSchedule, _Mapping]] = ..., model_params: _Optional[float] = ..., tokens_per_step: _Optional[float] = ..., flops_per_step: _Optional[float] = ..., cost_per_step: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StopPolicy(_message.Message):
    __slots__ = ("min_prob_beat_incumbent", "min_relative_improvement", "min_points", "min_fraction_observed", "compute_weight", "keep_best_checkpoint")
    MIN_PROB_BEAT_INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    MIN_RELATIVE_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    MIN_POINTS_FIELD_NUMBER: _ClassVar[int]
    MIN_FRACTION_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEEP_BEST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    min_prob_beat_incumbent: float
    min_relative_improvement: float
    min_points: int
    min_fraction_observed: float
    compute_weight: float
    keep_best_checkpoint: bool
    def __init__(self, min_prob_beat_incumbent: _Optional[float] = ..., min_relative_improvement: _Optional[float] = ..., min_points: _Optional[int] = ..., min_fraction_observed: _Optional[float] = ..., compute_weight: _Optional[float] = ..., keep_best_checkpoint: _Optional[bool] = ...) -> None: ...

class ForecastRequest(_message.Message):
    __slots__ = ("curve", "run", "query_x", "quantiles", "target", "incumbent", "policy", "engine", "request_id", "sweep")
    CURVE_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    QUERY_X_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    curve: Curve
    run: RunInfo
    query_x: _containers.RepeatedScalarFieldContainer[float]
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    target: float
    incumbent: float
    policy: StopPolicy
    engine: str
    request_id: str
    sweep: SweepContext
    def __init__(self, curve: _Optional[_Union[Curve, _Mapping]] = ..., run: _Optional[_Union[RunInfo, _Mapping]] = ..., query_x: _Optional[_Iterable[float]] = ..., quantiles: _Optional[_Iterable[float]] = ..., target: _Optional[float] = ..., incumbent: _Optional[float] = ..., policy: _Optional[_Union[StopPolicy, _Mapping]] = ..., engine: _Optional[str] = ..., request_id: _Optional[str] = ..., sweep: _Optional[_Union[SweepContext, _Mapping]] = ...) -> None: ...

class SweepSibling(_message.Message):
    __slots__ = ("run_id", "curve", "budget", "finished", "hyperparameters")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    curve: Curve
    budget: float
    finished: bool
    hyperparameters: _containers.ScalarMap[str, float]
    def __init__(self, run_id: _Optional[str] = ..., curve: _Optional[_Union[Curve, _Mapping]] = ..., budget: _Optional[float] = ..., finished: _Optional[bool] = ..., hyperparameters: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SweepContext(_message.Message):
    __slots__ = ("sweep_id", "siblings")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    siblings: _containers.RepeatedCompositeFieldContainer[SweepSibling]
    def __init__(self, sweep_id: _Optional[str] = ..., siblings: _Optional[_Iterable[_Union[SweepSibling, _Mapping]]] = ...) -> None: ...

class QuantileValue(_message.Message):
    __slots__ = ("level", "value")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    level: float
    value: float
    def __init__(self, level: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class PointForecast(_message.Message):
    __slots__ = ("x", "mean", "quantiles")
    X_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    x: float
    mean: float
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantileValue]
    def __init__(self, x: _Optional[float] = ..., mean: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[QuantileValue, _Mapping]]] = ...) -> None: ...

class QuantityDistribution(_message.Message):
    __slots__ = ("quantiles", "prob_beyond_horizon")
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    PROB_BEYOND_HORIZON_FIELD_NUMBER: _ClassVar[int]
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantileValue]
    prob_beyond_horizon: float
    def __init__(self, quantiles: _Optional[_Iterable[_Union[QuantileValue, _Mapping]]] = ..., prob_beyond_horizon: _Optional[float] = ...) -> None: ...

class ComputeToTarget(_message.Message):
    __slots__ = ("target", "already_reached", "prob_within_budget", "prob_within_horizon", "horizon_steps", "steps", "flops", "cost")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REACHED_FIELD_NUMBER: _ClassVar[int]
    PROB_WITHIN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    PROB_WITHIN_HORIZON_FIELD_NUMBER: _ClassVar[int]
    HORIZON_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    target: float
    already_reached: bool
    prob_within_budget: float
    prob_within_horizon: float
    horizon_steps: float
    steps: QuantityDistribution
    flops: QuantityDistribution
    cost: QuantityDistribution
    def __init__(self, target: _Optional[float] = ..., already_reached: _Optional[bool] = ..., prob_within_budget: _Optional[float] = ..., prob_within_horizon: _Optional[float] = ..., horizon_steps: _Optional[float] = ..., steps: _Optional[_Union[QuantityDistribution, _Mapping]] = ..., flops: _Optional[_Union[QuantityDistribution, _Mapping]] = ..., cost: _Optional[_Union[QuantityDistribution, _Mapping]] = ...) -> None: ...

class Recommendation(_message.Message):
    __slots__ = ("action", "reason", "confidence", "prob_beat_incumbent", "prob_reach_target", "expected_improvement", "relative_improvement", "threshold", "steps_saved", "flops_saved", "cost_saved", "extend")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROB_BEAT_INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    PROB_REACH_TARGET_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STEPS_SAVED_FIELD_NUMBER: _ClassVar[int]
    FLOPS_SAVED_FIELD_NUMBER: _ClassVar[int]
    COST_SAVED_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    action: Action
    reason: str
    confidence: float
    prob_beat_incumbent: float
    prob_reach_target: float
    expected_improvement: float
    relative_improvement: float
    threshold: float
    steps_saved: float
    flops_saved: float
    cost_saved: float
    extend: bool
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., reason: _Optional[str] = ..., confidence: _Optional[float] = ..., prob_beat_incumbent: _Optional[float] = ..., prob_reach_target: _Optional[float] = ..., expected_improvement: _Optional[float] = ..., relative_improvement: _Optional[float] = ..., threshold: _Optional[float] = ..., steps_saved: _Optional[float] = ..., flops_saved: _Optional[float] = ..., cost_saved: _Optional[float] = ..., extend: _Optional[bool] = ...) -> None: ...

class EngineUsage(_message.Message):
    __slots__ = ("name", "version", "provider", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    provider: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., provider: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class ForecastResponse(_message.Message):
    __slots__ = ("predictions", "final", "compute_to_target", "recommendation", "engines", "warnings", "request_id", "best_observed")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TO_TARGET_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BEST_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[PointForecast]
    final: PointForecast
    compute_to_target: ComputeToTarget
    recommendation: Recommendation
    engines: _containers.RepeatedCompositeFieldContainer[EngineUsage]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    best_observed: float
    def __init__(self, predictions: _Optional[_Iterable[_Union[PointForecast, _Mapping]]] = ..., final: _Optional[_Union[PointForecast, _Mapping]] = ..., compute_to_target: _Optional[_Union[ComputeToTarget, _Mapping]] = ..., recommendation: _Optional[_Union[Recommendation, _Mapping]] = ..., engines: _Optional[_Iterable[_Union[EngineUsage, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., best_observed: _Optional[float] = ...) -> None: ...

class ForecastBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ForecastRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ForecastRequest, _Mapping]]] = ...) -> None: ...

class ForecastBatchItem(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: ForecastResponse
    error: BatchItemError
    def __init__(self, response: _Optional[_Union[ForecastResponse, _Mapping]] = ..., error: _Optional[_Union[BatchItemError, _Mapping]] = ...) -> None: ...

class BatchItemError(_message.Message):
    __slots__ = ("code", "message", "field_errors")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_ERRORS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field_errors: _containers.RepeatedCompositeFieldContainer[FieldError]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field_errors: _Optional[_Iterable[_Union[FieldError, _Mapping]]] = ...) -> None: ...

class FieldError(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ForecastBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ForecastBatchItem]
    def __init__(self, results: _Optional[_Iterable[_Union[ForecastBatchItem, _Mapping]]] = ...) -> None: ...

class ScalingPoint(_message.Message):
    __slots__ = ("n_params", "tokens", "loss", "run_id", "flops", "weight")
    N_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    n_params: float
    tokens: float
    loss: float
    run_id: str
    flops: float
    weight: float
    def __init__(self, n_params: _Optional[float] = ..., tokens: _Optional[float] = ..., loss: _Optional[float] = ..., run_id: _Optional[str] = ..., flops: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class ScalingQuery(_message.Message):
    __slots__ = ("n_params", "tokens")
    N_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    n_params: float
    tokens: float
    def __init__(self, n_params: _Optional[float] = ..., tokens: _Optional[float] = ...) -> None: ...

class FitScalingLawRequest(_message.Message):
    __slots__ = ("points", "form", "predict_at", "compute_budgets", "bootstrap", "request_id", "drop_early_fraction", "huber_delta", "isoflop")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    PREDICT_AT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_BUDGETS_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DROP_EARLY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    HUBER_DELTA_FIELD_NUMBER: _ClassVar[int]
    ISOFLOP_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[ScalingPoint]
    form: ScalingForm
    predict_at: _containers.RepeatedCompositeFieldContainer[ScalingQuery]
    compute_budgets: _containers.RepeatedScalarFieldContainer[float]
    bootstrap: int
    request_id: str
    drop_early_fraction: float
    huber_delta: float
    isoflop: bool
    def __init__(self, points: _Optional[_Iterable[_Union[ScalingPoint, _Mapping]]] = ..., form: _Optional[_Union[ScalingForm, str]] = ..., predict_at: _Optional[_Iterable[_Union[ScalingQuery, _Mapping]]] = ..., compute_budgets: _Optional[_Iterable[float]] = ..., bootstrap: _Optional[int] = ..., request_id: _Optional[str] = ..., drop_early_fraction: _Optional[float] = ..., huber_delta: _Optional[float] = ..., isoflop: _Optional[bool] = ...) -> None: ...

class FittedParameter(_message.Message):
    __slots__ = ("name", "value", "lower95", "upper95")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOWER95_FIELD_NUMBER: _ClassVar[int]
    UPPER95_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    lower95: float
    upper95: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., lower95: _Optional[float] = ..., upper95: _Optional[float] = ...) -> None: ...

class ScalingPrediction(_message.Message):
    __slots__ = ("n_params", "tokens", "loss", "lower95", "upper95", "predictive_lower95", "predictive_upper95")
    N_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LOWER95_FIELD_NUMBER: _ClassVar[int]
    UPPER95_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_LOWER95_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_UPPER95_FIELD_NUMBER: _ClassVar[int]
    n_params: float
    tokens: float
    loss: float
    lower95: float
    upper95: float
    predictive_lower95: float
    predictive_upper95: float
    def __init__(self, n_params: _Optional[float] = ..., tokens: _Optional[float] = ..., loss: _Optional[float] = ..., lower95: _Optional[float] = ..., upper95: _Optional[float] = ..., predictive_lower95: _Optional[float] = ..., predictive_upper95: _Optional[float] = ...) -> None: ...

class ComputeOptimal(_message.Message):
    __slots__ = ("flops", "n_params", "tokens", "loss", "n_params_lower95", "n_params_upper95", "tokens_lower95", "tokens_upper95", "loss_lower95", "loss_upper95")
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    N_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    N_PARAMS_LOWER95_FIELD_NUMBER: _ClassVar[int]
    N_PARAMS_UPPER95_FIELD_NUMBER: _ClassVar[int]
    TOKENS_LOWER95_FIELD_NUMBER: _ClassVar[int]
    TOKENS_UPPER95_FIELD_NUMBER: _ClassVar[int]
    LOSS_LOWER95_FIELD_NUMBER: _ClassVar[int]
    LOSS_UPPER95_FIELD_NUMBER: _ClassVar[int]
    flops: float
    n_params: float
    tokens: float
    loss: float
    n_params_lower95: float
    n_params_upper95: float
    tokens_lower95: float
    tokens_upper95: float
    loss_lower95: float
    loss_upper95: float
    def __init__(self, flops: _Optional[float] = ..., n_params: _Optional[float] = ..., tokens: _Optional[float] = ..., loss: _Optional[float] = ..., n_params_lower95: _Optional[float] = ..., n_params_upper95: _Optional[float] = ..., tokens_lower95: _Optional[float] = ..., tokens_upper95: _Optional[float] = ..., loss_lower95: _Optional[float] = ..., loss_upper95: _Optional[float] = ...) -> None: ...

class ComputeLoss(_message.Message):
    __slots__ = ("flops", "loss", "lower95", "upper95", "predictive_lower95", "predictive_upper95")
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LOWER95_FIELD_NUMBER: _ClassVar[int]
    UPPER95_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_LOWER95_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_UPPER95_FIELD_NUMBER: _ClassVar[int]
    flops: float
    loss: float
    lower95: float
    upper95: float
    predictive_lower95: float
    predictive_upper95: float
    def __init__(self, flops: _Optional[float] = ..., loss: _Optional[float] = ..., lower95: _Optional[float] = ..., upper95: _Optional[float] = ..., predictive_lower95: _Optional[float] = ..., predictive_upper95: _Optional[float] = ...) -> None: ...

class ScalingDropped(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    count: int
    def __init__(self, reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class IsoFlopBudget(_message.Message):
    __slots__ = ("flops", "n_points", "n_params_opt", "tokens_opt", "loss_opt", "used", "note")
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    N_POINTS_FIELD_NUMBER: _ClassVar[int]
    N_PARAMS_OPT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OPT_FIELD_NUMBER: _ClassVar[int]
    LOSS_OPT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    flops: float
    n_points: int
    n_params_opt: float
    tokens_opt: float
    loss_opt: float
    used: bool
    note: str
    def __init__(self, flops: _Optional[float] = ..., n_points: _Optional[int] = ..., n_params_opt: _Optional[float] = ..., tokens_opt: _Optional[float] = ..., loss_opt: _Optional[float] = ..., used: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class IsoFlopFit(_message.Message):
    __slots__ = ("budgets", "exponent", "exponent_lower95", "exponent_upper95", "coefficient", "compute_optimal")
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    EXPONENT_FIELD_NUMBER: _ClassVar[int]
    EXPONENT_LOWER95_FIELD_NUMBER: _ClassVar[int]
    EXPONENT_UPPER95_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_OPTIMAL_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[IsoFlopBudget]
    exponent: float
    exponent_lower95: float
    exponent_upper95: float
    coefficient: float
    compute_optimal: _containers.RepeatedCompositeFieldContainer[ComputeOptimal]
    def __init__(self, budgets: _Optional[_Iterable[_Union[IsoFlopBudget, _Mapping]]] = ..., exponent: _Optional[float] = ..., exponent_lower95: _Optional[float] = ..., exponent_upper95: _Optional[float] = ..., coefficient: _Optional[float] = ..., compute_optimal: _Optional[_Iterable[_Union[ComputeOptimal, _Mapping]]] = ...) -> None: ...

class FitScalingLawResponse(_message.Message):
    __slots__ = ("form", "parameters", "residual_rmse", "n_points", "n_runs", "predictions", "compute_optimal", "warnings", "request_id", "drop_early_fraction", "n_points_dropped", "calibration_folds", "calibration_heldout_points", "calibration_kappa", "calibration_floor", "compute_losses", "dropped", "huber_delta", "isoflop")
    FORM_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_RMSE_FIELD_NUMBER: _ClassVar[int]
    N_POINTS_FIELD_NUMBER: _ClassVar[int]
    N_RUNS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_OPTIMAL_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DROP_EARLY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    N_POINTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FOLDS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_HELDOUT_POINTS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_KAPPA_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FLOOR_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_LOSSES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    HUBER_DELTA_FIELD_NUMBER: _ClassVar[int]
    ISOFLOP_FIELD_NUMBER: _ClassVar[int]
    form: ScalingForm
    parameters: _containers.RepeatedCompositeFieldContainer[FittedParameter]
    residual_rmse: float
    n_points: int
    n_runs: int
    predictions: _containers.RepeatedCompositeFieldContainer[ScalingPrediction]
    compute_optimal: _containers.RepeatedCompositeFieldContainer[ComputeOptimal]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    drop_early_fraction: float
    n_points_dropped: int
    calibration_folds: int
    calibration_heldout_points: int
    calibration_kappa: float
    calibration_floor: float
    compute_losses: _containers.RepeatedCompositeFieldContainer[ComputeLoss]
    dropped: _containers.RepeatedCompositeFieldContainer[ScalingDropped]
    huber_delta: float
    isoflop: IsoFlopFit
    def __init__(self, form: _Optional[_Union[ScalingForm, str]] = ..., parameters: _Optional[_Iterable[_Union[FittedParameter, _Mapping]]] = ..., residual_rmse: _Optional[float] = ..., n_points: _Optional[int] = ..., n_runs: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[ScalingPrediction, _Mapping]]] = ..., compute_optimal: _Optional[_Iterable[_Union[ComputeOptimal, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., drop_early_fraction: _Optional[float] = ..., n_points_dropped: _Optional[int] = ..., calibration_folds: _Optional[int] = ..., calibration_heldout_points: _Optional[int] = ..., calibration_kappa: _Optional[float] = ..., calibration_floor: _Optional[float] = ..., compute_losses: _Optional[_Iterable[_Union[ComputeLoss, _Mapping]]] = ..., dropped: _Optional[_Iterable[_Union[ScalingDropped, _Mapping]]] = ..., huber_delta: _Optional[float] = ..., isoflop: _Optional[_Union[IsoFlopFit, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineStatus(_message.Message):
    __slots__ = ("name", "version", "provider", "available", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    provider: str
    available: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., provider: _Optional[str] = ..., available: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("server_version", "api_version", "engines", "default_engine", "default_quantiles", "max_curve_points", "max_query_points", "max_batch_requests", "default_policy", "max_scaling_points", "max_scaling_bootstrap", "max_scaling_point_replicates", "max_scaling_predict_at", "max_scaling_compute_budgets", "max_sweep_siblings", "max_sweep_points")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_QUANTILES_FIELD_NUMBER: _ClassVar[int]
    MAX_CURVE_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALING_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALING_BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALING_POINT_REPLICATES_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALING_PREDICT_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALING_COMPUTE_BUDGETS_FIELD_NUMBER: _ClassVar[int]
    MAX_SWEEP_SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_SWEEP_POINTS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    engines: _containers.RepeatedCompositeFieldContainer[EngineStatus]
    default_engine: str
    default_quantiles: _containers.RepeatedScalarFieldContainer[float]
    max_curve_points: int
    max_query_points: int
    max_batch_requests: int
    default_policy: StopPolicy
    max_scaling_points: int
    max_scaling_bootstrap: int
    max_scaling_point_replicates: int
    max_scaling_predict_at: int
    max_scaling_compute_budgets: int
    max_sweep_siblings: int
    max_sweep_points: int
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., engines: _Optional[_Iterable[_Union[EngineStatus, _Mapping]]] = ..., default_engine: _Optional[str] = ..., default_quantiles: _Optional[_Iterable[float]] = ..., max_curve_points: _Optional[int] = ..., max_query_points: _Optional[int] = ..., max_batch_requests: _Optional[int] = ..., default_policy: _Optional[_Union[StopPolicy, _Mapping]] = ..., max_scaling_points: _Optional[int] = ..., max_scaling_bootstrap: _Optional[int] = ..., max_scaling_point_replicates: _Optional[int] = ..., max_scaling_predict_at: _Optional[int] = ..., max_scaling_compute_budgets: _Optional[int] = ..., max_sweep_siblings: _Optional[int] = ..., max_sweep_points: _Optional[int] = ...) -> None: ...
