"""Backpressure, deadlines and size limits.

Admission control and deadline handling are tested on the data plane with engines that block on an
event (deterministic, no sleeps racing the engine); the wire-level behaviour (RESOURCE_EXHAUSTED with a
RetryInfo, DEADLINE_EXCEEDED, message-size and curve-length limits) on the real server process.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from conftest import ServerProcess
from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals
from curvecast.domain.errors import DeadlineExceeded, InvalidRequest, Overloaded
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry
from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc
from curvecast_client import AsyncClient, Client, CurvecastError, forecast_request


# ---- data plane: admission, deadlines, cancellation ----------------------------------------------------
class GateEngine:
    """Answers only when ``gate`` is set; records every curve it was asked to compute."""

    name = "analytic"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.seen: list[str] = []

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        self.seen.extend(q.curve.metric for q in queries)
        self.started.set()
        self.gate.wait(10)
        out = []
        for q in queries:
            xq = np.asarray(q.x_query, dtype=np.float64)
            out.append(EngineForecast(Marginals.from_gaussian(xq, np.full(len(xq), 1.0), np.full(len(xq), 0.1)),
                                      self.name))
        return out


def q(name: str) -> ForecastQuery:
    x = np.arange(1.0, 11.0)
    return ForecastQuery(curve=Curve(x, 2.0 + x**-0.5, metric=name), run=RunInfo(total_steps=100.0),
                         x_query=np.array([50.0]), engine="analytic")


def dataplane(engine: GateEngine, limit: int = 4096) -> DataPlane:
    """``retime_first_batch`` off: these tests count exactly which curves were computed for callers."""
    reg = EngineRegistry()
    reg.put(engine)
    settings = DataPlaneSettings(default_engine="analytic", max_inflight_curves=limit, retime_first_batch=False)
    return DataPlane(reg, ThreadPoolExecutor(2), settings, max_delay_s=0.0, max_concurrent_batches=1)


async def until(pred, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


def test_admission_limit_refuses_at_once_with_retry_hint():
    async def go():
        eng = GateEngine()
        dp = dataplane(eng, limit=2)
        first = asyncio.ensure_future(dp.forecast_many([q("a"), q("b")]))
        await until(eng.started.is_set)
        with pytest.raises(Overloaded) as err:
            await dp.forecast(q("c"))  # raises without waiting for the engine
        assert err.value.retry_after_s > 0
        assert dp.inflight == 2
        with pytest.raises(InvalidRequest) as too_big:  # can never fit: not worth a retry
            await dp.forecast_many([q("x"), q("y"), q("z")])
        assert too_big.value.violations[0].field == "requests"
        eng.gate.set()
        assert all(not isinstance(r, BaseException) for r in await first)
        assert dp.inflight == 0
        assert not isinstance(await dp.forecast(q("d")), BaseException)
        await dp.close()
        return eng.seen

    assert asyncio.run(go()) == ["a", "b", "d"]  # the refused curves were never computed


def test_expired_deadline_is_not_started():
    async def go():
        eng = GateEngine()
        eng.gate.set()
        dp = dataplane(eng)
        with pytest.raises(DeadlineExceeded):
            await dp.forecast(q("late"), deadline=time.monotonic() - 0.001)
        assert dp.inflight == 0
        await dp.close()
        return eng.seen

    assert asyncio.run(go()) == []


def test_deadline_passing_while_queued_skips_the_work():
    async def go():
        eng = GateEngine()
        dp = dataplane(eng)
        busy = asyncio.ensure_future(dp.forecast(q("busy")))
        await until(eng.started.is_set)  # the only engine slot is taken
        queued = asyncio.ensure_future(dp.forecast(q("queued"), deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.2)  # its deadline passes while it waits for the slot
        eng.gate.set()
        await busy
        with pytest.raises(DeadlineExceeded):
            await queued
        assert dp.inflight == 0
        await dp.close()
        return eng.seen

    assert asyncio.run(go()) == ["busy"]


def test_cancelled_call_frees_its_slot_and_is_not_computed():
    async def go():
        eng = GateEngine()
        dp = dataplane(eng, limit=2)
        busy = asyncio.ensure_future(dp.forecast(q("busy")))
        await until(eng.started.is_set)
        waiting = asyncio.ensure_future(dp.forecast(q("gone")))
        await until(lambda: dp.inflight == 2)
        with pytest.raises(Overloaded):
            await dp.forecast(q("refused"))
        waiting.cancel()  # what grpc.aio does to a handler whose client went away
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert dp.inflight == 1  # the slot is free at once, before the engine finishes anything
        admitted = asyncio.ensure_future(dp.forecast(q("next")))
        eng.gate.set()
        await busy
        await admitted
        assert dp.inflight == 0
        await dp.close()
        return eng.seen

    assert asyncio.run(go()) == ["busy", "next"]


# ---- the real server ---------------------------------------------------------------------------------------
def loss_curve(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(10, 300, n)
    return x.tolist(), (2.0 + 4.0 * x**-0.4 + rng.normal(0, 0.01, n)).tolist()


def metric(server: ServerProcess, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def tiny_server():
    """--max-inflight-curves 2 and one engine thread: easy to overload on purpose."""
    proc = ServerProcess("--max-inflight-curves", "2", "--default-engine", "analytic", "--engine-threads", "1",
                         "--max-message-mb", "4").wait_ready()
    yield proc
    proc.stop()


def test_server_overload_is_resource_exhausted_with_retry_info(tiny_server):
    x, y = loss_curve()

    async def burst():
        async with AsyncClient(tiny_server.address, retries=0, timeout=60) as c:
            return await asyncio.gather(*(c.forecast(x, y, total_steps=1000 + i) for i in range(12)),
                                        return_exceptions=True)

    out = asyncio.run(burst())
    refused = [r for r in out if isinstance(r, CurvecastError)]
    answered = [r for r in out if not isinstance(r, BaseException)]
    assert refused and answered and len(refused) + len(answered) == 12
    assert {r.code for r in refused} == {"RESOURCE_EXHAUSTED"}
    assert all(r.retry_after_s is not None and r.retry_after_s > 0 for r in refused)
    assert metric(tiny_server, 'curvecast_requests_rejected_total{reason="overloaded"}') >= len(refused)


def test_refusals_carry_grpc_pushback_matching_their_retry_info(tiny_server):
    """gRPC's retry policy (what the SDK uses) waits for ``grpc-retry-pushback-ms``; it must say what RetryInfo says."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    x, y = loss_curve()

    async def burst():
        async with grpc.aio.insecure_channel(tiny_server.address) as ch:
            stub = pb_grpc.CurvecastStub(ch)
            calls = [stub.Forecast(forecast_request(x, y, total_steps=1000 + i), timeout=60) for i in range(12)]
            out = []
            for call in calls:
                try:
                    await call
                    out.append(None)
                except grpc.aio.AioRpcError as err:
                    out.append(err)
            return out

    refused = [e for e in asyncio.run(burst()) if e is not None]
    assert refused
    for err in refused:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        md = dict(err.trailing_metadata())
        pushback_s = int(md["grpc-retry-pushback-ms"]) / 1000
        status = rpc_status.from_call(err)
        info = error_details_pb2.RetryInfo()
        assert any(d.Unpack(info) for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR))
        assert 0 < pushback_s == pytest.approx(info.retry_delay.ToNanoseconds() / 1e9, abs=0.0011)


