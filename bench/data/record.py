"""One benchmark curve, as every loader returns it.

A ``CurveRecord`` holds the *whole* recorded curve (including the points a task will hold out); only
``bench.tasks`` cuts it into an observed prefix and held-out queries, so no engine ever sees a record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curvecast.domain.curve import Goal, LrSchedule, XKind


@dataclass(frozen=True)
class CurveRecord:
    """A full recorded curve: values ``y`` at strictly increasing ``x`` plus what the run planned.

    ``budget`` is the run's planned last x (in x units); ``lr`` is the learning rate at each x when the
    source records it; ``schedule`` is the planned LR schedule when known in parametric form (it is the
    plan, so giving it to a forecaster does not leak held-out values).
    """

    run_id: str
    source: str
    x: np.ndarray
    y: np.ndarray
    goal: Goal = Goal.MINIMIZE
    x_kind: XKind = XKind.STEP
    budget: float = 0.0
    metric: str = ""
    lr: np.ndarray | None = None
    schedule: LrSchedule | None = None
    n_params: float | None = None
    tokens_per_step: float | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float64)
        y = np.asarray(self.y, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"{self.run_id}: x and y must be 1-D of equal length")
        if len(x) > 1 and np.any(np.diff(x) <= 0):
            raise ValueError(f"{self.run_id}: x must be strictly increasing")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError(f"{self.run_id}: non-finite x or y (drop diverged curves in the loader)")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        if self.lr is not None:
            lr = np.asarray(self.lr, dtype=np.float64)
            if lr.shape != x.shape:
                raise ValueError(f"{self.run_id}: lr must have one value per x")
            object.__setattr__(self, "lr", lr)
        if self.budget <= 0 and len(x):
            object.__setattr__(self, "budget", float(x[-1]))

    @property
    def final(self) -> float:
        """The run's final value: ``meta.final_truth`` for raw (noisy) logs, else the last value."""
        return float(self.meta.get("final_truth", self.y[-1]))

    def __len__(self) -> int:
        return len(self.x)
