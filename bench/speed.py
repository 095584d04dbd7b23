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


# ---- the learned engine's compute bound ------------------------------------------------------------------
def matmul_flops(model_path: str, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """FLOPs of every MatMul/Gemm in the ONNX graph for these inputs (2·M·K·N per product, times the broadcast
    batch dimensions), with the shapes read from the graph run on the inputs: each product's operands are made
    extra graph outputs (optimisations off, so no node is fused away) and weights are read from initializers."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(model_path)
    inits = {t.name: tuple(numpy_helper.to_array(t).shape) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    wanted = list(dict.fromkeys(t for n in nodes for t in n.input[:2] if t not in inits))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in wanted if t not in present)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    shapes = dict(inits)
    shapes.update({t: tuple(v.shape) for t, v in zip(wanted, sess.run(wanted, feeds))})
    total = 0.0
    for n in nodes:
        a, b = shapes[n.input[0]], shapes[n.input[1]]
        if n.op_type == "Gemm":
            trans_a = next((x.i for x in n.attribute if x.name == "transA"), 0)
            m, k = (a[1], a[0]) if trans_a else a
            total += 2.0 * m * k * (b[0] if next((x.i for x in n.attribute if x.name == "transB"), 0) else b[1])
            continue
        a2 = a if len(a) >= 2 else (1, *a)
        b2 = b if len(b) >= 2 else (*b, 1)
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
        total += 2.0 * float(np.prod(batch)) * a2[-2] * a2[-1] * b2[-1]
    return {"flops": total, "matmuls": float(len(nodes))}


def gemm_roofline(sizes: Sequence[int] = (256, 512, 1024), repeats: int = 5) -> dict[str, float]:
    """Measured fp32 GEMM GFLOP/s of this machine with onnxruntime (the learned engine's runtime) on one
    thread and on every usable core, and numpy's on one thread; the best over square sizes (the roofline's
    compute roof: what the cores reach on matrix products, not a datasheet figure)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from threadpoolctl import threadpool_limits

    from curvecast.server.config import usable_cpus

    cores = usable_cpus()
    out: dict[str, float] = {"cores": float(cores)}
    rng = np.random.default_rng(0)
    for threads in sorted({1, cores}):
        best = 0.0
        for n in sizes:
            graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                      [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                                       helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                                      [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 8
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                        providers=["CPUExecutionProvider"])
            feeds = {"a": rng.standard_normal((n, n), dtype=np.float32),
                     "b": rng.standard_normal((n, n), dtype=np.float32)}
            sess.run(None, feeds)
            for _ in range(repeats):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                best = max(best, 2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
        out[f"ort_gflops_{'1_thread' if threads == 1 else 'all_cores'}"] = best
    best = 0.0
    with threadpool_limits(1):
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            a @ a
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ a
                best = max(best, 2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    out["numpy_gflops_1_thread"] = best
    # the roof: every core at its one-thread best (the learned engine runs one onnxruntime thread per batch)
    out["roof_gflops"] = max(out["ort_gflops_1_thread"], best) * cores
    return out


def learned_compute_bound(queries_unary: Sequence, queries_batch: Sequence, model_path: str | None = None,
                          roofline: dict[str, float] | None = None) -> dict[str, float]:
    """FLOPs per curve of the learned engine for the inputs the server really builds (the data plane's query
    grid and the engine's anchors included), one curve per call and a batch as the engine runs it (padding
    included), and the curves/s the machine's GEMM roof allows at that cost."""
    from curvecast.engines.learned.engine import LearnedEngine
    from curvecast.server.config import BUNDLED_MODEL

    path = str(model_path or BUNDLED_MODEL)
    engine = LearnedEngine.load(path, providers=("CPUExecutionProvider",), threads=1)
    calls: list[dict[str, np.ndarray]] = []
    run = engine.runtime.run

    def recording(cx, cy, mask, qx):
        calls.append({"ctx_x": np.asarray(cx, np.float32), "ctx_y": np.asarray(cy, np.float32),
                      "ctx_mask": np.asarray(mask, np.float32), "qry_x": np.asarray(qx, np.float32)})
        return run(cx, cy, mask, qx)

    engine.runtime.run = recording  # type: ignore[method-assign]
    out: dict[str, float] = {}
    for label, groups in (("unary", [[q] for q in queries_unary]), ("batch", [list(queries_batch)])):
        calls.clear()
        curves = 0
        for g in groups:
            engine.forecast(g)
            curves += len(g)
        flops = sum(matmul_flops(path, feeds)["flops"] for feeds in calls)
        out[f"flops_per_curve_{label}"] = flops / max(curves, 1)
        out[f"ctx_points_{label}"] = float(np.mean([f["ctx_x"].shape[1] for f in calls]))
        out[f"query_points_{label}"] = float(np.mean([f["qry_x"].shape[1] for f in calls]))
    roof = roofline or gemm_roofline()
    out.update({f"roof_{k}": v for k, v in roof.items()})
    for label in ("unary", "batch"):
        out[f"bound_curves_per_s_{label}"] = roof["roof_gflops"] * 1e9 / out[f"flops_per_curve_{label}"]
    return out


# ---- serving overhead: everything but the engine -----------------------------------------------------------
class NoopEngine:
    """A constant-time engine (a Gaussian around the last value): what remains is the serving code's cost."""

    name = "analytic"

    def info(self):
        from curvecast.engines.base import EngineInfo

        return EngineInfo(self.name, "noop", "none", True, "bench no-op engine")

    def forecast(self, queries):
        from curvecast.domain.distribution import Marginals
        from curvecast.engines.base import EngineForecast

        out = []
        for q in queries:
            last = float(q.curve.y[-1])
            xq = np.asarray(q.x_query, dtype=np.float64)
            m = Marginals.from_gaussian(xq, np.full(len(xq), last), np.full(len(xq), 0.05 * abs(last) + 1e-3))
            out.append(EngineForecast(marginals=m, engine=self.name))
        return out


def serving_overhead(requests: Sequence, batch_sizes: Sequence[int] = (1, 32), repeats: int = 7) -> dict[str, float]:
    """Per-curve milliseconds of the server's own work around the engine for a ForecastBatch, stage by stage,
    through the servicer's and the data plane's real code with a no-op engine: decoding the request bytes,
    validation (wire -> domain), the data plane (admission, batching, planning the query grid, the no-op
    engine, decisions), building, assembling and encoding the responses. The no-op engine's own time is
    measured apart and subtracted. Stages are timed in CPU time of this process (all its threads: the data
    plane hops to worker threads), which other work on a shared machine does not inflate, and the total also
    in wall time. Median of ``repeats``; gRPC's transport is not included (the no-op server measures that)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from curvecast_api.v1 import curvecast_pb2 as pb

    from curvecast.dataplane import DataPlane, DataPlaneSettings
    from curvecast.domain.curve import StopPolicy
    from curvecast.domain.validation import Limits
    from curvecast.engines.registry import EngineRegistry
    from curvecast.server.servicer import CurvecastServicer, _respond

    engine = NoopEngine()
    registry = EngineRegistry()
    registry.put(engine)
    out: dict[str, float] = {}
    names = ("decode", "validate", "dataplane", "respond", "engine")

    async def measure(n: int) -> tuple[dict[str, list[float]], list[float]]:
        executor = ThreadPoolExecutor(max_workers=2)
        dp = DataPlane(registry, executor, DataPlaneSettings(default_engine="analytic", max_inflight_curves=10**6),
                       max_batch=max(n, 1), max_delay_s=0.0)
        servicer = CurvecastServicer(dp, Limits(), StopPolicy())
        wire = pb.ForecastBatchRequest(requests=[requests[i % len(requests)] for i in range(n)]).SerializeToString()
        cpu: dict[str, list[float]] = {k: [] for k in names}
        wall: list[float] = []
        for _ in range(repeats + 1):  # the first round warms up
            marks = [(time.perf_counter(), time.process_time())]
            req = pb.ForecastBatchRequest.FromString(wire)
            marks.append((time.perf_counter(), time.process_time()))
            items: list = [None] * n
            queries, where = servicer._validate_batch(req, items)
            marks.append((time.perf_counter(), time.process_time()))
            results = await dp.forecast_many(queries, None)
            marks.append((time.perf_counter(), time.process_time()))
            built = [_respond(r) for r in results]  # in the server this runs inside forecast_many (``post``)
            servicer._batch_response(items, where, built, [req.requests[i].request_id for i in where])\
                .SerializeToString()
            marks.append((time.perf_counter(), time.process_time()))
            engine.forecast(queries)
            marks.append((time.perf_counter(), time.process_time()))
            for k, (a, b) in zip(names, zip(marks, marks[1:])):
                cpu[k].append(b[1] - a[1])
            wall.append((marks[4][0] - marks[0][0]) - (marks[5][0] - marks[4][0]))
        await dp.close()
        executor.shutdown()
        return {k: v[1:] for k, v in cpu.items()}, wall[1:]

    for n in batch_sizes:
        cpu, wall = asyncio.run(measure(n))
        med = {k: 1e3 * float(np.median(v)) / n for k, v in cpu.items()}
        out.update({f"batch{n}_{k}_ms_per_curve": v for k, v in med.items()})
        out[f"batch{n}_overhead_ms_per_curve"] = sum(med[k] for k in names[:4]) - med["engine"]
        out[f"batch{n}_overhead_wall_ms_per_curve"] = 1e3 * float(np.median(wall)) / n
    return out