def test_batch_larger_than_admission_limit_is_invalid_not_retryable(tiny_server):
    x, y = loss_curve()
    with Client(tiny_server.address, retries=0) as c:
        with pytest.raises(CurvecastError) as err:
            c.forecast_batch([dict(x=x, y=y)] * 3)
    assert err.value.code == "INVALID_ARGUMENT" and err.value.violations[0].field == "requests"


def test_sdk_retries_overload_until_served(tiny_server):
    x, y = loss_curve()

    async def burst():
        async with AsyncClient(tiny_server.address, retries=4, timeout=60) as c:
            return await asyncio.gather(*(c.forecast(x, y, total_steps=1000) for _ in range(3)),
                                        return_exceptions=True)

    out = asyncio.run(burst())
    assert sum(not isinstance(r, BaseException) for r in out) >= 2  # backoff + jitter get most through


def test_server_skips_the_queued_curves_of_a_caller_that_left():
    """A 400-curve batch fits its 60 s deadline and is admitted; the caller cancels while the engine works
    through it (what a passing deadline does too): the curves still queued are never computed, and the
    slots come back. (A batch that could not make its deadline is refused up front instead: see
    test_admission_forecast.py.)"""
    server = ServerProcess("--default-engine", "analytic", "--engine-threads", "1", "--max-batch", "2").wait_ready()
    try:
        runs = [dict(zip(("x", "y"), loss_curve(60, seed=i)), total_steps=2000) for i in range(400)]
        name = 'curvecast_curves_forecast_total{engine="analytic"}'
        before = metric(server, name)

        async def leave_midway() -> None:
            async with AsyncClient(server.address, retries=0, timeout=60) as c:
                call = asyncio.ensure_future(c.forecast_batch(runs))
                while metric(server, name) == before:  # the engine has started on it
                    await asyncio.sleep(0.01)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call

        asyncio.run(leave_midway())
        with Client(server.address, retries=0) as c:  # admitted at once: the cancelled curves count no more
            assert c.forecast(*loss_curve(), total_steps=1000, timeout=10).engines
        computed = metric(server, name) - before - 1
        assert 0 < computed < 200  # the rest were dropped, not computed for nobody
        deadline = time.monotonic() + 30
        while metric(server, "curvecast_inflight_curves") != 0:  # the gauge, refreshed every second
            assert time.monotonic() < deadline, "the slots did not come back"
            time.sleep(0.05)
    finally:
        server.stop()


