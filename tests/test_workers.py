"""``--workers``: several server processes share the port under a supervisor (service/curvecast/server/workers.py).

Every check runs against real server processes. Calls reach both workers because each test channel has its
own connection (``grpc.use_local_subchannel_pool``) and the kernel spreads connections over the workers;
the tests confirm it from the workers' own sockets (psutil) rather than assume it. Waits are for events:
the ready line, log lines, metric values, sockets, process exits.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ServerProcess
from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc
from curvecast_client import forecast_request
from curvecast_client._convert import scaling_request

N_CHANNELS = 6  # connections per test at least; more are opened until every worker holds one


class Server:
    """A ServerProcess whose output keeps being read after the ready line, so tests can wait for log lines."""

    def __init__(self, *args: str) -> None:
        self.sp = ServerProcess(*args).wait_ready(180)
        self.proc, self.port, self.address, self.metrics_port = (self.sp.proc, self.sp.port, self.sp.address,
                                                                 self.sp.metrics_port)
        self.lines = list(self.sp.output)
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF marker: the process closed its output
            self._cond.notify_all()

    def wait_line(self, text: str, after: int = 0, timeout: float = 120.0) -> str:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [ln for ln in self.lines[after:] if text in ln]
                if found:
                    return found[0]
                left = end - time.monotonic()
                assert left > 0 and "" not in self.lines, f"no line with {text!r}:\n" + "".join(self.lines[-40:])
                self._cond.wait(left)

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def connected_workers(self) -> set[int]:
        """Worker pids holding an established connection on the gRPC port."""
        pids = set()
        for w in self.workers():
            try:
                if any(c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                       for c in w.net_connections("tcp")):
                    pids.add(w.pid)
            except psutil.Error:
                pass
        return pids

    def scrape(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return {f"{s.name}{{{','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))}}}": s.value
                for fam in text_string_to_metric_families(body) for s in fam.samples}

    def stop(self) -> None:
        self.sp.stop()


def channels(address: str, n: int = N_CHANNELS) -> list[grpc.Channel]:
    return [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n)]


def channels_on_every_worker(server: "Server", at_least: int = N_CHANNELS) -> list[grpc.Channel]:
    """Connected channels, at least ``at_least`` of them and enough that every worker holds one: the
    kernel hashes each new connection to a worker, so a fixed number could all land on one."""
    want = {w.pid for w in server.workers()}
    chans: list[grpc.Channel] = []
    while len(chans) < at_least or server.connected_workers() != want:
        if len(chans) >= 64:
            for ch in chans:
                ch.close()
            raise AssertionError(f"64 connections never reached every worker: {server.connected_workers()} of {want}")
        ch = channels(server.address, 1)[0]
        grpc.channel_ready_future(ch).result(timeout=30)
        chans.append(ch)
    return chans


def loss_run(i: int, n: int = 30) -> dict:
    x = np.linspace(10, 300, n)
    rng = np.random.default_rng(i)
    return dict(x=x, y=2.0 + 4.0 * x**-0.4 * (1 + rng.normal(0, 0.01, n)), total_steps=1000 + 100 * i,
                target=2.3, incumbent=2.25)


def chinchilla_points() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for n in np.geomspace(2e7, 1e9, 6):
        for mult in (5, 20, 80):
            d = n * mult
            out.append({"n_params": n, "tokens": d,
                        "loss": (1.8 + 480.0 / n**0.35 + 2100.0 / d**0.37) * np.exp(rng.normal(0, 0.005))})
    return out


def requests() -> list[tuple[str, object]]:
    batch = pb.ForecastBatchRequest(requests=[forecast_request(**loss_run(i)) for i in range(5)])
    return [("Forecast", forecast_request(**loss_run(0))),
            ("Forecast", forecast_request(**loss_run(1), engine="learned")),
            ("Forecast", forecast_request(**loss_run(2), engine="ensemble")),
            ("ForecastBatch", batch),
            ("FitScalingLaw", scaling_request(chinchilla_points(), form="chinchilla", bootstrap=30,
                                              predict_at=[(7e10, 1.4e12)], compute_budgets=[1e23]))]


def call(channel: grpc.Channel, method: str, request) -> bytes:
    stub = pb_grpc.CurvecastStub(channel)
    return getattr(stub, method)(request, timeout=120).SerializeToString(deterministic=True)


@pytest.fixture(scope="module")
def one_and_two():
    single = Server("--workers", "1")
    double = Server("--workers", "2")
    yield single, double
    single.stop()
    double.stop()


def test_two_workers_answer_exactly_as_one_process(one_and_two):
    single, double = one_and_two
    assert len(single.workers()) == 0 and len(double.workers()) == 2  # 1 = no supervisor, 2 = two children
    with grpc.insecure_channel(single.address) as ch:
        expected = [call(ch, m, r) for m, r in requests()]
    chans = channels_on_every_worker(double)
    try:
        for ch in chans:  # every connection answers every request, whichever worker holds it
            assert [call(ch, m, r) for m, r in requests()] == expected
        assert double.connected_workers() == {w.pid for w in double.workers()}  # both workers answered some
    finally:
        for ch in chans:
            ch.close()


def test_metrics_are_summed_over_workers_and_health_answers_from_each(one_and_two):
    _, double = one_and_two
    key = ("grpc_server_handled_total{grpc_code=OK,grpc_method=GetModelInfo,grpc_service=curvecast.v1.Curvecast,"
           "grpc_type=unary}")
    before = double.scrape().get(key, 0.0)
    chans = channels_on_every_worker(double)
    try:
        for ch in chans:
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            for _ in range(3):
                pb_grpc.CurvecastStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert double.connected_workers() == {w.pid for w in double.workers()}
        m = double.scrape()
    finally:
        for ch in chans:
            ch.close()
    assert m[key] - before == 3 * len(chans)  # one merged count, whichever worker handled each call
    assert m["curvecast_engine_available{engine=analytic}"] == 1.0  # gauges merged, no per-pid series
    assert not [k for k in m if "pid=" in k]
    biggest = max(w.memory_info().rss for w in double.workers())
    assert m["process_resident_memory_bytes{}"] > biggest  # process metrics add up the supervisor and workers


def test_sighup_reloads_the_model_in_every_worker(one_and_two):
    _, double = one_and_two
    key = "curvecast_model_reloads_total{result=ok}"
    before = double.scrape()[key]
    mark = len(double.lines)
    double.proc.send_signal(signal.SIGHUP)
    for _ in range(2):  # each worker logs its own reload
        mark = double.lines.index(double.wait_line("learned model reloaded", after=mark), mark) + 1
    end = time.monotonic() + 30
    while double.scrape()[key] < before + 2:  # the counters reach the merged metrics
        assert time.monotonic() < end, "the reloads were never counted"
        time.sleep(0.05)  # polling a metric
    assert double.scrape()[key] == before + 2
    with grpc.insecure_channel(double.address) as ch:
        call(ch, "Forecast", forecast_request(**loss_run(1), engine="learned"))


def test_sigterm_drains_every_worker_and_loses_no_accepted_call(tmp_path: Path):
    server = Server("--workers", "2", "--default-engine", "analytic", "--engine-threads", "1", "--grace-s", "60",
                    "--model", str(tmp_path / "absent.onnx"))
    chans = channels_on_every_worker(server)  # connected before the load: the drain is about calls
    try:
        assert server.connected_workers() == {w.pid for w in server.workers()}
        stubs = [pb_grpc.CurvecastStub(ch) for ch in chans]
        futures = [stubs[i % len(stubs)].Forecast.future(forecast_request(**loss_run(i, 80)), timeout=120)
                   for i in range(240)]
        key = "curvecast_grpc_calls_received_total{}"
        end = time.monotonic() + 60
        while server.scrape().get(key, 0.0) < len(futures):  # every call is on a worker (counted there)
            assert time.monotonic() < end, "the workers never received every call"
            time.sleep(0.05)  # polling a metric the workers refresh every second
        done_before = sum(f.done() for f in futures)
        server.proc.send_signal(signal.SIGTERM)
        codes = Counter()
        for f in futures:
            try:
                f.result()
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
        assert server.proc.wait(90) == 0
    finally:
        for ch in chans:
            ch.close()
    assert done_before < len(futures)  # the drain had calls to finish
    assert codes == {"OK": len(futures)}, codes  # received before SIGTERM: every one answered
    server.wait_line("all 2 workers stopped")
    assert sum("shutting down: draining in-flight calls" in ln for ln in server.lines) == 2  # each worker drained


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(tmp_path: Path):
    server = Server("--workers", "2", "--model", str(tmp_path / "absent.onnx"))
    try:
        first = {w.pid for w in server.workers()}
        victim = min(first)
        mark = len(server.lines)
        psutil.Process(victim).kill()
        server.wait_line(f"(pid {victim}) exited with status -9", after=mark)
        server.wait_line("replaced (pid", after=mark)
        now = {w.pid for w in server.workers()}
        assert len(now) == 2 and victim not in now and (first - {victim}) <= now
        chans: list[grpc.Channel] = []
        try:
            # the kernel hashes each new connection to a worker: open connections until both hold one
            while server.connected_workers() != now:
                assert len(chans) < 64, f"64 connections never reached both workers: {server.connected_workers()}"
                ch = channels(server.address, 1)[0]
                chans.append(ch)
                health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                pb_grpc.CurvecastStub(ch).Forecast(forecast_request(**loss_run(0)), timeout=60)
            # the replacement serves too (it answered on one of these connections)
        finally:
            for ch in chans:
                ch.close()
        assert server.scrape()["curvecast_engine_available{engine=analytic}"] == 1.0  # the dead one's gauge is gone
    finally:
        server.stop()
    assert server.proc.returncode == 0
