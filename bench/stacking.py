"""Fit the stacked ensemble on the dev ruler's tune split, validate it leave-one-source-out, write it.

``python -m bench.stacking`` (nice it: ``nice -n 10``; a few minutes on 2 cores):

1. loads the tune split of every real ruler source (``--cap`` curves each) and cuts the ruler's tasks;
2. runs the analytic and learned engines once on every task (in-process, like ``python -m bench run``);
3. for every candidate (learned weight w, spread s) on a grid, scores each task as the ruler does: mean
   normalised log-density of the held-out points under the mixture (each engine's quantiles scaled
   about its median by s), and the mixture median's relative error at the last point;
4. per cell (``curvecast.engines.ensemble``: observed-fraction bin x loss/accuracy x steps/epochs x
   agree/disagree, backing off to coarser cells with fewer than ``--min-tasks`` tasks or 2 sources)
   picks the candidate with the best objective: the source-balanced mean LL, minus ``--err-weight``
   times the mean log ratio of its median final error to the analytic engine's (so the stack does not
   buy log-likelihood with a worse point forecast);
5. validates leave-one-source-out: each source is scored with cells fitted on the other sources only,
   next to analytic, learned and the old 0.75/0.25 mixture (per source and cutoff: mean LL, median
   final error, 90% coverage), and writes the cells fitted on every source to
   ``service/curvecast/models/ensemble-stacking.json`` with its sha256 and provenance (the LOSO table
   included), plus the full table to ``--report`` (markdown).

The ruler itself (``python -m bench run --engines analytic,learned,ensemble``) then scores the served
ensemble, which reads the JSON, on the report split.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curvecast.domain.distribution import LEVELS
from curvecast.engines.ensemble import DEFAULT_STACKING, GLOBAL, Cell, CellKey, StackingModel, disagreement, widen

from .data import default_data_dir
from .engines import REPO_ROOT, resolve_engines
from .pipeline import BenchConfig, load_all
from .tasks import CUTOFFS, Task, make_tasks

SOURCES = ("taskset", "lcdb", "scan_vlm", "scan_llm", "nanogpt", "multipowerlaw", "gemstones")
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 3)  # learned weight
SPREADS = (1.0, 1.15, 1.3)  # widening only: narrowing cells fitted on other sources did not transfer (LOSO)
CUTOFF_EDGES = (0.15, 0.3, 0.6)  # bins around the ruler's 10/20/40/80% cutoffs
OLD_MIXTURE = 0.25  # the fixed mixture's learned weight before issue 17


@dataclass
class TaskTable:
    """Per task and candidate (w, s): LL norm (T, W, S), final relative error (T, W, S), 90% coverage
    counts (T, W, S); the task's source, cutoff and cell features."""

    sources: np.ndarray
    cutoffs: np.ndarray
    keys: list[CellKey]
    d: np.ndarray
    ll: np.ndarray
    err: np.ndarray
    inside: np.ndarray
    n_points: np.ndarray


def log(msg: str) -> None:
    print(f"[stacking] {msg}", file=sys.stderr, flush=True)


def run_engines(tasks: list[Task], model: Path | None) -> dict[str, list]:
    engines, skipped, _ = resolve_engines(("analytic", "learned"), model_path=model, cache_dir=None)
    if skipped:
        raise SystemExit(f"engines missing: {skipped}")
    out: dict[str, list] = {}
    for name, eng in engines:
        t0 = time.perf_counter()
        res: list = []
        for s in range(0, len(tasks), 32):
            res.extend(eng.forecast([t.query for t in tasks[s : s + 32]]))
        out[name] = res
        log(f"{name}: {len(tasks)} tasks in {time.perf_counter() - t0:.1f}s, "
            f"{sum(isinstance(r, Exception) for r in res)} failed")
    return out