# ---- size limits ---------------------------------------------------------------------------------------------
def test_million_point_curve_rejected_by_length_limit(server):
    n = 1_000_000
    req = forecast_request(np.arange(n, dtype=float), np.ones(n))
    assert req.ByteSize() < 16 * 2**20  # fits the message limit: the curve-length limit must catch it
    started = time.perf_counter()
    with Client(server.address, retries=0) as c:
        with pytest.raises(CurvecastError) as err:
            c.forecast(np.arange(n, dtype=float), np.ones(n))
    print(f"10^6-point curve rejected in {time.perf_counter() - started:.3f} s")
    assert err.value.code == "INVALID_ARGUMENT"
    assert err.value.violations[0].field == "curve.x"
    assert "100000" in err.value.violations[0].description


def test_message_over_max_size_is_resource_exhausted(tiny_server):
    """--max-message-mb 4: a 5 MiB request is refused by gRPC itself before any decoding."""
    n = 330_000  # two packed doubles per point: ~5.3 MB
    req = forecast_request(np.arange(n, dtype=float), np.ones(n))
    assert req.ByteSize() > 4 * 2**20
    with grpc.insecure_channel(tiny_server.address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.CurvecastStub(ch).Forecast(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in err.value.details()


@pytest.mark.parametrize("build, field", [
    (lambda: pb.ForecastBatchRequest(requests=[forecast_request([1.0], [1.0])] * 1001), "requests"),
    (lambda: forecast_request([1.0, 2.0], [1.0, 0.9], query_x=np.arange(3.0, 10_004.0)), "query_x"),
    (lambda: forecast_request([1.0, 2.0], [1.0, 0.9], quantiles=np.linspace(0.001, 0.999, 100)), "quantiles"),
])
def test_documented_limits_name_the_field(server, build, field):
    req = build()
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.CurvecastStub(ch)
        method = stub.ForecastBatch if isinstance(req, pb.ForecastBatchRequest) else stub.Forecast
        with pytest.raises(grpc.RpcError) as err:
            method(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    from grpc_status import rpc_status
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(err.value)
    br = error_details_pb2.BadRequest()
    status.details[0].Unpack(br)
    assert br.field_violations[0].field == field


def test_limits_are_published_in_model_info(server):
    with Client(server.address) as c:
        info = c.model_info()
    assert (info.max_curve_points, info.max_query_points, info.max_batch_requests) == (100_000, 10_000, 1_000)


class SlowEngine(GateEngine):
    """Takes ``per_curve_s`` per curve (after the gate opens)."""

    def __init__(self, per_curve_s: float) -> None:
        super().__init__()
        self.per_curve_s = per_curve_s

    def forecast(self, queries):
        out = super().forecast(queries)
        time.sleep(self.per_curve_s * len(queries))
        return out


def test_deadline_aware_admission_sheds_doomed_calls_at_once():
    async def go():
        eng = SlowEngine(0.05)
        eng.gate.set()
        dp = dataplane(eng)
        await dp.forecast(q("warm"))  # the data plane learns ~0.05 s per curve
        backlog = asyncio.ensure_future(dp.forecast_many([q(f"b{i}") for i in range(10)]))  # ~0.5 s queued
        await until(lambda: dp.inflight == 10)
        assert dp.expected_wait_s() == pytest.approx(0.5, rel=0.5)
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as err:
            await dp.forecast(q("hopeless"), deadline=time.monotonic() + 0.1)
        refused_in = time.monotonic() - t0
        assert "deadline" in str(err.value)
        patient = await dp.forecast(q("patient"), deadline=time.monotonic() + 30)  # enough time: admitted
        await backlog
        await dp.close()
        return eng.seen, refused_in, patient

    seen, refused_in, patient = asyncio.run(go())
    assert "hopeless" not in seen and "patient" in seen
    assert refused_in < 0.25  # refused before the backlog (0.5 s) could run, not after queueing

