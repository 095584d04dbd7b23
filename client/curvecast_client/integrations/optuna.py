"""Optuna pruner backed by Curvecast, with a classic pruner as fallback.

    pruner = CurvecastPruner("localhost:50051", total_steps=50)
    study = optuna.create_study(direction="minimize", pruner=pruner)

Each ``trial.should_prune()`` sends the trial's intermediate values (sorted by step), the study's best
value as the incumbent and, as sweep context, the other trials' intermediate values (complete, pruned and
running; ``sweep_context=False`` turns that off); the trial is pruned when Curvecast recommends one of ``prune_on``. When the service
is unreachable, errors or is slower than ``timeout``, the wrapped ``fallback`` pruner (default
``MedianPruner()``) decides instead, so a study never stalls or crashes because of the service.

Why the default ``prune_on`` leaves out "stop_converged" and "target_reached": Optuna records a pruned
trial as PRUNED, not COMPLETE, so it can never become ``study.best_trial``. A trial that stopped because it
plateaued or already reached the target may well be the best one; stopping it should be the objective's
own choice (use :class:`curvecast_client.integrations.Advisor` inside the objective for that).
"""

from __future__ import annotations

import math
from typing import Any, Collection, Mapping

import optuna
from optuna.pruners import BasePruner, MedianPruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .._client import Client
from .._types import Sibling
from ._advisor import MAX_SIBLINGS, Advice, Advisor

__all__ = ["CurvecastPruner"]

DEFAULT_PRUNE_ON = ("stop_unpromising", "stop_diverged")


class CurvecastPruner(BasePruner):
    """Prunes trials that Curvecast forecasts will not beat the study's best (or that diverged).

    ``total_steps``: the step a finished trial reaches (in the units of ``trial.report(value, step)``);
    ``None`` uses the largest last step of the study's completed trials, if any. ``target``: a value a trial
    should reach (enables compute-to-target). ``policy``: StopPolicy overrides, e.g.
    ``{"min_prob_beat_incumbent": 0.1, "min_points": 5}``, applied over ``preset`` ("safe", "balanced",
    "aggressive"). ``keep_best_checkpoint``: False when the objective returns the trial's last value
    (the usual Optuna objective), so P(beats the study's best) is about that value, not the trial's best
    report; None leaves the server default (best checkpoint). ``timeout``: deadline per call in seconds.
    ``sweep_context``: send the study's other trials (at most ``max_siblings``, the most recent) as siblings.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        total_steps: float | None = None,
        fallback: BasePruner | None = None,
        timeout: float = 0.5,
        prune_on: Collection[str] = DEFAULT_PRUNE_ON,
        target: float | None = None,
        policy: Mapping[str, float] | None = None,
        x_kind: str = "step",
        forecast_kwargs: Mapping[str, Any] | None = None,
        cooldown_s: float = 10.0,
        preset: str | None = None,
        keep_best_checkpoint: bool | None = None,
        sweep_context: bool = True,
        max_siblings: int = MAX_SIBLINGS,
    ) -> None:
        self._advisor = Advisor(client, timeout=timeout, cooldown_s=cooldown_s, stop_on=prune_on, policy=policy,
                                x_kind=x_kind, forecast_kwargs=forecast_kwargs, preset=preset,
                                keep_best_checkpoint=keep_best_checkpoint,
                                logger=optuna.logging.get_logger("optuna.pruners.curvecast"))
        self._fallback = fallback if fallback is not None else MedianPruner()
        self._total_steps = total_steps
        self._target = target
        self._sweep_context = sweep_context
        self._max_siblings = int(max_siblings)
        self.last_advice: Advice | None = None  # the most recent answer (or failure), for inspection

    @property
    def advisor(self) -> Advisor:
        return self._advisor

    @property
    def fallback(self) -> BasePruner:
        return self._fallback

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        values = trial.intermediate_values
        if not values:
            return False
        try:
            direction = study.direction
        except RuntimeError:  # multi-objective: Optuna itself does not prune those
            return False
        goal = "maximize" if direction == StudyDirection.MAXIMIZE else "minimize"
        steps = sorted(values)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        budget = self._budget(complete)
        siblings = self._siblings(study, trial, budget) if self._sweep_context else None
        advice = self._advisor.advise(
            steps, [values[s] for s in steps], goal=goal, total_steps=budget,
            incumbent=_best_value(complete, goal), target=self._target, siblings=siblings,
            sweep_id=getattr(study, "study_name", "") or "")
        self.last_advice = advice
        if not advice.answered:
            return self._fallback.prune(study, trial)
        if advice.stop:
            self._advisor.log.info("Trial %d pruned at step %s by Curvecast (%s): %s", trial.number, steps[-1],
                                   advice.recommendation.action, advice.reason)
        return advice.stop

    def _siblings(self, study: optuna.study.Study, trial: FrozenTrial, budget: float | None) -> list[Sibling]:
        """The study's other trials with intermediate values: complete (finished), pruned and running."""
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        out = []
        for t in study.get_trials(deepcopy=False, states=states):
            if t.number == trial.number or not t.intermediate_values:
                continue
            steps = sorted(t.intermediate_values)
            out.append(Sibling(f"trial-{t.number}", tuple(float(s) for s in steps),
                               tuple(float(t.intermediate_values[s]) for s in steps),
                               budget=None, finished=t.state == TrialState.COMPLETE))
        return out[-self._max_siblings:] if self._max_siblings > 0 else []

    def _budget(self, complete: list[FrozenTrial]) -> float | None:
        if self._total_steps is not None:
            return float(self._total_steps)
        last = [t.last_step for t in complete if t.last_step is not None]
        return float(max(last)) if last and max(last) > 0 else None


def _best_value(complete: list[FrozenTrial], goal: str) -> float | None:
    finite = [t.value for t in complete if t.value is not None and math.isfinite(t.value)]
    if not finite:
        return None
    return min(finite) if goal == "minimize" else max(finite)
