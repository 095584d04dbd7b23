"""Per-curve latency of the analytic engine on one core: ``python -m curvecast.engines.analytic.latency``.

Synthetic loss curves of 20 to 20,000 points (Domhan-family path) and, separately, LR-schedule queries
(Tissue/MPL path); 50 queried x each. Prints CPU and wall milliseconds per curve (CPU time is the fair "one core" number on a busy machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ...domain.curve import Curve, ForecastQuery, LrSchedule, RunInfo, ScheduleShape
from .engine import forecast_one


def _queries(n_curves: int, with_schedule: bool, seed: int = 0) -> list[ForecastQuery]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_curves):
        n = (20, 50, 200, 2000, 20000)[i % 5]
        x = np.arange(1, n + 1) * 10.0
        y = 2 + 3 * (x / 10) ** -rng.uniform(0.2, 0.8) + rng.normal(0, 0.01, n)
        run = RunInfo()
        if with_schedule:
            total = 3 * x[-1]
            run = RunInfo(total_steps=total, schedule=LrSchedule(ScheduleShape.COSINE, peak_lr=3e-4, final_lr=3e-5, warmup_steps=x[2], total_steps=total))
        out.append(ForecastQuery(curve=Curve(x=x, y=y), run=run, x_query=np.linspace(x[-1], 3 * x[-1], 50)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--curves", type=int, default=50)
    args = ap.parse_args()
    for label, sched in (("curve families", False), ("LR-schedule laws", True)):
        qs = _queries(args.curves, sched)
        forecast_one(qs[0])  # warm caches and imports
        wall, cpu = [], []
        for q in qs:
            t, c = time.perf_counter(), time.process_time()
            forecast_one(q)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        ms, cms = 1e3 * np.asarray(wall), 1e3 * np.asarray(cpu)
        print(
            f"{label}: {len(qs)} curves, CPU mean {cms.mean():.1f} ms (p95 {np.quantile(cms, 0.95):.1f}), "
            f"wall mean {ms.mean():.1f} ms (p95 {np.quantile(ms, 0.95):.1f}) per curve"
        )


if __name__ == "__main__":
    main()
