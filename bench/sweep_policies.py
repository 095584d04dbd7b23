"""Sweeps benchmark stopping methods: no stopping, Optuna's real pruners, the LC-PFN rule, Curvecast's policy.

Each method sees a run point by point and returns how many points it observed before stopping. The
LC-PFN rule and Curvecast's policy read the same cached forecasts, so their difference is the rule.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from curvecast.decisions.calibration import IDENTITY, Recalibration
from curvecast.decisions.policy import Action, decide, divergence_reason, p_beats
from curvecast.domain.curve import Curve, Goal, SiblingRun, StopPolicy, SweepContext
from curvecast.sweep import SweepParams, apply_sweep

from .sweep_data import SweepRun, SweepTask
from .sweep_sim import ForecastCache


class Method:
    """Sees a run point by point; returns how many points it observed before stopping."""

    name = "none"

    def new_order(self, task: SweepTask, order: int) -> None:
        pass

    def run(self, task: SweepTask, run: SweepRun, incumbent: float | None) -> int:
        return run.n_points

    def observed(self, task: SweepTask, run: SweepRun, n: int) -> None:
        """The run was trained for ``n`` points (what a later run's sweep context can show of it)."""


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


def optuna_methods() -> list[Method]:
    """Optuna's pruners with their library defaults (Hyperband/Patience sized to the task's points)."""
    import optuna.pruners as P

    def n_max(task: SweepTask) -> int:
        return int(max(r.n_points for r in task.runs))

    return [
        OptunaMethod("median", lambda t: P.MedianPruner()),
        OptunaMethod("percentile", lambda t: P.PercentilePruner(25.0)),
        OptunaMethod("successive_halving", lambda t: P.SuccessiveHalvingPruner()),
        OptunaMethod("hyperband", lambda t: P.HyperbandPruner(min_resource=1, max_resource=n_max(t))),
        OptunaMethod("wilcoxon", lambda t: P.WilcoxonPruner(p_threshold=0.1)),
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
    """The StopPolicy fields the benchmark tunes, plus the compute weight."""

    min_prob_beat_incumbent: float = 0.05
    min_relative_improvement: float = 0.0
    min_points: int = 3
    min_fraction_observed: float = 0.0
    compute_weight: float = 0.0

    def stop_policy(self) -> StopPolicy:
        return StopPolicy(min_prob_beat_incumbent=self.min_prob_beat_incumbent,
                          min_relative_improvement=self.min_relative_improvement,
                          min_points=self.min_points, min_fraction_observed=self.min_fraction_observed,
                          compute_weight=self.compute_weight, keep_best_checkpoint=True)

    @classmethod
    def server_default(cls) -> "PolicyKnobs":
        """The knobs of ``StopPolicy()``, what the server applies when a request sets none."""
        d = StopPolicy()
        return cls(d.min_prob_beat_incumbent, d.min_relative_improvement, d.min_points, d.min_fraction_observed,
                   d.compute_weight)

    @classmethod
    def from_preset(cls, name: str) -> "PolicyKnobs":
        from curvecast.decisions.presets import PRESETS

        p = PRESETS[name]
        return cls(p.min_prob_beat_incumbent, p.min_relative_improvement, p.min_points,
                   p.min_fraction_observed, p.compute_weight)


def sibling_of(task: SweepTask, run: SweepRun, n: int) -> SiblingRun | None:
    """What a scheduler has seen of a run trained for ``n`` points: its finite values so far."""
    k = min(n, len(run.y))
    if k < 1:
        return None
    curve = Curve(run.x[:k], run.y[:k], goal=task.goal, x_kind=task.x_kind, lower_bound=task.lower_bound,
                  upper_bound=task.upper_bound)
    return SiblingRun(run.run_id, curve, task.budget, finished=k == len(run.y) and run.diverged_at is None)


def with_sweep(fc, siblings: list[SiblingRun], params: SweepParams, budget: float):
    """The cached engine forecast combined with the order's earlier runs (the server's apply_sweep step)."""
    if not siblings or fc.grid is None:
        return fc.final, fc.grid
    q = replace(fc.query, sweep=SweepContext("order", tuple(siblings)))
    grid = apply_sweep(q, fc.grid, params).marginals
    if grid is fc.grid:
        return fc.final, fc.grid
    return grid.at(int(np.argmin(np.abs(grid.x - budget)))), grid


class CurvecastPolicy(Method):
    """Curvecast's ``decide`` at every point; divergence is checked before any forecast is needed. With
    ``sweep`` the forecasts carry sweep context: the order's earlier runs as far as they were trained."""

    name = "curvecast"

    def __init__(self, cache: ForecastCache, knobs: PolicyKnobs = PolicyKnobs(), recal_beat: Recalibration = IDENTITY,
                 name: str = "curvecast", sweep: SweepParams | None = None):
        self.cache, self.knobs, self.recal_beat, self.name = cache, knobs, recal_beat, name
        self.sweep = sweep
        self.siblings: list[SiblingRun] = []
        self.actions: dict[str, int] = {}

    def new_order(self, task: SweepTask, order: int) -> None:
        self.siblings = []

    def observed(self, task: SweepTask, run: SweepRun, n: int) -> None:
        if self.sweep is not None:
            s = sibling_of(task, run, n)
            if s is not None:
                self.siblings.append(s)

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
            final, grid = (fc.final, fc.grid) if self.sweep is None else with_sweep(fc, self.siblings, self.sweep, task.budget)
            # the protocol keeps each run's best checkpoint: its result is its best value
            rec = decide(q, final, grid, None, recal_beat=self.recal_beat, checkpoint_best=True)
            if rec.action.is_stop:
                self._count(rec.action)
                return n
        return run.n_points

    def _count(self, a: Action) -> None:
        self.actions[a.value] = self.actions.get(a.value, 0) + 1
