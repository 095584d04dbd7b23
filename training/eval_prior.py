"""Benchmark the exported model on LC-PFN's own prior and time it in onnxruntime (no torch needed).

    PYTHONPATH=service:. python -m training.eval_prior --model service/curvecast/models/curvecast-pfn.onnx \
        --curves 10000 --seed 20261125 --threads 1 [--update-card]

Mean log-likelihood of the points after the cutoff (10/20/40/80% of 100 points), averaged per curve
then over curves, as in the LC-PFN paper (Table 1); LC-PFN's numbers are printed alongside. Curves in
[0, 1] with goal "maximise" map to model space by the identity, so these are log-densities in the
curve's own units. Latency: the ONNX forward pass for one curve (40 context points, 60 queries),
batch 1, and per-curve time at larger batches; plus the whole engine path (prepare + run + quantiles).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from curvecast.engines.learned import normalization as nz
from curvecast.engines.learned.engine import LearnedEngine, bar_log_density
from training.prior import lcpfn_features, sample_lcpfn

LCPFN = {
    "P3 12x512": {"10": 1.76, "20": 2.13, "40": 2.40, "80": 2.52, "s_per_curve": 0.050},
    "P2 3x256": {"10": 1.65, "20": 2.04, "40": 2.35, "80": 2.49, "s_per_curve": 0.006},
}
CUTOFFS = (10, 20, 40, 80)


def prior_ll(engine: LearnedEngine, n: int, seed: int, batch: int = 100) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    y = sample_lcpfn(rng, n).astype(np.float32)
    f = lcpfn_features(1).astype(np.float32)[0]
    borders = engine.borders
    out = {}
    for cut in CUTOFFS:
        lls = []
        for s in range(0, n, batch):
            yb = y[s : s + batch]
            b = len(yb)
            cx = np.broadcast_to(f[:cut], (b, cut, nz.N_FEATURES))
            qx = np.broadcast_to(f[cut:], (b, 100 - cut, nz.N_FEATURES))
            lp = engine.runtime.run(cx, yb[:, :cut], np.ones((b, cut), np.float32), qx)
            lls.append(bar_log_density(lp, borders, yb[:, cut:].astype(np.float64)).mean(axis=1))
        ll = np.concatenate(lls)
        out[str(cut)] = float(ll.mean())
        out[f"{cut}_sem"] = float(ll.std() / np.sqrt(len(ll)))
    return out


def latency(engine: LearnedEngine, reps: int = 200) -> dict[str, float]:
    f = lcpfn_features(1).astype(np.float32)[0]
    y = np.linspace(0.2, 0.8, 100, dtype=np.float32)
    res = {}
    for b in (1, 16, 64, 256):
        cx = np.ascontiguousarray(np.broadcast_to(f[:40], (b, 40, nz.N_FEATURES)))
        qx = np.ascontiguousarray(np.broadcast_to(f[40:], (b, 60, nz.N_FEATURES)))
        cy = np.ascontiguousarray(np.broadcast_to(y[:40], (b, 40)))
        mask = np.ones((b, 40), np.float32)
        for _ in range(3):
            engine.runtime.run(cx, cy, mask, qx)
        n = max(5, reps // b)
        ts, cpu = [], []
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            engine.runtime.run(cx, cy, mask, qx)
            ts.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        res[f"onnx_ms_per_curve_b{b}"] = float(np.median(ts) / b * 1e3)
        # CPU time of this process: robust to other jobs sharing the cores (exact with 1 intra-op thread)
        res[f"onnx_cpu_ms_per_curve_b{b}"] = float(np.median(cpu) / b * 1e3)
    # the whole engine path for one query (prepare, run, quantile grid, back to caller units)
    from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo

    x = np.arange(1, 41, dtype=np.float64)
    q = ForecastQuery(Curve(x, y[:40].astype(np.float64), Goal.MAXIMIZE, lower_bound=0.0, upper_bound=1.0),
                      RunInfo(total_steps=100.0), np.arange(41, 101, dtype=np.float64))
    engine.forecast([q])
    ts, cpu = [], []
    for _ in range(50):
        t, c = time.perf_counter(), time.process_time()
        engine.forecast([q])
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    res["engine_ms_single_query"] = float(np.median(ts) * 1e3)
    res["engine_cpu_ms_single_query"] = float(np.median(cpu) * 1e3)
    t, c = time.perf_counter(), time.process_time()
    engine.forecast([q] * 256)
    res["engine_ms_per_query_b256"] = float((time.perf_counter() - t) / 256 * 1e3)
    res["engine_cpu_ms_per_query_b256"] = float((time.process_time() - c) / 256 * 1e3)
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="service/curvecast/models/curvecast-pfn.onnx")
    p.add_argument("--curves", type=int, default=10000)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--update-card", action="store_true", help="write the metrics into model-card.json")
    args = p.parse_args(argv)
    engine = LearnedEngine.load(args.model, providers=["CPUExecutionProvider"], threads=args.threads)
    t0 = time.time()
    ll = prior_ll(engine, args.curves, args.seed)
    res = {"prior_ll": ll, "curves": args.curves, "seed": args.seed, "eval_s": round(time.time() - t0, 1),
           "latency": latency(engine), "threads": args.threads, "provider": engine.provider, "lcpfn": LCPFN}
    print(json.dumps(res, indent=2))
    if args.update_card:
        card_path = Path(args.model).parent / "model-card.json"
        card = json.loads(card_path.read_text())
        card.setdefault("metrics", {})["lcpfn_prior"] = {k: v for k, v in res.items() if k != "lcpfn"}
        card["metrics"]["lcpfn_reference"] = LCPFN
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
