"""The transport-free core of the service: queries in, forecasts and decisions out.

The gRPC servicer converts wire messages to domain queries and hands them here; everything that
decides *what* to answer (engine choice, ensembling, micro-batching, admission control, deadlines,
decisions) lives in this module and below, so it can be tested and benchmarked without a network.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .batching import BatchObserver, MicroBatcher
from .decisions.compute_to_target import ComputeToTarget, compute_to_target, decision_grid
from .decisions.policy import Recommendation, decide
from .domain.curve import ForecastQuery
from .domain.distribution import Marginals
from .domain.errors import InvalidRequest, Overloaded
from .engines.base import EngineForecast, EngineInfo
from .engines.registry import EngineRegistry

if TYPE_CHECKING:
    from .scaling import ScalingFit, ScalingPoint

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class EngineUse:
    name: str
    version: str
    provider: str
    weight: float


@dataclass(frozen=True)
class ForecastResult:
    """Everything the service answers for one run, in domain terms."""

    query: ForecastQuery
    predictions: Marginals  # at query.x_query
    final: Marginals  # one point: the value at the budget (horizon)
    compute_to_target: ComputeToTarget | None
    recommendation: Recommendation
    engines: tuple[EngineUse, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class DataPlaneSettings:
    default_engine: str = ENSEMBLE
    ensemble_weights: tuple[tuple[str, float], ...] = (("learned", 0.5), ("analytic", 0.5))
    max_inflight_curves: int = 4096
    decision_grid_points: int = 48
    decision_extension: float = 4.0
    retry_after_s: float = 0.05


class DataPlane:
    def __init__(self, registry: EngineRegistry, executor: Executor, settings: DataPlaneSettings = DataPlaneSettings(),
                 *, max_batch: int = 64, max_delay_s: float = 0.002, observer: BatchObserver | None = None,
                 scaling_executor: Executor | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self._executor = executor
        self._scaling_executor = scaling_executor or executor
        self._batchers: dict[str, MicroBatcher] = {}
        self._batch_args = dict(max_batch=max_batch, max_delay_s=max_delay_s, observer=observer)
        self._inflight = 0

    # ---- admission ------------------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def queue_depth(self) -> int:
        return sum(b.depth for b in self._batchers.values())

    def _admit(self, n: int) -> None:
        if self._inflight + n > self.settings.max_inflight_curves:
            raise Overloaded(f"server busy: {self._inflight} curves in flight (limit "
                             f"{self.settings.max_inflight_curves}); retry shortly", self.settings.retry_after_s)
        self._inflight += n

    # ---- forecasting ----------------------------------------------------------------------------
    async def forecast(self, query: ForecastQuery, deadline: float | None = None) -> ForecastResult:
        result = (await self.forecast_many([query], deadline))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def forecast_many(self, queries: Sequence[ForecastQuery],
                            deadline: float | None = None) -> list[ForecastResult | BaseException]:
        """Forecast several runs; each item succeeds or fails on its own."""
        self._admit(len(queries))
        try:
            plans = [self._plan(q) for q in queries]
            names = self._engine_names(queries)
            per_engine: dict[str, list[EngineForecast | BaseException]] = {}
            needed = sorted({n for ns in names for n, _ in ns})
            jobs = {}
            for name in needed:
                idx = [i for i, ns in enumerate(names) if any(n == name for n, _ in ns)]
                expanded = [plans[i][0] for i in idx]
                jobs[name] = (idx, self._batcher(name).submit_many(expanded, deadline))
            gathered = await asyncio.gather(*(job for _, job in jobs.values()))
            for (name, (idx, _)), results in zip(jobs.items(), gathered):
                full: list[EngineForecast | BaseException] = [None] * len(queries)  # type: ignore[list-item]
                for i, r in zip(idx, results):
                    full[i] = r
                per_engine[name] = full
            return [self._finish(k, q, plan, ns, per_engine)
                    for k, (q, plan, ns) in enumerate(zip(queries, plans, names))]
        finally:
            self._inflight -= len(queries)

    def _engine_names(self, queries: Sequence[ForecastQuery]) -> list[list[tuple[str, float]]]:
        out = []
        for q in queries:
            choice = q.engine or self.settings.default_engine
            if choice == ENSEMBLE:
                live = [(n, w) for n, w in self.settings.ensemble_weights if self.registry.available(n)]
                out.append(live or [("analytic", 1.0)])
            else:
                self.registry.get(choice)  # raises EngineUnavailable with the reason
                out.append([(choice, 1.0)])
        return out

    def _plan(self, query: ForecastQuery) -> tuple[ForecastQuery, np.ndarray, np.ndarray, int]:
        """One engine call covers the requested x, the budget point and the decision grid."""
        grid = decision_grid(query, n=self.settings.decision_grid_points, extension=self.settings.decision_extension)
        horizon = np.array([query.horizon])
        all_x = np.unique(np.concatenate([query.x_query, horizon, grid]))
        req_idx = np.searchsorted(all_x, query.x_query)
        grid_idx = np.searchsorted(all_x, grid)
        final_idx = int(np.searchsorted(all_x, query.horizon))
        return replace(query, x_query=all_x), req_idx, grid_idx, final_idx

    def _finish(self, k: int, query: ForecastQuery, plan: tuple[ForecastQuery, np.ndarray, np.ndarray, int],
                names: list[tuple[str, float]],
                per_engine: dict[str, list[EngineForecast | BaseException]]) -> ForecastResult | BaseException:
        _, req_idx, grid_idx, final_idx = plan
        parts: list[tuple[EngineForecast, float]] = []
        warnings: list[str] = []
        errors: list[BaseException] = []
        for name, weight in names:
            result = per_engine[name][k]
            if isinstance(result, BaseException):
                errors.append(result)
                warnings.append(f"engine '{name}' failed for this curve ({type(result).__name__}); answered without it")
            else:
                parts.append((result, weight))
                warnings.extend(result.warnings)
        if not parts:
            return errors[0]
        if len(parts) < len(names) and isinstance(errors[0], InvalidRequest):
            return errors[0]
        marginals = Marginals.mixture([p.marginals for p, _ in parts], [w for _, w in parts])
        marginals = marginals.clip(query.curve.lower_bound, query.curve.upper_bound)
        total_w = sum(w for _, w in parts)
        uses = tuple(self._use(p.engine, w / total_w) for p, w in parts)
        grid = marginals.at(grid_idx)
        final = marginals.at(np.array([final_idx]))
        ctt = compute_to_target(query, grid)
        rec = decide(query, final, grid, ctt)
        return ForecastResult(query=query, predictions=marginals.at(req_idx), final=final, compute_to_target=ctt,
                              recommendation=rec, engines=uses, warnings=tuple(dict.fromkeys(warnings)))

    def _use(self, name: str, weight: float) -> EngineUse:
        info = self.registry.get(name).info() if self.registry.available(name) else EngineInfo(name, "", "")
        return EngineUse(name, info.version, info.provider, weight)

    def _batcher(self, name: str) -> MicroBatcher:
        if name not in self._batchers:
            self._batchers[name] = MicroBatcher(self.registry.getter(name), self._executor, **self._batch_args)
        return self._batchers[name]

    # ---- scaling laws ---------------------------------------------------------------------------
    async def fit_scaling_law(self, points: Sequence["ScalingPoint"], form: str, bootstrap: int) -> "ScalingFit":
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._scaling_executor, _fit, list(points), form, bootstrap)

    def engine_infos(self) -> list[EngineInfo]:
        return self.registry.infos()

    async def close(self) -> None:
        for b in self._batchers.values():
            await b.close()


def _fit(points: list["ScalingPoint"], form: str, bootstrap: int) -> "ScalingFit":
    """Scaling fits are imported on first use: forecasting never needs them."""
    from .scaling import fit_scaling_law

    return fit_scaling_law(points, form=form, bootstrap=bootstrap)

