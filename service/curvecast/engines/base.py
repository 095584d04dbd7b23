"""The one small interface every forecasting engine implements.

An engine turns validated queries into predictive marginals at the queried x. It is batch-first
(the learned engine batches on the accelerator; the analytic engine simply loops) and reports a
failure per query instead of failing the whole batch, so one bad curve never harms its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from ..domain.curve import ForecastQuery
from ..domain.distribution import Marginals


@dataclass(frozen=True)
class EngineForecast:
    """An engine's answer for one query: marginals at ``query.x_query`` plus notes for the caller."""

    marginals: Marginals
    engine: str
    warnings: tuple[str, ...] = ()
    details: dict[str, float] = field(default_factory=dict)  # e.g. fitted parameters, family weights


@dataclass(frozen=True)
class EngineInfo:
    name: str
    version: str
    provider: str  # e.g. "CPUExecutionProvider", "CUDAExecutionProvider", "numpy"
    available: bool = True
    detail: str = ""
    # batches worth running at once (0: the server's --engine-threads). 1 suits an engine whose batch
    # already uses every core, or that holds the GIL: a second batch would only slow the first down.
    concurrent_batches: int = 0


@runtime_checkable
class Engine(Protocol):
    name: str

    def info(self) -> EngineInfo: ...

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        """One result per query, in order; an exception in the list fails only that query."""
        ...
