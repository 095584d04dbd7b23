"""Prometheus metrics, named after the grpc-ecosystem conventions plus Curvecast's own.

Run ids never become labels (cardinality); labels are bounded sets: RPC names, status codes, engine
names, providers, actions. The metrics live in the default registry, served on their own HTTP port.

With ``--workers`` > 1 every worker process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode, set up by the supervisor before it starts them) and the supervisor
serves their merge on the one metrics port: counters and histograms are summed over the workers; each
gauge says how it merges (``multiprocess_mode``; the ``live`` modes forget a worker once it has exited).
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_RPC = ("grpc_type", "grpc_service", "grpc_method")

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC)
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.", _RPC + ("grpc_code",))
HANDLING_SECONDS = Histogram("grpc_server_handling_seconds", "Time to handle an RPC, seconds.", _RPC,
                             buckets=LATENCY_BUCKETS)

ENGINE_SECONDS = Histogram("curvecast_engine_inference_seconds", "Engine time per batch call, seconds.",
                           ("engine", "provider"), buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("curvecast_batch_size", "Curves per engine call (dynamic batching).", ("engine",),
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
# Across worker processes: queue and in-flight add up; a model version is listed while any live worker has it
# loaded; an engine counts as available only when every live worker can serve it (livemin).
QUEUE_DEPTH = Gauge("curvecast_queue_depth", "Curves waiting for an engine batch.", multiprocess_mode="livesum")
INFLIGHT = Gauge("curvecast_inflight_curves", "Curves admitted and not yet answered.", multiprocess_mode="livesum")
MODEL_INFO = Gauge("curvecast_model_info", "Loaded engines (value 1; 0 for a version since replaced) with their "
                   "version and execution provider.", ("engine", "version", "provider"), multiprocess_mode="livemax")
ENGINE_AVAILABLE = Gauge("curvecast_engine_available", "1 when the engine can serve (in every worker), else 0.",
                         ("engine",), multiprocess_mode="livemin")
CURVES_FORECAST = Counter("curvecast_curves_forecast_total", "Curves forecast, by engine.", ("engine",))
RECOMMENDATIONS = Counter("curvecast_recommendations_total", "Stop recommendations given, by action.", ("action",))
REJECTED = Counter("curvecast_requests_rejected_total", "Calls refused before any work, by reason.", ("reason",))
ENGINE_FAILURES = Counter("curvecast_engine_failures_total", "Per-curve engine failures (answered by fallback "
                          "or as an error).", ("engine",))
MODEL_RELOADS = Counter("curvecast_model_reloads_total", "Learned-model reload attempts, by result.", ("result",))


class GrpcQueueCollector(Collector):
    """Calls grpc has received, and how many of them wait inside grpc for the event loop to take them up
    (read at scrape time; above zero for long means the loop is saturated, and a drain must wait for them)."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[int | None, int]] | None = None  # () -> (received, taken up)

    def collect(self) -> Iterator[Metric]:
        received, taken = self.source() if self.source is not None else (None, 0)
        if received is None:
            return
        yield CounterMetricFamily("curvecast_grpc_calls_received", "Calls received by grpc (all methods).",
                                  value=received)
        yield GaugeMetricFamily("curvecast_grpc_calls_waiting", "Calls received by grpc and not yet taken up by "
                                "the server's event loop.", value=max(received - taken, 0))


def multiprocess() -> bool:
    """True in a worker of a multi-process server: values go to files the supervisor merges."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


GRPC_QUEUE = GrpcQueueCollector()
if multiprocess():
    # A collector is read in the process that serves /metrics, which is the supervisor, not the worker that
    # knows the values; so workers copy them into file-backed metrics instead (``refresh_grpc_queue``).
    _RECEIVED = Counter("curvecast_grpc_calls_received", "Calls received by grpc (all methods).")
    _WAITING = Gauge("curvecast_grpc_calls_waiting", "Calls received by grpc and not yet taken up by the server's "
                     "event loop.", multiprocess_mode="livesum")
    _received_seen = 0
else:
    REGISTRY.register(GRPC_QUEUE)


def refresh_grpc_queue() -> None:
    """Copy the grpc call counts into the file-backed metrics (multiprocess mode only; a no-op otherwise)."""
    global _received_seen
    if not multiprocess() or GRPC_QUEUE.source is None:
        return
    received, taken = GRPC_QUEUE.source()
    if received is None:
        return
    if received > _received_seen:
        _RECEIVED.inc(received - _received_seen)
        _received_seen = received
    _WAITING.set(max(received - taken, 0))


def observe_batch(engine: str, provider: str, size: int, seconds: float) -> None:
    BATCH_SIZE.labels(engine).observe(size)
    ENGINE_SECONDS.labels(engine, provider).observe(seconds)
    CURVES_FORECAST.labels(engine).inc(size)


REJECTION_REASONS = ("overloaded", "draining", "malformed")
RELOAD_RESULTS = ("ok", "failed")


def initialise(engines, actions) -> None:
    """Create every known label value at 0, so rates and alerts see a zero before the first event, and a
    multi-process server exports each family from the start (its merge lists only values some worker wrote)."""
    for reason in REJECTION_REASONS:
        REJECTED.labels(reason)
    for result in RELOAD_RESULTS:
        MODEL_RELOADS.labels(result)
    for engine in engines:
        ENGINE_FAILURES.labels(engine)
        CURVES_FORECAST.labels(engine)
    for action in actions:
        RECOMMENDATIONS.labels(action)


_MODEL_LABELS: set[tuple[str, str, str]] = set()


def set_engine_status(infos) -> None:
    """Mirror the registry: one model_info series per loaded engine, availability per engine. A replaced
    version is set to 0 before it is dropped: in multiprocess mode its file-backed value would otherwise stay 1."""
    for labels in _MODEL_LABELS:
        MODEL_INFO.labels(*labels).set(0.0)
    if not multiprocess():  # (clearing is not supported there; the zeroed series stay, at 0)
        MODEL_INFO.clear()
    _MODEL_LABELS.clear()
    for info in infos:
        ENGINE_AVAILABLE.labels(info.name).set(1.0 if info.available else 0.0)
        if info.available:
            MODEL_INFO.labels(info.name, info.version, info.provider).set(1.0)
            _MODEL_LABELS.add((info.name, info.version, info.provider))
