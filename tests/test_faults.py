"""Faults: broken model files, an unusable GPU, engines that fail for one curve, SIGTERM under load and
hot reload. Server-level tests run the real server process; engine failures are tested on the data
plane with deliberately broken test engines (no mocks of gRPC)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ROOT, ServerProcess
from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals
from curvecast.domain.errors import EngineUnavailable
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry
from curvecast_client import AsyncClient, Client, CurvecastError

MODEL = ROOT / "service" / "curvecast" / "models" / "curvecast-pfn.onnx"
LEARNED = "curvecast.engine.learned"


def loss_curve(n: int = 30, seed: int = 0) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    x = np.linspace(10, 300, n)
    return x.tolist(), (2.0 + 4.0 * x**-0.4 + rng.normal(0, 0.01, n)).tolist()


def metric_value(server: ServerProcess, name: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def model_dir_copy(tmp_path: Path) -> Path:
    """The bundled model and everything beside it (its card), copied so the test can damage it."""
    if not MODEL.is_file():
        pytest.skip(f"no learned model at {MODEL} yet")
    dst = tmp_path / "model"
    shutil.copytree(MODEL.parent, dst)
    return dst / MODEL.name


@pytest.fixture
def started():
    procs: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        p = ServerProcess(*args)
        procs.append(p)
        return p.wait_ready()

    yield start
    for p in procs:
        p.stop()


def assert_learned_down_analytic_serving(server: ServerProcess, needle: str) -> None:
    with Client(server.address, retries=0) as c:
        assert c.health() == "SERVING"
        assert c.health(LEARNED) == "NOT_SERVING"
        assert c.health("curvecast.engine.analytic") == "SERVING"
        learned = {e.name: e for e in c.model_info().engines}["learned"]
        assert not learned.available
        assert needle in learned.detail.lower(), learned.detail
        x, y = loss_curve()
        f = c.forecast(x, y, total_steps=1000)
        assert [e.name for e in f.engines] == ["analytic"]
        with pytest.raises(CurvecastError) as err:  # asking for the learned engine explicitly: a clean refusal
            c.forecast(x, y, total_steps=1000, engine="learned")
        assert err.value.code == "UNAVAILABLE" and "learned" in err.value.message
    assert metric_value(server, 'curvecast_engine_available{engine="learned"}') == 0.0
    assert metric_value(server, 'curvecast_engine_available{engine="analytic"}') == 1.0
    assert any("learned engine unavailable" in line for line in server.output)


# ---- broken model files ----------------------------------------------------------------------------------
def test_missing_model_file_serves_analytic(started, tmp_path):
    server = started("--model", str(tmp_path / "nope.onnx"))
    assert_learned_down_analytic_serving(server, "not found")


def test_truncated_model_file_serves_analytic(started, tmp_path):
    if MODEL.is_file():
        path = model_dir_copy(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:  # still exercises the loader's refusal of a file that is not a model
        path = tmp_path / "curvecast-pfn.onnx"
        path.write_bytes(b"\x08\x07\x12\x04junk" * 10)
        (tmp_path / "model-card.json").write_text("{}")
    server = started("--model", str(path))
    with Client(server.address, retries=0) as c:
        detail = {e.name: e for e in c.model_info().engines}["learned"].detail
    assert detail  # the reason is reported, whatever the loader's words
    assert_learned_down_analytic_serving(server, "")


def test_tampered_model_file_is_refused(started, tmp_path):
    """Same size, a few weight bytes flipped: must be refused (checksum in the card), never served silently."""
    path = model_dir_copy(tmp_path)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0x5A for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))
    server = started("--model", str(path))
    assert_learned_down_analytic_serving(server, "")


def test_cuda_requested_without_gpu_falls_back_to_cpu(started, tmp_path):
    args = ["--device", "cuda"]
    if MODEL.is_file():
        args += ["--model", str(model_dir_copy(tmp_path))]
    else:
        args += ["--model", str(tmp_path / "absent.onnx")]
    server = started(*args)
    with Client(server.address, retries=0) as c:
        assert c.health() == "SERVING"
        x, y = loss_curve()
        assert c.forecast(x, y, total_steps=1000).engines
        if not MODEL.is_file():
            return
        learned = {e.name: e for e in c.model_info().engines}["learned"]
        assert learned.available and learned.provider == "CPUExecutionProvider"
        f = c.forecast(x, y, total_steps=1000, engine="learned")
        assert f.engines[0].provider == "CPUExecutionProvider"
    warnings = [line for line in server.output if "CUDA was requested" in line]
    assert len(warnings) == 1


# ---- one engine failing for one curve (data plane with test engines) -----------------------------------------
class GoodEngine:
    def __init__(self, name: str = "good") -> None:
        self.name = name
        self.calls: list[list[str]] = []

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def _answer(self, q: ForecastQuery, level: float | None = None) -> EngineForecast:
        xq = np.asarray(q.x_query, dtype=np.float64)
        mean = np.full(len(xq), float(q.curve.y[-1]) if level is None else level)
        return EngineForecast(Marginals.from_gaussian(xq, mean, np.full(len(xq), 0.05)), self.name)

    def forecast(self, queries):
        self.calls.append([q.curve.metric for q in queries])
        return [self._answer(q) for q in queries]


class FlakyEngine(GoodEngine):
    """Misbehaves for curves whose metric names a fault: 'raise' raises for the whole batch, 'error' returns
    an exception for that curve, 'nan' answers NaN, 'short' returns too few results."""

    def forecast(self, queries):
        kinds = [q.curve.metric for q in queries]
        self.calls.append(kinds)
        if "raise" in kinds:
            raise ZeroDivisionError("boom in a vectorised kernel")
        out = []
        for q in queries:
            if q.curve.metric == "error":
                out.append(ValueError("cannot forecast this curve"))
            elif q.curve.metric == "nan":
                out.append(self._answer(q, float("nan")))
            else:
                out.append(self._answer(q))
        return out[:-1] if "short" in kinds else out


def query(metric: str = "", engine: str = "", n: int = 12, total: float = 200.0) -> ForecastQuery:
    x = np.arange(1.0, n + 1)
    return ForecastQuery(curve=Curve(x, 2.0 + x**-0.5, metric=metric), run=RunInfo(total_steps=total),
                         x_query=np.array([50.0, 100.0]), engine=engine)


def make_dataplane(*, ensemble: bool) -> tuple[DataPlane, FlakyEngine, GoodEngine]:
    reg = EngineRegistry()
    flaky, good = FlakyEngine("flaky"), GoodEngine("good")
    reg.put(flaky)
    reg.put(good)
    weights = (("flaky", 0.5), ("good", 0.5)) if ensemble else (("flaky", 1.0),)
    settings = DataPlaneSettings(default_engine="ensemble", ensemble_weights=weights)
    return DataPlane(reg, ThreadPoolExecutor(2), settings, max_delay_s=0.02), flaky, good


def run(coro, timeout: float = 30.0):
    async def bounded():
        return await asyncio.wait_for(coro(), timeout)  # a lost future would hang: fail instead

    return asyncio.run(bounded())


@pytest.mark.parametrize("fault", ["raise", "error", "nan", "short"])
def test_one_bad_curve_alone_fails_without_ensemble(fault):
    async def go():
        dp, flaky, _ = make_dataplane(ensemble=False)
        metrics = ["ok0", fault, "ok2", "ok3"]
        out = await dp.forecast_many([query(m) for m in metrics])
        await dp.close()
        return out, flaky.calls, metrics

    out, calls, metrics = run(go)
    assert calls[0] == metrics  # all four went to the engine in one batch
    assert isinstance(out[1], BaseException)
    for k in (0, 2, 3):
        if fault == "short":  # a malformed engine answer fails its whole batch, cleanly
            assert isinstance(out[k], RuntimeError) and "returned 3 results for 4" in str(out[k])
        else:
            assert not isinstance(out[k], BaseException), out[k]
            assert not out[k].warnings
            assert np.all(np.isfinite(out[k].predictions.values))


@pytest.mark.parametrize("fault", ["raise", "error", "nan"])
def test_one_bad_curve_gets_fallback_answer_with_warning_in_ensemble(fault):
    async def go():
        dp, _, good = make_dataplane(ensemble=True)
        out = await dp.forecast_many([query("a"), query(fault), query("b")])
        await dp.close()
        return out, good.calls

    out, good_calls = run(go)
    assert good_calls == [["a", fault, "b"]]
    bad = out[1]
    assert not isinstance(bad, BaseException)
    assert [e.name for e in bad.engines] == ["good"] and bad.engines[0].weight == pytest.approx(1.0)
    assert any("engine 'flaky' failed for this curve" in w for w in bad.warnings)
    assert np.all(np.isfinite(bad.predictions.values))
    for k in (0, 2):
        assert {e.name for e in out[k].engines} == {"flaky", "good"}
        assert not any("failed" in w for w in out[k].warnings)


def test_unavailable_engine_fails_only_the_item_that_names_it():
    async def go():
        dp, _, _ = make_dataplane(ensemble=False)
        out = await dp.forecast_many([query("a", engine="good"), query("b", engine="learned")])
        await dp.close()
        return out

    out = run(go)
    assert not isinstance(out[0], BaseException)
    assert isinstance(out[1], EngineUnavailable)


# ---- SIGTERM under load -----------------------------------------------------------------------------------------
def received_calls(server: ServerProcess) -> float:
    """Calls gRPC has received on the server, whether or not the server's event loop has taken them up."""
    value = metric_value(server, "curvecast_grpc_calls_received_total")
    assert value is not None, "the server does not export curvecast_grpc_calls_received_total"
    return value


