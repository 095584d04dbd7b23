"""Analytic engine: per-run curve families, learning-rate-schedule laws (see ``lr_laws``)."""

from .engine import AnalyticEngine

__all__ = ["AnalyticEngine"]
