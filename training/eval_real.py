"""Two checks of the learned engine's serving rules on real curves (issue 17).

``python -m training.eval_real bounds [--spreads 1,2,4,inf]``
    The declared-bound rule (``normalization.FAR_BOUND_SPREADS``): on the ruler's tune split, per source
    and cutoff, mean LL norm / median final relative error / 90% coverage of the learned engine when a
    declared bound more than K prefix spreads beyond the curve is replaced by K spreads (K = inf: the
    declared bound always, the rule before issue 17).

``python -m training.eval_real long [--curves 40]``
    Long raw per-step curves: modded-nanogpt per-step train losses (1.5k-20k points) and the
    Multi-Power-Law train losses (95-546 points), cut at 10/20/40/80% of the run. The learned engine
    gets (a) the raw prefix, summarised by the serving rule (block medians, newest points verbatim),
    (b) the raw prefix reduced by the old rule (96 single points, newest 32 verbatim), (c) the prefix's
    block means (blocks of 1% of the run, one point each). Scores: median |median forecast - truth| /
    truth at the end, where truth = the mean of the run's last 1% (its block mean), and mean LL norm /
    90% coverage of 100 evenly spaced raw held-out points.
Both print a markdown table; ``nice -n 10`` them on a shared machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.data import default_data_dir
from bench.engines import resolve_engines
from bench.metrics import aggregate
from bench.pipeline import BenchConfig, load_all
from bench.runner import run_engine
from bench.tasks import CUTOFFS, Task, make_tasks
from curvecast.domain.curve import Curve, ForecastQuery, Goal, LrSchedule, RunInfo, ScheduleShape, XKind
from curvecast.engines.learned import engine as learned_engine
from curvecast.engines.learned import normalization as nz

SOURCES = ("taskset", "lcdb", "scan_vlm", "scan_llm", "nanogpt", "multipowerlaw", "gemstones")


def _engine(model: Path | None):
    (pair,), skipped, _ = resolve_engines(("learned",), model_path=model, cache_dir=None)
    return pair[1]


def cmd_bounds(args) -> int:
    cfg = BenchConfig(data=args.data or default_data_dir(), sources=SOURCES, split="tune", cap=args.cap)
    tasks = make_tasks([r for s in load_all(cfg) for r in s.records])
    eng = _engine(args.model)
    saved = nz.FAR_BOUND_SPREADS
    print("| K | source | " + " | ".join(f"LL / err / cov90 @{c:g}" for c in CUTOFFS) + " |")
    print("|---|---|" + "---|" * len(CUTOFFS))
    try:
        for k in (float(v) for v in args.spreads.split(",")):
            nz.FAR_BOUND_SPREADS = k
            run = run_engine(f"K{k:g}", eng, tasks, set())
            for src in SOURCES:
                cells = []
                for c in CUTOFFS:
                    a = aggregate([s for s in run.scores if s.source == src and s.cutoff == c])
                    cells.append(f"{a['ll_norm']:.3f} / {a['final_rel_err_median']:.4f} / {a['cover90']:.2f}" if "ll_norm" in a else "–")
                print(f"| {k:g} | {src} | " + " | ".join(cells) + " |", flush=True)
    finally:
        nz.FAR_BOUND_SPREADS = saved
    return 0


# ---- long curves ----------------------------------------------------------------------------------
def _long_curves(data: Path, n: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, str]]:
    import pandas as pd

    out = []
    df = pd.read_csv(data / "modded_nanogpt" / "train_curves.csv.gz", usecols=["run_id", "step", "train_loss"])
    df = df[np.isfinite(df.train_loss)]
    sizes = df.groupby("run_id").size().sort_values(ascending=False)
    for rid in list(sizes.index[:n]):  # the longest logs
        r = df[df.run_id == rid].sort_values("step").drop_duplicates("step")
        out.append((f"nanogpt_train/{rid}", r.step.to_numpy(float), r.train_loss.to_numpy(float), None, "nanogpt_train"))
    m = pd.read_csv(data / "multipowerlaw" / "all_curves.csv")
    for (size, sched), r in m.groupby(["model_size_M", "schedule"]):
        r = r.sort_values("step").drop_duplicates("step")
        out.append((f"multipowerlaw/{size}M/{sched}", r.step.to_numpy(float), r.loss.to_numpy(float), r.lr.to_numpy(float), "multipowerlaw"))
    return out


def _block_means(x: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    b = np.floor((x - x[0]) / width).astype(np.int64)
    _, start = np.unique(b, return_index=True)
    edges = np.append(start, len(x))
    return (np.array([x[a:e].mean() for a, e in zip(edges[:-1], edges[1:])]),
            np.array([y[a:e].mean() for a, e in zip(edges[:-1], edges[1:])]))


def _old_rule(x: np.ndarray, y: np.ndarray, max_points: int = learned_engine.MAX_CONTEXT,
              tail: int = learned_engine.TAIL_KEEP) -> tuple[np.ndarray, np.ndarray]:
    keep = learned_engine.reduce_context(len(x), max_points, tail)
    return x[keep], y[keep]


def cmd_long(args) -> int:
    data = args.data or default_data_dir()
    eng = _engine(args.model)
    variants: dict[str, list[Task]] = {"raw, block-median summary (serving)": [], "raw, old 96-point pick": [], "block means (1% of run)": []}
    for run_id, x, y, lr, src in _long_curves(data, args.curves):
        budget = float(x[-1])
        end_mean = float(y[x >= x[-1] - 0.01 * budget].mean())
        sched = None if lr is None else LrSchedule(ScheduleShape.EXPLICIT, peak_lr=float(lr.max()), final_lr=float(lr[-1]),
                                                   total_steps=budget, steps=x, values=lr)
        for c in CUTOFFS:
            n_obs = int(np.sum(x <= c * budget))
            if n_obs < 3 or n_obs >= len(x):
                continue
            held = np.unique(np.linspace(n_obs, len(x) - 1, 100).round().astype(int))
            xq, yq = x[held], y[held].copy()
            yq[-1] = end_mean  # the final point is scored against the run's final block mean
            bx, by = _block_means(x[:n_obs], y[:n_obs], 0.01 * budget)
            for name, (cx, cy) in zip(variants, ((x[:n_obs], y[:n_obs]), (x[:n_obs], y[:n_obs]), (bx, by))):
                curve = Curve(cx, cy, Goal.MINIMIZE, XKind.STEP, "train_loss", lower_bound=0.0,
                              lr=None if lr is None else np.interp(cx, x, lr))
                q = ForecastQuery(curve, RunInfo(total_steps=budget, schedule=sched), xq)
                variants[name].append(Task(src, run_id, c, q, cx, cy, xq, yq, curve_scale_xy(y), None, None))
    print(f"| context | source | n curves | " + " | ".join(f"final err @{c:g}" for c in CUTOFFS) + " | LL norm (all) | cover90 (all) | ms/curve |")
    print("|---|---|---|" + "---|" * len(CUTOFFS) + "---|---|---|")
    saved = learned_engine.summarise_context
    try:
        for name, tasks in variants.items():
            learned_engine.summarise_context = _old_rule if "old" in name else saved
            t0 = time.perf_counter()
            run = run_engine(name, eng, tasks, set())
            ms = 1e3 * (time.perf_counter() - t0) / max(len(tasks), 1)
            for src in ("nanogpt_train", "multipowerlaw"):
                sc = [s for s in run.scores if s.source == src]
                if not sc:
                    continue
                errs = []
                for c in CUTOFFS:
                    a = aggregate([s for s in sc if s.cutoff == c])
                    errs.append(f"{a['final_rel_err_median']:.4f}" if "final_rel_err_median" in a else "–")
                a = aggregate(sc)
                n = len({s.key.split('|')[1] for s in sc})
                print(f"| {name} | {src} | {n} | " + " | ".join(errs) + f" | {a.get('ll_norm', float('nan')):.3f} | {a.get('cover90', float('nan')):.3f} | {ms:.2f} |", flush=True)
    finally:
        learned_engine.summarise_context = saved
    return 0


def curve_scale_xy(y: np.ndarray) -> float:
    rng = float(np.max(y) - np.min(y))
    return max(rng, 1e-3 * max(abs(float(np.mean(y))), 1e-9), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval_real", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("bounds", "long"):
        s = sub.add_parser(name)
        s.add_argument("--data", type=Path, default=None)
        s.add_argument("--model", type=Path, default=None, help="learned engine ONNX (default: the bundled one)")
    sub.choices["bounds"].add_argument("--cap", type=int, default=100)
    sub.choices["bounds"].add_argument("--spreads", default="1,2,4,inf")
    sub.choices["long"].add_argument("--curves", type=int, default=40, help="longest nanogpt train logs to use")
    args = p.parse_args(argv)
    return cmd_bounds(args) if args.cmd == "bounds" else cmd_long(args)


if __name__ == "__main__":
    raise SystemExit(main())
