"""Keras 3 callback that stops ``model.fit`` on Curvecast's recommendation (any backend).

    model.fit(x, y, epochs=50, validation_split=0.2, callbacks=[CurvecastCallback("localhost:50051")])

At the end of every epoch the monitored metric's history (x = epochs completed) is sent to Curvecast and
``model.stop_training`` is set when it recommends stopping. Any failure keeps training (logged once).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import keras

from .._client import Client
from ._advisor import Advisor, RunTracker, SiblingSource, as_float

__all__ = ["CurvecastCallback"]

_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1", "iou", "score")


def _infer_mode(monitor: str) -> str:
    """Like keras.callbacks.EarlyStopping(mode="auto"): accuracy-like names are maximized."""
    name = monitor.lower()
    return "max" if any(h in name for h in _MAX_HINTS) else "min"


class CurvecastCallback(keras.callbacks.Callback):
    """Stops training when Curvecast recommends one of ``stop_on`` (default: any stop).

    ``monitor``: a key of the epoch logs (e.g. "val_loss", "val_accuracy"); ``mode``: "min", "max" or
    "auto" (from the name). ``total_epochs``: the budget; ``None`` uses the ``epochs`` given to ``fit``.
    ``target``/``incumbent``: a value to reach / the best value of sibling runs, both optional.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        monitor: str = "val_loss",
        mode: str = "auto",
        total_epochs: float | None = None,
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
        super().__init__()
        self.monitor = monitor
        advisor = Advisor(client, timeout=timeout, cooldown_s=cooldown_s, stop_on=stop_on, policy=policy,
                          x_kind="epoch", forecast_kwargs=forecast_kwargs)
        self.tracker = RunTracker(advisor, goal=_infer_mode(monitor) if mode == "auto" else mode,
                                  total_steps=total_epochs, target=target, incumbent=incumbent, metric=monitor,
                                  siblings=siblings, sweep_id=sweep_id)
        self.stopped_epoch: int | None = None
        self._warned_missing = False

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.tracker.load_state_dict({})
        self.stopped_epoch = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = as_float((logs or {}).get(self.monitor))
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                self.tracker.advisor.log.warning("CurvecastCallback: %r not in the epoch logs (available: %s); "
                                                 "not asking Curvecast", self.monitor, sorted(logs or {}))
            return
        self.tracker.record(float(epoch + 1), value)
        total = self.tracker.total_steps if self.tracker.total_steps is not None else as_float(
            (self.params or {}).get("epochs"))
        if self.tracker.decide(total):
            self.stopped_epoch = epoch
            self.model.stop_training = True
