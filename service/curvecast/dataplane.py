"""The transport-free core of the service: queries in, forecasts and decisions out.

The gRPC servicer converts wire messages to domain queries and hands them here; everything that
decides *what* to answer (engine choice, ensembling, micro-batching, admission control, deadlines,
decisions) lives in this module and below, so it can be tested and benchmarked without a network.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import numpy as np

from .batching import BatchObserver, MicroBatcher
from .decisions.compute_to_target import ComputeToTarget, compute_to_target, decision_grid
from .decisions.calibration import recalibration_for
from .decisions.policy import Recommendation, decide
from .domain.curve import ForecastQuery
from .domain.distribution import Marginals
from .domain.errors import InvalidRequest, Overloaded
from .engines.base import EngineForecast, EngineInfo
from .engines.registry import EngineRegistry

if TYPE_CHECKING:
    from .scaling import ScalingFit, ScalingPoint

ENSEMBLE = "ensemble"
_REFUSED_WINDOW_S = 2.0  # refusals this recent count towards the retry hint
T = TypeVar("T")


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
    # The ruler (docs/bench/latest) decides: the analytic engine has the best log-likelihood and calibration
    # on every source; the 0.25/0.75 mixture has the lowest final-value error at late cutoffs.
    default_engine: str = "analytic"
    ensemble_weights: tuple[tuple[str, float], ...] = (("learned", 0.25), ("analytic", 0.75))
    max_inflight_curves: int = 4096
    # 25 linear points inside the budget coincide with every second default query point (validation's
    # 50), so an engine call evaluates about 62 x, not 98; 12 geometric points reach 4x the budget.
    decision_grid_inside: int = 25
    decision_grid_beyond: int = 12
    decision_extension: float = 4.0
    retry_after_s: float = 0.05  # the shortest retry hint; longer when the queue needs longer to drain
    retry_after_max_s: float = 10.0


class DataPlane:
    def __init__(self, registry: EngineRegistry, executor: Executor, settings: DataPlaneSettings = DataPlaneSettings(),
                 *, max_batch: int = 64, max_delay_s: float = 0.002, observer: BatchObserver | None = None,
                 scaling_executor: Executor | None = None, max_concurrent_batches: int = 2,
                 post_executor: Executor | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self._executor = executor
        self._scaling_executor = scaling_executor or executor
        # one thread for the per-curve work after the engines: keeps it off the loop without more GIL churn
        self._own_post = post_executor is None
        self._post = post_executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        self._batchers: dict[str, MicroBatcher] = {}
        self._batch_args = dict(max_batch=max_batch, max_delay_s=max_delay_s, observer=self._observe,
                                max_concurrent_batches=max_concurrent_batches)
        self._observer = observer
        self._curve_s: dict[str, float] = {}  # recent engine seconds per curve (EWMA), per engine
        self._finish_s = 0.0  # recent seconds per curve of finishing (decisions, response), EWMA
        self._inflight = 0
        self._refused: deque[tuple[float, int]] = deque()  # (when, curves) of recent refusals
        self._refused_curves = 0

    # ---- admission ------------------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def queue_depth(self) -> int:
        return sum(b.depth for b in self._batchers.values())

    def _observe(self, engine: str, size: int, seconds: float, overlap: float = 1.0) -> None:
        per_curve = seconds / max(size, 1) / max(overlap, 1.0)  # throughput cost: overlapping batches shared the CPU
        self._curve_s[engine] = _ewma(self._curve_s.get(engine), per_curve)
        if self._observer is not None:
            self._observer(engine, size, seconds)

    def expected_wait_s(self, engines: set[str] | None = None, extra: int = 0) -> float:
        """Rough time until the curves already admitted, plus ``extra`` new ones, are done: curves times
        the measured cost per curve at the throughput the engines reached (overlapping batches counted
        once, so a GIL-bound engine is not assumed to run twice as fast with two batches in flight)."""
        return (self.pending_curves + extra) * self._per_curve_s(engines)

    def _per_curve_s(self, engines: set[str] | None = None) -> float:
        """Measured cost of one curve: the engines' and the finishing stage's (same process, same GIL)."""
        names = engines if engines is not None else set(self._curve_s)
        return sum(self._curve_s.get(n, 0.0) for n in names) + self._finish_s

    def _done_in_s(self, n: int, per_curve: float) -> float:
        """When ``n`` new curves would be answered: the work ahead, their own, and one engine batch of
        slack (curves are answered a whole batch at a time, and batches form from whatever is queued)."""
        return (self.pending_curves + n + int(self._batch_args["max_batch"])) * per_curve

    @property
    def pending_curves(self) -> int:
        """Curves admitted, or still queued or computing in the engines: a caller that timed out leaves,
        but a batch already in an engine still takes its time, and the next caller waits for it."""
        in_engines = sum(b.depth + b.running for b in self._batchers.values())
        return max(self._inflight, in_engines)

    def retry_hint_s(self, engines: set[str] | None = None) -> float:
        """When a refused caller should come back: about when the queued work, and the work refused in
        the last ``_REFUSED_WINDOW_S``, would be done, jittered (x0.5..1.5). Counting what was refused
        spreads a crowd of refused clients over the time the server needs to serve them all, instead
        of having them all return (and be refused again) at once."""
        st = self.settings
        per_curve = self._per_curve_s(engines)
        now = time.monotonic()
        while self._refused and self._refused[0][0] < now - _REFUSED_WINDOW_S:
            self._refused_curves -= self._refused.popleft()[1]
        wait = (self.pending_curves + self._refused_curves) * per_curve
        return min(max(wait, st.retry_after_s), st.retry_after_max_s) * random.uniform(0.5, 1.5)

    def _refuse(self, n: int, message: str, engines: set[str] | None = None) -> Overloaded:
        self._refused.append((time.monotonic(), n))
        self._refused_curves += n
        return Overloaded(message, self.retry_hint_s(engines))

    def precheck(self, n: int, deadline: float | None = None) -> None:
        """Refuse a call before it is decoded and validated when it certainly could not be admitted:
        a flood of refused 1,000-curve batches must not cost the server their validation. Uses the
        cheapest engine's cost, so it never refuses what ``_admit`` would accept."""
        if n <= self.settings.max_inflight_curves:  # larger ones are refused as invalid by ``_admit``
            cheapest = min(self._curve_s.values()) + self._finish_s if self._curve_s else 0.0
            self._refuse_if_busy(n, deadline, cheapest)

    def _admit(self, n: int, deadline: float | None = None, engines: set[str] | None = None) -> None:
        if n > self.settings.max_inflight_curves:  # could never be admitted: retrying would not help
            raise InvalidRequest.single("requests", f"has {n} curves; this server admits at most "
                                        f"{self.settings.max_inflight_curves} at once (split the batch)")
        self._refuse_if_busy(n, deadline, self._per_curve_s(engines), engines)
        self._inflight += n

    def _refuse_if_busy(self, n: int, deadline: float | None, per_curve: float,
                        engines: set[str] | None = None) -> None:
        """``Overloaded`` when ``n`` more curves exceed the in-flight limit, or would be answered after
        the caller's deadline (it would only queue to time out: say so now)."""
        limit = self.settings.max_inflight_curves
        if self._inflight + n > limit:
            raise self._refuse(n, f"server busy: {self._inflight} curves in flight (limit {limit}); retry shortly",
                               engines)
        if deadline is not None and per_curve > 0 and self.pending_curves > 0:
            done_in = self._done_in_s(n, per_curve)
            if time.monotonic() + done_in > deadline:
                raise self._refuse(n, f"server busy: this call would be done in about {done_in:.2f} s, later than "
                                   "its deadline; retry shortly or with a longer deadline", engines)

    # ---- forecasting ----------------------------------------------------------------------------
    async def forecast(self, query: ForecastQuery, deadline: float | None = None,
                       post: Callable[[ForecastResult], T] | None = None) -> ForecastResult | T:
        result = (await self.forecast_many([query], deadline, post))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def forecast_many(self, queries: Sequence[ForecastQuery], deadline: float | None = None,
                            post: Callable[[ForecastResult], T] | None = None) -> list[ForecastResult | T | BaseException]:
        """Forecast several runs; each item succeeds or fails on its own (an item that cannot be
        planned, names an unavailable engine or breaks the decision code fails alone).

        ``post`` (e.g. the servicer's response builder) is applied to each result in the same worker
        thread that finishes it: one thread hop per call instead of two.

        Admission refuses the call at once (``Overloaded``) when the curves in flight would exceed the
        limit, or when the work already queued would outlast the caller's deadline."""
        early: dict[int, BaseException] = {}
        names: dict[int, list[tuple[str, float]]] = {}
        for i, q in enumerate(queries):
            try:
                names[i] = self._engine_names_one(q)
            except Exception as exc:  # noqa: BLE001 - this item only
                early[i] = exc
        self._admit(len(queries), deadline, {n for ns in names.values() for n, _ in ns})
        try:
            plans: dict[int, tuple[ForecastQuery, np.ndarray, np.ndarray, int]] = {}
            for i, q in enumerate(queries):
                if i in early:
                    continue
                try:
                    plans[i] = self._plan(q)
                except Exception as exc:  # noqa: BLE001 - this item only
                    early[i] = exc
            per_engine: dict[str, dict[int, EngineForecast | BaseException]] = {}
            needed = sorted({n for ns in names.values() for n, _ in ns})
            jobs = {}
            for name in needed:
                idx = [i for i in plans if any(n == name for n, _ in names[i])]
                expanded = [plans[i][0] for i in idx]
                jobs[name] = (idx, self._batcher(name).submit_many(expanded, deadline))
            gathered = await asyncio.gather(*(job for _, job in jobs.values()))
            for (name, (idx, _)), results in zip(jobs.items(), gathered):
                per_engine[name] = dict(zip(idx, results))
            return await self.offload(self._finish_all, queries, early, plans, names, per_engine, post)
        finally:
            self._inflight -= len(queries)

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """Run CPU work (ensembling, decisions, response building) off the event loop, so health checks
        and admission answer at once even while a large batch is being finished."""
        return await asyncio.get_running_loop().run_in_executor(self._post, fn, *args)

    def _finish_all(self, queries, early, plans, names, per_engine, post=None) -> list:
        started = time.perf_counter()
        out = self._finish_each(queries, early, plans, names, per_engine, post)
        if len(plans):
            per_curve = (time.perf_counter() - started) / len(plans)
            self._finish_s = _ewma(self._finish_s or None, per_curve)
        return out

    def _finish_each(self, queries, early, plans, names, per_engine, post) -> list:
        out: list = []
        for k, q in enumerate(queries):
            if k in early:
                out.append(early[k])
                continue
            try:
                result = self._finish(k, q, plans[k], names[k], per_engine)
                out.append(post(result) if post is not None and not isinstance(result, BaseException) else result)
            except Exception as exc:  # noqa: BLE001 - e.g. the decision code failed for this curve
                out.append(exc)
        return out

    def _engine_names_one(self, q: ForecastQuery) -> list[tuple[str, float]]:
        choice = q.engine or self.settings.default_engine
        if choice == ENSEMBLE:
            live = [(n, w) for n, w in self.settings.ensemble_weights if self.registry.available(n)]
            return live or [("analytic", 1.0)]
        self.registry.get(choice)  # raises EngineUnavailable with the reason
        return [(choice, 1.0)]

    def _plan(self, query: ForecastQuery) -> tuple[ForecastQuery, np.ndarray, np.ndarray, int]:
        """One engine call covers the requested x, the budget point and the decision grid."""
        st = self.settings
        grid = decision_grid(query, n=st.decision_grid_inside + st.decision_grid_beyond,
                             extension=st.decision_extension, n_inside=st.decision_grid_inside)
        asked = np.unique(np.concatenate([query.x_query, [query.horizon]]))
        grid = _snap(grid, asked)
        all_x = np.unique(np.concatenate([asked, grid]))
        req_idx = np.searchsorted(all_x, query.x_query)
        grid_idx = np.searchsorted(all_x, grid)
        final_idx = int(np.searchsorted(all_x, query.horizon))
        return replace(query, x_query=all_x), req_idx, grid_idx, final_idx

    def _finish(self, k: int, query: ForecastQuery, plan: tuple[ForecastQuery, np.ndarray, np.ndarray, int],
                names: list[tuple[str, float]],
                per_engine: dict[str, dict[int, EngineForecast | BaseException]]) -> ForecastResult | BaseException:
        _, req_idx, grid_idx, final_idx = plan
        parts: list[tuple[EngineForecast, float]] = []
        warnings: list[str] = []
        errors: list[BaseException] = []
        for name, weight in names:
            result = _checked(per_engine[name][k], name, len(plan[0].x_query))
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
        # extreme but valid curves (values near 1e300, tiny spreads) may overflow inside the mixture's tails
        # or the decision maths; the results are checked below instead of leaking warnings
        with np.errstate(all="ignore"):
            marginals = Marginals.mixture([p.marginals for p, _ in parts], [w for _, w in parts])
            marginals = marginals.clip(query.curve.lower_bound, query.curve.upper_bound)
            if not (np.all(np.isfinite(marginals.values)) and np.all(np.isfinite(marginals.mean))):
                return FloatingPointError("combining the engines' forecasts overflowed for this curve")
            total_w = sum(w for _, w in parts)
            uses = tuple(self._use(p.engine, w / total_w) for p, w in parts)
            grid = marginals.at(grid_idx)
            final = marginals.at(np.array([final_idx]))
            ctt = compute_to_target(query, grid)
            answered_by = parts[0][0].engine if len(parts) == 1 else ENSEMBLE
            rec = decide(query, final, grid, ctt, recal_beat=recalibration_for(answered_by, "beat_incumbent"),
                         recal_target=recalibration_for(answered_by, "target_within_budget"),
                         checkpoint_best=query.policy.keep_best_checkpoint)
        return ForecastResult(query=query, predictions=marginals.at(req_idx), final=final, compute_to_target=ctt,
                              recommendation=rec, engines=uses, warnings=tuple(dict.fromkeys(warnings)))

    def _use(self, name: str, weight: float) -> EngineUse:
        info = self.registry.get(name).info() if self.registry.available(name) else EngineInfo(name, "", "")
        return EngineUse(name, info.version, info.provider, weight)

    def _batcher(self, name: str) -> MicroBatcher:
        if name not in self._batchers:
            args = dict(self._batch_args)
            hint = self.registry.get(name).info().concurrent_batches
            if hint > 0:
                args["max_concurrent_batches"] = min(hint, int(args["max_concurrent_batches"]))
            self._batchers[name] = MicroBatcher(self.registry.getter(name), self._executor, **args)
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
        if self._own_post:
            self._post.shutdown(wait=False, cancel_futures=True)


