"""Ray Tune scheduler and stopper backed by Curvecast.

    scheduler = CurvecastScheduler("localhost:50051", metric="loss", mode="min", total_steps=50)
    tuner = tune.Tuner(train_fn, tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=20))

:class:`CurvecastScheduler` (a ``FIFOScheduler``) keeps each trial's history keyed by trial id, sends it on
every result with the best final value of the completed trials as the incumbent and the other trials'
histories as sweep context (``sweep_context=False`` turns that off), and answers STOP when
Curvecast recommends one of ``stop_on``. Like Ray's own schedulers, ``metric``/``mode`` go either to the
scheduler or to ``TuneConfig``, never both (Tune raises ValueError). :class:`CurvecastStopper` does the same
as a ``Stopper`` (``RunConfig(stop=...)``) for setups that already use another scheduler.

The hooks run in Tune's driver loop, so the deadline is short (0.5 s) and a failed service is skipped for
``cooldown_s``; with no answer the trial continues.
"""

from __future__ import annotations

import math
from typing import Any, Collection, Dict, Mapping

from ray.tune.experiment import Trial
from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from .._client import Client
from .._types import Sibling
from ._advisor import Advice, Advisor, as_float, best_of, normalize_goal

__all__ = ["CurvecastScheduler", "CurvecastStopper"]


class _Book:
    """Per-trial histories, final values of finished trials, and the Curvecast decision."""

    def __init__(self, advisor: Advisor, time_attr: str, total_steps: float | None, target: float | None,
                 sweep_context: bool = True) -> None:
        self.advisor = advisor
        self.sweep_context = sweep_context  # send the other trials' histories as siblings
        self.time_attr = time_attr
        self.total_steps = total_steps
        self.target = target
        self.history: dict[str, tuple[list[float], list[float]]] = {}
        self.finals: dict[str, float] = {}
        self.last_advice: dict[str, Advice] = {}

    def add(self, trial_id: str, result: Mapping[str, Any], metric: str) -> bool:
        """Record a result; False when it lacks the metric or the time attribute."""
        t, v = as_float(result.get(self.time_attr)), as_float(result.get(metric))
        if t is None or v is None or not math.isfinite(t):
            return False
        xs, ys = self.history.setdefault(trial_id, ([], []))
        while xs and xs[-1] >= t:
            xs.pop()
            ys.pop()
        xs.append(t)
        ys.append(v)
        return True

    def finish(self, trial_id: str, goal: str) -> None:
        """A trial ended: its best reported value joins the incumbent candidates."""
        _, ys = self.history.get(trial_id, ([], []))
        best = best_of(ys, goal)
        if best is not None:
            self.finals[trial_id] = best

    def should_stop(self, trial_id: str, goal: str, metric: str) -> bool:
        xs, ys = self.history[trial_id]
        others = [v for k, v in self.finals.items() if k != trial_id]
        siblings = [Sibling(str(k), tuple(h[0]), tuple(h[1]), finished=k in self.finals)
                    for k, h in self.history.items() if k != trial_id and h[0]] if self.sweep_context else None
        advice = self.advisor.advise(xs, ys, goal=goal, total_steps=self.total_steps, incumbent=best_of(others, goal),
                                     target=self.target, metric=metric, siblings=siblings)
        self.last_advice[trial_id] = advice
        if advice.stop:
            self.advisor.log.info("Curvecast: stopping trial %s at %s=%g (%s): %s", trial_id, self.time_attr, xs[-1],
                                  advice.recommendation.action, advice.reason)
        return advice.stop


