"""PyTorch Lightning callback that stops training on Curvecast's recommendation.

    trainer = L.Trainer(max_epochs=50, callbacks=[CurvecastCallback("localhost:50051", monitor="val_loss")])

After every validation (sanity checks skipped) global rank 0 sends the monitored metric's history and
asks Curvecast; the decision is broadcast to all ranks with ``trainer.strategy.broadcast`` and
``trainer.should_stop`` is set on every rank, so distributed runs stop together. Any failure keeps training
(logged once). The history is saved in checkpoints, so a resumed run sends its whole curve.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone "pytorch_lightning" package
    import pytorch_lightning as pl  # type: ignore[no-redef]

from .._client import Client
from ._advisor import Advisor, RunTracker, SiblingSource, as_float

__all__ = ["CurvecastCallback"]


class CurvecastCallback(pl.Callback):
    """Stops a Lightning run when Curvecast recommends one of ``stop_on`` (default: any stop).

    ``monitor``/``mode``: the logged metric and its direction ("min"/"max"). ``x``: "step" (global step,
    robust to several validations per epoch) or "epoch" (epochs completed). ``total_steps``: the budget in
    those units; ``None`` uses ``trainer.estimated_stepping_batches`` (steps) or ``trainer.max_epochs``.
    ``target``/``incumbent``: a value to reach / the best value of sibling runs, both optional.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        monitor: str = "val_loss",
        mode: str = "min",
        x: str = "step",
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
        if x not in ("step", "epoch"):
            raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
        self.monitor = monitor
        self.x = x
        advisor = Advisor(client, timeout=timeout, cooldown_s=cooldown_s, stop_on=stop_on, policy=policy, x_kind=x,
                          forecast_kwargs=forecast_kwargs)
        self.tracker = RunTracker(advisor, goal=mode, total_steps=total_steps, target=target, incumbent=incumbent,
                                  metric=monitor, siblings=siblings, sweep_id=sweep_id)
        self._warned_missing = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, x=self.x)

    def _budget(self, trainer: "pl.Trainer") -> float | None:
        if self.tracker.total_steps is not None:
            return self.tracker.total_steps
        if self.x == "epoch":
            return float(trainer.max_epochs) if trainer.max_epochs and trainer.max_epochs > 0 else None
        try:
            return as_float(trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - unknown length (iterable dataset without max_steps)
            return None

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking:
            return
        stop = False
        if trainer.is_global_zero:
            stop = self._decide(trainer)
        stop = bool(trainer.strategy.broadcast(stop, 0))
        if stop:
            trainer.should_stop = True

    def _decide(self, trainer: "pl.Trainer") -> bool:
        value = as_float(trainer.callback_metrics.get(self.monitor))
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                self.tracker.advisor.log.warning(
                    "CurvecastCallback: metric %r not logged (available: %s); not asking Curvecast", self.monitor,
                    sorted(trainer.callback_metrics))
            return False
        x = trainer.global_step if self.x == "step" else trainer.current_epoch + 1
        self.tracker.record(float(x), value)
        return self.tracker.decide(self._budget(trainer))

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)