def _ewma(old: float | None, new: float) -> float:
    """Recent average: the first observation as is, then 80% memory."""
    return new if old is None else 0.8 * old + 0.2 * new


def _snap(grid: np.ndarray, asked: np.ndarray, rel: float = 1e-9) -> np.ndarray:
    """Grid points within rounding of an asked x become that x, so the engines evaluate it once."""
    if len(asked) == 0 or len(grid) == 0:
        return grid
    j = np.clip(np.searchsorted(asked, grid), 1, max(len(asked) - 1, 1))
    cand = np.stack([asked[j - 1], asked[np.minimum(j, len(asked) - 1)]])
    near = cand[np.argmin(np.abs(cand - grid), axis=0), np.arange(len(grid))]
    tol = rel * np.maximum(np.abs(grid), 1.0)
    return np.where(np.abs(near - grid) <= tol, near, grid)


def _checked(result: object, name: str, n_x: int) -> EngineForecast | BaseException:
    """An engine answer is used only if it is well formed and finite; otherwise it counts as a failure
    (so the ensemble answers without it, with a warning) rather than leaking NaN or a wrong shape."""
    if isinstance(result, BaseException):
        return result
    if not isinstance(result, EngineForecast):
        return RuntimeError(f"engine '{name}' returned {type(result).__name__}, not a forecast")
    m = result.marginals
    if m.values.shape[0] != n_x:
        return RuntimeError(f"engine '{name}' answered {m.values.shape[0]} points for {n_x} queried")
    if not (np.all(np.isfinite(m.values)) and np.all(np.isfinite(m.mean))):
        return FloatingPointError(f"engine '{name}' produced non-finite values")
    return result


def _fit(points: list["ScalingPoint"], form: str, bootstrap: int) -> "ScalingFit":
    """Scaling fits are imported on first use: forecasting never needs them."""
    from .scaling import fit_scaling_law

    return fit_scaling_law(points, form=form, bootstrap=bootstrap)

