"""The bench from data to results: load sources, make tasks, run engines, score, aggregate, time."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import LOADERS, CurveRecord, SourceLoad, load_source, load_table, synthetic_curves
from .data.synthetic import lcpfn_prior_curves
from curvecast.dataplane import DataPlaneSettings

from .cache import DEFAULT_CACHE_DIR
from .engines import BASELINES, CALIBRATION_BAR, CURVECAST_ENGINES, DEFAULT_ENGINES, E2E_QUANTILES, SLOW_BASELINES, resolve_engines
from .metrics import PIT_LEVELS, TaskScore, aggregate, event_reliability, event_stats, pit_reliability
from .runner import EngineRun, reproducibility, run_engine, served
from .speed import machine_info, measure_speed
from .tasks import CUTOFFS, Task, make_tasks

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOAD_RESULTS = REPO_ROOT / "docs" / "bench" / "load.json"  # written by python -m bench.load
QUICK_CAP = 3
FULL_CAP = 100
N_EXAMPLES = 2


@dataclass
class BenchConfig:
    quick: bool = False
    data: Path | None = None
    curves: list[Path] = field(default_factory=list)
    out: Path = Path("docs/bench/latest")
    engines: tuple[str, ...] = DEFAULT_ENGINES
    sources: tuple[str, ...] | None = None  # None: synthetic in quick mode, then every real source
    mode: str = "inprocess"
    server: str | None = None
    seed: int = 0
    split: str = "all"  # all | tune | report: a stable half of each real source (see data.sources.in_split)
    cap: int | None = None
    model: Path | None = None
    device: str = "cpu"  # learned engine execution provider in-process: cpu or cuda (falls back to CPU)
    plots: bool = True
    speed: bool = True
    load_results: Path | None = None
    cutoffs: tuple[float, ...] = CUTOFFS
    command: str = ""
    cache_dir: Path | None = DEFAULT_CACHE_DIR  # slow baselines' answers (None: no cache)

    @property
    def effective_cap(self) -> int:
        return self.cap if self.cap is not None else (QUICK_CAP if self.quick else FULL_CAP)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load_all(cfg: BenchConfig) -> list[SourceLoad]:
    names = list(cfg.sources) if cfg.sources is not None else ((["synthetic"] if cfg.quick else []) + list(LOADERS))
    loads: list[SourceLoad] = []
    for name in names:
        if name == "synthetic":
            loads.append(SourceLoad("synthetic", synthetic_curves(6 if cfg.quick else 12, seed=cfg.seed)))
            continue
        if name == "lcpfn_prior":  # opt-in: LC-PFN's own prior, to compare with its paper's Table 1
            loads.append(SourceLoad("lcpfn_prior", lcpfn_prior_curves(cfg.effective_cap, seed=cfg.seed), notes=["LC-PFN default prior, 100 points, values in [0, 1]; LC-PFN P3 own-units LL 1.76/2.13/2.40/2.52"]))
            continue
        if name not in LOADERS:
            raise SystemExit(f"unknown source {name!r}; known: synthetic, lcpfn_prior, {', '.join(LOADERS)}")
        t0 = time.perf_counter()
        s = load_source(name, cfg.data, cfg.effective_cap, cfg.seed, cfg.split)
        log(f"source {name}: " + (f"skipped ({s.skipped})" if s.skipped else f"{len(s.records)} curves in {time.perf_counter() - t0:.1f}s"))
        loads.append(s)
    for path in cfg.curves:
        recs = load_table(path)
        by: dict[str, list[CurveRecord]] = {}
        for r in recs:
            by.setdefault(r.source, []).append(r)
        for src, rs in by.items():
            loads.append(SourceLoad(src, rs, notes=[f"user curves from {path}"]))
    return loads


def pick_examples(tasks: list[Task], sources: list[str]) -> dict[str, list[Task]]:
    """The first N_EXAMPLES curves of each source, at the first of 20/40/10/80% cutoffs they have."""
    out: dict[str, list[Task]] = {}
    for s in sources:
        ts = [t for t in tasks if t.source == s]
        chosen: list[Task] = []
        seen: set[str] = set()
        for c in (0.2, 0.4, 0.1, 0.8):
            for t in ts:
                if t.cutoff == c and t.run_id not in seen and len(chosen) < N_EXAMPLES:
                    chosen.append(t)
                    seen.add(t.run_id)
        out[s] = chosen
    return out


REPRO_PER_SOURCE = 8


def _repro_sample(tasks: list[Task], sources: list[str], per_source: int) -> list[Task]:
    """A few tasks of every source (every cutoff) for the reproducibility check, chosen by key order."""
    out: list[Task] = []
    for src in sources:
        mine = sorted((t for t in tasks if t.source == src), key=lambda t: t.key)
        out += mine[:: max(len(mine) // per_source, 1)][:per_source]
    return out


def _groups(runs: list[EngineRun], sources: list[str], cutoffs: tuple[float, ...]) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    macro: dict[str, Any] = {}
    reliability: dict[str, Any] = {}
    for run in runs:
        by: dict[tuple[str, float], list[TaskScore]] = {}
        for s in run.scores:
            by.setdefault((s.source, s.cutoff), []).append(s)
        for src in sources:
            for c in cutoffs:
                if (src, c) in by:
                    groups.append({"source": src, "cutoff": c, "engine": run.label, "metrics": aggregate(by[(src, c)])})
        # macro over sources (each source weighs the same), per cutoff and over all cutoffs
        per_eng: dict[str, Any] = {}
        mine = [g for g in groups if g["engine"] == run.label]
        for c in list(cutoffs) + [None]:
            sel = [g["metrics"] for g in mine if c is None or g["cutoff"] == c]
            if not sel:
                continue
            keys = {k for m in sel for k in m}
            agg: dict[str, float] = {}
            for k in keys:
                vals = [m[k] for m in sel if k in m and m[k] == m[k]]
                if k.startswith("n_") or k == "stt_n":  # counts add up; the rest are averaged
                    agg[k] = float(sum(vals))
                elif vals:
                    agg[k] = float(sum(vals) / len(vals))
            per_eng["all" if c is None else f"{c:g}"] = agg
        per_eng["by_source"] = {src: aggregate([s for s in run.scores if s.source == src]) for src in sources if any(s.source == src for s in run.scores)}
        macro[run.label] = per_eng
        rel: dict[str, list[float]] = {}
        for src in sources:
            pit = [s.pit for s in run.scores if s.source == src and s.error is None]
            if pit:
                rel[src] = pit_reliability(np.concatenate(pit)).tolist()
        if rel:  # macro: every source weighs the same, as in the headline table
            rel["all"] = np.mean(np.array(list(rel.values())), axis=0).tolist()
        reliability[run.label] = rel
    return groups, macro, reliability


EVENTS = ("beats_incumbent", "reaches_top_quartile")


def _events(runs: list[EngineRun], sources: list[str], cutoffs: tuple[float, ...]) -> dict[str, Any]:
    """Calibration of the decision probabilities read off each engine's final-value marginal."""
    out: dict[str, Any] = {}
    for run in runs:
        per: dict[str, Any] = {}
        for ev in EVENTS:
            pairs = [(s, s.events[ev]) for s in run.scores if s.error is None and ev in s.events]
            if not pairs:
                continue
            per[ev] = {
                "all": event_stats([e for _, e in pairs]),
                "by_source": {src: event_stats([e for s, e in pairs if s.source == src]) for src in sources if any(s.source == src for s, _ in pairs)},
                "by_cutoff": {f"{c:g}": event_stats([e for s, e in pairs if s.cutoff == c]) for c in cutoffs if any(s.cutoff == c for s, _ in pairs)},
                "reliability": event_reliability([e for _, e in pairs]),
            }
        out[run.label] = per
    return out


