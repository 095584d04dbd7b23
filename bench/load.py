"""Load generator: drives a real Curvecast server through the SDK's ``AsyncClient`` and reports
throughput, latency percentiles, batch sizes formed and CPU use, next to the ceiling of the machine
(a no-op unary gRPC handler measured in the same run).

    python -m bench.load                       # default engine, all modes, concurrency 1..256
    python -m bench.load --engine analytic --concurrency 1,16,64 --duration 5 --out /tmp/load

What is measured, per (mode, concurrency):
- closed loop: ``concurrency`` workers each send a call, wait for the answer, send the next;
- ``unary``: one curve per ``Forecast``; ``batch``: ``--batch-size`` curves per ``ForecastBatch``;
  ``mixed``: three unary calls then one batch call per worker, repeating;
- curves/s and calls/s (successful only), p50/p90/p99 call latency, errors by status code;
- mean engine batch size, from the server's ``curvecast_batch_size`` histogram (scraped before/after);
- CPU cores used by the server process and by this client process (from /proc via psutil).
Then an open-loop sweep (``--rates``): single-curve calls sent at a fixed rate whatever the answers do,
latency counted from the scheduled send time (no coordinated omission), to show p99 at a given rate
and how latency degrades past saturation.

The server, the no-op server (and the optional ``--stub`` server: the real gRPC stack, data plane and
decision code with a constant-time engine, i.e. the ceiling of everything but the engine) each run in
their own process on free ports. ``--workers 1,2`` measures each engine's server once per worker count
(``--analytic-pool N`` adds the other design: one process with N analytic fit processes); the client
spreads its calls over ``--channels`` connections (as many callers would), since the kernel spreads
connections, not calls, over the worker processes.

Before the servers start (nothing else of the bench running), in-process: the learned engine's FLOPs per
curve walked from its ONNX graph for the inputs the server builds, beside this machine's measured GEMM
roof (so its throughput reads as a share of its compute bound), and the serving overhead per curve with a
no-op engine (bench/speed.py). Results go to ``OUT.md`` and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "service", ROOT / "client"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import grpc  # noqa: E402
import psutil  # noqa: E402

from curvecast_api.v1 import curvecast_pb2 as pb  # noqa: E402
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc  # noqa: E402
from curvecast_client import AsyncClient, CurvecastError, forecast_request  # noqa: E402
from curvecast_client._channel import channel_options  # noqa: E402

MODES = ("unary", "batch", "mixed")


# ---- servers under test ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server subprocess on free ports; its output is drained in a thread so it never blocks."""

    def __init__(self, cmd: list[str], port: int, metrics_port: int | None, ready: str, env: dict | None = None):
        self.port, self.metrics_port = port, metrics_port
        self.address = f"127.0.0.1:{port}"
        pythonpath = os.pathsep.join([str(ROOT / "service"), str(ROOT / "client"), str(ROOT),
                                      os.environ.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})})
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._marker = ready
        self._seen_ready = False
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(180) or not self._seen_ready:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-30:]))
        self.ps = psutil.Process(self.proc.pid)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.lines) < 2000:
                self.lines.append(line)
            if self._marker in line:
                self._seen_ready = True
                self._ready.set()
        self._ready.set()  # the process closed its output: ready or not, stop waiting

    def cpu_s(self) -> float:
        """CPU seconds of the server and its worker processes (e.g. --analytic-workers)."""
        total = 0.0
        for ps in [self.ps, *self.ps.children(recursive=True)]:
            try:
                t = ps.cpu_times()
                total += t.user + t.system
            except psutil.Error:  # a worker that just exited
                pass
        return total

    def rss_mb(self) -> float:
        """Resident memory of the server and its worker processes."""
        total = 0
        for ps in [self.ps, *self.ps.children(recursive=True)]:
            try:
                total += ps.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Replicas:
    """Several server processes measured as one: the SDK balances calls round-robin over their
    addresses (as over the pods of a headless Kubernetes service); CPU, memory and metrics add up."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.address = ",".join(p.address for p in procs)
        self.metrics_port = tuple(p.metrics_port for p in procs)
        self.proc = procs[0].proc

    def cpu_s(self) -> float:
        return sum(p.cpu_s() for p in self.procs)

    def rss_mb(self) -> float:
        return sum(p.rss_mb() for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def start_replicas(n: int, start: Callable[[], Proc]) -> Proc | Replicas:
    return start() if n <= 1 else Replicas([start() for _ in range(n)])


def start_curvecast(engine: str, extra: Sequence[str] = ()) -> Proc:
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "curvecast.server.app", "--host", "127.0.0.1", "--port", str(port),
           "--metrics-port", str(mport), *(["--default-engine", engine] if engine != "default" else []), *extra]
    return Proc(cmd, port, mport, "curvecast-server ready")


def start_helper(kind: str, extra: Sequence[str] = ()) -> Proc:
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "bench.load", f"--serve-{kind}", "--port", str(port), "--metrics-port", str(mport),
           *(f"--server-arg={a}" for a in extra)]
    return Proc(cmd, port, mport if kind == "stub" else None, "ready on port")


# ---- the no-op server and the stub-engine server (run in their own processes) --------------------------
class NoopServicer(pb_grpc.CurvecastServicer):
    """Decodes the request and answers an empty response: the cost of gRPC itself on this machine."""

    async def Forecast(self, request, context):  # noqa: N802
        return pb.ForecastResponse(request_id=request.request_id)

    async def ForecastBatch(self, request, context):  # noqa: N802
        return pb.ForecastBatchResponse(results=[pb.ForecastBatchItem(response=pb.ForecastResponse())
                                                 for _ in request.requests])


async def serve_noop(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20)])
    pb_grpc.add_CurvecastServicer_to_server(NoopServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"noop ready on port {port}", flush=True)
    await server.wait_for_termination()


async def serve_stub(port: int, metrics_port: int, extra: Sequence[str]) -> None:
    from curvecast.engines.registry import EngineRegistry
    from curvecast.server import app

    from .speed import NoopEngine  # constant-time: everything but the engine is measured

    def registry(_settings):
        reg = EngineRegistry()
        reg.put(NoopEngine())
        return reg

    app.build_registry = registry  # the rest of the stack is the real one
    settings = app.load_settings(["--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
                                  "--default-engine", "analytic", *extra])
    await app.serve(settings)


# ---- workload --------------------------------------------------------------------------------------
def make_runs(n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic loss curves of 20..80 points, each with a budget, a target and an incumbent."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        k = int(rng.integers(20, 81))
        total = float(rng.choice([1000.0, 5000.0, 20000.0]))
        x = np.linspace(total / 200, total * rng.uniform(0.2, 0.6), k)
        a, b, c = rng.uniform(1.5, 3.0), rng.uniform(2.0, 6.0), rng.uniform(0.2, 0.7)
        y = a + b * x**-c + rng.normal(0, 0.005 * a, k)
        runs.append(dict(x=x.tolist(), y=y.tolist(), total_steps=total, target=float(a + 0.5 * b * total**-c),
                         incumbent=float(a + b * total**-c), request_id=f"load-{i}"))
    return runs


@dataclass
class Outcome:
    curves: int = 0
    errors: Counter = field(default_factory=Counter)
    engines: Counter = field(default_factory=Counter)


Call = Callable[[int], Awaitable[Outcome]]


def _code(exc: BaseException) -> str:
    if isinstance(exc, CurvecastError):
        return exc.code
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code().name
    if isinstance(exc, asyncio.TimeoutError):
        return "CLIENT_TIMEOUT"
    return type(exc).__name__


# each channel its own connection (grpc otherwise shares one between channels to the same address)
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


class SdkCaller:
    """Calls through the SDK (what schedulers use): response conversion included in the latency. Call ``i``
    goes out on client ``i % channels``, each with its own connection."""

    def __init__(self, address: str, runs: list[dict], batch_size: int, timeout: float, retries: int,
                 channels: int = 1) -> None:
        self.clients = [AsyncClient(address, timeout=timeout, retries=retries, options=OWN_CONNECTION)
                        for _ in range(max(channels, 1))]
        self.client = self.clients[0]
        self.runs, self.batch_size = runs, batch_size

    def _client(self, i: int) -> AsyncClient:
        return self.clients[i % len(self.clients)]

    async def unary(self, i: int) -> Outcome:
        f = await self._client(i).forecast(**self.runs[i % len(self.runs)])
        return Outcome(1, Counter(), Counter(f"{e.name}/{e.version}/{e.provider}" for e in f.engines))

    async def batch(self, i: int) -> Outcome:
        n = len(self.runs)
        chunk = [self.runs[(i * self.batch_size + k) % n] for k in range(self.batch_size)]
        out = Outcome()
        for r in await self._client(i).forecast_batch(chunk):
            if isinstance(r, CurvecastError):
                out.errors[r.code] += 1
            else:
                out.curves += 1
                out.engines.update(f"{e.name}/{e.version}/{e.provider}" for e in r.engines)
        return out

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


class RawCaller:
    """Same request messages through a bare stub (the no-op server's answers are empty)."""

    def __init__(self, address: str, runs: list[dict], batch_size: int, timeout: float, retries: int,
                 channels: int = 1) -> None:
        self.channels = [grpc.aio.insecure_channel(address, channel_options(retries) + list(OWN_CONNECTION))
                         for _ in range(max(channels, 1))]
        self.stubs = [pb_grpc.CurvecastStub(ch) for ch in self.channels]
        self.reqs = [forecast_request(**r) for r in runs]
        self.batch_size, self.timeout = batch_size, timeout

    async def unary(self, i: int) -> Outcome:
        await self.stubs[i % len(self.stubs)].Forecast(self.reqs[i % len(self.reqs)], timeout=self.timeout)
        return Outcome(1)

    async def batch(self, i: int) -> Outcome:
        n = len(self.reqs)
        req = pb.ForecastBatchRequest(requests=[self.reqs[(i * self.batch_size + k) % n]
                                                for k in range(self.batch_size)])
        resp = await self.stubs[i % len(self.stubs)].ForecastBatch(req, timeout=self.timeout)
        return Outcome(len(resp.results))

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


def mode_call(caller: SdkCaller | RawCaller, mode: str) -> Call:
    if mode == "unary":
        return caller.unary
    if mode == "batch":
        return caller.batch
    return lambda i: caller.batch(i) if i % 4 == 3 else caller.unary(i)


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    calls_ok: int = 0
    curves_ok: int = 0
    errors: Counter = field(default_factory=Counter)
    engines: Counter = field(default_factory=Counter)
    wall_s: float = 0.0

    def add(self, latency: float, out: Outcome | None, exc: BaseException | None) -> None:
        self.latencies.append(latency)
        if exc is not None:
            self.errors[_code(exc)] += 1
            return
        assert out is not None
        self.calls_ok += 1
        self.curves_ok += out.curves
        self.errors.update(out.errors)
        self.engines.update(out.engines)


async def _timed(call: Call, i: int, t0: float, samples: Samples | None) -> BaseException | None:
    out, err = None, None
    try:
        out = await call(i)
    except Exception as exc:  # noqa: BLE001 - every failure is counted by code
        err = exc
    if samples is not None:
        samples.add(time.perf_counter() - t0, out, err)
    return err


async def closed_loop(call: Call, concurrency: int, duration: float, warmup: float) -> Samples:
    samples = Samples()
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + duration
    counter = iter(range(10**12))

    async def worker() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            err = await _timed(call, next(counter), t0, samples if t0 >= measure_from else None)
            hint = getattr(err, "retry_after_s", None)
            if hint:  # a refused client comes back when the server said (the SDK's retries do the same)
                await asyncio.sleep(min(hint, max(end - time.perf_counter(), 0.0)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    samples.wall_s = max(time.perf_counter() - measure_from, 1e-9)
    return samples


async def open_loop(call: Call, rate: float, duration: float) -> Samples:
    """Send at a fixed rate regardless of answers; latency counts from the scheduled send time."""
    samples = Samples()
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    tasks = []
    n = int(rate * duration)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(_timed(call, i, scheduled, samples)))
    await asyncio.gather(*tasks)
    samples.wall_s = max(time.perf_counter() - start, 1e-9)
    return samples


# ---- server-side measurements ----------------------------------------------------------------------------
def scrape(metrics_port: int | tuple[int | None, ...] | None) -> dict[str, float]:
    """Flat {name{labels}: value} of the server's Prometheus metrics (empty without a metrics port);
    a tuple of ports (replicas) gives the sums over them."""
    if isinstance(metrics_port, tuple):
        total: dict[str, float] = {}
        for port in metrics_port:
            for k, v in scrape(port).items():
                total[k] = total.get(k, 0.0) + v
        return total
    if not metrics_port:
        return {}
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def batch_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Mean engine batch size and its histogram (per engine) formed between two scrapes."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if key.startswith("curvecast_batch_size_count{"):
            engine = key[key.index("engine=") + 7:].rstrip("}")
            count = value - before.get(key, 0.0)
            total = after[key.replace("_count", "_sum")] - before.get(key.replace("_count", "_sum"), 0.0)
            if count > 0:
                buckets = {}
                for k, v in after.items():
                    if k.startswith("curvecast_batch_size_bucket{") and f"engine={engine}" in k:
                        le = k[k.index("le=") + 3:].split(",")[0].rstrip("}")
                        buckets[le] = v - before.get(k, 0.0)
                out[engine] = {"batches": count, "mean": total / count, "le_buckets": buckets}
    return out


async def wait_idle(proc: Proc, limit_s: float = 60.0) -> None:
    """Let the previous level's queued work drain before measuring the next one."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1.1)  # the gauge is refreshed every second
        m = await asyncio.to_thread(scrape, proc.metrics_port)
        if m.get("curvecast_inflight_curves{}", 0.0) == 0 and m.get("curvecast_queue_depth{}", 0.0) == 0:
            return


async def health_probe(proc: Proc, stop: asyncio.Event, out: list[float]) -> None:
    """grpc.health Check every 100 ms on its own channel: is the server's event loop responsive under load?"""
    async with AsyncClient(proc.address, retries=0, timeout=10) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                await c.health()
                out.append(time.perf_counter() - t0)
            except CurvecastError:
                out.append(10.0)
            await asyncio.sleep(0.1)


# ---- one measured level -----------------------------------------------------------------------------------
def _pct(lat: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(lat) * 1e3, q)) if lat else None


async def measure(proc: Proc, call: Call, label: dict[str, Any], *, concurrency: int | None = None,
                  rate: float | None = None, duration: float, warmup: float) -> dict[str, Any]:
    if proc.metrics_port:
        await wait_idle(proc)
    me = psutil.Process()
    m0 = await asyncio.to_thread(scrape, proc.metrics_port)
    s_cpu0, c_cpu0, t0 = proc.cpu_s(), sum(me.cpu_times()[:2]), time.perf_counter()
    stop = asyncio.Event()
    health: list[float] = []
    probe = asyncio.ensure_future(health_probe(proc, stop, health)) if proc.metrics_port else None
    if rate is not None:
        samples = await open_loop(call, rate, duration)
    else:
        assert concurrency is not None
        samples = await closed_loop(call, concurrency, duration, warmup)
    wall = time.perf_counter() - t0
    stop.set()
    if probe is not None:
        await probe
    s_cpu, c_cpu = proc.cpu_s() - s_cpu0, sum(me.cpu_times()[:2]) - c_cpu0
    m1 = await asyncio.to_thread(scrape, proc.metrics_port)
    lat = samples.latencies
    row = dict(label, concurrency=concurrency, rate=rate, calls=len(lat), calls_ok=samples.calls_ok,
               curves_ok=samples.curves_ok, calls_per_s=samples.calls_ok / samples.wall_s,
               curves_per_s=samples.curves_ok / samples.wall_s, p50_ms=_pct(lat, 50), p90_ms=_pct(lat, 90),
               p99_ms=_pct(lat, 99), max_ms=_pct(lat, 100), errors=dict(samples.errors),
               engines=dict(samples.engines), batches=batch_stats(m0, m1),
               server_cpu_cores=s_cpu / wall, client_cpu_cores=c_cpu / wall, server_rss_mb=proc.rss_mb(),
               health_p99_ms=_pct(health, 99), health_max_ms=_pct(health, 100), health_probes=len(health))
    print(_line(row), flush=True)
    return row


def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def _mean_batch(row: dict[str, Any]) -> str:
    b = row.get("batches") or {}
    return ", ".join(f"{e}:{v['mean']:.1f}" for e, v in b.items()) or "-"


def _line(row: dict[str, Any]) -> str:
    load = f"c={row['concurrency']}" if row["rate"] is None else f"rate={row['rate']:g}/s"
    errs = ",".join(f"{k}:{v}" for k, v in row["errors"].items()) or "0"
    return (f"{row['target']:<9} {row['mode']:<6} {load:<10} {row['curves_per_s']:>8.1f} curves/s "
            f"{row['calls_per_s']:>8.1f} calls/s p50 {_fmt(row['p50_ms'])} p90 {_fmt(row['p90_ms'])} "
            f"p99 {_fmt(row['p99_ms'])} ms batch {_mean_batch(row)} cpu srv {row['server_cpu_cores']:.2f} "
            f"cli {row['client_cpu_cores']:.2f} errors {errs}")


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = ["# Curvecast load test", "",
             f"- {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), grpcio {meta['grpcio']}, python {meta['python']}",
             f"- command: `{meta['command']}`",
             f"- engine requested: `{meta['engine']}`; answered by: {', '.join(meta['engines_answered']) or '-'}",
             f"- background CPU contention during the run: {meta['contention']}",
             f"- duration per level {meta['duration_s']} s (+{meta['warmup_s']} s warm-up), batch size "
             f"{meta['batch_size']}, client timeout {meta['timeout_s']} s, SDK retries {meta['retries']}, "
             f"server processes per engine {meta.get('replicas', 1)} (SDK round-robin over them), "
             f"--workers {meta.get('workers', 1)} (`wN` = N worker processes sharing the port"
             + (f"; `pool{meta['analytic_pool']}` = 1 process with {meta['analytic_pool']} analytic fit processes"
                if meta.get('analytic_pool') else "") + f"), client connections {meta.get('channels', 1)}",
             "", "Closed loop (each of `conc` workers waits for its answer before the next call; a refused worker "
             "waits the server's retry hint first, as the SDK's retries do, and the refusal is counted). "
             "Latency is per call;",
             "a batch call carries `batch` curves. Mean engine batch = curves per engine call, from "
             "`curvecast_batch_size`. CPU in cores (2 = whole machine). Health max = slowest grpc.health "
             "Check (one every 100 ms on its own channel) during the level: the server's event loop stays "
             "responsive.", "",
             "| target | mode | conc | curves/s | calls/s | p50 ms | p90 ms | p99 ms | mean engine batch "
             "| server CPU | client CPU | health max ms | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in result["closed_loop"]:
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"| {r['target']} | {r['mode']} | {r['concurrency']} | {_fmt(r['curves_per_s'])} | "
                     f"{_fmt(r['calls_per_s'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | "
                     f"{_mean_batch(r)} | {r['server_cpu_cores']:.2f} | {r['client_cpu_cores']:.2f} | "
                     f"{_fmt(r['health_max_ms'])} | {errs} |")
    if result["open_loop"]:
        lines += ["", "Open loop (single-curve calls at a fixed rate; latency from the scheduled send time).", "",
                  "| target | rate/s | achieved curves/s | p50 ms | p90 ms | p99 ms | max ms | mean engine batch "
                  "| server CPU | health max ms | errors |", "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
        for r in result["open_loop"]:
            errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
            lines.append(f"| {r['target']} | {r['rate']:g} | {_fmt(r['curves_per_s'])} | {_fmt(r['p50_ms'])} | "
                         f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['max_ms'])} | {_mean_batch(r)} | "
                         f"{r['server_cpu_cores']:.2f} | {_fmt(r['health_max_ms'])} | {errs} |")
    if result.get("idle_cpu_cores"):
        lines += ["", "Idle server CPU (no calls, after start-up): " + ", ".join(
            f"{k} {v:.3f} cores" for k, v in result["idle_cpu_cores"].items())]
    if result.get("limits"):
        lim = result["limits"]
        lines += ["", "Limits in effect (server flags / GetModelInfo): " + ", ".join(f"{k}={v}" for k, v in lim.items()),
                  "Beyond max_inflight_curves, or when the queued work would outlast a call's deadline, calls get "
                  "RESOURCE_EXHAUSTED at once with a RetryInfo; a batch larger than max_inflight_curves is "
                  "INVALID_ARGUMENT (it could never be admitted); messages above max_message_mb are refused by gRPC "
                  "(RESOURCE_EXHAUSTED); curves above max_curve_points are INVALID_ARGUMENT naming curve.x."]
    for name, why in (result.get("failed_to_start") or {}).items():
        lines += ["", f"**{name} did not start** (not measured): `{why.splitlines()[-1] if why else ''}`"]
    lines += profile_markdown(result.get("profile") or {})
    lines += ["", "Targets (issue #6): >= 2,000 curves/s with batching; p99 < 50 ms at 200 single-curve calls/s; "
              "graceful degradation past saturation. Targets (issue #18), as ratios to the no-op server's unary "
              "calls/s measured in the same run: learned with batching >= 0.25x and >= 60% of its compute bound; "
              "analytic with batching >= 0.06x; default engine p99 < 50 ms at 0.04x without refusals; serving "
              "overhead <= 0.3 ms per curve.", ""]
    for t in result.get("verdicts", []):
        lines.append(f"- {t}")
    return "\n".join(lines) + "\n"


def profile_markdown(prof: dict[str, Any]) -> list[str]:
    if not prof:
        return []
    roof, lr, ov = prof["roofline"], prof["learned"], prof["overhead"]
    lines = ["", "Compute bound of the learned engine (in-process, `bench/speed.py`): FLOPs of the ONNX graph's "
             "MatMuls for the inputs the server builds (context points and the engine's query anchors as below), "
             "beside this machine's measured fp32 GEMM rate (onnxruntime MatMul, best of 256/512/1024 squares). "
             "The roof is every usable core at its one-thread rate (the engine runs one onnxruntime thread per "
             "batch); other agents loaded the machine during the run, so all rates are lower bounds.", "",
             "| quantity | value |", "|---|---:|",
             f"| GEMM, onnxruntime, 1 thread | {roof['ort_gflops_1_thread']:,.1f} GFLOP/s |",
             f"| GEMM, onnxruntime, {roof['cores']:.0f} threads | {roof['ort_gflops_all_cores']:,.1f} GFLOP/s |",
             f"| GEMM, numpy, 1 thread | {roof['numpy_gflops_1_thread']:,.1f} GFLOP/s |",
             f"| roof ({roof['cores']:.0f} cores x best 1-thread rate) | {roof['roof_gflops']:,.1f} GFLOP/s |",
             f"| learned FLOPs per curve, one per call ({lr['ctx_points_unary']:.0f} context points, "
             f"{lr['query_points_unary']:.0f} query anchors) | {lr['flops_per_curve_unary'] / 1e6:,.1f} MFLOP |",
             f"| learned FLOPs per curve in a batch as the engine pads it | {lr['flops_per_curve_batch'] / 1e6:,.1f} MFLOP |",
             f"| compute bound, batched | {lr['bound_curves_per_s_batch']:,.0f} curves/s |",
             f"| compute bound, one curve per call | {lr['bound_curves_per_s_unary']:,.0f} curves/s |"]
    sizes = sorted({int(k[5:].split("_")[0]) for k in ov if k.startswith("batch")})
    lines += ["", "Serving overhead per curve (in-process, the servicer's and data plane's code with a no-op engine, "
              "whose own time is subtracted; CPU ms of the process, all threads, median of 7, so other work on the "
              "machine does not inflate it; wall time beside; gRPC transport excluded: the no-op server measures "
              "it):", "", "| curves per call | decode | validate | data plane (admission, batching, planning, "
              "decisions) | build + encode responses | total CPU | total wall |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        g = lambda k: ov[f"batch{n}_{k}_ms_per_curve"]  # noqa: E731
        lines.append(f"| {n} | {g('decode'):.3f} | {g('validate'):.3f} | {g('dataplane') - g('engine'):.3f} | "
                     f"{g('respond'):.3f} | {ov[f'batch{n}_overhead_ms_per_curve']:.3f} | "
                     f"{ov.get(f'batch{n}_overhead_wall_ms_per_curve', float('nan')):.3f} |")
    return lines


def verdicts_18(result: dict[str, Any]) -> list[str]:
    """Issue 18's targets, each as a ratio to the no-op server's best unary calls/s in the same run."""
    noop = [r for r in result["closed_loop"] if r["target"] == "noop" and r["mode"] == "unary"]
    if not noop:
        return []
    ceiling = max(r["calls_per_s"] for r in noop)
    prof = result.get("profile") or {}
    out = [f"issue 18 reference: no-op unary {ceiling:,.0f} calls/s"]
    best: dict[str, float] = {}
    for target in sorted({r["target"] for r in result["closed_loop"]} - {"noop", "stub"}):
        rows = [r for r in result["closed_loop"] if r["target"] == target and r["mode"] == "batch"]
        if not rows:
            continue
        top = max(rows, key=lambda r: r["curves_per_s"])
        best[target] = top["curves_per_s"]
        ratio = top["curves_per_s"] / ceiling
        line = f"{target}: batching {top['curves_per_s']:,.1f} curves/s (conc {top['concurrency']}) = {ratio:.3f}x no-op"
        if "learned" in target:
            line += f" -> >= 0.25x {'MET' if ratio >= 0.25 else 'NOT met'}"
            bound = (prof.get("learned") or {}).get("bound_curves_per_s_batch")
            if bound:
                share = top["curves_per_s"] / bound
                line += f"; {100 * share:.1f}% of its compute bound ({bound:,.0f} curves/s) -> >= 60% " \
                        f"{'MET' if share >= 0.6 else 'NOT met'}"
        elif "analytic" in target or "default" in target:
            line += f" -> >= 0.06x {'MET' if ratio >= 0.06 else 'NOT met'}"
        out.append(line)
        if "analytic" in target or "default" in target:
            opened = [r for r in result["open_loop"] if r["target"] == target and r["p99_ms"] is not None]
            if opened:
                want = 0.04 * ceiling
                near = min(opened, key=lambda r: abs(r["rate"] - want))
                ok = near["p99_ms"] < 50 and not near["errors"]
                out.append(f"{target}: p99 at {near['rate']:g} calls/s ({near['rate'] / ceiling:.3f}x no-op; the target "
                           f"rate 0.04x is {want:,.0f}/s) = {near['p99_ms']:,.1f} ms, errors "
                           f"{sum(near['errors'].values())} -> p99 < 50 ms without refusals {'MET' if ok else 'NOT met'}")
    for target, value in best.items():  # the worker designs against the single process, same engine, same run
        base = target.rsplit(" ", 1)[0]
        one = best.get(f"{base} w1")
        if one and target != f"{base} w1" and " " in target:
            out.append(f"{target}: batching {value / one:.2f}x of {base} w1")
    ov = prof.get("overhead") or {}
    keys = sorted((k for k in ov if k.endswith("_overhead_ms_per_curve")), key=lambda k: int(k[5:].split("_")[0]))
    if keys:
        v = ov[keys[-1]]
        out.append(f"serving overhead {v:.3f} CPU ms per curve in a batch of {keys[-1][5:].split('_')[0]} "
                   f"(one curve per call: {ov[keys[0]]:.3f} ms) -> <= 0.3 ms {'MET' if v <= 0.3 else 'NOT met'}")
    return out


def verdicts(result: dict[str, Any]) -> list[str]:
    out = []
    for target in sorted({r["target"] for r in result["closed_loop"]} - {"noop"}):  # noqa: C401
        rows = [r for r in result["closed_loop"] if r["target"] == target]
        best = max(rows, key=lambda r: r["curves_per_s"])
        out.append(f"{target}: best {best['curves_per_s']:,.0f} curves/s ({best['mode']}, conc {best['concurrency']}) "
                   f"-> throughput target {'MET' if best['curves_per_s'] >= 2000 else 'NOT met'}")
        at200 = [r for r in result["open_loop"] if r["target"] == target and r["rate"] == 200]
        if at200 and at200[0]["p99_ms"] is not None:
            ok = at200[0]["p99_ms"] < 50 and not at200[0]["errors"]
            out.append(f"{target}: p99 at 200 calls/s = {at200[0]['p99_ms']:,.1f} ms -> latency target "
                       f"{'MET' if ok else 'NOT met'}")
    noop = [r for r in result["closed_loop"] if r["target"] == "noop"]
    if noop:
        best = max(noop, key=lambda r: r["calls_per_s"])
        out.append(f"no-op ceiling: {best['calls_per_s']:,.0f} calls/s unary-equivalent "
                   f"({best['mode']}, conc {best['concurrency']}), {best['curves_per_s']:,.0f} curves/s")
    return out


def contention() -> str:
    try:
        out = subprocess.run(["pgrep", "-f", "training.train"], capture_output=True, text=True).stdout.split()
    except OSError:
        return "unknown"
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    shared = (f"; YES: 1-min load average {load:.2f} on {cpus} cores at start, other work shares the machine (compare "
              "ratios measured in the same run, not absolute figures)" if load > 0.5 * cpus
              else f"; 1-min load average at start {load:.2f}")
    return (f"YES: training processes running (pids {' '.join(out)})" if out else "none seen (no training.train)") + shared


# ---- driver ----------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = make_runs()
    conc = [int(c) for c in args.concurrency.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    rates = [float(r) for r in args.rates.split(",") if r]
    closed, opened = [], []
    limits: dict[str, Any] = {}
    idle: dict[str, float] = {}
    targets: list[tuple[str, Callable[[], Proc], type]] = []
    if not args.skip_noop:
        targets.append(("noop", lambda: start_helper("noop"), RawCaller))
    if args.stub:
        targets.append(("stub", lambda: start_helper("stub", args.server_arg), SdkCaller))
    if args.target:
        targets.append(("server", None, SdkCaller))  # type: ignore[arg-type]
    else:
        for engine in args.engine.split(","):
            for label, extra in server_designs(engine, args):
                targets.append((label, lambda e=engine, x=extra: start_replicas(
                    args.replicas, lambda: start_curvecast(e, [*args.server_arg, *x])), SdkCaller))
    profile = {} if args.no_profile else await asyncio.to_thread(profile_in_process, runs, args.batch_size)
    failed: dict[str, str] = {}
    for name, starter, caller_cls in targets:
        try:
            proc = starter() if starter is not None else _external(args.target, args.metrics_port)
        except RuntimeError as exc:  # one server that cannot start must not lose the rest of the run
            print(f"{name}: {exc}", flush=True)
            failed[name] = str(exc)[-2000:]
            continue
        try:
            caller = caller_cls(proc.address, runs, args.batch_size, args.timeout, args.retries, args.channels)
            if isinstance(caller, SdkCaller) and "limits" not in limits:
                limits["limits"] = await _limits(caller, args.server_arg)
            if proc.proc is not None:  # idle CPU: the server must not spin while waiting for calls
                await asyncio.sleep(2.0)
                c0 = proc.cpu_s()
                await asyncio.sleep(args.idle_s)
                idle[name] = (proc.cpu_s() - c0) / args.idle_s
                print(f"{name}: idle CPU {idle[name]:.3f} cores over {args.idle_s:g} s", flush=True)
            for mode in modes:
                call = mode_call(caller, mode)
                for c in conc:
                    closed.append(await measure(proc, call, dict(target=name, mode=mode), concurrency=c,
                                                duration=args.duration, warmup=args.warmup))
            if name != "noop":
                for rate in rates:
                    opened.append(await measure(proc, caller.unary, dict(target=name, mode="unary"), rate=rate,
                                                duration=args.duration, warmup=0.0))
            await caller.close()
        finally:
            if starter is not None:
                proc.stop()
    engines = sorted({f"{r['target']}: {e}" for r in closed + opened if r["target"].startswith("server")
                      for e in r["engines"]})
    import grpc as _grpc

    result = {
        "meta": dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), host=platform.node(), cpus=os.cpu_count(),
                     grpcio=_grpc.__version__, python=platform.python_version(),
                     command="python -m bench.load " + " ".join(sys.argv[1:]), engine=args.engine,
                     engines_answered=engines, contention=args.contention_note or contention(),
                     duration_s=args.duration, warmup_s=args.warmup, batch_size=args.batch_size,
                     timeout_s=args.timeout, retries=args.retries, server_args=list(args.server_arg),
                     replicas=args.replicas, workers=args.workers, analytic_pool=args.analytic_pool,
                     channels=args.channels),
        "closed_loop": closed, "open_loop": opened, "limits": limits.get("limits", {}), "idle_cpu_cores": idle,
        "profile": profile, "failed_to_start": failed}
    result["verdicts"] = verdicts(result) + verdicts_18(result)
    return result


async def _limits(caller: "SdkCaller", server_args: Sequence[str]) -> dict[str, Any]:
    """The documented limits in effect: request limits from GetModelInfo, server flags from its defaults."""
    from curvecast.server.config import load_settings

    info = await caller.client.model_info()
    settings = load_settings(list(server_args))
    return dict(max_curve_points=info.max_curve_points, max_query_points=info.max_query_points,
                max_batch_requests=info.max_batch_requests, max_message_mb=settings.max_message_mb,
                max_inflight_curves=settings.max_inflight_curves, max_batch=settings.max_batch,
                max_delay_ms=settings.max_delay_ms, engine_threads=settings.resolved_engine_threads,
                workers=settings.resolved_workers,
                grace_s=settings.grace_s)


def server_designs(engine: str, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(label, extra server flags) per design measured for one engine: each ``--workers`` count (processes
    sharing the port), and with ``--analytic-pool N`` for the analytic engine one process with N fit processes."""
    counts = [int(w) for w in str(args.workers).split(",") if w]
    base = f"server[{engine}]" if args.replicas <= 1 else f"server[{engine}]x{args.replicas}"
    out = [(base if counts == [1] else f"{base} w{w}", ["--workers", str(w)]) for w in counts]
    if args.analytic_pool and engine in ("analytic", "default"):
        out.append((f"{base} pool{args.analytic_pool}", ["--workers", "1", f"--analytic-workers={args.analytic_pool}"]))
    return out


def profile_in_process(runs: list[dict], batch_size: int) -> dict[str, Any]:
    """The learned engine's compute bound and the serving overhead per curve (bench/speed.py), in this process."""
    from curvecast.domain.curve import StopPolicy
    from curvecast.domain.validation import Limits
    from curvecast.server import converters

    from . import speed

    reqs = [forecast_request(**r) for r in runs]
    queries = [converters.forecast_query(r, Limits(), StopPolicy()) for r in reqs]
    print("profiling in-process: GEMM roof, learned FLOPs per curve, serving overhead ...", flush=True)
    roof = speed.gemm_roofline()
    out: dict[str, Any] = {"roofline": roof,
                           "learned": speed.learned_compute_bound(queries[:16], queries[:batch_size], roofline=roof),
                           "overhead": speed.serving_overhead(reqs, batch_sizes=(1, batch_size))}
    print(json.dumps(out, indent=1), flush=True)
    return out


def _external(address: str, metrics_port: int | None) -> Proc:
    """Measure an already running server (CPU use is then read from the process listening on the port)."""
    p = Proc.__new__(Proc)
    p.address, p.port, p.metrics_port = address, int(address.rsplit(":", 1)[1]), metrics_port
    pid = next((c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == p.port
                and c.status == psutil.CONN_LISTEN and c.pid), None)
    p.ps = psutil.Process(pid) if pid else psutil.Process()
    p.proc = None  # type: ignore[assignment]
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="default",
                   help="comma list of server --default-engine values to measure, one server each: default "
                   "(the server's own default), ensemble, analytic, learned")
    p.add_argument("--concurrency", default="1,4,16,64,256")
    p.add_argument("--modes", default="unary,batch,mixed")
    p.add_argument("--rates", default="50,100,200,400", help="open-loop single-curve calls/s (empty to skip)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per level")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds per closed-loop level not measured")
    p.add_argument("--batch-size", type=int, default=32, help="curves per ForecastBatch call")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    p.add_argument("--retries", type=int, default=0, help="SDK retries (0 = count every rejection)")
    p.add_argument("--stub", action="store_true", help="also measure the real stack with a constant-time engine")
    p.add_argument("--replicas", type=int, default=1, help="server processes per engine, on their own ports; the SDK "
                   "balances round-robin over them (the deployment model: one process per pod)")
    p.add_argument("--workers", default="1", help="comma list of server --workers counts, one server each per "
                   "engine (processes sharing the port; 0 = one per core)")
    p.add_argument("--analytic-pool", type=int, default=0, help="also measure the analytic engine in one process with "
                   "this many fit processes (--analytic-workers): the other design for using every core")
    p.add_argument("--channels", type=int, default=4, help="client connections the calls are spread over (the kernel "
                   "balances worker processes per connection)")
    p.add_argument("--no-profile", action="store_true", help="skip the in-process compute-bound and overhead profile")
    p.add_argument("--skip-noop", action="store_true")
    p.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable), e.g. "
                   "--server-arg=--max-batch=128")
    p.add_argument("--target", default="", help="measure a running server at host:port instead of starting one")
    p.add_argument("--metrics-port", type=int, default=None, help="its /metrics port (with --target)")
    p.add_argument("--idle-s", type=float, default=5.0, help="seconds of idle CPU measurement per server")
    p.add_argument("--contention-note", default="", help="override the automatic contention note")
    p.add_argument("--out", type=Path, default=Path("docs/bench/load"), help="writes OUT.md and OUT.json")
    p.add_argument("--serve-noop", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-stub", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_noop:
        asyncio.run(serve_noop(args.port))
        return 0
    if args.serve_stub:
        asyncio.run(serve_stub(args.port, args.metrics_port or 0, args.server_arg))
        return 0
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
