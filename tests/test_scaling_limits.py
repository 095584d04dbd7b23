"""FitScalingLaw's documented limits: refused as INVALID_ARGUMENT naming the field before any point is
decoded or fitted, reported in ModelInfo; an unset bootstrap with many points is lowered, with a note."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from curvecast.dataplane import DataPlane
from curvecast.domain.errors import InvalidRequest
from curvecast.engines.registry import EngineRegistry
from curvecast.scaling import ScalingPoint, fit_scaling_law
from curvecast.scaling.limits import MAX_LISTED, ScalingLimits
from curvecast.server import converters
from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc

LIMITS = ScalingLimits()


def request(n: int, **kw) -> pb.FitScalingLawRequest:
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(7, 10, n)
    D = N * 10 ** rng.uniform(0.5, 2.5, n)
    L = 1.8 + 480 / N**0.35 + 2100 / D**0.37
    return pb.FitScalingLawRequest(points=[pb.ScalingPoint(n_params=a, tokens=b, loss=c) for a, b, c in zip(N, D, L)],
                                   **kw)


def fields(req: pb.FitScalingLawRequest) -> list[str]:
    with pytest.raises(InvalidRequest) as err:
        converters.scaling_request(req, LIMITS)
    return [v.field for v in err.value.violations]


def test_limits_bound_points_replicates_and_queries():
    assert LIMITS.max_points == 100_000 and LIMITS.max_bootstrap == 2_000
    assert LIMITS.max_point_replicates == 10_000_000
    assert fields(request(LIMITS.max_points + 1, bootstrap=0)) == ["points"]
    assert fields(request(40, bootstrap=LIMITS.max_bootstrap + 1)) == ["bootstrap"]
    assert fields(request(40, bootstrap=-1)) == ["bootstrap"]
    with pytest.raises(InvalidRequest) as err:  # 10,000 points x 1,001 replicates > 10^7
        converters.scaling_request(request(10_000, bootstrap=1_001), LIMITS)
    (v,) = err.value.violations
    assert v.field == "bootstrap" and "at most 1000" in v.description
    at = [pb.ScalingQuery(n_params=1e9, tokens=1e10)] * (LIMITS.max_predict_at + 1)
    assert fields(request(40, bootstrap=0, predict_at=at)) == ["predict_at"]
    assert fields(request(40, bootstrap=0, compute_budgets=[1e22] * (LIMITS.max_compute_budgets + 1))) == [
        "compute_budgets"]
    # at the limits: accepted
    points, _, bootstrap, at_, budgets, _ = converters.scaling_request(
        request(10_000, bootstrap=1_000, predict_at=at[:-1], compute_budgets=[1e22] * LIMITS.max_compute_budgets),
        LIMITS)
    assert len(points) == 10_000 and bootstrap == 1_000 and len(at_) == 1_000 and len(budgets) == 1_000


def test_unset_bootstrap_is_lowered_for_many_points_with_a_note():
    *_, bootstrap, _, _, notes = converters.scaling_request(request(40), LIMITS)
    assert bootstrap == 200 and notes == ()
    *_, bootstrap, _, _, notes = converters.scaling_request(request(LIMITS.max_points), LIMITS)
    assert bootstrap == 100 and "bootstrap defaulted to 100" in notes[0]


def test_many_bad_values_are_listed_up_to_a_bound_and_counted():
    req = request(500, bootstrap=0)
    for p in req.points:
        p.loss = -1.0
    req.points[7].flops = float("inf")
    names = fields(req)
    assert names[:MAX_LISTED] == [f"points[{i}].loss" for i in range(MAX_LISTED)]
    assert names[MAX_LISTED:] == ["points"]  # "481 more bad values not listed"
    pts = [ScalingPoint(1e9, 1e10, float("nan"))] * 300
    with pytest.raises(InvalidRequest) as err:
        fit_scaling_law(pts, bootstrap=0)
    assert len(err.value.violations) == MAX_LISTED + 1 and err.value.violations[-1].field == "points"


def test_data_plane_enforces_the_limits_itself():
    async def go():
        dp = DataPlane(EngineRegistry(), ThreadPoolExecutor(1))
        try:
            pts = [ScalingPoint(1e9, 1e10, 2.5)] * 10
            with pytest.raises(InvalidRequest) as err:
                await dp.fit_scaling_law(pts, "chinchilla", LIMITS.max_bootstrap + 1)
            return err.value.violations[0].field, dp.fit_admission.running
        finally:
            await dp.close()

    assert asyncio.run(go()) == ("bootstrap", 0)


def test_server_publishes_and_enforces_the_limits(server):
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.CurvecastStub(ch)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert (info.max_scaling_points, info.max_scaling_bootstrap, info.max_scaling_point_replicates,
                info.max_scaling_predict_at, info.max_scaling_compute_budgets) == (
            LIMITS.max_points, LIMITS.max_bootstrap, LIMITS.max_point_replicates, LIMITS.max_predict_at,
            LIMITS.max_compute_budgets)
        for req, field in ((request(LIMITS.max_points + 1, bootstrap=0), "points"),
                           (request(40, bootstrap=1_000_000), "bootstrap")):  # invalid, not "too slow"
            with pytest.raises(grpc.RpcError) as err:
                stub.FitScalingLaw(req, timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            br = error_details_pb2.BadRequest()
            assert rpc_status.from_call(err.value).details[0].Unpack(br)
            assert [v.field for v in br.field_violations] == [field]


def test_magnitudes_that_would_overflow_6ND_are_refused_naming_the_field():
    """Found by the fuzzer: predict_at tokens of 1.8e308 were echoed back as the overflow value and 6*N*D
    overflowed. N, D, FLOPs and budgets are x-like quantities: at most 1e100, like every x in the API."""
    req = request(12, predict_at=[pb.ScalingQuery(n_params=1e9, tokens=1.7976931348623157e308)],
                  compute_budgets=[1e101])
    req.points[3].tokens = 1e200
    assert {"predict_at[0]", "compute_budgets[0]", "points[3].tokens"} <= set(fields(req))
    ok = request(12, predict_at=[pb.ScalingQuery(n_params=1e100, tokens=1e100)], compute_budgets=[1e100])
    points, *_ = converters.scaling_request(ok, LIMITS)  # at the limit: accepted
    assert len(points) == 12
