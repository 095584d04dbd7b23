"""Sweep context: what sibling runs of the same sweep did after this run's relative point (x / budget).

One step after the engines (``apply_sweep``), before decisions; without siblings the answer is unchanged.
"""

from .model import DEFAULT_PARAMS, SweepAdjustment, SweepParams, apply_sweep

__all__ = ["DEFAULT_PARAMS", "SweepAdjustment", "SweepParams", "apply_sweep"]