def run_bench(cfg: BenchConfig) -> tuple[dict[str, Any], dict[str, list[Task]], dict[str, dict[str, Any]]]:
    t_start = time.perf_counter()
    loads = load_all(cfg)
    records = [r for s in loads for r in s.records]
    tasks = make_tasks(records, cfg.cutoffs)
    sources_run = [s.name for s in loads if any(t.source == s.name for t in tasks)]
    log(f"{len(records)} curves -> {len(tasks)} tasks over {len(sources_run)} sources")
    engines, skipped, load_s = resolve_engines(cfg.engines, cfg.mode, cfg.server, cfg.model, cfg.device, cfg.cache_dir)
    for name, why in skipped.items():
        log(f"engine {name} skipped: {why}")
    for _, eng in engines:  # baselines that learn from the other curves of a source (leave-one-out inside)
        prep = getattr(eng, "prepare", None)
        if prep is not None:
            prep(records, tasks)
    examples = pick_examples(tasks, sources_run)
    example_keys = {t.key for ts in examples.values() for t in ts}
    runs: list[EngineRun] = []
    info: dict[str, str] = {}
    repro: dict[str, dict[str, float]] = {}
    repro_tasks = _repro_sample(tasks, sources_run, 4 if cfg.quick else REPRO_PER_SOURCE)
    for label, eng in engines:
        t0 = time.perf_counter()
        post = served if label in CURVECAST_ENGINES and cfg.mode == "inprocess" else None  # the served answer
        run = run_engine(label, eng, tasks, example_keys, post=post)
        if label in CURVECAST_ENGINES:
            repro[label] = reproducibility(eng, repro_tasks, post)
        try:  # after the run: e2e engines report which server engines answered
            i = eng.info()
            info[label] = f"{i.name} {i.version} on {i.provider}" + (f" – {i.detail}" if i.detail else "")
        except Exception as e:  # noqa: BLE001
            info[label] = f"info() failed: {e}"
        n_fail = sum(1 for s in run.scores if s.error is not None)
        cached = f" (cache: {eng.stats.hits} hits, {eng.stats.misses} computed)" if hasattr(eng, "stats") else ""
        log(f"engine {label}: {len(tasks)} tasks in {time.perf_counter() - t0:.1f}s, {n_fail} failed{cached}")
        runs.append(run)
    groups, macro, reliability = _groups(runs, sources_run, cfg.cutoffs)
    quality_s = time.perf_counter() - t_start
    speed: dict[str, Any] = {"engines": {}}
    if cfg.speed and tasks:
        n_single = 10 if cfg.quick else 40
        batch_sizes = (16,) if cfg.quick else (16, 64)
        speed_tasks = [t for t in tasks if t.cutoff == 0.4] or tasks
        speed["n_single"] = n_single
        for label, eng in engines:
            inner = getattr(eng, "inner", eng)  # time the engine itself, never its cache
            slow = label in SLOW_BASELINES
            speed["engines"][label] = measure_speed(inner, speed_tasks, min(n_single, 10) if slow else n_single, batch_sizes[:1] if slow else batch_sizes, repeats=1 if slow else 2)
            log(f"speed {label}: p50 {speed['engines'][label].get('latency_p50_ms', float('nan')):.2f} ms")
    load = None
    load_path = cfg.load_results or (DEFAULT_LOAD_RESULTS if DEFAULT_LOAD_RESULTS.exists() else None)
    if load_path is not None:
        try:
            load = json.loads(Path(load_path).read_text())
        except (OSError, ValueError) as e:
            log(f"load results {load_path} unreadable: {e}")
    results: dict[str, Any] = {
        "config": {
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": cfg.command,
            "mode": cfg.mode,
            "server": cfg.server,
            "quick": cfg.quick,
            "seed": cfg.seed,
            "split": cfg.split,
            "cap": cfg.effective_cap,
            "cutoffs": list(cfg.cutoffs),
            "data": str(cfg.data) if cfg.data else None,
            "device": cfg.device,
            "e2e_quantiles": list(E2E_QUANTILES) if cfg.mode == "e2e" else [],
        },
        "machine": machine_info(),
        "sources": {
            s.name: {"n_curves": len(s.records), "n_tasks": sum(1 for t in tasks if t.source == s.name), "notes": s.notes, "skipped": s.skipped}
            for s in loads
        },
        "sources_run": sources_run,
        "engines": {"requested": list(cfg.engines), "ran": [r.label for r in runs], "skipped": skipped, "info": info, "errors": {r.label: r.errors for r in runs}},
        "groups": groups,
        "macro": macro,
        "reliability": reliability,
        "events": _events(runs, sources_run, cfg.cutoffs),
        "reproducibility": repro,
        "pit_levels": PIT_LEVELS.tolist(),
        "tasks": [
            {"key": s.key, "engine": s.engine, "error": s.error, "ll": s.ll, "ll_norm": s.ll_norm, "crps_norm": s.crps_norm, "final_pred": s.final_pred, "final_rel_err": s.final_rel_err, "stt_err": s.stt_err, "sanity": list(s.sanity)}
            for r in runs
            for s in r.scores
        ],
        "speed": speed,
        "load": load,
        "timing": {"total_s": quality_s, "engine_wall_s": {r.label: r.wall_s for r in runs}, "engine_load_s": load_s, "baseline_cost": {label: eng.stats.as_dict() for label, eng in engines if hasattr(eng, "stats")}},
        "baselines": {"names": [b for b in BASELINES if b in [r.label for r in runs]], "calibration_bar": CALIBRATION_BAR, "default_engine": DataPlaneSettings().default_engine},
    }
    try:  # scaling-law section (bench/scaling.py is owned by another helper): optional hook
        from . import scaling  # type: ignore[attr-defined]

        hook = getattr(scaling, "report_section", None)
        if hook is not None:
            md, data = hook(cfg.data, cfg.quick, cfg.seed)
            results["scaling_markdown"], results["scaling"] = md, data
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001
        results["scaling_markdown"] = f"## Scaling laws\n\nScaling section failed: {type(e).__name__}: {e}"
    engine_examples = {r.label: r.examples for r in runs}
    return results, examples, engine_examples