def _pit(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CDF of each row of quantile values at its own truth (0 / 1 beyond the outermost levels)."""
    return np.array([np.interp(y[i], values[i], LEVELS, left=0.0, right=1.0) for i in range(len(values))])


def build_table(tasks: list[Task], answers: dict[str, list]) -> tuple[TaskTable, list[Task]]:
    """Score every candidate (w, s) on every task both engines answered."""
    keep = [i for i in range(len(tasks)) if not any(isinstance(answers[n][i], Exception) for n in ("analytic", "learned"))]
    n_t, n_w, n_s = len(keep), len(WEIGHTS), len(SPREADS)
    ll = np.empty((n_t, n_w, n_s))
    err = np.empty((n_t, n_w, n_s))
    inside = np.empty((n_t, n_w, n_s))
    npts = np.empty(n_t)
    d = np.empty(n_t)
    keys: list[CellKey] = []
    proto = StackingModel(("analytic", "learned"), CUTOFF_EDGES, 0.0, {GLOBAL.text(): Cell((("analytic", 1.0),))})
    for r, i in enumerate(keep):
        t = tasks[i]
        ma, ml = answers["analytic"][i].marginals, answers["learned"][i].marginals
        last = len(t.x_true) - 1
        d[r] = disagreement([ma.at(np.array([last])), ml.at(np.array([last]))])
        keys.append(proto.key(t.query, {"analytic": ma, "learned": ml}, last))
        y = t.y_true
        truth = float(y[-1])
        npts[r] = len(y)
        for k, s in enumerate(SPREADS):
            wa, wl = widen(ma, s), widen(ml, s)
            with np.errstate(all="ignore"):
                lpa = np.where(np.isfinite(la := wa.log_pdf(y)), la, -1e6)
                lpl = np.where(np.isfinite(lq := wl.log_pdf(y)), lq, -1e6)
            # mixture density: a convex combination of the two densities (the ruler scores the mixture
            # built by Marginals.mixture, whose CDF is exactly this combination between quantile knots)
            w = WEIGHTS[:, None]
            with np.errstate(divide="ignore"):
                lp = np.logaddexp(np.log1p(-w + 1e-300) + lpa[None], np.log(w + 1e-300) + lpl[None])
            ll[r, :, k] = np.maximum(lp, -1e6).mean(axis=1) + np.log(t.scale)
            # mixture median and 90% interval per w, from the CDF on a value grid spanning both engines
            lo = min(wa.values[:, 1].min(), wl.values[:, 1].min())
            hi = max(wa.values[:, -2].max(), wl.values[:, -2].max())
            grid = np.linspace(lo, hi, 400)
            fa_last = np.interp(grid, wa.values[last], LEVELS, left=0.0, right=1.0)
            fl_last = np.interp(grid, wl.values[last], LEVELS, left=0.0, right=1.0)
            fm = (1 - w) * fa_last[None] + w * fl_last[None]
            med = np.array([np.interp(0.5, np.maximum.accumulate(row), grid) for row in fm])
            err[r, :, k] = np.abs(med - truth) / max(abs(truth), 1e-12)
            ga, gl = _pit(wa.values, y), _pit(wl.values, y)
            pit = (1 - w) * ga[None] + w * gl[None]
            inside[r, :, k] = ((pit >= 0.05) & (pit <= 0.95)).sum(axis=1)
    tab = TaskTable(np.array([tasks[i].source for i in keep]), np.array([tasks[i].cutoff for i in keep]),
                    keys, d, ll, err, inside, npts)
    return tab, [tasks[i] for i in keep]


def with_edge(tab: TaskTable, edge: float) -> list[CellKey]:
    return [CellKey(k.cutoff, k.kind, k.x_kind, k.points, "disagree" if d > edge else "agree") for k, d in zip(tab.keys, tab.d)]


def objective(tab: TaskTable, rows: np.ndarray, err_weight: float) -> np.ndarray:
    """(W, S) objective over ``rows``: source-balanced mean LL minus err_weight x mean log error ratio."""
    srcs = np.unique(tab.sources[rows])
    total = np.zeros(tab.ll.shape[1:])
    for s in srcs:
        r = rows[tab.sources[rows] == s]
        total += tab.ll[r].mean(axis=0)
        if err_weight:
            base = np.median(tab.err[r, 0, SPREADS.index(1.0)])
            med = np.median(tab.err[r], axis=0)
            total -= err_weight * np.log(np.maximum(med, 1e-9) / max(base, 1e-9))
    return total / len(srcs)


def fit_cells(tab: TaskTable, rows: np.ndarray, keys: list[CellKey], min_tasks: int, err_weight: float) -> dict[str, Cell]:
    """Every cell (at every backoff level) with enough tasks from at least 2 sources gets its best (w, s)."""
    cells: dict[str, Cell] = {}
    groups: dict[str, list[int]] = {}
    for r in rows:
        for k in keys[r].backoff():
            groups.setdefault(k.text(), []).append(int(r))
    glob = GLOBAL.text()
    for text, members in groups.items():
        m = np.array(members)
        if text != glob and (len(m) < min_tasks or len(np.unique(tab.sources[m])) < 2):
            continue
        obj = objective(tab, m, err_weight)
        j, k = np.unravel_index(int(np.argmax(obj)), obj.shape)
        w = float(WEIGHTS[j])
        cells[text] = Cell((("analytic", round(1.0 - w, 3)), ("learned", w)), float(SPREADS[k]), len(m))
    return cells


def pick(tab: TaskTable, rows: np.ndarray, keys: list[CellKey], cells: dict[str, Cell]) -> tuple[np.ndarray, np.ndarray]:
    """Indices (w, s) each task in ``rows`` gets from ``cells``."""
    model = StackingModel(("analytic", "learned"), CUTOFF_EDGES, 0.0, cells)
    jw, ks = [], []
    for r in rows:
        cell, _ = model.cell(keys[r])
        jw.append(int(np.argmin(np.abs(WEIGHTS - dict(cell.weights)["learned"]))))
        ks.append(SPREADS.index(cell.spread))
    return np.array(jw), np.array(ks)


def summary(tab: TaskTable, rows: np.ndarray, jw: np.ndarray, ks: np.ndarray) -> dict[str, float]:
    ll = tab.ll[rows, jw, ks]
    err = tab.err[rows, jw, ks]
    ins = tab.inside[rows, jw, ks]
    return {"ll_norm": float(np.mean(ll)), "final_rel_err_median": float(np.median(err)),
            "cover90": float(ins.sum() / tab.n_points[rows].sum()), "n": int(len(rows))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stacking", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--cap", type=int, default=100, help="curves per source (tune split)")
    p.add_argument("--split", default="tune", choices=("tune", "report", "all"))
    p.add_argument("--model", type=Path, default=None, help="learned engine ONNX (default: the bundled one)")
    p.add_argument("--min-tasks", type=int, default=100)
    p.add_argument("--err-weight", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=DEFAULT_STACKING)
    p.add_argument("--report", type=Path, default=REPO_ROOT / "docs" / "bench" / "tmp" / "stacking.md")
    p.add_argument("--dry-run", action="store_true", help="validate and report, do not write --out")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    cfg = BenchConfig(data=args.data or default_data_dir(), sources=SOURCES, split=args.split, cap=args.cap)
    records = [r for s in load_all(cfg) for r in s.records]
    tasks = make_tasks(records, CUTOFFS)
    log(f"{len(records)} curves -> {len(tasks)} tasks ({args.split} split)")
    answers = run_engines(tasks, args.model)
    tab, kept = build_table(tasks, answers)
    edge = float(np.median(tab.d))  # agree/disagree split at the median: both halves are populated
    keys = with_edge(tab, edge)
    everything = np.arange(len(kept))
    iw_old = int(np.argmin(np.abs(WEIGHTS - OLD_MIXTURE)))
    i1 = SPREADS.index(1.0)
    rows_out = []
    loso_ok = {"ll": 0, "err": 0, "both": 0, "cells": 0}
    for src in SOURCES:
        held = everything[tab.sources == src]
        if not len(held):
            continue
        cells = fit_cells(tab, everything[tab.sources != src], keys, args.min_tasks, args.err_weight)
        for c in CUTOFFS:
            r = held[tab.cutoffs[held] == c]
            if not len(r):
                continue
            jw, ks = pick(tab, r, keys, cells)
            res = {
                "analytic": summary(tab, r, np.zeros(len(r), int), np.full(len(r), i1)),
                "learned": summary(tab, r, np.full(len(r), len(WEIGHTS) - 1), np.full(len(r), i1)),
                "mixture_0.25": summary(tab, r, np.full(len(r), iw_old), np.full(len(r), i1)),
                "stacked_loso": summary(tab, r, jw, ks),
            }
            st, an = res["stacked_loso"], res["analytic"]
            better_ll, better_err = st["ll_norm"] > an["ll_norm"], st["final_rel_err_median"] < an["final_rel_err_median"]
            loso_ok["cells"] += 1
            loso_ok["ll"] += better_ll
            loso_ok["err"] += better_err
            loso_ok["both"] += better_ll and better_err
            rows_out.append({"source": src, "cutoff": c, **{k: v for k, v in res.items()}})
    cells = fit_cells(tab, everything, keys, args.min_tasks, args.err_weight)
    model_path = args.model or REPO_ROOT / "service" / "curvecast" / "models" / "curvecast-pfn.onnx"
    sha = json.loads((model_path.parent / "model-card.json").read_text())["sha256"]  # the cells fit this model
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    prov = {
        "command": "python -m bench.stacking " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
        "split": args.split, "cap": args.cap, "sources": list(SOURCES), "tasks": len(kept),
        "grid": {"learned_weight": WEIGHTS.tolist(), "spread": list(SPREADS)}, "min_tasks": args.min_tasks,
        "err_weight": args.err_weight, "objective": "source-balanced mean LL norm - err_weight * mean log(median final err / analytic's)",
        "loso": {"cells_beating_analytic": loso_ok, "table": rows_out},
    }
    model = StackingModel(("analytic", "learned"), CUTOFF_EDGES, edge, cells, sha, prov)
    md = report_markdown(rows_out, loso_ok, model)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(md)
    print(md)
    if not args.dry_run:
        args.out.write_text(model.to_json())
        log(f"wrote {args.out} (sha256 {StackingModel.from_json(args.out.read_text()).sha256[:12]})")
    log(f"done in {time.perf_counter() - t0:.0f}s; report {args.report}")
    return 0


def report_markdown(rows: list[dict], ok: dict, model: StackingModel) -> str:
    lines = ["## Stacked ensemble: leave-one-source-out on the tune split", "",
             f"Each source scored with cells fitted on the other sources. Stacked beats analytic on mean LL in "
             f"{ok['ll']}/{ok['cells']} source x cutoff cells, on median final error in {ok['err']}/{ok['cells']}, "
             f"on both in {ok['both']}/{ok['cells']}.", "",
             "| source | cutoff | n | LL analytic | LL learned | LL mix0.25 | LL stacked | err analytic | err learned | err mix0.25 | err stacked | cov90 analytic | cov90 mix0.25 | cov90 stacked |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, l, m, s = r["analytic"], r["learned"], r["mixture_0.25"], r["stacked_loso"]
        lines.append(f"| {r['source']} | {r['cutoff']:g} | {a['n']} | {a['ll_norm']:.3f} | {l['ll_norm']:.3f} | {m['ll_norm']:.3f} | "
                     f"**{s['ll_norm']:.3f}** | {a['final_rel_err_median']:.4f} | {l['final_rel_err_median']:.4f} | "
                     f"{m['final_rel_err_median']:.4f} | **{s['final_rel_err_median']:.4f}** | {a['cover90']:.3f} | {m['cover90']:.3f} | {s['cover90']:.3f} |")
    lines += ["", f"Cells fitted on every source (disagreement edge {model.disagreement_edge:.3g}):", "",
              "| cell (cutoff bin, kind, x kind, points, agreement) | learned weight | spread | tasks |", "|---|---|---|---|"]
    for k, c in sorted(model.cells.items()):
        lines.append(f"| {k} | {dict(c.weights)['learned']:.2f} | {c.spread:g} | {c.n_tasks} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
