"""Learning-rate-schedule path of the analytic engine (Tissue / Multi-Power laws)."""

from __future__ import annotations

from ...domain.curve import ForecastQuery
from ..base import EngineForecast


def wants_lr_law(q: ForecastQuery) -> bool:
    return False


def lr_forecast(q: ForecastQuery, seed: int = 0) -> EngineForecast | None:
    return None
