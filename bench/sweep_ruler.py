"""Ruler check for sweep context: final-value error at 10-20% cutoffs with vs without sibling curves.

For each multi-run source of the sweeps benchmark (TaskSet tasks, LCDB datasets, ScAn-Bench VLM epoch
groups; loaders in bench/sweep_data.py), every run of a task is cut at 10% and 20% of its points and
forecast by the engine alone, then with sweep context: the task's other runs, finished ones whole (never
the query run itself). Scores per source: median |forecast median at the budget - the run's last value| in
units of the task's regret scale (median run value - best run value, bench/sweep_data.SweepTask), the
90% interval coverage of that value, and the mean CRPS (bench/metrics-style, on the same scale).

The sweep model's constants (curvecast.sweep.SweepParams) are chosen on the tuning tasks (bench.sweeps'
split) by the median error there; the report tasks only score.

    python -m bench.sweep_ruler                      # writes docs/bench/sweeps/ruler.md and ruler.json
    python -m bench.sweep_ruler --quick              # 3 tasks per source, 30 runs each
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from curvecast.domain.curve import Curve, ForecastQuery, RunInfo, SiblingRun, SweepContext
from curvecast.domain.distribution import Marginals
from curvecast.sweep import DEFAULT_PARAMS, SweepParams, apply_sweep

from .sweep_data import SweepRun, SweepTask, _rng, default_data_dir

CUTOFFS = (0.1, 0.2)
GRID = {  # candidates searched on the tuning tasks (a wider search led here: docs/bench/sweeps/ruler.md)
    "prior_siblings": (16.0,),
    "agreement_power": (1.0, 2.0),
    "ratio_ridge": (0.003, 0.005),
    "shape_bandwidth": (None, 0.05),
}


@dataclass
class Case:
    """One forecast: a run of a task cut at a cutoff, the engine's answer at the budget, and the truth."""

    source: str
    task: str
    cutoff: float
    query: ForecastQuery  # x_query = [budget]; sweep = the task's other runs
    engine: Marginals | None
    truth: float
    scale: float


def _sibling(task: SweepTask, r: SweepRun) -> SiblingRun:
    curve = Curve(r.x, r.y, goal=task.goal, x_kind=task.x_kind, lower_bound=task.lower_bound, upper_bound=task.upper_bound)
    return SiblingRun(r.run_id, curve, task.budget, finished=r.diverged_at is None)


def cases_for(task: SweepTask, engine, max_runs: int, seed: int) -> list[Case]:
    """Every (run, cutoff) of up to ``max_runs`` runs that finished at the budget; one engine batch."""
    runs = [r for r in task.runs if r.diverged_at is None and abs(r.x[-1] - task.budget) <= 1e-9 * task.budget]
    pick = _rng("ruler", task.source, task.name, seed).permutation(len(runs))[:max_runs]
    sibs = {r.run_id: _sibling(task, r) for r in task.runs}
    out, queries = [], []
    for i in sorted(pick):
        run = runs[int(i)]
        for c in CUTOFFS:
            n = max(2, int(round(c * len(run.y))))
            if n >= len(run.y):
                continue
            curve = Curve(run.x[:n], run.y[:n], goal=task.goal, x_kind=task.x_kind, lower_bound=task.lower_bound,
                          upper_bound=task.upper_bound, lr=None if run.lr is None else run.lr[:n])
            ctx = SweepContext(task.name, tuple(s for k, s in sibs.items() if k != run.run_id))
            q = ForecastQuery(curve, RunInfo(total_steps=task.budget, schedule=run.schedule, model_params=run.n_params),
                              np.array([task.budget]), sweep=ctx)
            queries.append(replace(q, sweep=None))
            out.append(Case(task.source, task.name, c, q, None, float(run.y[-1]), task.regret_scale))
    try:
        results = engine.forecast(queries)
    except Exception as exc:  # noqa: BLE001
        results = [exc] * len(queries)
    for case, res in zip(out, results):
        if not isinstance(res, Exception):
            case.engine = res.marginals.clip(task.lower_bound, task.upper_bound)
    return [c for c in out if c.engine is not None]


def score(cases: Sequence[Case], params: SweepParams | None) -> dict[str, float]:
    """Median normalised error of the median, 90% coverage and mean normalised CRPS; None = engine alone."""
    err, cov, crps = [], [], []
    for c in cases:
        m = c.engine if params is None else apply_sweep(c.query, c.engine, params).marginals
        med = float(m.quantile(0.5)[0])
        lo, hi = (float(v) for v in m.quantile([0.05, 0.95])[0])
        err.append(abs(med - c.truth) / c.scale)
        cov.append(float(lo <= c.truth <= hi))
        crps.append(float(m.crps(np.array([c.truth]))[0]) / c.scale)
    return {"n": len(err), "median_error": float(np.median(err)) if err else float("nan"),
            "coverage_90": float(np.mean(cov)) if cov else float("nan"),
            "crps": float(np.mean(crps)) if crps else float("nan")}