class CurvecastScheduler(FIFOScheduler):
    """Stops Ray Tune trials on Curvecast's recommendation (FIFO order otherwise).

    ``time_attr``: the result field used as the curve's x (default ``training_iteration``). ``total_steps``:
    its value when a trial finishes; ``None`` takes ``RunConfig(stop={time_attr: n})`` when that is given.
    ``stop_on``: the Curvecast actions that stop a trial (default: all stop actions). ``policy``: StopPolicy
    overrides over ``preset`` ("safe", "balanced", "aggressive"). The incumbent is the best value reported by any ended trial (Curvecast's P(beats incumbent)
    is about a run's best value within its budget); trials still running never count.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        metric: str | None = None,
        mode: str | None = None,
        time_attr: str = "training_iteration",
        total_steps: float | None = None,
        target: float | None = None,
        stop_on: Collection[str] | None = None,
        policy: Mapping[str, float] | None = None,
        timeout: float = 0.5,
        cooldown_s: float = 10.0,
        x_kind: str = "step",
        forecast_kwargs: Mapping[str, Any] | None = None,
        preset: str | None = None,
        sweep_context: bool = True,
    ) -> None:
        super().__init__()
        if mode is not None:
            normalize_goal(mode)
        self._metric = metric
        self._mode = mode
        advisor = Advisor(client, timeout=timeout, cooldown_s=cooldown_s, stop_on=stop_on, policy=policy,
                          x_kind=x_kind, forecast_kwargs=forecast_kwargs, preset=preset)
        self._book = _Book(advisor, time_attr, total_steps, target, sweep_context)
        self._num_stopped = 0

    @property
    def advisor(self) -> Advisor:
        return self._book.advisor

    @property
    def last_advice(self) -> dict[str, Advice]:
        """The most recent answer (or failure) per trial id."""
        return self._book.last_advice

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False  # Tune turns this into "metric/mode given to both scheduler and TuneConfig"
        if metric:
            self._metric = metric
        if mode:
            normalize_goal(mode)
            self._mode = mode
        if self._metric is None and self._mode:
            self._metric = DEFAULT_METRIC
        stop = spec.get("stop")
        if self._book.total_steps is None and isinstance(stop, Mapping):
            self._book.total_steps = as_float(stop.get(self._book.time_attr))
        return True

    def _goal(self) -> str:
        if not self._metric or not self._mode:
            raise ValueError(f"{type(self).__name__} needs `metric` and `mode` (given {self._metric!r}, "
                             f"{self._mode!r}): pass them to the scheduler or to TuneConfig, not both")
        return normalize_goal(self._mode)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: Dict) -> str:
        goal = self._goal()
        if not self._book.add(trial.trial_id, result, self._metric):
            return TrialScheduler.CONTINUE
        if self._book.should_stop(trial.trial_id, goal, self._metric):
            self._num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: Dict) -> None:
        if self._metric and self._mode:
            if result:
                self._book.add(trial.trial_id, result, self._metric)
            self._book.finish(trial.trial_id, normalize_goal(self._mode))

    def debug_string(self) -> str:
        return f"Using Curvecast scheduling ({self.advisor.target}): {self._num_stopped} trials stopped early."


class CurvecastStopper(Stopper):
    """A Tune ``Stopper`` that stops a trial on Curvecast's recommendation.

    Unlike the scheduler it hears of no trial completions, so a trial counts as finished (and its best value
    as an incumbent candidate) when its ``time_attr`` reaches ``total_steps`` or its result says ``done``.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        metric: str,
        mode: str,
        time_attr: str = "training_iteration",
        total_steps: float | None = None,
        target: float | None = None,
        stop_on: Collection[str] | None = None,
        policy: Mapping[str, float] | None = None,
        timeout: float = 0.5,
        cooldown_s: float = 10.0,
        x_kind: str = "step",
        forecast_kwargs: Mapping[str, Any] | None = None,
        preset: str | None = None,
        sweep_context: bool = True,
    ) -> None:
        self.metric = metric
        self.goal = normalize_goal(mode)
        advisor = Advisor(client, timeout=timeout, cooldown_s=cooldown_s, stop_on=stop_on, policy=policy,
                          x_kind=x_kind, forecast_kwargs=forecast_kwargs, preset=preset)
        self._book = _Book(advisor, time_attr, total_steps, target, sweep_context)

    @property
    def advisor(self) -> Advisor:
        return self._book.advisor

    @property
    def last_advice(self) -> dict[str, Advice]:
        return self._book.last_advice

    def __call__(self, trial_id: str, result: Dict[str, Any]) -> bool:
        if not self._book.add(trial_id, result, self.metric):
            return False
        t = self._book.history[trial_id][0][-1]
        total = self._book.total_steps
        if result.get("done") or (total is not None and t >= total):
            self._book.finish(trial_id, self.goal)
            return False
        return self._book.should_stop(trial_id, self.goal, self.metric)

    def stop_all(self) -> bool:
        return False
