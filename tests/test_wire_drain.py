"""The drain with calls still queued inside gRPC: the real server (``app.start``) runs on its own event loop in
a thread, so the test can hold that loop while calls arrive. They then wait inside grpc core, not yet taken up
by grpc.aio, which is what happens under load; grpc's own ``server.stop`` cancels exactly those calls
(CANCELLED, which clients do not retry). Every one of them must be answered, and a call arriving during the
drain must get UNAVAILABLE (retryable)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
import numpy as np
import pytest

from curvecast.server import app
from curvecast.server.config import Settings
from curvecast.server.interceptors import DRAIN_REFUSAL
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc
from curvecast_client import forecast_request


class LoopServer:
    """``app.start`` on an event loop in a background thread."""

    def __init__(self, tmp_path: Path) -> None:
        settings = Settings(host="127.0.0.1", port=0, metrics_port=0, engine_threads=1, default_engine="analytic",
                            grace_s=60.0, model=str(tmp_path / "absent.onnx"))
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        starting = asyncio.run_coroutine_threadsafe(app.start(settings, metrics_server=False), self.loop)
        self.running = starting.result(120)
        self.address = f"127.0.0.1:{self.running.port}"

    def received(self) -> int:
        count = self.running.core_calls.started()
        assert count is not None, "channelz must report the server's calls"
        return count

    def wait_received(self, total: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received() < total:
            assert time.monotonic() < deadline, f"gRPC received {self.received()} calls, expected {total}"
            time.sleep(0.005)

    def hold_then_stop(self) -> tuple[threading.Event, Future]:
        """Block the event loop until the returned event is set, then start the drain from the loop itself
        (so the drain begins before the loop has taken up the calls that arrived meanwhile)."""
        release, stopped = threading.Event(), Future()

        def hold() -> None:
            release.wait(60)
            task = self.loop.create_task(self.running.stop())
            task.add_done_callback(lambda t: stopped.set_exception(t.exception()) if t.exception()
                                   else stopped.set_result(None))

        self.loop.call_soon_threadsafe(hold)
        return release, stopped

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def loop_server(tmp_path):
    server = LoopServer(tmp_path)
    yield server
    server.close()


def request(i: int):
    x = np.linspace(10, 300, 40)
    return forecast_request(x, 2.0 + 4.0 * x**-0.4, total_steps=1000 + i)


def outcome(future: grpc.Future) -> str:
    try:
        future.result()
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def test_calls_queued_inside_grpc_when_the_drain_starts_are_all_answered(loop_server):
    n = 40
    with grpc.insecure_channel(loop_server.address) as channel:
        stub = pb_grpc.CurvecastStub(channel)
        stub.Forecast(request(-1), timeout=60)  # connected and warm
        base = loop_server.received()
        release, stopped = loop_server.hold_then_stop()
        calls = [stub.Forecast.future(request(i), timeout=120) for i in range(n)]
        loop_server.wait_received(base + n)  # all of them are inside gRPC; the held loop has taken up none
        release.set()
        while loop_server.running.drain.seen < base + n:  # the drain admits them all, while it is running
            assert not stopped.done(), "the drain ended before the queued calls reached the application"
            time.sleep(0.005)
        late = stub.Forecast.future(request(n), timeout=30)
        results = [outcome(c) for c in calls]
        late_result = late.exception()
        stopped.result(60)
    assert results == ["OK"] * n
    assert late_result is not None and late_result.code() == grpc.StatusCode.UNAVAILABLE
    assert late_result.details() == DRAIN_REFUSAL


def test_drain_with_nothing_in_flight_ends_at_once(loop_server):
    started = time.monotonic()
    asyncio.run_coroutine_threadsafe(loop_server.running.stop(), loop_server.loop).result(30)
    assert time.monotonic() - started < 5  # well within the 60 s grace: nothing to wait for
