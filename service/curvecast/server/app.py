"""Process entry point: wires settings, engines, data plane, gRPC server, health, metrics and signals.

Start-up order matters: engines load and warm up before health reports SERVING; a learned model that
fails to load leaves the server answering from the analytic engine (reported NOT_SERVING under its
own health name) instead of crash-looping. SIGTERM flips health to NOT_SERVING, admits every call
already received, refuses later ones with UNAVAILABLE and lets in-flight ones finish within ``grace_s``
(see ``RunningServer.stop``); SIGHUP reloads the learned model beside the old one. With ``--workers`` > 1
``main`` starts a supervisor instead (``workers.py``): each worker process is this same server, sharing
the port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc

from ..dataplane import DataPlane, DataPlaneSettings
from ..decisions.policy import Action
from ..domain.curve import Curve, ForecastQuery, RunInfo, StopPolicy
from ..domain.validation import Limits
from ..engines.base import EngineInfo
from ..engines.registry import EngineRegistry
from . import metrics
from .config import Settings, load_settings
from .interceptors import DecodeGuardInterceptor, DrainInterceptor, MetricsInterceptor
from .servicer import CurvecastServicer
from .workers import exit_with_supervisor, supervise, worker_index

log = logging.getLogger("curvecast.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Curvecast"].full_name
LEARNED_HEALTH = "curvecast.engine.learned"
ANALYTIC_HEALTH = "curvecast.engine.analytic"
READY = "curvecast-server ready on port %d"  # tests, bench/load.py and operators wait for this line
_DRAIN_POLL_S = 0.01
_DRAIN_STALL_POLLS = 100  # polls (>= 1 s) in which no call grpc counted reached the application: none will
_UNWIND_S = 5.0  # how long cut calls get to unwind before the process exits


class _JsonFormatter(logging.Formatter):
    _EXTRA = ("rpc", "code", "ms", "request_id", "port", "cut", "waiting", "worker")

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        out.update({k: getattr(record, k) for k in self._EXTRA if hasattr(record, k)})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class _WorkerTag(logging.Filter):
    """Tags every record of a worker process with its index, so the workers' interleaved logs can be told apart."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    index = worker_index()
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        tag = "" if index is None else f"[worker {index}] "
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"))
    if index is not None:
        handler.addFilter(_WorkerTag(index))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("curvecast.access").setLevel(max(logging.getLevelName(settings.log_level), logging.INFO)
                                                   if settings.log_format == "json" else logging.WARNING)


def _providers(device: str) -> tuple[str, ...]:
    if device == "cpu":
        return ("CPUExecutionProvider",)
    return ("CUDAExecutionProvider", "CPUExecutionProvider")


def load_learned(settings: Settings):
    """Load the learned engine; raises with a clear message when the file is missing or tampered with."""
    from pathlib import Path

    if not Path(settings.model).is_file():
        raise FileNotFoundError(f"model file not found: {settings.model} (set --model / CURVECAST_MODEL)")
    from ..engines.learned.engine import LearnedEngine

    return LearnedEngine.load(settings.model, providers=_providers(settings.device), threads=settings.ort_threads)


def build_registry(settings: Settings) -> EngineRegistry:
    from ..engines.analytic.engine import AnalyticEngine

    registry = EngineRegistry()
    registry.put(AnalyticEngine(workers=settings.resolved_analytic_workers))
    try:
        engine = load_learned(settings)
        registry.put(engine)
        info = engine.info()
        if settings.device == "cuda" and "CUDA" not in info.provider:
            log.warning("CUDA was requested but is unusable here; the learned engine runs on %s", info.provider)
    except Exception as exc:  # noqa: BLE001 - any load failure leaves the analytic engine serving
        log.error("learned engine unavailable, serving the analytic engine only: %s", exc)
        registry.mark_unavailable(EngineInfo("learned", "", "", available=False, detail=str(exc)[:300]))
    return registry


def _warmup_query() -> ForecastQuery:
    x = np.arange(1.0, 21.0)
    y = 2.0 + 3.0 * x**-0.5
    return ForecastQuery(curve=Curve(x, y), run=RunInfo(total_steps=100.0), x_query=np.linspace(25, 100, 4),
                         target=2.3, incumbent=2.2)