def tune(cases: Sequence[Case], log: Callable[[str], None]) -> tuple[SweepParams, list[dict]]:
    """The grid point with the lowest worst (over sources and cutoffs) ratio of median error with context
    to without it on the tuning tasks: scale-free, and no source may pay for another's gain."""
    by: dict[str, list[Case]] = {}
    for c in cases:
        by.setdefault(f"{c.source}@{c.cutoff:g}", []).append(c)
    base = {k: score(cs, None)["median_error"] for k, cs in by.items()}
    history = []
    for vals in itertools.product(*GRID.values()):
        p = replace(DEFAULT_PARAMS, **dict(zip(GRID, vals)))
        per = {k: score(cs, p)["median_error"] / max(base[k], 1e-12) for k, cs in by.items()}
        history.append({"params": asdict(p), "per_source": per, "mean": float(max(per.values()))})
        log(f"  {dict(zip(GRID, vals))}: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()))
    best = min(history, key=lambda h: h["mean"])
    return SweepParams(**best["params"]), history


def run(sources: Sequence[str], max_tasks: int, max_runs: int, pool: int, seed: int, out: Path, do_tune: bool,
        log: Callable[[str], None] = print) -> dict:
    from .sweeps import Config, load_engine, load_tasks, split_tasks

    t0 = time.perf_counter()
    cfg = replace(Config(), sources=tuple(sources), max_tasks_per_source=max_tasks, lcdb_tasks=max_tasks, pool=pool,
                  seed=seed)
    tasks, notes = load_tasks(cfg, default_data_dir(), None, "task")
    for n in notes:
        log(n)
    engine = load_engine("analytic")
    tune_tasks, report_tasks = split_tasks(tasks)
    cases = {t.name: cases_for(t, engine, max_runs, seed) for t in tasks}
    log(f"{sum(map(len, cases.values()))} forecasts ({time.perf_counter() - t0:.0f}s)")
    params, history = DEFAULT_PARAMS, []
    if do_tune:
        params, history = tune([c for t in tune_tasks for c in cases[t.name]], log)
        log(f"chosen: {asdict(params)}")
    table = {}
    for src in sorted({t.source for t in report_tasks}):
        for cut in CUTOFFS:
            cs = [c for t in report_tasks if t.source == src for c in cases[t.name] if c.cutoff == cut]
            table[f"{src}@{cut:g}"] = {"without": score(cs, None), "with": score(cs, params)}
    payload = {"params": asdict(params), "tuning_history": history, "notes": notes,
               "tune_tasks": [f"{t.source}/{t.name}" for t in tune_tasks],
               "report_tasks": [f"{t.source}/{t.name}" for t in report_tasks], "table": table,
               "config": {"sources": list(sources), "max_tasks": max_tasks, "max_runs": max_runs, "pool": pool,
                          "seed": seed}, "seconds": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ruler.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "ruler.md").write_text(render(payload))
    log(render(payload))
    return payload


def render(p: dict) -> str:
    lines = ["# Sweep context on the ruler: final-value error with vs without siblings", "",
             "Generated by `python -m bench.sweep_ruler` (" + ", ".join(f"{k}={v}" for k, v in p["config"].items())
             + "); analytic engine; report tasks only. Error: |forecast median at the budget - the run's final "
             "value| / the task's regret scale, median over runs; CRPS on the same scale.", "",
             f"Sweep model constants (chosen on {len(p['tune_tasks'])} tuning tasks): `{p['params']}`", "",
             "| source @ cutoff | n | median error without | with | ratio | 90% coverage without | with | CRPS without | with |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, v in p["table"].items():
        a, b = v["without"], v["with"]
        ratio = b["median_error"] / a["median_error"] if a["median_error"] > 0 else float("nan")
        lines.append(f"| {k} | {a['n']} | {a['median_error']:.4f} | {b['median_error']:.4f} | {ratio:.2f} | "
                     f"{a['coverage_90']:.2f} | {b['coverage_90']:.2f} | {a['crps']:.4f} | {b['crps']:.4f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sweep_ruler", description=__doc__.split("\n")[0])
    ap.add_argument("--sources", default="taskset,lcdb,scan_vlm")
    ap.add_argument("--max-tasks", type=int, default=12)
    ap.add_argument("--max-runs", type=int, default=40, help="query runs per task (siblings: all the task's others)")
    ap.add_argument("--pool", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-tune", action="store_true", help="score the shipped SweepParams defaults")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("docs/bench/sweeps"))
    a = ap.parse_args(argv)
    if a.quick:
        a.max_tasks, a.max_runs, a.pool = 3, 15, 40
    run([s for s in a.sources.split(",") if s], a.max_tasks, a.max_runs, a.pool, a.seed, a.out, not a.no_tune,
        log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
