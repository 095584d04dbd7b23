"""Hugging Face ``transformers.Trainer`` callback that stops training on Curvecast's recommendation.

    trainer = Trainer(model=model, args=args, ..., callbacks=[CurvecastCallback("localhost:50051")])

After every evaluation the world-process-zero rank sends the evaluation metric's history (x =
``state.global_step``, budget = ``state.max_steps``) and sets ``control.should_training_stop`` when Curvecast
recommends stopping. Under torch.distributed the decision is broadcast from rank 0, so every rank stops at
the same step. Any failure keeps training (logged once).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .._client import Client
from ._advisor import Advisor, RunTracker, SiblingSource, as_float

__all__ = ["CurvecastCallback"]


def _broadcast_from_zero(stop: bool) -> bool:
    """Rank 0's decision on every rank (a no-op outside torch.distributed)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return stop
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return stop
    box = [stop]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


class CurvecastCallback(TrainerCallback):
    """Stops a ``Trainer`` run when Curvecast recommends one of ``stop_on`` (default: any stop).

    ``metric``: the evaluation metric ("loss", "accuracy", ...; the "eval_" prefix is optional); ``None``
    uses ``args.metric_for_best_model`` or "loss". ``mode``: "min"/"max"; ``None`` uses
    ``args.greater_is_better``, else "min" for names containing "loss" and "max" otherwise. ``total_steps``:
    the budget in optimizer steps; ``None`` uses ``state.max_steps``.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        metric: str | None = None,
        mode: str | None = None,
        total_steps: float | None = None,
        target: float | None = None,
        incumbent: float | None = None,
        stop_on: Collection[str] | None = None,
        policy: Mapping[str, float] | None = None,
        timeout: float = 0.5,
        cooldown_s: float = 10.0,
        forecast_kwargs: Mapping[str, Any] | None = None,
        siblings: SiblingSource | None = None,
        sweep_id: str = "",
    ) -> None:
        self.siblings = siblings  # sweep context: other trials (a list, or a callable returning them)
        self.sweep_id = sweep_id
        self.metric = metric
        self.mode = mode
        self.total_steps = total_steps
        self.target = target
        self.incumbent = incumbent
        self.advisor = Advisor(client, timeout=timeout, cooldown_s=cooldown_s, stop_on=stop_on, policy=policy,
                               x_kind="step", forecast_kwargs=forecast_kwargs)
        self.tracker: RunTracker | None = None
        self._warned_missing = False

    def _metric_key(self, args: TrainingArguments) -> str:
        name = self.metric or getattr(args, "metric_for_best_model", None) or "loss"
        return name if name.startswith("eval_") else f"eval_{name}"

    def _goal(self, args: TrainingArguments, key: str) -> str:
        if self.mode is not None:
            return self.mode
        greater = getattr(args, "greater_is_better", None)
        if greater is not None and self.metric is None:
            return "max" if greater else "min"
        return "min" if "loss" in key else "max"

    def _tracker(self, args: TrainingArguments, key: str) -> RunTracker:
        if self.tracker is None or self.tracker.metric != key:
            self.tracker = RunTracker(self.advisor, goal=self._goal(args, key), total_steps=self.total_steps,
                                      target=self.target, incumbent=self.incumbent, metric=key,
                                      siblings=self.siblings, sweep_id=self.sweep_id)
        return self.tracker

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.tracker = None  # a new (or resumed) run: the history comes back from state.log_history

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        stop = False
        if state.is_world_process_zero:
            stop = self._decide(args, state, metrics or {})
        if _broadcast_from_zero(stop):
            control.should_training_stop = True

    def _decide(self, args: TrainingArguments, state: TrainerState, metrics: Mapping[str, float]) -> bool:
        key = self._metric_key(args)
        value = as_float(metrics.get(key))
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                self.advisor.log.warning("CurvecastCallback: %r not in the evaluation metrics (available: %s); "
                                         "not asking Curvecast", key, sorted(metrics))
            return False
        tracker = self._tracker(args, key)
        if not tracker.x:  # first evaluation of this run (possibly resumed): earlier evaluations from the log
            for entry in state.log_history:
                v, s = as_float(entry.get(key)), as_float(entry.get("step"))
                if v is not None and s is not None and s < state.global_step:
                    tracker.record(s, v)
        tracker.record(float(state.global_step), value)
        total = self.total_steps if self.total_steps is not None else (
            float(state.max_steps) if state.max_steps and state.max_steps > 0 else None)
        return tracker.decide(total)
