"""Decisions on top of forecasts: compute-to-target, stop recommendations and their calibration."""

from .calibration import Recalibration, calibration_report, recalibration_for
from .compute_to_target import ComputeToTarget, StepsQuantile, compute_to_target, decision_grid
from .policy import Action, Recommendation, decide, divergence_reason
from .presets import PRESETS, Preset, preset

__all__ = [
    "Action", "ComputeToTarget", "Recalibration", "Recommendation", "StepsQuantile", "calibration_report",
    "compute_to_target", "decide", "decision_grid", "divergence_reason", "recalibration_for",
    "PRESETS", "Preset", "preset",
]
