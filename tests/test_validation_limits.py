"""Issue 19: inputs that used to be accepted silently are refused naming the field, or accepted with a
documented meaning and a response warning. Checked on the wire path (protobuf -> converters -> validation)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from google.rpc import error_details_pb2

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast.dataplane import DataPlane
from curvecast.domain.curve import Goal, ScheduleShape, StopPolicy
from curvecast.domain.distribution import Marginals
from curvecast.domain.errors import InvalidRequest
from curvecast.domain.validation import (
    CurveInput,
    ForecastInput,
    Limits,
    RunInput,
    ScheduleInput,
    finite_scalar,
    validate_forecast,
)
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry
from curvecast.server import converters, servicer

X = [100.0 * i for i in range(1, 11)]  # observed up to x = 1000
Y = [2.0 + 3.0 / i**0.5 for i in range(1, 11)]
LIMITS = Limits()


def request(schedule: pb.LrSchedule | None = None, total_steps: float | None = 10_000.0, **kw) -> pb.ForecastRequest:
    curve_kw = {k: kw.pop(k) for k in ("metric",) if k in kw}
    run = pb.RunInfo(labels=kw.pop("labels", {}))
    if total_steps is not None:
        run.total_steps = total_steps
    if schedule is not None:
        run.schedule.CopyFrom(schedule)
    return pb.ForecastRequest(curve=pb.Curve(x=X, values=Y, **curve_kw), run=run, **kw)


def violations(req: pb.ForecastRequest) -> dict[str, str]:
    try:
        converters.forecast_query(req, LIMITS, StopPolicy())
    except InvalidRequest as exc:
        return {v.field: v.description for v in exc.violations}
    return {}


def notes(req: pb.ForecastRequest) -> tuple[str, ...]:
    return converters.forecast_query(req, LIMITS, StopPolicy()).notes


S = pb.LrSchedule
COSINE, WSD, STEP, EXPLICIT, CONSTANT = (pb.SCHEDULE_SHAPE_COSINE, pb.SCHEDULE_SHAPE_WSD, pb.SCHEDULE_SHAPE_STEP,
                                         pb.SCHEDULE_SHAPE_EXPLICIT, pb.SCHEDULE_SHAPE_CONSTANT)
HUGE = 1_000_000

REFUSED = {  # name: (request, field named, a phrase of its description)
    "schedule_1e6_points": (request(S(shape=EXPLICIT, steps=np.arange(HUGE, dtype=float) / 100,
                                      values=np.ones(HUGE))), "run.schedule.steps", "the limit is 100000"),
    "query_x_zero": (request(query_x=[0.0, 5.0]), "query_x[0]", "must be > 0"),
    "query_x_negative": (request(query_x=[-3.0, -1.0]), "query_x[0]", "must be > 0"),
    "step_gamma_zero": (request(S(shape=STEP, peak_lr=1e-3, step_interval=100)), "run.schedule.step_gamma", "(0, 1]"),
    "step_gamma_huge": (request(S(shape=STEP, peak_lr=1e-3, step_gamma=1e10, step_interval=100)),
                        "run.schedule.step_gamma", "(0, 1]"),
    "step_interval_zero": (request(S(shape=STEP, peak_lr=1e-3, step_gamma=0.5)), "run.schedule.step_interval", "> 0"),
    "warmup_past_budget": (request(S(shape=COSINE, peak_lr=1e-3, warmup_steps=20_000)),
                           "run.schedule.warmup_steps", "longer than the budget"),
    "wsd_decay_past_budget": (request(S(shape=WSD, peak_lr=1e-3, warmup_steps=100, decay_start=12_000)),
                              "run.schedule.decay_start", "after the budget"),
    "explicit_all_zero": (request(S(shape=EXPLICIT, steps=[0, 5000, 10_000], values=[0, 0, 0])),
                          "run.schedule.values", "all 0"),
    "explicit_ends_before_curve": (request(S(shape=EXPLICIT, steps=[0, 500], values=[1e-3, 1e-4])),
                                   "run.schedule.steps", "before the last observed x"),
    "steps_with_cosine": (request(S(shape=COSINE, peak_lr=1e-3, steps=[0, 10_000])), "run.schedule.steps",
                          "only read for an explicit schedule"),
    "steps_with_unset_shape": (request(S(steps=[0, 10_000], values=[1e-3, 1e-4])), "run.schedule.steps",
                               "only read for an explicit schedule"),
    "values_with_constant": (request(S(shape=CONSTANT, peak_lr=1e-3, values=[1e-3])), "run.schedule.values",
                             "only read for an explicit schedule"),
    "parameters_with_unset_shape": (request(S(peak_lr=1e-3, warmup_steps=10)), "run.schedule.shape",
                                    "peak_lr, warmup_steps given"),
    "100k_labels": (request(labels={f"k{i}": "v" for i in range(100_000)}), "run.labels", "the limit is 64"),
    "10mib_label_value": (request(labels={"config": "x" * (10 << 20)}), "run.labels", "the limit is 1024"),
    "long_label_key": (request(labels={"k" * 129: "v"}), "run.labels", "the limit is 128"),
    "1mb_metric": (request(metric="m" * 1_000_000), "curve.metric", "the limit is 256"),
    "request_id_newline": (request(request_id="trial-1\nINFO forged log line"), "request_id", "U+000A at index 7"),
    "request_id_nul": (request(request_id="a\x00b"), "request_id", "U+0000"),
    "request_id_bidi_override": (request(request_id="trial\u202e24"), "request_id", "U+202E"),
    "request_id_line_separator": (request(request_id="trial\u2028x"), "request_id", "U+2028"),
    "request_id_too_long": (request(request_id="r" * 129), "request_id", "at most 128 characters"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_naming_the_field(name):
    req, field, phrase = REFUSED[name]
    bad = violations(req)
    assert field in bad, bad
    assert phrase in bad[field]


ACCEPTED = {  # at the edge of each limit, or the documented meaning of a boundary value
    "query_x_positive": request(query_x=[1e-9, 5.0]),
    "step_gamma_one": request(S(shape=STEP, peak_lr=1e-3, step_gamma=1.0, step_interval=100)),
    "warmup_equals_budget": request(S(shape=COSINE, peak_lr=1e-3, warmup_steps=10_000)),
    "wsd_decay_at_budget": request(S(shape=WSD, peak_lr=1e-3, warmup_steps=100, decay_start=10_000)),
    "schedule_at_limit": request(S(shape=EXPLICIT, steps=np.arange(100_000, dtype=float) / 10,
                                   values=np.full(100_000, 1e-3))),
    "explicit_zero_then_positive": request(S(shape=EXPLICIT, steps=[0, 100, 10_000], values=[0, 1e-3, 1e-4])),
    "labels_at_limits": request(labels={("k" * 125) + f"{i:03d}": "v" * 1024 for i in range(64)}),
    "metric_at_limit": request(metric="m" * 256),
    "request_id_printable_unicode": request(request_id="essai-é-42 ünïcode"),
    "empty_schedule_message": request(S()),  # present but all unset: no schedule known
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_at_the_limits(name):
    assert violations(ACCEPTED[name]) == {}


def test_explicit_schedule_ending_before_the_budget_is_accepted_with_a_note():
    req = request(S(shape=EXPLICIT, steps=[0, 1000, 4000], values=[1e-3, 1e-3, 1e-4]))
    (note,) = notes(req)
    assert "run.schedule.steps end at 4000.0" in note and "constant at its last value (0.0001)" in note
    # the whole run (steps 0..9999 of a budget of 10,000) needs no note
    assert notes(request(S(shape=EXPLICIT, steps=[0, 9999], values=[1e-3, 1e-4]))) == ()
    # queried beyond the budget: the schedule must reach the last queried x
    beyond = request(S(shape=EXPLICIT, steps=[0, 10_000], values=[1e-3, 1e-4]), query_x=[5000.0, 40_000.0])
    assert "before the forecast reaches 40000.0" in notes(beyond)[0]


def test_wsd_without_stable_phase_is_accepted_with_a_note():
    (note,) = notes(request(S(shape=WSD, peak_lr=1e-3, warmup_steps=100)))
    assert "run.schedule.decay_start" in note and "no stable phase" in note
    assert notes(request(S(shape=WSD, peak_lr=1e-3, warmup_steps=100, decay_start=8000))) == ()


class _FlatEngine:
    name = "analytic"

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        return [EngineForecast(Marginals.from_gaussian(np.asarray(q.x_query, float), np.full(len(q.x_query), 2.0),
                                                       np.full(len(q.x_query), 0.1)), self.name,
                               warnings=("engine says hi",)) for q in queries]


def test_notes_reach_the_response_warnings():
    query = converters.forecast_query(request(S(shape=EXPLICIT, steps=[0, 4000], values=[1e-3, 1e-4])), LIMITS,
                                      StopPolicy())
    reg = EngineRegistry()
    reg.put(_FlatEngine())

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(1))
        try:
            return await dp.forecast(query)
        finally:
            await dp.close()

    result = asyncio.run(go())
    assert result.warnings[0] == query.notes[0] and "engine says hi" in result.warnings
    assert converters.forecast_response(result, "").warnings[0] == query.notes[0]


def test_refusal_is_invalid_argument_with_bad_request_naming_request_id():
    try:
        converters.forecast_query(request(request_id="x\r\ny"), LIMITS, StopPolicy())
    except InvalidRequest as exc:
        status = servicer._status(exc)
    else:
        pytest.fail("a request id with CR/LF was accepted")
    detail = error_details_pb2.BadRequest()
    assert status.code == 3 and status.details[0].Unpack(detail)
    assert [v.field for v in detail.field_violations] == ["request_id"]


def test_every_mistake_is_named_in_one_round_trip():
    req = request(S(shape=STEP, peak_lr=1e-3, warmup_steps=20_000), query_x=[0.0], metric="m" * 300,
                  request_id="a\tb")
    assert {"run.schedule.step_gamma", "run.schedule.step_interval", "run.schedule.warmup_steps", "query_x[0]",
            "curve.metric", "request_id"} <= set(violations(req))


def test_one_entry_point_builds_the_query_from_plain_values():
    """Validation needs no protobuf: the converters only read the wire values into ``ForecastInput``."""
    raw = ForecastInput(curve=CurveInput(x=X, values=Y, goal=Goal.MINIMIZE),
                        run=RunInput(total_steps=5000.0, schedule=ScheduleInput(ScheduleShape.COSINE, peak_lr=1e-3)),
                        request_id="trial-7")
    q = validate_forecast(raw, LIMITS, StopPolicy())
    assert q.run.schedule is not None and q.run.schedule.total_steps == 5000.0 and q.horizon == 5000.0
    assert len(q.x_query) == 50 and q.notes == ()
    with pytest.raises(InvalidRequest) as err:
        validate_forecast(ForecastInput(curve=CurveInput(x=X, values=Y, goal=7),
                                        run=RunInput(schedule=ScheduleInput(99))), LIMITS, StopPolicy())
    assert [v.field for v in err.value.violations] == ["curve.goal", "run.schedule.shape"]


def test_one_finite_scalar_helper():
    assert converters._finite is finite_scalar


# ---- response size: query points x quantile levels -----------------------------------------------------
def test_query_points_times_levels_is_bounded_so_the_response_fits_the_message_limit():
    levels = [round(0.01 * i, 2) for i in range(1, 100)]  # 99 levels
    many = np.linspace(1_001.0, 10_000.0, 10_000).tolist()
    bad = violations(request(query_x=many, quantiles=levels))
    assert "10000 points x 99 quantile levels" in bad["query_x"] and str(LIMITS.max_query_values) in bad["query_x"]
    assert violations(request(query_x=many, quantiles=levels[:20])) == {}  # 200,000 values: at the limit
    assert violations(request(query_x=many[:2_000], quantiles=levels)) == {}  # 198,000 values
