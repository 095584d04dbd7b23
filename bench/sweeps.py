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
import warnings
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from curvecast.decisions.calibration import (
    IDENTITY, Recalibration, calibration_report, fit_isotonic, fit_platt, save_recalibrations,
)
from curvecast.decisions.compute_to_target import compute_to_target, decision_grid
from curvecast.decisions.policy import Action, decide, divergence_reason, p_beats
from curvecast.domain.curve import Curve, ForecastQuery, Goal, LrSchedule, RunInfo, ScheduleShape, StopPolicy, XKind
from curvecast.domain.distribution import Marginals

REGRET_TOL = 0.01  # "equal regret": within 1% of the task's regret scale
GRID_N, GRID_EXT = 24, 2.0  # decision grid used in the sweeps (12 points inside the budget)
CUTOFFS = (0.1, 0.2, 0.4, 0.8)
TARGET_QUANTILE = 0.2  # task target: the value 20% of the runs reach
METHOD_ORDER = ("none", "median", "successive_halving", "hyperband", "patience", "lcpfn_rule", "curvecast", "curvecast_raw")
COLORS = dict(zip(METHOD_ORDER, ("black", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")))

# Defaults chosen by `--tune` on the tuning tasks (see the report); StopPolicy fields + compute weight.
TUNED = {"min_prob_beat_incumbent": 0.01, "min_relative_improvement": 0.0, "min_points": 2,
         "min_fraction_observed": 0.0, "compute_weight": 0.0}


# ---- data -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRun:
    """One configuration's curve: finite values, then (if it diverged) one more point that ended it."""

    run_id: str
    x: np.ndarray
    y: np.ndarray
    cost: np.ndarray  # compute to observe each point; length len(y) + (1 if diverged)
    diverged_at: float | None = None
    lr: np.ndarray | None = None
    schedule: LrSchedule | None = None
    n_params: float | None = None

    @property
    def n_points(self) -> int:
        """Points a run shows if never stopped (the diverged point included)."""
        return len(self.y) + (1 if self.diverged_at is not None else 0)


@dataclass(frozen=True)
class SweepTask:
    source: str
    name: str
    goal: Goal
    x_kind: XKind
    budget: float
    runs: tuple[SweepRun, ...]
    lower_bound: float | None = None
    upper_bound: float | None = None

    def value(self, run: SweepRun, n: int | None = None) -> float:
        """Best value among the first ``n`` finite points (all when None)."""
        y = run.y if n is None else run.y[: min(n, len(run.y))]
        return float(np.min(y)) if self.goal is Goal.MINIMIZE else float(np.max(y))

    def better(self, a: float, b: float) -> bool:
        return a < b if self.goal is Goal.MINIMIZE else a > b

    @property
    def best(self) -> float:
        vals = [self.value(r) for r in self.runs]
        return float(min(vals)) if self.goal is Goal.MINIMIZE else float(max(vals))

    @property
    def regret_scale(self) -> float:
        vals = np.array([self.value(r) for r in self.runs])
        scale = abs(float(np.median(vals)) - self.best)
        return scale if scale > 0 else max(abs(self.best), 1e-12)

    @property
    def full_run_cost(self) -> float:
        return float(np.mean([r.cost.sum() for r in self.runs if r.diverged_at is None] or [1.0]))

    @property
    def target(self) -> float:
        vals = np.array([self.value(r) for r in self.runs])
        q = TARGET_QUANTILE if self.goal is Goal.MINIMIZE else 1.0 - TARGET_QUANTILE
        return float(np.quantile(vals, q))


def _rng(*keys: object) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in keys])


def _step_cost(x: np.ndarray, x_kind: XKind, n_extra: int = 0, x_next: float | None = None) -> np.ndarray:
    xs = np.concatenate([x, [x_next]]) if n_extra and x_next is not None else x
    if x_kind is XKind.SAMPLES:
        return xs.astype(np.float64)
    return np.diff(np.concatenate([[0.0], xs])).astype(np.float64)


def load_taskset_tasks(data: Path, pool: int, seed: int, min_points: int = 3) -> list[SweepTask]:
    """TaskSet valid loss, 51 points (x = 1..51), diverged runs kept (cut at their first NaN)."""
    import pandas as pd

    df = pd.read_parquet(data / "taskset" / "taskset_curves.parquet", columns=["task", "config_id", "step_idx", "valid_loss"])
    df = df.sort_values(["task", "config_id", "step_idx"])
    tasks = []
    for task, g in df.groupby("task", sort=True):
        ids = np.sort(g["config_id"].unique())
        chosen = set(_rng("taskset", task, seed).choice(ids, size=min(pool, len(ids)), replace=False).tolist())
        runs = []
        for cid, r in g[g["config_id"].isin(chosen)].groupby("config_id", sort=True):
            x = r["step_idx"].to_numpy(np.float64) + 1.0
            y = r["valid_loss"].to_numpy(np.float64)
            run = _make_run(f"{cid}", x, y, XKind.STEP, min_points)
            if run is not None:
                runs.append(run)
        tasks.append(SweepTask("taskset", str(task), Goal.MINIMIZE, XKind.STEP, 51.0, tuple(runs), lower_bound=0.0))
    return tasks


def _make_run(run_id: str, x: np.ndarray, y: np.ndarray, x_kind: XKind, min_points: int,
              cost: np.ndarray | None = None, bad: np.ndarray | None = None, **kw) -> SweepRun | None:
    """Cut at the first non-finite (or flagged) value; that point, if any, ends the run as diverged."""
    bad = ~np.isfinite(y) if bad is None else (bad | ~np.isfinite(y))
    n = int(np.argmax(bad)) if bad.any() else len(y)
    if n < min_points:
        return None
    div = float(x[n]) if n < len(y) else None
    c = _step_cost(x[: n + (1 if div is not None else 0)], x_kind) if cost is None else cost[: n + (1 if div is not None else 0)]
    lr = kw.pop("lr", None)
    return SweepRun(run_id, x[:n].copy(), y[:n].copy(), np.asarray(c, np.float64), div,
                    lr=None if lr is None else np.asarray(lr)[:n], **kw)


def load_lcdb_tasks(data: Path, n_tasks: int, seed: int, min_anchors: int = 8, min_learners: int = 12) -> list[SweepTask]:
    """LCDB validation accuracy vs training-set size; a task is a dataset, its configurations are the
    learners. Seeds are averaged per anchor; the budget is the largest anchor that 75% of the learners
    reach; learners that stop short of it are dropped."""
    import pandas as pd

    df = pd.read_parquet(data / "lcdb" / "database-accuracy.parquet", columns=["openmlid", "learner", "size_train", "score_valid"])
    df = df[np.isfinite(df["score_valid"].to_numpy())]
    agg = df.groupby(["openmlid", "learner", "size_train"]).score_valid.mean().reset_index()
    cands = []
    for oid, g in agg.groupby("openmlid", sort=True):
        last = g.groupby("learner").size_train.max()
        if len(last) < min_learners:
            continue
        budget = float(np.quantile(last.to_numpy(), 0.25, method="lower"))
        full = last.index[last >= budget]
        anchors = np.sort(g.size_train.unique())
        anchors = anchors[anchors <= budget]
        if len(full) < min_learners or len(anchors) < min_anchors:
            continue
        cands.append((int(oid), g[g.learner.isin(full) & (g.size_train <= budget)], budget))
    pick = _rng("lcdb", seed).permutation(len(cands))[:n_tasks]
    tasks = []
    for i in sorted(pick):
        oid, g, budget = cands[i]
        runs = []
        for learner, r in g.groupby("learner", sort=True):
            r = r.sort_values("size_train")
            run = _make_run(str(learner), r.size_train.to_numpy(np.float64), r.score_valid.to_numpy(np.float64), XKind.SAMPLES, min_anchors)
            if run is not None:
                runs.append(run)
        tasks.append(SweepTask("lcdb", f"openml_{oid}", Goal.MAXIMIZE, XKind.SAMPLES, budget, tuple(runs), 0.0, 1.0))
    return tasks


def load_scan_vlm_tasks(data: Path, pool: int, seed: int, min_epochs: int = 6) -> list[SweepTask]:
    """ScAn-Bench VLM val loss per epoch; a task is the set of configurations planned for the same
    number of epochs (6-10); compute per epoch is the recorded compute (models differ in size);
    diverged epochs (flagged or NaN) end a run."""
    import pandas as pd

    cols = ["config_id", "epoch", "lr", "warmup_steps", "total_global_steps", "total_epochs", "epoch_diverged", "val_loss", "compute_seen", "mparams"]
    df = pd.read_csv(data / "scan_bench" / "vlm" / "data.csv.gz", usecols=cols).sort_values(["config_id", "epoch"])
    tasks = []
    for total, g in df.groupby("total_epochs", sort=True):
        if total < min_epochs:
            continue
        ids = np.sort(g.config_id.unique())
        chosen = set(_rng("scan_vlm", total, seed).choice(ids, size=min(pool, len(ids)), replace=False).tolist())
        runs = []
        for cid, r in g[g.config_id.isin(chosen)].groupby("config_id", sort=True):
            x = r["epoch"].to_numpy(np.float64)
            y = r["val_loss"].to_numpy(np.float64)
            bad = r["epoch_diverged"].to_numpy(bool)
            if not bad.any() and x[-1] < total:
                continue  # incomplete, not diverged: unknown fate
            cost = np.diff(np.concatenate([[0.0], r["compute_seen"].to_numpy(np.float64)]))
            steps_per_epoch = float(r["total_global_steps"].iloc[0]) / float(total)
            sched = LrSchedule(ScheduleShape.COSINE, peak_lr=float(r["lr"].iloc[0]), final_lr=0.0,
                               warmup_steps=float(r["warmup_steps"].iloc[0]) / steps_per_epoch, total_steps=float(total))
            run = _make_run(str(cid), x, y, XKind.EPOCH, 2, cost=cost, bad=bad, lr=sched.lr_at(x), schedule=sched,
                            n_params=float(r["mparams"].iloc[0]) * 1e6)
            if run is not None:
                runs.append(run)
        tasks.append(SweepTask("scan_vlm", f"epochs_{int(total)}", Goal.MINIMIZE, XKind.EPOCH, float(total), tuple(runs), 0.0))
    return tasks


def load_table_tasks(path: Path, task_column: str = "task", min_points: int = 3) -> list[SweepTask]:
    """Sweeps from a bench curve table (see bench/data/table.py); runs grouped by ``task_column``
    (default: one task per source). Compute per point: dx (x for sample-wise), times n_params if given."""
    from .data.table import load_table

    groups: dict[tuple[str, str], list] = {}
    for rec in load_table(path):
        groups.setdefault((rec.source, str(rec.meta.get(task_column, rec.source))), []).append(rec)
    tasks = []
    for (source, name), recs in sorted(groups.items()):
        runs = []
        for rec in recs:
            div = rec.meta.get("diverged_at")
            div = float(div) if div is not None and np.isfinite(div) else None
            cost = _step_cost(np.concatenate([rec.x, [div]]) if div is not None else rec.x, rec.x_kind)
            if rec.n_params:
                cost = cost * rec.n_params
            if len(rec.y) >= min_points:
                runs.append(SweepRun(rec.run_id, rec.x, rec.y, cost, div, rec.lr, rec.schedule, rec.n_params))
        if len(runs) >= 2:
            r0 = recs[0]
            tasks.append(SweepTask(source, name, r0.goal, r0.x_kind, float(max(r.budget for r in recs)), tuple(runs),
                                   r0.lower_bound, r0.upper_bound))
    return tasks


def default_data_dir() -> Path:
    try:
        from .data.sources import default_data_dir as ddd

        return ddd()
    except Exception:  # pragma: no cover - the loader module is optional
        import os

        env = os.environ.get("CURVECAST_DATA")
        return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


# ---- forecasts (cached per task, run and prefix length) -----------------------------------------------
@dataclass
class Forecast:
    query: ForecastQuery
    final: Marginals | None
    grid: Marginals | None
    error: str = ""


class ForecastCache:
    """Engine forecasts on the decision grid for (task, run, prefix), computed once and shared by the
    LC-PFN rule, Curvecast's policy, tuning and calibration (the forecast never depends on the
    incumbent). Engines that are not the in-process analytic one get all prefixes of a run per batch."""

    def __init__(self, engine, batch_all_prefixes: bool | None = None):
        self.engine = engine
        self.name = getattr(engine, "name", type(engine).__name__)
        self.batch = (self.name != "analytic") if batch_all_prefixes is None else batch_all_prefixes
        self._cache: dict[tuple[str, str, str, int], Forecast] = {}
        self.calls = 0
        self.seconds = 0.0
        self.failures = 0

    def query(self, task: SweepTask, run: SweepRun, n: int) -> ForecastQuery:
        curve = Curve(x=run.x[:n], y=run.y[:n], goal=task.goal, x_kind=task.x_kind,
                      lower_bound=task.lower_bound, upper_bound=task.upper_bound,
                      lr=None if run.lr is None else run.lr[:n])
        info = RunInfo(total_steps=task.budget, schedule=run.schedule, model_params=run.n_params)
        q = ForecastQuery(curve=curve, run=info, x_query=np.array([task.budget]))
        return replace(q, x_query=decision_grid(q, n=GRID_N, extension=GRID_EXT))

    def get(self, task: SweepTask, run: SweepRun, n: int) -> Forecast:
        key = (task.source, task.name, run.run_id, n)
        if key not in self._cache:
            todo = list(range(2, len(run.y))) if self.batch else [n]
            todo = [m for m in todo if (task.source, task.name, run.run_id, m) not in self._cache] or [n]
            if n not in todo:
                todo.append(n)
            queries = [self.query(task, run, m) for m in todo]
            t0 = time.perf_counter()
            try:
                results = self.engine.forecast(queries)
            except Exception as exc:  # the whole batch failed: every query fails
                results = [exc] * len(queries)
            self.seconds += time.perf_counter() - t0
            self.calls += len(queries)
            for m, q, res in zip(todo, queries, results):
                self._cache[(task.source, task.name, run.run_id, m)] = _to_forecast(q, res, task.budget)
                self.failures += isinstance(res, Exception)
        return self._cache[key]


def _to_forecast(q: ForecastQuery, res, budget: float) -> Forecast:
    if isinstance(res, Exception):
        return Forecast(q, None, None, f"{type(res).__name__}: {res}")
    grid = res.marginals
    i = int(np.argmin(np.abs(grid.x - budget)))
    return Forecast(q, grid.at(i), grid)


# ---- stopping methods ---------------------------------------------------------------------------------
class Method:
    """Sees a run point by point; returns how many points it observed before stopping."""

    name = "none"

    def new_order(self, task: SweepTask, order: int) -> None:
        pass

    def run(self, task: SweepTask, run: SweepRun, incumbent: float | None) -> int:
        return run.n_points


class OptunaMethod(Method):
    """A real optuna pruner driven by ask/tell; one in-memory study per order; step = point index."""

    def __init__(self, name: str, make_pruner: Callable[[SweepTask], object]):
        self.name = name
        self.make_pruner = make_pruner
        self.study = None

    def new_order(self, task: SweepTask, order: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "minimize" if task.goal is Goal.MINIMIZE else "maximize"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # a fixed study name: Hyperband assigns brackets by hashing it with the trial number
            self.study = optuna.create_study(direction=direction, pruner=self.make_pruner(task),
                                             sampler=optuna.samplers.RandomSampler(seed=order),
                                             study_name=f"{task.source}/{task.name}/{order}")

    def run(self, task: SweepTask, run: SweepRun, incumbent: float | None) -> int:
        import optuna

        trial = self.study.ask()
        n_fin = len(run.y)
        for i in range(n_fin):
            trial.report(float(run.y[i]), step=i + 1)
            if i + 1 < run.n_points and trial.should_prune():
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return i + 1
        if run.diverged_at is not None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, task.value(run))
        return run.n_points


def optuna_methods(task_len: Callable[[SweepTask], int] | None = None) -> list[Method]:
    import optuna.pruners as P

    def n_max(task: SweepTask) -> int:
        return int(max(r.n_points for r in task.runs))

    return [
        OptunaMethod("median", lambda t: P.MedianPruner()),
        OptunaMethod("successive_halving", lambda t: P.SuccessiveHalvingPruner()),
        OptunaMethod("hyperband", lambda t: P.HyperbandPruner(min_resource=1, max_resource=n_max(t))),
        OptunaMethod("patience", lambda t: P.PatientPruner(None, patience=max(2, n_max(t) // 10))),
    ]


class LcpfnRule(Method):
    """LC-PFN's rule: stop when P(some remaining point beats the incumbent) < delta, from the 2nd point."""

    name = "lcpfn_rule"

    def __init__(self, cache: ForecastCache, delta: float = 0.05):
        self.cache, self.delta = cache, delta

    def run(self, task: SweepTask, run: SweepRun, incumbent: float | None) -> int:
        for n in range(2, len(run.y)):
            if incumbent is None or task.better(task.value(run, n), incumbent):
                continue
            fc = self.cache.get(task, run, n)
            if fc.grid is None:
                continue
            inside = np.flatnonzero((fc.grid.x > run.x[n - 1]) & (fc.grid.x <= task.budget * (1 + 1e-9)))
            if not len(inside):
                continue
            if float(p_beats(fc.grid.at(inside), incumbent, task.goal).max()) < self.delta:
                return n
        return run.n_points


@dataclass(frozen=True)
class PolicyKnobs:
    min_prob_beat_incumbent: float = 0.05
    min_relative_improvement: float = 0.0
    min_points: int = 3
    min_fraction_observed: float = 0.0
    compute_weight: float = 0.0

    def stop_policy(self) -> StopPolicy:
        return StopPolicy(min_prob_beat_incumbent=self.min_prob_beat_incumbent,
                          min_relative_improvement=self.min_relative_improvement,
                          min_points=self.min_points, min_fraction_observed=self.min_fraction_observed)


class CurvecastPolicy(Method):
    """Curvecast's ``decide`` at every point; divergence is checked before any forecast is needed."""

    name = "curvecast"

    def __init__(self, cache: ForecastCache, knobs: PolicyKnobs = PolicyKnobs(), recal_beat: Recalibration = IDENTITY):
        self.cache, self.knobs, self.recal_beat = cache, knobs, recal_beat
        self.actions: dict[str, int] = {}

    def run(self, task: SweepTask, run: SweepRun, incumbent: float | None) -> int:
        policy = self.knobs.stop_policy()
        for n in range(1, len(run.y)):
            curve = Curve(x=run.x[:n], y=run.y[:n], goal=task.goal, x_kind=task.x_kind)
            if n >= policy.min_points and divergence_reason(curve):
                self._count(Action.STOP_DIVERGED)
                return n
            if n < max(policy.min_points, 2) or run.x[n - 1] / task.budget < policy.min_fraction_observed:
                continue
            fc = self.cache.get(task, run, n)
            if fc.final is None:
                continue
            q = replace(fc.query, incumbent=incumbent, policy=policy)
            rec = decide(q, fc.final, fc.grid, None, compute_weight=self.knobs.compute_weight, recal_beat=self.recal_beat)
            if rec.action.is_stop:
                self._count(rec.action)
                return n
        return run.n_points

    def _count(self, a: Action) -> None:
        self.actions[a.value] = self.actions.get(a.value, 0) + 1


# ---- simulation ---------------------------------------------------------------------------------------
@dataclass
class OrderTrace:
    compute: np.ndarray  # cumulative compute after each run (full-run units)
    regret: np.ndarray  # normalised regret after each run
    raw_regret: np.ndarray
    stopped_early: int


def orders_for(task: SweepTask, n_orders: int, n_runs: int, seed: int) -> list[np.ndarray]:
    rng = _rng("orders", task.source, task.name, seed)
    k = min(n_runs, len(task.runs))
    return [rng.choice(len(task.runs), size=k, replace=False) for _ in range(n_orders)]


def simulate(task: SweepTask, method: Method, orders: list[np.ndarray]) -> list[OrderTrace]:
    best_any, scale, unit = task.best, task.regret_scale, task.full_run_cost
    out = []
    for o, idx in enumerate(orders):
        method.new_order(task, o)
        inc: float | None = None
        spent, comp, reg, raw, early = 0.0, [], [], [], 0
        for i in idx:
            run = task.runs[int(i)]
            n = int(np.clip(method.run(task, run, inc), 1, run.n_points))
            early += n < run.n_points
            spent += float(run.cost[:n].sum())
            if n > 0 and len(run.y):
                v = task.value(run, n)
                inc = v if inc is None or task.better(v, inc) else inc
            r = abs(inc - best_any) if inc is not None else abs(task.value(run) - best_any)
            comp.append(spent / unit)
            raw.append(r)
            reg.append(r / scale)
        out.append(OrderTrace(np.array(comp), np.array(reg), np.array(raw), early))
    return out


def mean_curve(traces: list[OrderTrace], grid: np.ndarray) -> np.ndarray:
    """Mean normalised regret at each compute on ``grid`` (before an order's first run ends, at least 1,
    the regret of a median run; after its last, its final regret)."""
    rows = []
    for t in traces:
        k = np.searchsorted(t.compute, grid, side="right") - 1
        before = max(1.0, float(t.regret[0]))  # nothing finished yet: at least a median run's regret
        rows.append(np.where(k < 0, before, t.regret[np.clip(k, 0, len(t.regret) - 1)]))
    return np.mean(rows, axis=0)


@dataclass
class MethodScore:
    method: str
    final_regret: float  # mean normalised
    final_raw_regret: float
    compute: float  # mean total, full runs
    speedup: float | None  # anytime (LC-PFN style); None: mean regret never reaches no-stop's final
    compute_ratio: float | None  # no-stop total compute / method total, when its final regret matches
    compute_to_match: float | None
    regret_at_25: float
    regret_at_50: float
    stopped_fraction: float
    curve: list[float] = field(default_factory=list)


def score_task(traces: dict[str, list[OrderTrace]], n_runs: int) -> dict[str, MethodScore]:
    top = max(max(t.compute[-1] for t in ts) for ts in traces.values())
    grid = np.linspace(0.0, max(top, 1e-9), 801)
    curves = {m: mean_curve(ts, grid) for m, ts in traces.items()}
    base = traces["none"]
    r0 = float(np.mean([t.regret[-1] for t in base]))
    c_none = float(np.mean([t.compute[-1] for t in base]))

    def first_reach(curve: np.ndarray, level: float) -> float | None:
        ok = np.flatnonzero(curve <= level + REGRET_TOL)
        return float(grid[ok[0]]) if len(ok) else None

    c0 = first_reach(curves["none"], r0)
    c0 = c_none if c0 is None or c0 <= 0 else c0
    out = {}
    for m, ts in traces.items():
        cm = first_reach(curves[m], r0)
        at = lambda frac: float(np.interp(frac * c_none, grid, curves[m]))  # noqa: E731
        out[m] = MethodScore(
            method=m, final_regret=float(np.mean([t.regret[-1] for t in ts])),
            final_raw_regret=float(np.mean([t.raw_regret[-1] for t in ts])),
            compute=float(np.mean([t.compute[-1] for t in ts])),
            speedup=None if cm is None else float(c0 / max(cm, 1e-9)), compute_to_match=cm,
            compute_ratio=(float(c_none / max(np.mean([t.compute[-1] for t in ts]), 1e-9))
                           if np.mean([t.regret[-1] for t in ts]) <= r0 + REGRET_TOL else None),
            regret_at_25=at(0.25), regret_at_50=at(0.5),
            stopped_fraction=float(np.mean([t.stopped_early for t in ts]) / max(n_runs, 1)),
            curve=[float(v) for v in np.interp(np.linspace(0, 1, 41) * c_none, grid, curves[m])],
        )
    return out


# ---- calibration pass ---------------------------------------------------------------------------------
@dataclass
class CalibrationSample:
    p_beat: list[float] = field(default_factory=list)
    y_beat: list[float] = field(default_factory=list)
    p_target: list[float] = field(default_factory=list)
    y_target: list[float] = field(default_factory=list)

    def extend(self, other: "CalibrationSample") -> None:
        for k in ("p_beat", "y_beat", "p_target", "y_target"):
            getattr(self, k).extend(getattr(other, k))


def calibration_samples(task: SweepTask, cache: ForecastCache, max_runs: int, seed: int) -> CalibrationSample:
    """Raw probabilities at fixed cutoffs of up to ``max_runs`` runs, and what happened."""
    out = CalibrationSample()
    rng = _rng("calib", task.source, task.name, seed)
    idx = rng.permutation(len(task.runs))[:max_runs]
    target = task.target
    for i in idx:
        run = task.runs[int(i)]
        others = np.delete(np.arange(len(task.runs)), i)
        full = task.value(run)
        for c in CUTOFFS:
            n = int(round(c * len(run.y)))
            if n < 2 or n >= len(run.y):
                continue
            k = int(rng.integers(1, min(19, len(others)) + 1))
            inc_runs = rng.choice(others, size=k, replace=False)
            inc = [task.value(task.runs[int(j)]) for j in inc_runs]
            incumbent = float(min(inc) if task.goal is Goal.MINIMIZE else max(inc))
            fc = cache.get(task, run, n)
            if fc.final is None:
                continue
            if not task.better(task.value(run, n), incumbent):
                q = replace(fc.query, incumbent=incumbent)
                rec = decide(q, fc.final, fc.grid, None)
                if rec.p_beat_incumbent_raw is not None:
                    out.p_beat.append(rec.p_beat_incumbent_raw)
                    out.y_beat.append(float(task.better(full, incumbent)))
            if not task.better(task.value(run, n), target) and task.value(run, n) != target:
                q = replace(fc.query, target=target)
                ctt = compute_to_target(q, fc.grid)
                if ctt is not None and not ctt.already_reached:
                    out.p_target.append(ctt.p_within_budget)
                    out.y_target.append(float(not task.better(target, full)))
    return out


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


def tune_knobs(tasks: list[SweepTask], cache: ForecastCache, cfg: Config, recal: Recalibration,
               log: Callable[[str], None]) -> tuple[PolicyKnobs, list[dict]]:
    """Coordinate search on the tuning tasks. Score: geometric-mean speedup at equal regret, a task
    where no-stop's regret is not matched counting as 0.5x."""
    orders = {t.name: orders_for(t, cfg.tune_orders, cfg.runs, cfg.seed + 1) for t in tasks}
    base = {t.name: simulate(t, Method(), orders[t.name]) for t in tasks}
    history: list[dict] = []

    def score(k: PolicyKnobs) -> float:
        logs = []
        for t in tasks:
            tr = simulate(t, CurvecastPolicy(cache, k, recal), orders[t.name])
            s = score_task({"none": base[t.name], "curvecast": tr}, cfg.runs)["curvecast"]
            logs.append(math.log(s.speedup if s.speedup is not None else 0.5))
        val = float(math.exp(np.mean(logs)))
        history.append({**asdict(k), "score": val})
        log(f"  tune {asdict(k)} -> {val:.3f}")
        return val

    best = PolicyKnobs()
    best_s = score(best)
    grids = {
        "min_prob_beat_incumbent": (0.01, 0.02, 0.1, 0.2),
        "min_points": (2, 5),
        "min_fraction_observed": (0.1, 0.2),
        "min_relative_improvement": (0.001, 0.003, 0.01) if not cfg.quick else (0.003,),
        "compute_weight": (0.05, 0.1, 0.2) if not cfg.quick else (0.1,),
    }
    if cfg.quick:
        grids["min_prob_beat_incumbent"] = (0.02, 0.1)
        grids["min_points"] = ()
        grids["min_fraction_observed"] = ()
    for name, values in grids.items():
        for v in values:
            cand = replace(best, **{name: v})
            s = score(cand)
            if s > best_s + 1e-9:
                best, best_s = cand, s
    return best, history


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
    recal_target = fit_recalibration(pool_tune.p_target, pool_tune.y_target)
    cal = {
        "beat_incumbent": {"raw": calibration_report(pool_rep.p_beat, pool_rep.y_beat).as_dict(),
                           "recalibrated": calibration_report(recal_beat.apply(np.asarray(pool_rep.p_beat)), pool_rep.y_beat).as_dict(),
                           "map": recal_beat.to_dict()},
        "target_within_budget": {"raw": calibration_report(pool_rep.p_target, pool_rep.y_target).as_dict(),
                                 "recalibrated": calibration_report(recal_target.apply(np.asarray(pool_rep.p_target)), pool_rep.y_target).as_dict(),
                                 "map": recal_target.to_dict()},
    }
    per_source_cal = {}
    for src in sorted({t.source for t in report_tasks}):
        s = CalibrationSample()
        for t in report_tasks:
            if t.source == src:
                s.extend(calib[t.name])
        per_source_cal[src] = {"beat_incumbent": _cal_brief(s.p_beat, s.y_beat, recal_beat),
                               "target_within_budget": _cal_brief(s.p_target, s.y_target, recal_target)}
    log(f"calibration done ({time.perf_counter() - t_start:.0f}s, {cache.calls} forecasts)")
    if write_recalibration:
        save_recalibrations({cache.name: {"beat_incumbent": recal_beat, "target_within_budget": recal_target}},
                            note=f"fitted by bench.sweeps on tuning tasks: {', '.join(t.name for t in tune_tasks)}")

    # 2. thresholds
    knobs = PolicyKnobs(**TUNED)
    history: list[dict] = []
    if cfg.tune and tune_tasks:
        knobs, history = tune_knobs(tune_tasks, cache, cfg, recal_beat, log)
        log(f"chosen knobs: {asdict(knobs)} ({time.perf_counter() - t_start:.0f}s)")

    # 3. simulation on the report tasks
    results: dict[str, dict] = {}
    for t in report_tasks:
        orders = orders_for(t, cfg.orders, cfg.runs, cfg.seed)
        cc = CurvecastPolicy(cache, knobs, recal_beat)
        methods: list[Method] = [Method(), *optuna_methods(), LcpfnRule(cache), cc]
        if recal_beat.kind != "identity":  # the same policy on raw probabilities, to show what the map does
            raw = CurvecastPolicy(cache, knobs, IDENTITY)
            raw.name = "curvecast_raw"
            methods.append(raw)
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
            f"{k} {_fmt_speed(v.speedup)}/{_fmt_speed(v.compute_ratio)} r={v.final_regret:.3f} c={v.compute:.1f}" for k, v in scores.items())
            + f" ({time.perf_counter() - t_start:.0f}s)")

    summary = summarize(results)
    payload = {
        "config": asdict(cfg), "engine": cache.name, "knobs": asdict(knobs), "tuning_history": history,
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


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _fmt_speed(s: float | None) -> str:
    return "n/r" if s is None else f"{s:.2f}x"


def summarize(results: dict[str, dict]) -> dict[str, dict]:
    """Per source and method: geometric-mean speedup over tasks (n/r tasks counted at 0.5x, as in
    tuning, and reported separately), tasks matched, mean regrets and compute."""
    out: dict[str, dict] = {}
    for src in sorted({r["source"] for r in results.values()}):
        rows = [r for r in results.values() if r["source"] == src]
        per: dict[str, dict] = {}
        for m in METHOD_ORDER:
            ms = [r["methods"][m] for r in rows if m in r["methods"]]
            if not ms:
                continue
            sp = [s["speedup"] for s in ms]
            matched = [s for s in sp if s is not None]
            cr = [s["compute_ratio"] for s in ms]
            per[m] = {
                "tasks": len(ms), "matched": len(matched),
                "gmean_compute_ratio": float(math.exp(np.mean([math.log(c if c is not None else 0.5) for c in cr]))),
                "ratio_matched": int(sum(c is not None for c in cr)),
                "gmean_speedup": float(math.exp(np.mean([math.log(s if s is not None else 0.5) for s in sp]))),
                "gmean_speedup_matched": float(math.exp(np.mean(np.log(matched)))) if matched else None,
                "median_speedup_matched": float(np.median(matched)) if matched else None,
                "final_regret": float(np.mean([s["final_regret"] for s in ms])),
                "compute": float(np.mean([s["compute"] for s in ms])),
                "regret_at_25": float(np.mean([s["regret_at_25"] for s in ms])),
                "regret_at_50": float(np.mean([s["regret_at_50"] for s in ms])),
                "tasks_2x": int(sum(1 for s in matched if s >= 2.0)),
            }
        out[src] = per
    return out


# ---- report -------------------------------------------------------------------------------------------
def write_plots(payload: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    sources = sorted({r["source"] for r in results.values()})
    if sources:
        fig, axes = plt.subplots(2, len(sources), figsize=(5 * len(sources), 8), squeeze=False)
        for j, src in enumerate(sources):
            rows = [r for r in results.values() if r["source"] == src]
            ax = axes[0, j]
            xs = np.linspace(0, 1, 41)
            for m in METHOD_ORDER:
                curves = [r["methods"][m]["curve"] for r in rows if m in r["methods"]]
                if curves:
                    ax.plot(xs * 100, np.mean(curves, axis=0), label=m, color=COLORS[m],
                            lw=2 if m in ("curvecast", "lcpfn_rule", "none") else 1)
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_xlabel("compute, % of no stopping")
            ax.set_ylabel("mean normalised regret")
            ax.set_title(f"{src}: regret vs compute ({len(rows)} tasks)")
            ax.legend(fontsize=7)
            ax = axes[1, j]
            names = [r["task"][-28:] for r in rows]
            shown = [m for m in METHOD_ORDER[1:] if all(m in r["methods"] for r in rows)]
            w = 0.8 / max(len(shown), 1)
            for k, m in enumerate(shown):
                sp = [r["methods"][m]["speedup"] or 0.0 for r in rows]
                ax.bar(np.arange(len(rows)) + k * w, sp, width=w, label=m, color=COLORS[m])
            ax.axhline(1.0, color="k", lw=0.5)
            ax.set_xticks(np.arange(len(rows)) + 0.4)
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
            ax.set_ylabel("anytime speedup (0 = never matched)")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "sweeps_regret.png", dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, ev in zip(axes, ("beat_incumbent", "target_within_budget")):
        c = payload["calibration"][ev]
        for kind, style in (("raw", "o-"), ("recalibrated", "s--")):
            bins = [b for b in c[kind]["bins"] if b["count"] > 0]
            ax.plot([b["mean_p"] for b in bins], [b["frequency"] for b in bins], style,
                    label=f"{kind}: ECE {c[kind]['ece']:.3f}, BSS {c[kind]['brier_skill']:.2f}")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_title(f"{ev} (report tasks, n={c['raw']['n']})")
        ax.set_xlabel("forecast probability")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweeps_calibration.png", dpi=110)
    plt.close(fig)


def render_markdown(p: dict) -> str:
    L = ["# Sweeps benchmark: stopping rules in model selection", ""]
    cfg = p["config"]
    L.append(f"Engine `{p['engine']}`; {cfg['runs']} configurations x {cfg['orders']} orders per task, pool {cfg['pool']} "
             f"runs per task{' (quick mode)' if cfg['quick'] else ''}; {p['forecasts']['calls']} forecasts in "
             f"{p['forecasts']['seconds']:.0f}s ({p['forecasts']['failures']} failed); total {p['seconds']:.0f}s.")
    L.append(f"Tuning tasks (thresholds, recalibration; not in the tables): {', '.join(p['tune_tasks']) or 'none'}.")
    L.append(f"Curvecast policy knobs: `{json.dumps(p['knobs'])}`.")
    L.append("")
    L.append("Anytime speedup (LC-PFN style) = compute at which no stopping's mean regret curve reaches its final "
             "value / compute at which the method's mean regret curve reaches it (within "
             f"{p['regret_tol']:g} of the regret scale); `n/r` = never reached. Compute ratio = no stopping's total "
             "compute / the method's, counted only when the method's final mean regret matches (same tolerance). "
             "Regret is normalised by the task's median-run-minus-best gap; regret @25%/@50% is the mean "
             "normalised regret after 25%/50% of no stopping's compute (equal compute). See `bench/sweeps.py`.")
    L.append("")
    L.append("## Per source (report tasks)")
    L.append("")
    L.append("| source | method | anytime speedup: matched | gmean (n/r=0.5x) | gmean of matched | tasks >= 2x | compute ratio: matched | gmean (n/r=0.5x) | final regret | regret @25% | regret @50% | compute (full runs) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for src, per in p["summary"].items():
        for m, s in per.items():
            gm = "-" if s["gmean_speedup_matched"] is None else f"{s['gmean_speedup_matched']:.2f}x"
            L.append(f"| {src} | {m} | {s['matched']}/{s['tasks']} | {s['gmean_speedup']:.2f}x | {gm} | {s['tasks_2x']} | "
                     f"{s['ratio_matched']}/{s['tasks']} | {s['gmean_compute_ratio']:.2f}x | "
                     f"{s['final_regret']:.4f} | {s['regret_at_25']:.4f} | {s['regret_at_50']:.4f} | {s['compute']:.2f} |")
    L.append("")
    L.append("## Per task: anytime speedup / compute ratio (final normalised regret)")
    L.append("")
    shown = [m for m in METHOD_ORDER if any(m in r["methods"] for r in p["results"].values())]
    L.append("| task | " + " | ".join(shown) + " |")
    L.append("|---|" + "---|" * len(shown))
    for key, r in p["results"].items():
        cells = []
        for m in shown:
            s = r["methods"].get(m)
            cells.append("-" if s is None else f"{_fmt_speed(s['speedup'])} / {_fmt_speed(s['compute_ratio'])} ({s['final_regret']:.3f})")
        L.append(f"| {key} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("![regret vs compute](sweeps_regret.png)")
    L.append("")
    L.append("## Calibration (report tasks)")
    L.append("")
    L.append("| event | n | base rate | ECE raw | BSS raw | ECE recalibrated | BSS recalibrated | map |")
    L.append("|---|---|---|---|---|---|---|---|")
    for ev, c in p["calibration"].items():
        L.append(f"| {ev} | {c['raw']['n']} | {c['raw']['base_rate']:.3f} | {c['raw']['ece']:.3f} | {c['raw']['brier_skill']:.3f} | "
                 f"{c['recalibrated']['ece']:.3f} | {c['recalibrated']['brier_skill']:.3f} | {c['map']['kind']} |")
    L.append("")
    L.append("| source | event | n | base rate | ECE raw | BSS raw | ECE recal | BSS recal |")
    L.append("|---|---|---|---|---|---|---|---|")
    for src, evs in p["calibration_per_source"].items():
        for ev, c in evs.items():
            L.append(f"| {src} | {ev} | {c['n']} | {c['base_rate']:.3f} | {c['ece_raw']:.3f} | {c['bss_raw']:.3f} | {c['ece_recal']:.3f} | {c['bss_recal']:.3f} |")
    L.append("")
    L.append("![reliability](sweeps_calibration.png)")
    L.append("")
    L.append("Data: TaskSet (Metz et al. 2020, Apache-2.0), LCDB 1.0 (Mohr et al., MIT), ScAn-Bench VLM (automl, MIT). "
             "Notes: " + "; ".join(p["notes"]))
    return "\n".join(L) + "\n"


def rerender(json_path: Path, out: Path) -> None:
    """Rewrite the Markdown and plots of an earlier run from its JSON (no simulation)."""
    payload = json.loads(Path(json_path).read_text())
    out.mkdir(parents=True, exist_ok=True)
    if Path(json_path).resolve() != (out / "sweeps.json").resolve():
        (out / "sweeps.json").write_text(json.dumps(payload, indent=1) + "\n")
    write_plots(payload, out)
    (out / "README.md").write_text(render_markdown(payload))


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
    a = ap.parse_args(argv)
    if a.rerender is not None:
        rerender(a.rerender, a.out)
        return 0
    cfg = QUICK if a.quick else Config()
    over = {k: v for k, v in {"orders": a.orders, "runs": a.runs, "pool": a.pool, "max_tasks_per_source": a.max_tasks}.items() if v is not None}
    cfg = replace(cfg, sources=tuple(s for s in a.sources.split(",") if s), tune=a.tune, seed=a.seed, **over)
    if a.max_tasks is not None:
        cfg = replace(cfg, lcdb_tasks=a.max_tasks)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    engine = load_engine(a.engine)
    run_benchmark(cfg, engine, a.out, a.table, a.task_column, a.write_recalibration,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
