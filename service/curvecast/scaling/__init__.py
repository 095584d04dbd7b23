"""Cross-run scaling laws (no gRPC here): fit Chinchilla / Gadre / Kaplan laws with bootstrap intervals."""

from .fit import ScalingFit, ScalingPoint, fit_scaling_law

__all__ = ["ScalingFit", "ScalingPoint", "fit_scaling_law"]
