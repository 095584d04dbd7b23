"""Speed and memory of a scaling-law fit (FitScalingLaw) from 100 points to the documented limit.

Each case runs in a fresh subprocess, so its peak RSS is its own: the server's work for one request,
from the wire message to the response (``converters.scaling_request``: decoding and validation;
``fit_scaling_law``: the fit and its bootstrap; ``converters.scaling_response``), without gRPC. Points are
synthetic Chinchilla-shaped runs (Besiroglu et al.'s law, 1% noise), one point per run (the bootstrap
resamples points), the default form. "evals" counts objective evaluations: each is one pass over the
points, so time / (evals x points) staying flat is what "linear in the points" means here.

"default" as the bootstrap sends no bootstrap field: the server's default intervals (200 replicates, fewer
beyond 50,000 points), the case issue 14's "at most 2 s for 1,000 points" is about; those rows also give the
seconds per 1,000 points, which stays flat when the time is linear in the points.

Usage: python -m bench.scaling_speed [--out docs/bench/scaling_speed.md] [--cases 100:0,1000:default,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "bench" / "scaling_speed.md"
# (points, bootstrap): the cases (10k x 0: 28-41 s and 1.1-1.35 GB before; 100k x 10: over 10 GB)
# and the limit: 100,000 points, and 100,000 x 100 = the points x replicates limit
CASES = ((100, 0), (1_000, 0), (10_000, 0), (100_000, 0), (100, 10), (1_000, 10), (10_000, 10), (100_000, 10),
         (100_000, 100), (100, "default"), (1_000, "default"), (2_000, "default"), (5_000, "default"),
         (10_000, "default"))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _request(n: int, bootstrap: int | None):
    import numpy as np

    from curvecast_api.v1 import curvecast_pb2 as pb

    rng = np.random.default_rng(0)
    N = 10.0 ** rng.uniform(7, 10, n)
    D = N * 10.0 ** rng.uniform(0.5, 2.5, n)
    L = (1.8172 + 477.8 / N**0.3473 + 2143.4 / D**0.3672) * np.exp(rng.normal(0, 0.01, n))
    req = pb.FitScalingLawRequest(points=[pb.ScalingPoint(n_params=a, tokens=b, loss=c) for a, b, c in zip(N, D, L)],
                                  predict_at=[pb.ScalingQuery(n_params=7e10, tokens=1.4e12)], compute_budgets=[1e23])
    if bootstrap is not None:
        req.bootstrap = bootstrap
    return req


def one(n: int, bootstrap: int | None) -> dict:
    """One case, in this process (the parent runs it in a fresh one)."""
    from curvecast.scaling import fit_scaling_law
    from curvecast.scaling.laws import FitStats
    from curvecast.scaling.limits import ScalingLimits
    from curvecast.server import converters

    base_mb = _peak_mb()
    req = _request(n, bootstrap)
    wire_mb = req.ByteSize() / 2**20
    t0 = time.perf_counter()
    points, form, boot, at, budgets, notes = converters.scaling_request(req, ScalingLimits())
    t1 = time.perf_counter()
    stats = FitStats()
    fit = fit_scaling_law(points, form=form, bootstrap=boot, stats=stats)
    t2 = time.perf_counter()
    converters.scaling_response(fit, at, budgets, "", notes)
    t3 = time.perf_counter()
    return {"points": n, "bootstrap": boot if bootstrap is not None else f"{boot} (default)", "wire_mb": wire_mb, "decode_s": t1 - t0, "fit_s": t2 - t1,
            "respond_s": t3 - t2, "total_s": t3 - t0, "evaluations": stats.evaluations,
            "us_per_point_eval": 1e6 * (t2 - t1) / max(stats.evaluations * n, 1),
            "base_rss_mb": base_mb, "peak_rss_mb": _peak_mb(), "alpha": fit.params["alpha"]}


def _case(text: str) -> tuple[int, int | None]:
    n, b = text.split(":")
    return int(n), None if b == "default" else int(b)


def run_case(n: int, bootstrap: int | None, timeout_s: float = 1800.0) -> dict:
    cmd = [sys.executable, "-m", "bench.scaling_speed", "--one", f"{n}:{'default' if bootstrap is None else bootstrap}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "client"), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| points | bootstrap | request MB | decode + validate s | fit s | total s | s per 1,000 points | evals "
             "| us / (point x eval) | RSS after imports MB | peak RSS MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['points']:,} | {r['bootstrap']} | {r['wire_mb']:.2f} | {r['decode_s']:.3f} | {r['fit_s']:.2f} "
                     f"| {r['total_s']:.2f} | {1000 * r['total_s'] / r['points']:.2f} | {r['evaluations']:,} "
                     f"| {r['us_per_point_eval']:.4f} | {r['base_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def report(rows: list[dict], command: str, load: tuple[float, float]) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    busy = (f" The machine was shared: load average {load[0]:.1f} at the start and {load[1]:.1f} at the end on "
            f"{os.cpu_count()} CPUs, so the seconds may be up to {max(load) / (os.cpu_count() or 1):.0f}x what an "
            "idle machine gives; the memory, and how the seconds grow with the points, are what to compare."
            if max(load) > 1.5 * (os.cpu_count() or 1) else "")
    return (f"# Scaling-law fit: speed and memory\n\n`{command}` ({when}; {machine}; each case in a fresh "
            f"process).{busy}\n\nThe server's work for one FitScalingLaw request without gRPC: decoding and validation, "
            "the fit (8 refined starts of a 4,500-start grid, then the bootstrap replicates), the response. "
            "Limits (ModelInfo): 100,000 points, 2,000 replicates, points x replicates <= 10,000,000, "
            "1,000 predict_at and 1,000 compute_budgets. Each evaluation also has a fixed cost (scipy, Python: about "
            "1,000 points' worth), so the per-point rate settles once the points dominate it.\n\n" + table(rows)
            + "\n\nBefore issue 19 the grid "
            "was scored with a per-start Jacobian over all points and the run keys were looked up in a list: "
            "10,000 points with bootstrap 0 took 28-41 s and 1.1-1.35 GB, 100,000 points with bootstrap 10 "
            "passed 10 GB and kept growing.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cases", default=",".join(f"{n}:{b}" for n, b in CASES), help="points:bootstrap,...")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case here and print it as JSON
    args = ap.parse_args()
    if args.one:
        n, b = _case(args.one)
        print(json.dumps(one(n, b)))
        return
    rows = []
    load_start = os.getloadavg()[0]
    for case in args.cases.split(","):
        n, b = _case(case)
        rows.append(run_case(n, b))
        r = rows[-1]
        print(f"{n:>7,} points, bootstrap {r['bootstrap']}: {r['total_s']:7.2f} s, peak RSS {r['peak_rss_mb']:5.0f} MB",
              file=sys.stderr, flush=True)
    print(table(rows))
    command = "python -m bench.scaling_speed" + ("" if args.cases == ",".join(f"{n}:{b}" for n, b in CASES)
                                                  else f" --cases {args.cases}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(rows, command, (load_start, os.getloadavg()[0])))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
