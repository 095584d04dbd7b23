"""Property tests (hypothesis) over request decoding, validation, every engine and the decisions.

The same generator and checks drive the atheris fuzzer (fuzz/); here the example counts stay modest so
the suite is fast. The long run (>= 100,000 requests) is ``python -m fuzz.fuzz_requests`` (see fuzz/).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvecast_api.v1 import curvecast_pb2 as pb
from fuzz.generate import DrawSource, build_request, build_scaling_request
from fuzz.harness import Pipeline, field_root

# engine_error / bad_answer: an engine bug the data plane contained (clean error or fallback); see
# test_known_engine_findings for the ones reported to the engine owners.
OUTCOMES = {"undecodable", "rejected", "answered", "engine_unavailable", "engine_error", "bad_answer"}
SCALING_OUTCOMES = {"undecodable", "rejected", "fitted", "refused"}

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def pipeline():
    p = Pipeline()
    yield p
    p.close()


@FAST
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(pipeline, data):
    assert pipeline.check_bytes(data) in OUTCOMES


@FAST
@given(data=st.data())
def test_generated_requests_answer_finite_or_name_the_field(pipeline, data):
    req = build_request(DrawSource(data.draw), max_points=60)
    assert pipeline.check_request(req) in OUTCOMES - {"undecodable"}


@FAST
@given(data=st.binary(max_size=600))
def test_arbitrary_scaling_bytes_never_crash(pipeline, data):
    assert pipeline.check_scaling_bytes(data) in SCALING_OUTCOMES


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_generated_scaling_requests_fit_or_name_the_field(pipeline, data):
    """Grids with checkpoints, extreme points, unknown forms, bootstrap counts past the limit: each is fitted
    with a finite answer or refused naming a FitScalingLawRequest field, never a crash or a hang."""
    req = build_scaling_request(DrawSource(data.draw), max_points=40)
    assert pipeline.check_scaling_request(req) in SCALING_OUTCOMES - {"undecodable"}


def test_scaling_outcomes_are_reached(pipeline):
    """The generator reaches both fitted and rejected requests (else the fuzzing above proves little)."""
    import random

    class Seeded:
        def __init__(self, seed: int) -> None:
            self.r = random.Random(seed)

        def int(self, lo: int, hi: int) -> int:
            return self.r.randint(lo, hi)

        def float(self) -> float:
            return self.r.uniform(-1e300, 1e300)

        def unit(self) -> float:
            return self.r.random()

    seen = {pipeline.check_scaling_request(build_scaling_request(Seeded(i), max_points=30)) for i in range(40)}
    assert {"fitted", "rejected"} <= seen


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(n=st.integers(1, 80), scale=st.sampled_from([5e-320, 1e-300, 1e-12, 1.0, 1e12, 1e290]),
       offset=st.sampled_from([0.0, -1.0, 1e6]), noise=st.floats(0, 0.5), goal=st.sampled_from([1, 2]),
       engine=st.sampled_from(["", "analytic", "learned"]), budget=st.floats(1.0, 1e6))
def test_valid_curves_at_every_scale_are_answered(pipeline, n, scale, offset, noise, goal, engine, budget):
    x = np.arange(1.0, n + 1)
    rng = np.random.default_rng(n)
    y = (offset + (1.0 + 1.0 / np.sqrt(x)) * (1 + noise * rng.standard_normal(n))) * scale
    req = pb.ForecastRequest(curve=pb.Curve(x=x.tolist(), values=y.tolist(), goal=goal),
                             run=pb.RunInfo(total_steps=float(n) + budget), engine=engine,
                             target=float(np.min(y)) * 0.9, incumbent=float(np.median(y)))
    outcome = pipeline.check_request(req)
    assert outcome == "answered" or (engine == "learned" and outcome == "engine_unavailable")


def rejection_fields(pipeline: Pipeline, req: pb.ForecastRequest) -> list[str]:
    from curvecast.domain.errors import InvalidRequest
    from curvecast.server import converters

    try:
        converters.forecast_query(req, pipeline.limits, pipeline.policy)
    except InvalidRequest as exc:
        return [v.field for v in exc.violations]
    return []


X = [1.0, 2.0, 3.0]
Y = [1.0, 0.9, 0.8]
CASES = {  # name: (request, expected rejected field or None when it must be answered)
    "values_1e308": (pb.ForecastRequest(curve=pb.Curve(x=X, values=[1e308, 1.0, 0.5])), "curve.values"),
    "values_1e300": (pb.ForecastRequest(curve=pb.Curve(x=X, values=[1e300, -1e300, 1e299])), None),
    "denormal_values": (pb.ForecastRequest(curve=pb.Curve(x=X, values=[5e-324, 1e-323, 2e-323])), None),
    "denormal_x": (pb.ForecastRequest(curve=pb.Curve(x=[5e-324, 1e-323, 1.5e-323], values=Y)), None),
    "x_1e300": (pb.ForecastRequest(curve=pb.Curve(x=[1.0, 2.0, 1e300], values=Y)), "curve.x[2]"),
    "constant": (pb.ForecastRequest(curve=pb.Curve(x=list(range(1, 41)), values=[0.7] * 40),
                                    run=pb.RunInfo(total_steps=1000)), None),
    "single_point": (pb.ForecastRequest(curve=pb.Curve(x=[5.0], values=[2.0]), run=pb.RunInfo(total_steps=50)), None),
    "huge_budget": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=1e100)), None),
    "budget_1e308": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=1e308)),
                     "run.total_steps"),
    "negative_budget": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=-10)),
                        "run.total_steps"),
    "budget_before_last_x": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=2.5)),
                             "run.total_steps"),
    "budget_at_last_x": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=3.0)), None),
    "target_reached": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=30),
                                          target=0.95), None),
    "target_impossible": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(total_steps=30),
                                             target=-1e300), None),
    "target_inf": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), target=math.inf), "target"),
    "huge_flops": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(
        total_steps=1e100, flops_per_step=1e100, cost_per_step=1e100), target=0.1), None),
    "flops_1e200": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), run=pb.RunInfo(flops_per_step=1e200)),
                    "run.flops_per_step"),
    "nan_in_middle": (pb.ForecastRequest(curve=pb.Curve(x=X, values=[1.0, math.nan, 0.8])), "curve.values[1]"),
    "all_nan": (pb.ForecastRequest(curve=pb.Curve(x=X, values=[math.nan] * 3)), "curve.values[0]"),
    "unknown_goal": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y, goal=77)), "curve.goal"),
    "bad_quantile": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), quantiles=[0.5, 1.0]), "quantiles[1]"),
    "unknown_engine": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y), engine="gpt"), "engine"),
    "bounds_inverted": (pb.ForecastRequest(curve=pb.Curve(x=X, values=Y, lower_bound=1, upper_bound=0)),
                        "curve.upper_bound"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_extreme_values(pipeline, name):
    req, field = CASES[name]
    outcome = pipeline.check_request(req)  # checks every property whatever the outcome
    if field is None:
        assert outcome == "answered", rejection_fields(pipeline, req)
    else:
        assert outcome == "rejected"
        assert field in rejection_fields(pipeline, req)
        assert all(field_root(f) in {f.name for f in pb.ForecastRequest.DESCRIPTOR.fields}
                   for f in rejection_fields(pipeline, req))


def test_values_outside_declared_bounds_are_rejected(pipeline):
    """Found by the fuzzer: an accuracy of 5 with bounds [0, 2.2e-308] overflowed the learned engine's
    normalisation. Values outside the caller's own bounds are a bad request, named as such."""
    req = pb.ForecastRequest(curve=pb.Curve(x=[1.0, 2.0, 3.0], values=[0.5, 1.5, 0.7], lower_bound=0.0, upper_bound=1.0))
    assert pipeline.check_request(req) == "rejected"
    assert rejection_fields(pipeline, req) == ["curve.values[1]"]


def test_known_engine_findings(pipeline):
    if "learned" not in pipeline.engines:
        pytest.skip("no learned model")
    req = pb.ForecastRequest(curve=pb.Curve(x=[1.0, 2.0, 3.0, 4.0], values=[5e-324, 5e-324, 0.0, 0.0],
                                            lower_bound=0.0, upper_bound=5e-324),
                             run=pb.RunInfo(total_steps=10), engine="learned")
    assert pipeline.check_request(req) == "answered"
