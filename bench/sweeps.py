"""Model selection on real sweeps: how much compute do stopping rules save, and at what regret?

The protocol of the LC-PFN paper (Sec. 4.3): for a task (a set of configurations trained on the same
problem), draw ``runs`` configurations in ``orders`` random orders (fixed seeds) and train them one
after the other under a stopping method that sees each curve point by point. A run's value is the best
value it showed before it stopped (the checkpoint one would keep); the incumbent is the best value of
the runs before it. Per order we record the cumulative compute after each run and the regret
``|best value found - best value of any run on the task|``.

Compute: a point of a step/epoch curve costs the training between it and the previous point (dx, or
the recorded compute when a source gives it); a point of a sample-wise curve (LCDB) costs a training
on that many samples (x). Compute is reported in "full runs" (a task's mean cost of a complete run),
so no stopping spends about ``runs`` full runs.

Scores per task: ``speedup`` = compute no stopping needs to reach its final mean regret / compute the
method needs to reach the same mean regret (within ``REGRET_TOL`` of the task's regret scale; "n/r"
when it never does), and the mean normalised regret at 25% / 50% of no stopping's compute. Normalised
regret divides by the task's scale = median run value - best run value.

Methods: ``none``; Optuna's ``MedianPruner``, ``SuccessiveHalvingPruner``, ``HyperbandPruner`` and
``PatientPruner`` (patience) driven through the real optuna library with ask/tell, trial.report and
trial.should_prune; the LC-PFN rule (stop when P(some remaining point beats the incumbent) < 5%,
checked at every point from the 2nd on); Curvecast's policy (``curvecast.decisions.policy.decide``).
LC-PFN's rule and Curvecast's policy use the same engine, so their difference is the decision rule.

Calibration: at 10/20/40/80% of each pool run, against an incumbent drawn as the best of 1-19 other
runs, the probabilities "beats the incumbent" and "reaches the task target (the 20th-percentile run
value) within the budget" are scored (ECE, Brier skill vs the base rate, reliability bins), raw and
after a recalibration map fitted on the tuning tasks only.

Tasks are split by a fixed rule into tuning tasks (thresholds and recalibration fitted there) and
report tasks (all scores in the headline tables). Data: TaskSet (Metz et al. 2020, Apache-2.0), LCDB
1.0 (Mohr et al., MIT), ScAn-Bench VLM (automl, MIT), read from $CURVECAST_DATA or ../shared/data.

    python -m bench.sweeps --quick              # a few minutes on 2 cores
    python -m bench.sweeps --tune               # full run, re-chooses the policy thresholds
    python -m bench.sweeps --table my.csv       # your own sweeps (bench curve table, column "task")
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from curvecast.decisions.calibration import (
    IDENTITY, Recalibration, calibration_report, fit_isotonic, fit_platt, save_recalibrations,
)
from curvecast.decisions.compute_to_target import compute_to_target
from curvecast.decisions.policy import decide
from curvecast.decisions.presets import PRESETS
from curvecast.domain.curve import Goal

from .sweep_data import (  # noqa: F401  (re-exported: the benchmark's public names live here too)
    TARGET_QUANTILE, SweepRun, SweepTask, _make_run, _rng, _step_cost, default_data_dir, load_lcdb_tasks,
    load_scan_vlm_tasks, load_table_tasks, load_taskset_tasks,
)
from .sweep_policies import (  # noqa: F401
    CurvecastPolicy, LcpfnRule, Method, OptunaMethod, PolicyKnobs, optuna_methods, sibling_of, with_sweep,
)
from curvecast.sweep import DEFAULT_PARAMS as SWEEP_PARAMS
from .sweep_report import (  # noqa: F401
    COLORS, METHOD_ORDER, _fmt_speed, _json_default, render_markdown, rerender, summarize, write_plots,
)
from .sweep_sim import (  # noqa: F401
    GRID_EXT, GRID_N, REGRET_TOL, Forecast, ForecastCache, MethodScore, OrderTrace, mean_curve, orders_for,
    score_task, simulate,
)

CUTOFFS = (0.1, 0.2, 0.4, 0.8)
# Preset candidates searched on the tuning tasks:
# (min_prob_beat_incumbent, compute_weight, min_fraction_observed, min_points).
PRESET_GRID = tuple((p, 0.0, 0.0, 2) for p in (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1)) + (
    (0.005, 0.02, 0.0, 2), (0.01, 0.05, 0.0, 2),
    *((p, 0.0, 0.2, 2) for p in (0.01, 0.02, 0.05, 0.1)),
    *((p, 0.0, 0.3, 2) for p in (0.02, 0.05, 0.1, 0.2)),
    (0.02, 0.0, 0.0, 4), (0.05, 0.0, 0.0, 4),
)
# What each preset may cost on every source's tuning tasks: excess normalised regret, best-killed rate.
PRESET_LIMITS = {"safe": (0.001, 0.02), "balanced": (0.005, 0.05), "aggressive": (0.02, 0.25)}


# ---- calibration pass ---------------------------------------------------------------------------------
@dataclass
class CalibrationSample:
    """Raw probabilities and outcomes. ``beat``: the result is the best checkpoint (the protocol's
    meaning); ``beat_last``: the result is the value at the budget (no checkpoint kept); ``*_sweep``: the
    same events forecast with sweep context (the incumbent's runs, whole, as the siblings)."""

    p_beat: list[float] = field(default_factory=list)
    y_beat: list[float] = field(default_factory=list)
    p_beat_last: list[float] = field(default_factory=list)
    y_beat_last: list[float] = field(default_factory=list)
    p_target: list[float] = field(default_factory=list)
    y_target: list[float] = field(default_factory=list)
    p_beat_sweep: list[float] = field(default_factory=list)
    y_beat_sweep: list[float] = field(default_factory=list)
    p_beat_last_sweep: list[float] = field(default_factory=list)
    y_beat_last_sweep: list[float] = field(default_factory=list)

    def extend(self, other: "CalibrationSample") -> None:
        for k in ("p_beat", "y_beat", "p_beat_last", "y_beat_last", "p_target", "y_target", "p_beat_sweep",
                  "y_beat_sweep", "p_beat_last_sweep", "y_beat_last_sweep"):
            getattr(self, k).extend(getattr(other, k))


def _last_value(run: SweepRun) -> float | None:
    """A run's result without checkpoints: its value at the end; None when it diverged."""
    return None if run.diverged_at is not None or not len(run.y) else float(run.y[-1])


def calibration_samples(task: SweepTask, cache: ForecastCache, max_runs: int, seed: int) -> CalibrationSample:
    """Raw probabilities at fixed cutoffs of up to ``max_runs`` runs, and what happened. Each meaning of
    "result" gets its own incumbent (best of 1-19 other runs' results of that meaning) and only runs
    that do not already lead under it (a leader's P is not a forecast)."""
    out = CalibrationSample()
    rng = _rng("calib", task.source, task.name, seed)
    idx = rng.permutation(len(task.runs))[:max_runs]
    target = task.target
    for i in idx:
        run = task.runs[int(i)]
        others = np.delete(np.arange(len(task.runs)), i)
        full, last = task.value(run), _last_value(run)
        for c in CUTOFFS:
            n = int(round(c * len(run.y)))
            if n < 2 or n >= len(run.y):
                continue
            k = int(rng.integers(1, min(19, len(others)) + 1))
            inc_runs = [task.runs[int(j)] for j in rng.choice(others, size=k, replace=False)]
            fc = cache.get(task, run, n)
            if fc.final is None:
                continue
            incumbent = _best(task, [task.value(r) for r in inc_runs])
            sibs = [s for s in (sibling_of(task, r, r.n_points) for r in inc_runs) if s is not None]
            sw_final, sw_grid = with_sweep(fc, sibs, SWEEP_PARAMS, task.budget)
            if not task.better(task.value(run, n), incumbent):
                rec = decide(replace(fc.query, incumbent=incumbent), fc.final, fc.grid, None, checkpoint_best=True)
                if rec.p_beat_incumbent_raw is not None:
                    out.p_beat.append(rec.p_beat_incumbent_raw)
                    out.y_beat.append(float(task.better(full, incumbent)))
                rec = decide(replace(fc.query, incumbent=incumbent), sw_final, sw_grid, None, checkpoint_best=True)
                if rec.p_beat_incumbent_raw is not None:
                    out.p_beat_sweep.append(rec.p_beat_incumbent_raw)
                    out.y_beat_sweep.append(float(task.better(full, incumbent)))
            lasts = [v for v in (_last_value(r) for r in inc_runs) if v is not None]
            if lasts:
                inc_last = _best(task, lasts)
                if not task.better(float(run.y[n - 1]), inc_last):
                    rec = decide(replace(fc.query, incumbent=inc_last), fc.final, fc.grid, None, checkpoint_best=False)
                    if rec.p_beat_incumbent_raw is not None and not rec.leads:
                        out.p_beat_last.append(rec.p_beat_incumbent_raw)
                        out.y_beat_last.append(float(last is not None and task.better(last, inc_last)))
                    rec = decide(replace(fc.query, incumbent=inc_last), sw_final, sw_grid, None, checkpoint_best=False)
                    if rec.p_beat_incumbent_raw is not None and not rec.leads:
                        out.p_beat_last_sweep.append(rec.p_beat_incumbent_raw)
                        out.y_beat_last_sweep.append(float(last is not None and task.better(last, inc_last)))
            if not task.better(task.value(run, n), target) and task.value(run, n) != target:
                ctt = compute_to_target(replace(fc.query, target=target), fc.grid)
                if ctt is not None and not ctt.already_reached:
                    out.p_target.append(ctt.p_within_budget)
                    out.y_target.append(float(not task.better(target, full)))
    return out


def _best(task: SweepTask, values: Sequence[float]) -> float:
    return float(min(values) if task.goal is Goal.MINIMIZE else max(values))


def fit_recalibration(p: Sequence[float], y: Sequence[float]) -> Recalibration:
    """Identity, Platt or isotonic (isotonic only from 200 samples): whichever has the best Brier score
    in 2-fold cross-validation on the tuning tasks, so a map is only used where it helps out of sample."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(p) < 40 or y.min() == y.max():
        return IDENTITY
    fold = np.arange(len(p)) % 2 == 0
    fits = {"identity": lambda a, b: IDENTITY, "platt": fit_platt}
    if len(p) >= 200:
        fits["isotonic"] = fit_isotonic
    scores = {}
    for name, fit in fits.items():
        s = 0.0
        for a, b in ((fold, ~fold), (~fold, fold)):
            m = fit(p[a], y[a])
            s += float(np.mean((m.apply(p[b]) - y[b]) ** 2))
        scores[name] = s
    best = min(scores, key=scores.get)
    return IDENTITY if best == "identity" else fits[best](p, y)


# ---- orchestration ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    sources: tuple[str, ...] = ("taskset", "lcdb", "scan_vlm")
    orders: int = 40
    runs: int = 20
    pool: int = 100
    lcdb_tasks: int = 12
    max_tasks_per_source: int = 12
    calib_runs: int = 30
    seed: int = 0
    tune: bool = False
    tune_orders: int = 20
    quick: bool = False
    methods: tuple[str, ...] = ()  # only these methods on the report tasks ("none" always); () = all


QUICK = Config(orders=10, pool=40, lcdb_tasks=4, max_tasks_per_source=3, calib_runs=12, tune_orders=8, quick=True)


def split_tasks(tasks: list[SweepTask]) -> tuple[list[SweepTask], list[SweepTask]]:
    """Every third task of a source (sorted by name, starting with the first) tunes; the rest report.
    A source with fewer than 3 tasks only reports."""
    tune, report = [], []
    by_src: dict[str, list[SweepTask]] = {}
    for t in tasks:
        by_src.setdefault(t.source, []).append(t)
    for src, ts in by_src.items():
        ts = sorted(ts, key=lambda t: t.name)
        for i, t in enumerate(ts):
            (tune if len(ts) >= 3 and i % 3 == 0 else report).append(t)
    return tune, report


def load_tasks(cfg: Config, data: Path, table: Path | None, task_column: str) -> tuple[list[SweepTask], list[str]]:
    notes, tasks = [], []
    if table is not None:
        tasks = load_table_tasks(table, task_column)
        notes.append(f"table {table}: {len(tasks)} tasks")
        return tasks, notes
    loaders = {
        "taskset": (data / "taskset" / "taskset_curves.parquet", lambda: load_taskset_tasks(data, cfg.pool, cfg.seed)),
        "lcdb": (data / "lcdb" / "database-accuracy.parquet", lambda: load_lcdb_tasks(data, cfg.lcdb_tasks, cfg.seed)),
        "scan_vlm": (data / "scan_bench" / "vlm" / "data.csv.gz", lambda: load_scan_vlm_tasks(data, cfg.pool, cfg.seed)),
    }
    for src in cfg.sources:
        path, fn = loaders[src]
        if not path.exists():
            notes.append(f"{src}: skipped ({path} not found)")
            continue
        ts = fn()
        ts = sorted(ts, key=lambda t: t.name)
        if len(ts) > cfg.max_tasks_per_source:  # keep tasks spread over the source
            keep = np.unique(np.linspace(0, len(ts) - 1, cfg.max_tasks_per_source).round().astype(int))
            ts = [ts[i] for i in keep]
        tasks.extend(ts)
        notes.append(f"{src}: {len(ts)} tasks, {sum(len(t.runs) for t in ts)} runs "
                     f"({sum(r.diverged_at is not None for t in ts for r in t.runs)} diverged)")
    return tasks, notes


def _trade_off(tasks: list[SweepTask], traces: dict[str, list[OrderTrace]], base: dict[str, list[OrderTrace]],
               n_runs: int) -> dict[str, dict[str, float]]:
    """Per source: gmean compute saving, mean excess normalised regret, mean best-killed rate."""
    by: dict[str, list[MethodScore]] = {}
    for t in tasks:
        sc = score_task({"none": base[t.name], "m": traces[t.name]}, n_runs)["m"]
        by.setdefault(t.source, []).append(sc)
    return {src: {"saving": float(math.exp(np.mean([math.log(max(x.saving, 1e-9)) for x in xs]))),
                  "excess_regret": float(np.mean([x.excess_regret for x in xs])),
                  "best_killed": float(np.mean([x.best_killed for x in xs]))} for src, xs in by.items()}


def select_presets(tasks: list[SweepTask], cache: ForecastCache, cfg: Config, recal: Recalibration,
                   log: Callable[[str], None]) -> tuple[dict[str, PolicyKnobs], list[dict]]:
    """Each preset = the PRESET_GRID point with the largest gmean saving (over sources) whose excess
    regret and best-killed rate stay within PRESET_LIMITS on every source's tuning tasks."""
    orders = {t.name: orders_for(t, cfg.tune_orders, cfg.runs, cfg.seed + 1) for t in tasks}
    base = {t.name: simulate(t, Method(), orders[t.name]) for t in tasks}
    history: list[dict] = []
    for pm, cw, mfo, mp in PRESET_GRID:
        k = PolicyKnobs(min_prob_beat_incumbent=pm, min_points=mp, min_fraction_observed=mfo, compute_weight=cw)
        traces = {t.name: simulate(t, CurvecastPolicy(cache, k, recal), orders[t.name]) for t in tasks}
        per = _trade_off(tasks, traces, base, cfg.runs)
        gm = float(math.exp(np.mean([math.log(v["saving"]) for v in per.values()])))
        history.append({"knobs": asdict(k), "per_source": per, "gmean_saving": gm})
        log(f"  preset candidate p<{pm:g} w={cw:g} f>={mfo:g} n>={mp}: " + ", ".join(
            f"{src} {v['saving']:.2f}x {v['excess_regret']:+.4f} killed {v['best_killed']:.2f}" for src, v in per.items()))
    return choose_presets(history), history


def choose_presets(history: list[dict]) -> dict[str, PolicyKnobs]:
    """Each preset = the candidate with the largest gmean saving within its PRESET_LIMITS: "safe" on
    every source's tuning tasks, "balanced" and "aggressive" on their mean over sources (a source with
    two tuning tasks cannot rule alone: one killed winner in its 40 orders is 2.5%)."""
    chosen: dict[str, PolicyKnobs] = {}
    for name, (max_ex, max_kill) in PRESET_LIMITS.items():
        def within(h: dict) -> bool:
            per = list(h["per_source"].values())
            if name == "safe":
                return all(v["excess_regret"] <= max_ex and v["best_killed"] <= max_kill for v in per)
            return (float(np.mean([v["excess_regret"] for v in per])) <= max_ex
                    and float(np.mean([v["best_killed"] for v in per])) <= max_kill)
        ok = [h for h in history if within(h)]
        pick = max(ok, key=lambda h: h["gmean_saving"]) if ok else history[0]
        chosen[name] = PolicyKnobs(**pick["knobs"])
    return chosen


def preset_knobs() -> dict[str, PolicyKnobs]:
    """The shipped presets (curvecast.decisions.presets) as benchmark knobs."""
    return {name: PolicyKnobs.from_preset(name) for name in PRESETS}


def run_benchmark(cfg: Config, engine, out: Path, table: Path | None = None, task_column: str = "task",
                  write_recalibration: bool = False, log: Callable[[str], None] = print) -> dict:
    t_start = time.perf_counter()
    data = default_data_dir()
    tasks, notes = load_tasks(cfg, data, table, task_column)
    for n in notes:
        log(n)
    if not tasks:
        log("no sweep data found: nothing to do (set CURVECAST_DATA or pass --table)")
        return {"skipped": "no data", "notes": notes}
    cache = ForecastCache(engine)
    tune_tasks, report_tasks = split_tasks(tasks)
    log(f"{len(tune_tasks)} tuning tasks, {len(report_tasks)} report tasks; engine {cache.name}")

    # 1. calibration samples (raw probabilities) on every task
    calib: dict[str, CalibrationSample] = {}
    for t in tasks:
        calib[t.name] = calibration_samples(t, cache, cfg.calib_runs, cfg.seed)
    pool_tune, pool_rep = CalibrationSample(), CalibrationSample()
    for t in tune_tasks:
        pool_tune.extend(calib[t.name])
    for t in report_tasks:
        pool_rep.extend(calib[t.name])
    recal_beat = fit_recalibration(pool_tune.p_beat, pool_tune.y_beat)
    recal_last = fit_recalibration(pool_tune.p_beat_last, pool_tune.y_beat_last)
    recal_target = fit_recalibration(pool_tune.p_target, pool_tune.y_target)
    events = {  # event -> (p, y on the report tasks, the map fitted on the tuning tasks)
        "beat_incumbent": ("p_beat", "y_beat", recal_beat),
        "beat_incumbent_last": ("p_beat_last", "y_beat_last", recal_last),
        "target_within_budget": ("p_target", "y_target", recal_target),
        # with sweep context, under the map the server applies (fitted without context) ...
        "beat_incumbent_sweep": ("p_beat_sweep", "y_beat_sweep", recal_beat),
        "beat_incumbent_last_sweep": ("p_beat_last_sweep", "y_beat_last_sweep", recal_last),
        # ... and under a map fitted on the tuning tasks' probabilities with context
        "beat_incumbent_sweep_own_map": ("p_beat_sweep", "y_beat_sweep",
                                         fit_recalibration(pool_tune.p_beat_sweep, pool_tune.y_beat_sweep)),
        "beat_incumbent_last_sweep_own_map": ("p_beat_last_sweep", "y_beat_last_sweep",
                                              fit_recalibration(pool_tune.p_beat_last_sweep, pool_tune.y_beat_last_sweep)),
    }
    cal = {}
    for ev, (pk, yk, m) in events.items():
        pr, yr = getattr(pool_rep, pk), getattr(pool_rep, yk)
        cal[ev] = {"raw": calibration_report(pr, yr).as_dict(),
                   "recalibrated": calibration_report(m.apply(np.asarray(pr, dtype=np.float64)), yr).as_dict(),
                   "map": m.to_dict()}
    per_source_cal = {}
    for src in sorted({t.source for t in report_tasks}):
        s = CalibrationSample()
        for t in report_tasks:
            if t.source == src:
                s.extend(calib[t.name])
        per_source_cal[src] = {ev: _cal_brief(getattr(s, pk), getattr(s, yk), m) for ev, (pk, yk, m) in events.items()}
    log(f"calibration done ({time.perf_counter() - t_start:.0f}s, {cache.calls} forecasts)")
    if write_recalibration:
        save_recalibrations({cache.name: {"beat_incumbent": recal_beat, "beat_incumbent_last": recal_last,
                                          "target_within_budget": recal_target}},
                            note=f"fitted by bench.sweeps on tuning tasks: {', '.join(t.name for t in tune_tasks)}")

    # 2. thresholds: the shipped presets, or re-chosen on the tuning tasks
    presets = preset_knobs()
    history: list[dict] = []
    if cfg.tune and tune_tasks:
        presets, history = select_presets(tune_tasks, cache, cfg, recal_beat, log)
        log("chosen presets: " + "; ".join(f"{k} {asdict(v)}" for k, v in presets.items())
            + f" ({time.perf_counter() - t_start:.0f}s)")
    knobs = presets["balanced"]

    # 3. simulation on the report tasks
    results: dict[str, dict] = {}
    for t in report_tasks:
        orders = orders_for(t, cfg.orders, cfg.runs, cfg.seed)
        cc = CurvecastPolicy(cache, knobs, recal_beat)
        methods: list[Method] = [Method(), *optuna_methods(), LcpfnRule(cache), cc,
                                 CurvecastPolicy(cache, presets["safe"], recal_beat, name="curvecast_safe"),
                                 CurvecastPolicy(cache, presets["aggressive"], recal_beat, name="curvecast_aggressive")]
        # the server's default policy (StopPolicy()), whatever the presets are
        methods.append(CurvecastPolicy(cache, PolicyKnobs.server_default(), recal_beat, name="curvecast_default"))
        # the same policies with sweep context: the order's earlier runs, as far as each was trained
        methods += [CurvecastPolicy(cache, knobs, recal_beat, name="curvecast_sweep", sweep=SWEEP_PARAMS),
                    CurvecastPolicy(cache, PolicyKnobs.server_default(), recal_beat, name="curvecast_default_sweep",
                                    sweep=SWEEP_PARAMS),
                    CurvecastPolicy(cache, presets["aggressive"], recal_beat, name="curvecast_aggressive_sweep",
                                    sweep=SWEEP_PARAMS)]
        if recal_beat.kind != "identity":  # the same policy on raw probabilities, to show what the map does
            methods.append(CurvecastPolicy(cache, knobs, IDENTITY, name="curvecast_raw"))
        if cfg.methods:
            methods = [m for m in methods if m.name == "none" or m.name in cfg.methods]
        traces, secs = {}, {}
        for m in methods:
            t0 = time.perf_counter()
            traces[m.name] = simulate(t, m, orders)
            secs[m.name] = time.perf_counter() - t0
        scores = score_task(traces, cfg.runs)
        results[f"{t.source}/{t.name}"] = {
            "source": t.source, "task": t.name, "runs_in_pool": len(t.runs),
            "diverged_in_pool": sum(r.diverged_at is not None for r in t.runs),
            "methods": {k: asdict(v) for k, v in scores.items()}, "seconds": secs,
            "curvecast_actions": cc.actions,
        }
        log(f"{t.source}/{t.name}: " + ", ".join(
            f"{k} {v.saving:.2f}x {v.excess_regret:+.3f} k={v.best_killed:.2f}" for k, v in scores.items())
            + f" ({time.perf_counter() - t_start:.0f}s)")

    summary = summarize(results)
    payload = {
        "config": asdict(cfg), "engine": cache.name, "knobs": asdict(knobs), "tuning_history": history,
        "presets": {k: asdict(v) for k, v in presets.items()},
        "tune_tasks": [f"{t.source}/{t.name}" for t in tune_tasks], "notes": notes,
        "calibration": cal, "calibration_per_source": per_source_cal, "results": results, "summary": summary,
        "forecasts": {"calls": cache.calls, "seconds": cache.seconds, "failures": cache.failures},
        "seconds": time.perf_counter() - t_start, "regret_tol": REGRET_TOL,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweeps.json").write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    write_plots(payload, out)
    (out / "README.md").write_text(render_markdown(payload))
    log(f"wrote {out}/README.md, sweeps.json, sweeps_regret.png, sweeps_calibration.png "
        f"({payload['seconds']:.0f}s, {cache.calls} forecasts in {cache.seconds:.0f}s)")
    return payload


def _cal_brief(p, y, recal: Recalibration) -> dict:
    raw = calibration_report(p, y)
    rc = calibration_report(recal.apply(np.asarray(p, dtype=np.float64)), y) if len(p) else raw
    return {"n": raw.n, "base_rate": raw.base_rate, "ece_raw": raw.ece, "bss_raw": raw.brier_skill,
            "ece_recal": rc.ece, "bss_recal": rc.brier_skill}




def load_engine(spec: str):
    """``analytic`` (default), ``learned`` (newest model) or ``learned:PATH``."""
    name, _, path = spec.partition(":")
    if name == "analytic":
        from curvecast.engines.analytic.engine import AnalyticEngine

        return AnalyticEngine()
    if name == "learned":
        from curvecast.engines.learned.engine import LearnedEngine

        if not path:
            from .engines import default_model_path

            found = default_model_path()
            if found is None:
                raise SystemExit("no learned model found; pass --engine learned:PATH")
            path = str(found)
        return LearnedEngine.load(path)
    raise SystemExit(f"unknown engine {spec!r}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sweeps", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 tasks per source (LCDB 4 loaded), 10 orders, pool 40")
    ap.add_argument("--sources", default="taskset,lcdb,scan_vlm")
    ap.add_argument("--table", type=Path, help="bench curve table of your own sweeps (column --task-column groups runs)")
    ap.add_argument("--task-column", default="task")
    ap.add_argument("--engine", default="analytic", help="analytic | learned | learned:PATH")
    ap.add_argument("--orders", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--pool", type=int)
    ap.add_argument("--max-tasks", type=int, help="tasks per source")
    ap.add_argument("--tune", action="store_true", help="re-choose the policy thresholds on the tuning tasks")
    ap.add_argument("--write-recalibration", action="store_true", help="store the fitted maps in curvecast/decisions/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/bench/sweeps"))
    ap.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite report and plots from a sweeps.json")
    ap.add_argument("--merge", type=Path, metavar="JSON", help="with --rerender: take the methods (and presets) "
                    "of another run on the same tasks and orders")
    ap.add_argument("--methods", default="", help="comma-separated methods to simulate on the report tasks")
    a = ap.parse_args(argv)
    if a.rerender is not None:
        rerender(a.rerender, a.out, merge=a.merge)
        return 0
    cfg = QUICK if a.quick else Config()
    over = {k: v for k, v in {"orders": a.orders, "runs": a.runs, "pool": a.pool, "max_tasks_per_source": a.max_tasks}.items() if v is not None}
    cfg = replace(cfg, sources=tuple(s for s in a.sources.split(",") if s), tune=a.tune, seed=a.seed,
                  methods=tuple(m for m in a.methods.split(",") if m), **over)
    if a.max_tasks is not None:
        cfg = replace(cfg, lcdb_tasks=a.max_tasks)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    engine = load_engine(a.engine)
    run_benchmark(cfg, engine, a.out, a.table, a.task_column, a.write_recalibration,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
