"""Process entry point: wires settings, engines, data plane, gRPC server, health, metrics and signals.

Start-up order matters: engines load and warm up before health reports SERVING; a learned model that
fails to load leaves the server answering from the analytic engine (reported NOT_SERVING under its
own health name) instead of crash-looping. SIGTERM flips health to NOT_SERVING, stops accepting calls
and lets in-flight ones finish within ``grace_s``; SIGHUP reloads the learned model beside the old one.
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
from typing import Sequence

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc

from ..dataplane import DataPlane, DataPlaneSettings
from ..domain.curve import Curve, ForecastQuery, RunInfo, StopPolicy
from ..domain.validation import Limits
from ..engines.base import EngineInfo
from ..engines.registry import EngineRegistry
from . import metrics
from .config import Settings, load_settings
from .interceptors import MetricsInterceptor
from .servicer import CurvecastServicer

log = logging.getLogger("curvecast.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Curvecast"].full_name
LEARNED_HEALTH = "curvecast.engine.learned"
ANALYTIC_HEALTH = "curvecast.engine.analytic"


class _JsonFormatter(logging.Formatter):
    _EXTRA = ("rpc", "code", "ms", "request_id")

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        out.update({k: getattr(record, k) for k in self._EXTRA if hasattr(record, k)})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    dataplane: DataPlane
    settings: Settings
    _executor: ThreadPoolExecutor
    _tasks: list[asyncio.Task]

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
        """Graceful drain: NOT_SERVING first, refuse new calls, let in-flight calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grace_s)
        for t in self._tasks:
            t.cancel()
        await self.dataplane.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


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
    interceptors = [MetricsInterceptor()]
    auth = _auth_interceptor(settings)
    if auth is not None:
        interceptors.append(auth)  # after metrics, so refused calls are counted
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes),
                 # Close connections now and then so clients balancing over a headless Service see new pods.
                 ("grpc.max_connection_age_ms", 300_000), ("grpc.max_connection_age_grace_ms", 30_000),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                 ("grpc.keepalive_permit_without_calls", 1)])
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
    await health_servicer.set(LEARNED_HEALTH, health_pb2.HealthCheckResponse.SERVING if registry.available("learned")
                              else health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(ANALYTIC_HEALTH, health_pb2.HealthCheckResponse.SERVING)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if metrics_server and settings.metrics_port:
        start_http_server(settings.metrics_port)
    tasks = [asyncio.get_running_loop().create_task(_gauges(dataplane))]
    log.info("curvecast listening on %s (port %d); engines: %s", address, port,
             ", ".join(f"{i.name}[{i.provider}]" for i in registry.infos() if i.available))
    return RunningServer(server, port, health_servicer, dataplane, settings, executor, tasks)


def _warmup_query_for(engine: str) -> ForecastQuery:
    return replace(_warmup_query(), engine=engine)


async def _gauges(dataplane: DataPlane) -> None:
    while True:
        metrics.QUEUE_DEPTH.set(dataplane.queue_depth)
        metrics.INFLIGHT.set(dataplane.inflight)
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


async def serve(settings: Settings) -> None:
    running = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(running.reload_learned()))
    print(f"curvecast-server ready on port {running.port}", flush=True)
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %.0f s", settings.grace_s)
    await running.stop()


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(argv)
    configure_logging(settings)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
