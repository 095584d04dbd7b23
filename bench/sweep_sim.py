"""Sweeps benchmark simulation: cached forecasts, model selection under a stopping method, scores.

Per order, runs are trained one after the other; a run's value is its best value before it stopped (the
checkpoint one would keep) and the incumbent is the best value so far. Scores compare each method with
no stopping at equal regret (anytime speedup, compute ratio) and say how often the order's best run was
killed before it showed its best value.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from dataclasses import dataclass, field, replace

import numpy as np

from curvecast.decisions.compute_to_target import decision_grid
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals

from .sweep_data import SweepRun, SweepTask, _rng

if TYPE_CHECKING:
    from .sweep_policies import Method

REGRET_TOL = 0.01  # "equal regret": within 1% of the task's regret scale
GRID_N, GRID_EXT = 24, 2.0  # decision grid used in the sweeps (12 points inside the budget)


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


@dataclass
class OrderTrace:
    compute: np.ndarray  # cumulative compute after each run (full-run units)
    regret: np.ndarray  # normalised regret after each run
    raw_regret: np.ndarray
    stopped_early: int
    best_killed: bool = False  # the order's best run was stopped before it showed its best value


def orders_for(task: SweepTask, n_orders: int, n_runs: int, seed: int) -> list[np.ndarray]:
    rng = _rng("orders", task.source, task.name, seed)
    k = min(n_runs, len(task.runs))
    return [rng.choice(len(task.runs), size=k, replace=False) for _ in range(n_orders)]


def simulate(task: SweepTask, method: "Method", orders: list[np.ndarray]) -> list[OrderTrace]:
    best_any, scale, unit = task.best, task.regret_scale, task.full_run_cost
    out = []
    for o, idx in enumerate(orders):
        method.new_order(task, o)
        inc: float | None = None
        spent, comp, reg, raw, early = 0.0, [], [], [], 0
        full = [task.value(task.runs[int(i)]) for i in idx]
        top = int(np.argmin(full) if task.goal.sign > 0 else np.argmax(full))
        killed = False
        for j, i in enumerate(idx):
            run = task.runs[int(i)]
            n = int(np.clip(method.run(task, run, inc), 1, run.n_points))
            method.observed(task, run, n)
            early += n < run.n_points
            if j == top and task.value(run, n) != full[top]:
                killed = True
            spent += float(run.cost[:n].sum())
            if n > 0 and len(run.y):
                v = task.value(run, n)
                inc = v if inc is None or task.better(v, inc) else inc
            r = abs(inc - best_any) if inc is not None else abs(task.value(run) - best_any)
            comp.append(spent / unit)
            raw.append(r)
            reg.append(r / scale)
        out.append(OrderTrace(np.array(comp), np.array(reg), np.array(raw), early, killed))
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
    saving: float = 1.0  # no-stop mean total compute / the method's, whatever its regret
    excess_regret: float = 0.0  # final mean normalised regret minus no stopping's
    best_killed: float = 0.0  # fraction of orders whose best run was stopped before its best value


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
            saving=float(c_none / max(np.mean([t.compute[-1] for t in ts]), 1e-9)),
            excess_regret=float(np.mean([t.regret[-1] for t in ts]) - r0),
            best_killed=float(np.mean([t.best_killed for t in ts])),
        )
    return out