async def wait_until_received(server: ServerProcess, total: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(received_calls, server) < total:
        assert time.monotonic() < deadline, f"the server never received {total:.0f} calls"
        await asyncio.sleep(0.02)


def test_sigterm_under_load_drains_without_failing_accepted_calls(started):
    server = started("--default-engine", "analytic", "--grace-s", "60", "--engine-threads", "1")
    statuses: list[tuple[float, str]] = []
    channel = grpc.insecure_channel(server.address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

    def watcher() -> None:
        try:
            for resp in watch:
                statuses.append((time.monotonic(), health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)))
        except grpc.RpcError:
            pass

    threading.Thread(target=watcher, daemon=True).start()
    assert wait_for(lambda: bool(statuses), 30)  # the Watch stream is on the server before calls are counted
    x, y = loss_curve(80)
    n_calls = 400  # several seconds of fits on one engine thread (about 7 ms each)
    received_before = received_calls(server)

    async def load():
        async with AsyncClient(server.address, retries=0, timeout=120) as c:
            done_at: list[float] = []

            async def tracked(i: int):
                r = await c.forecast(x, y, total_steps=1000 + i)
                done_at.append(time.monotonic())
                return r

            accepted = [asyncio.ensure_future(tracked(i)) for i in range(n_calls)]
            # SIGTERM once every call is on the server (sending 400 can take a busy client a while); most still
            # wait inside gRPC for the server's event loop, and 400 curves take seconds on one engine thread
            await wait_until_received(server, received_before + n_calls)
            server.proc.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            while not any(s == "NOT_SERVING" and t >= sigterm_at - 0.5 for t, s in statuses):  # the drain began
                assert time.monotonic() < sigterm_at + 60, "health never turned NOT_SERVING"
                await asyncio.sleep(0.01)
            async with AsyncClient(server.address, retries=0) as fresh:  # a new caller during the drain
                try:
                    late: object = await fresh.forecast(x, y, total_steps=1000, timeout=5)
                except CurvecastError as exc:
                    late = exc
            late_at = time.monotonic()
            results = await asyncio.gather(*accepted, return_exceptions=True)
            return results, sigterm_at, done_at, late, late_at

    results, sigterm_at, done_at, late, late_at = asyncio.run(load())
    watch.cancel()  # an open Watch stream is an in-flight call too; let the server finish its drain
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed  # zero failed accepted calls
    assert len(results) == n_calls
    assert max(done_at) > late_at  # the drain still had work when the late caller was refused
    assert isinstance(late, CurvecastError) and late.code == "UNAVAILABLE", late  # refused cleanly
    not_serving = [t for t, s in statuses if s == "NOT_SERVING" and t >= sigterm_at - 0.5]
    assert not_serving and not_serving[0] < max(done_at)  # NOT_SERVING announced before the drain ended
    assert server.proc.wait(60) == 0
    channel.close()


def test_drain_past_its_grace_cuts_calls_with_one_summary_line(started):
    """A drain that runs out of grace cuts what is still running (UNAVAILABLE, retryable) and says how many in
    one log line, not in a CancelledError traceback per call."""
    server = started("--default-engine", "analytic", "--grace-s", "0.5", "--engine-threads", "1")
    x, y = loss_curve(80)
    n_calls = 300  # seconds of work on one engine thread: far more than the grace

    async def load():
        async with AsyncClient(server.address, retries=0, timeout=120) as c:
            before = await asyncio.to_thread(received_calls, server)
            calls = [asyncio.ensure_future(c.forecast(x, y, total_steps=1000 + i)) for i in range(n_calls)]
            await wait_until_received(server, before + n_calls)
            server.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(load())
    output, _ = server.proc.communicate(timeout=60)  # the rest of its output, once it has exited
    assert server.proc.returncode == 0
    assert "Traceback" not in output and "CancelledError" not in output, output[-3000:]
    summaries = [line for line in output.splitlines() if "ran out" in line]
    assert len(summaries) == 1, summaries
    cut, waiting = (int(n) for n in re.findall(r"(\d+) call\(s\) in flight and (\d+) still waiting", summaries[0])[0])
    codes = Counter(getattr(r, "code", repr(r)) for r in results if isinstance(r, BaseException))
    assert codes and set(codes) <= {"UNAVAILABLE", "CANCELLED"}, codes
    # calls finishing as the grace ends may still get their answer; only calls gRPC still held (never taken up
    # by the event loop, possible on a starved machine) get CANCELLED from gRPC itself (grpc/grpc#41785)
    assert sum(codes.values()) <= cut + waiting <= n_calls
    assert codes["CANCELLED"] <= waiting


# ---- hot reload (SIGHUP) -------------------------------------------------------------------------------------------
def reloads(server: ServerProcess, result: str) -> float:
    return metric_value(server, f'curvecast_model_reloads_total{{result="{result}"}}') or 0.0


def wait_for(pred, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_failed_reload_keeps_serving(started, tmp_path):
    server = started("--model", str(tmp_path / "later.onnx"))
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: reloads(server, "failed") == 1.0)
    assert_learned_down_analytic_serving(server, "not found")


def test_reload_swaps_in_new_model_and_keeps_old_on_failure(started, tmp_path):
    path = model_dir_copy(tmp_path)
    good_bytes = path.read_bytes()
    server = started("--model", str(path))
    x, y = loss_curve()
    with Client(server.address, retries=0) as c:
        assert c.health(LEARNED) == "SERVING"
        before = c.forecast(x, y, total_steps=1000, engine="learned")
        # 1) a good file reloads
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reloads(server, "ok") == 1.0)
        assert c.health(LEARNED) == "SERVING"
        # 2) a broken file does not replace the running model
        path.write_bytes(good_bytes[: len(good_bytes) // 4])
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reloads(server, "failed") == 1.0)
        assert c.health(LEARNED) == "SERVING"
        after = c.forecast(x, y, total_steps=1000, engine="learned")
        assert after.engines[0].name == "learned"
        assert after.final.median == pytest.approx(before.final.median, rel=1e-6)
        learned = {e.name: e for e in c.model_info().engines}["learned"]
        assert learned.available


def test_reload_under_load_loses_no_call(started, tmp_path):
    """Calls in flight while the model is swapped finish (on the old or the new model); none fails."""
    path = model_dir_copy(tmp_path)
    server = started("--model", str(path), "--default-engine", "learned")
    x, y = loss_curve(40)

    async def load():
        async with AsyncClient(server.address, retries=0, timeout=60) as c:
            calls = [asyncio.ensure_future(c.forecast(x, y, total_steps=1000 + i)) for i in range(40)]
            await asyncio.sleep(0.05)
            server.proc.send_signal(signal.SIGHUP)
            out = await asyncio.gather(*calls, return_exceptions=True)
            await asyncio.sleep(0.2)
            return out

    out = asyncio.run(load())
    assert not [r for r in out if isinstance(r, BaseException)]
    assert all(r.engines[0].name == "learned" for r in out)
    assert wait_for(lambda: reloads(server, "ok") == 1.0)