class CoreCalls:
    """How many calls grpc core has received for one server: channelz's ``calls_started``, read in-process
    with grpc's own accessor (the one grpcio-channelz serves).

    grpc.aio gives the application no other way to learn how many received calls still wait inside core
    for the application to ask for them, which the drain must know (see ``RunningServer.stop``)."""

    def __init__(self, server_id: int | None) -> None:
        self.server_id = server_id

    @staticmethod
    def _server_ids() -> set[int]:
        from grpc._cython import cygrpc

        ids: set[int] = set()
        start = 0
        while True:
            page = json.loads(cygrpc.channelz_get_servers(start))
            found = [int(s["ref"]["serverId"]) for s in page.get("server", ())]
            ids.update(found)
            if page.get("end", True) or not found:
                return ids
            start = max(found) + 1

    @classmethod
    def create_server(cls, make: Callable[[], grpc.aio.Server]) -> tuple[grpc.aio.Server, "CoreCalls"]:
        """``make()``, and the channelz id of the server it created (the one id that was not there before)."""
        try:
            before = cls._server_ids()
        except Exception:  # noqa: BLE001 - channelz missing from this grpc build: drain without it
            return make(), cls(None)
        server = make()
        new = cls._server_ids() - before
        return server, cls(new.pop() if len(new) == 1 else None)

    def started(self) -> int | None:
        """Calls received so far (all methods), or None when channelz cannot tell."""
        if self.server_id is None:
            return None
        from grpc._cython import cygrpc

        try:
            data = json.loads(cygrpc.channelz_get_server(self.server_id))["server"]["data"]
        except Exception:  # noqa: BLE001
            return None
        return int(data.get("callsStarted", 0))


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    dataplane: DataPlane
    settings: Settings
    _executor: ThreadPoolExecutor
    _tasks: list[asyncio.Task]
    drain: DrainInterceptor
    core_calls: CoreCalls

    async def reload_learned(self) -> bool:
        """Load the model file again beside the running one; switch only if the new one loads and warms up."""
        loop = asyncio.get_running_loop()
        try:
            engine = await loop.run_in_executor(self._executor, load_learned, self.settings)
            await loop.run_in_executor(self._executor, engine.forecast, [_warmup_query()])
        except Exception as exc:  # noqa: BLE001
            metrics.MODEL_RELOADS.labels("failed").inc()
            log.error("model reload failed, keeping the current model: %s", exc)
            if not self.dataplane.registry.available("learned"):
                self.dataplane.registry.mark_unavailable(EngineInfo("learned", "", "", False, str(exc)[:300]))
            return False
        self.dataplane.registry.put(engine)
        metrics.MODEL_RELOADS.labels("ok").inc()
        metrics.set_engine_status(self.dataplane.engine_infos())
        await self.health.set(LEARNED_HEALTH, health_pb2.HealthCheckResponse.SERVING)
        log.info("learned model reloaded: %s", engine.info().version)
        return True

    async def stop(self) -> None:
        """Graceful drain within ``grace_s``: NOT_SERVING first; every call received so far is answered, later
        ones get UNAVAILABLE (retryable); calls still running when the grace ends are cut, in one log line.

        grpc's own ``server.stop`` is not enough: it cancels (CANCELLED, which clients do not retry) every
        call core has received but the application has not yet asked for, and grpc.aio asks for one call
        per method at a time, so under load hundreds wait there (grpc/grpc#41785). So the server keeps
        listening until those calls have reached the application (refusing newer ones itself), and only
        then stops, when nothing is left waiting in core."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.settings.grace_s, 0.0)
        await self.health.enter_graceful_shutdown()
        await self._admit_received(deadline)
        await self._stop_server(deadline)
        for t in self._tasks:
            t.cancel()
        await self.drain.wait_finished(_UNWIND_S)
        await self.dataplane.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _admit_received(self, deadline: float) -> None:
        """Keep listening, refusing calls that arrive from now on, until the work admitted so far is done and
        grpc holds no call the application has not taken up. Only then may grpc's stop run: it cancels calls
        waiting inside grpc, and kills those that arrive on open connections while it stops (both CANCELLED)."""
        received = self.core_calls.started()
        if received is None:
            log.warning("cannot read grpc's call count (channelz): calls still queued in grpc may be cancelled")
            return
        self.drain.refuse_after(received)
        loop = asyncio.get_running_loop()
        last, idle_polls = self.drain.seen, 0
        while loop.time() < deadline:
            seen = self.drain.seen
            idle_polls = idle_polls + 1 if seen == last else 0
            last = seen
            waiting = (self.core_calls.started() or 0) - seen  # received by grpc, not yet taken up
            lost = waiting > 0 and idle_polls >= _DRAIN_STALL_POLLS  # counted by grpc, never delivered
            if self.drain.working == 0 and (waiting <= 0 or lost):
                return
            await asyncio.sleep(_DRAIN_POLL_S)

    async def _stop_server(self, deadline: float) -> None:
        """grpc's stop with what is left of the grace; one summary line, not a traceback per call, if the grace
        runs out: calls in flight are cut (UNAVAILABLE), and grpc cancels those it still holds (CANCELLED)."""
        loop = asyncio.get_running_loop()
        left = max(deadline - loop.time(), 0.0)
        stopping = asyncio.ensure_future(self.server.stop(left))
        done, _ = await asyncio.wait({stopping}, timeout=left)
        if not done:
            cut = self.drain.active
            waiting = max((self.core_calls.started() or 0) - self.drain.seen, 0)
            if cut or waiting:
                log.warning("drain grace of %g s ran out: cutting %d call(s) in flight and %d still waiting in gRPC",
                            self.settings.grace_s, cut, waiting, extra={"cut": cut, "waiting": waiting})
        await stopping


async def start(settings: Settings, *, metrics_server: bool = True) -> RunningServer:
    registry = build_registry(settings)
    executor = ThreadPoolExecutor(max_workers=settings.resolved_engine_threads, thread_name_prefix="engine")

    def observe(engine: str, size: int, seconds: float) -> None:
        provider = registry.get(engine).info().provider if registry.available(engine) else ""
        metrics.observe_batch(engine, provider, size, seconds)

    default_engine = settings.default_engine
    dataplane = DataPlane(registry, executor,
                          DataPlaneSettings(default_engine=default_engine,
                                            max_inflight_curves=settings.max_inflight_curves),
                          max_batch=settings.max_batch, max_delay_s=settings.max_delay_ms / 1e3, observer=observe,
                          max_concurrent_batches=settings.resolved_engine_threads)
    limits = Limits()
    max_bytes = settings.max_message_mb * 1024 * 1024
    drain = DrainInterceptor()
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(), drain]  # metrics first: all counted
    auth = _auth_interceptor(settings)
    if auth is not None:
        interceptors.append(auth)
    interceptors.append(DecodeGuardInterceptor())  # innermost: the token check answers before a bad body
    # Close connections now and then so clients balancing over a headless Service see new pods; a connection
    # aged out during a drain keeps its calls as long as the drain does.
    age_grace_ms = max(30_000, int(settings.grace_s * 1000))
    options = [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes),
               ("grpc.max_connection_age_ms", 300_000), ("grpc.max_connection_age_grace_ms", age_grace_ms),
               ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
               ("grpc.keepalive_permit_without_calls", 1), ("grpc.enable_channelz", 1)]
    if worker_index() is not None:  # one of --workers processes: the kernel spreads connections over them
        options.append(("grpc.so_reuseport", 1))
    server, core_calls = CoreCalls.create_server(lambda: grpc.aio.server(interceptors=interceptors, options=options))
    pb_grpc.add_CurvecastServicer_to_server(CurvecastServicer(dataplane, limits, StopPolicy()), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    creds = _server_credentials(settings)
    port = server.add_secure_port(address, creds) if creds is not None else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()

    # Warm up every engine through the real path before reporting SERVING.
    for name in list(registry.engines):
        started = time.perf_counter()
        await dataplane.forecast(_warmup_query_for(name))
        log.info("warmed up engine %s in %.0f ms", name, (time.perf_counter() - started) * 1e3)
    metrics.set_engine_status(registry.infos())
    metrics.initialise(("analytic", "learned"), [a.value for a in Action])
    await health_servicer.set(LEARNED_HEALTH, health_pb2.HealthCheckResponse.SERVING if registry.available("learned")
                              else health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(ANALYTIC_HEALTH, health_pb2.HealthCheckResponse.SERVING)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if metrics_server and settings.metrics_port:
        start_http_server(settings.metrics_port)
    tasks = [asyncio.get_running_loop().create_task(_gauges(dataplane))]
    metrics.GRPC_QUEUE.source = lambda: (core_calls.started(), drain.seen)
    log.info("curvecast listening on %s (port %d); engines: %s", address, port,
             ", ".join(f"{i.name}[{i.provider}]" for i in registry.infos() if i.available))
    return RunningServer(server, port, health_servicer, dataplane, settings, executor, tasks, drain, core_calls)


def _warmup_query_for(engine: str) -> ForecastQuery:
    return replace(_warmup_query(), engine=engine)


async def _gauges(dataplane: DataPlane) -> None:
    while True:
        metrics.QUEUE_DEPTH.set(dataplane.queue_depth)
        metrics.INFLIGHT.set(dataplane.inflight)
        metrics.refresh_grpc_queue()
        await asyncio.sleep(1.0)


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not (settings.tls_cert or settings.tls_key or settings.tls_client_ca):
        return None
    from .security import server_credentials

    return server_credentials(settings)


def _auth_interceptor(settings: Settings) -> grpc.aio.ServerInterceptor | None:
    if not (settings.auth_tokens_file or settings.auth_tokens):
        return None
    from .security import token_interceptor

    return token_interceptor(settings)


def announce_ready(settings: Settings, port: int) -> None:
    """The readiness line on stdout, whatever the log level: plain for the text format, under
    ``--log-format json`` a record like every other log line (with ``port``), whose message is the plain line
    so whatever waits for that text keeps working."""
    if settings.log_format == "json":
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, READY, (port,), None, extra={"port": port})
        print(_JsonFormatter().format(record), flush=True)
    else:
        print(READY % port, flush=True)


async def serve(settings: Settings) -> None:
    running = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(running.reload_learned()))
    if worker_index() is not None:  # a worker drains and exits when its supervisor is gone
        exit_with_supervisor(loop, stop.set)
    announce_ready(settings, running.port)
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %g s", settings.grace_s)
    await running.stop()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = load_settings(argv)
    configure_logging(settings)
    if worker_index() is None and settings.resolved_workers > 1:
        sys.exit(supervise(settings, argv))
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
