"""In-process speed of each engine: per-curve latency (single-query calls) and batched throughput.

Numbers are wall-clock on whatever machine runs the bench; the report prints ``os.cpu_count()`` next
to them. Server-under-load figures come from the load generator and are merged in via ``--load-results``.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np

from curvecast.engines.base import Engine

from .tasks import Task


def _percentile(v: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(v), q)) if v else float("nan")


def measure_speed(engine: Engine, tasks: Sequence[Task], n_single: int = 40, batch_sizes: Sequence[int] = (16, 64), repeats: int = 2) -> dict[str, float]:
    """Latency p50/p99/mean of single-curve calls and curves/s for each batch size (best of ``repeats``)."""
    if not tasks:
        return {}
    queries = [t.query for t in tasks]
    engine.forecast(queries[:1])  # warm-up (lazy init, caches)
    lat: list[float] = []
    for i in range(n_single):
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        engine.forecast([q])
        lat.append(time.perf_counter() - t0)
    out = {
        "single_n": float(len(lat)),
        "latency_p50_ms": 1e3 * _percentile(lat, 50),
        "latency_p99_ms": 1e3 * _percentile(lat, 99),
        "latency_mean_ms": 1e3 * float(np.mean(lat)),
        "single_throughput_per_s": len(lat) / max(sum(lat), 1e-12),
    }
    for bs in batch_sizes:
        batch = [queries[i % len(queries)] for i in range(bs)]
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            engine.forecast(batch)
            best = min(best, time.perf_counter() - t0)
        out[f"batch{bs}_throughput_per_s"] = bs / max(best, 1e-12)
        out[f"batch{bs}_ms_per_curve"] = 1e3 * best / bs
    return out


def machine_info() -> dict[str, object]:
    import platform

    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()}
