"""Sweeps benchmark data: real sweeps as tasks of runs (TaskSet, LCDB, ScAn-Bench VLM, or a curve table).

Split out of bench/sweeps.py so the loaders can be read (and tested) apart from the simulation and the
report. A run's compute per point is the training between it and the previous point (dx, or recorded
compute), or, for sample-wise curves (LCDB), a training on that many samples.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curvecast.domain.curve import Goal, LrSchedule, ScheduleShape, XKind

TARGET_QUANTILE = 0.2  # task target: the value 20% of the runs reach

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
