"""The transport-free core of the service: queries in, forecasts and decisions out.

The gRPC servicer converts wire messages to domain queries and hands them here; everything that
decides *what* to answer (engine choice, ensembling, micro-batching, deadlines, decisions) lives in this
module and below, so it can be tested and benchmarked without a network. Admission control (what to
refuse at once, and the retry hint) is ``admission.py``'s: this module tells it what each call costs.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import numpy as np

from .admission import FINISH, CurveSize, FitAdmission, FitOutcome, FitSize, ForecastAdmission, Work, shape_of
from .batching import BatchObserver, MicroBatcher
from .decisions.compute_to_target import ComputeToTarget, compute_to_target, decision_grid
from .decisions.calibration import recalibration_for
from .decisions.policy import Recommendation, decide
from .domain.curve import ForecastQuery
from .domain.distribution import Marginals
from .domain.errors import InvalidRequest
from .engines.base import EngineForecast, EngineInfo
from .engines.ensemble import StackingModel, combine, load_stacking
from .engines.registry import EngineRegistry
from .scaling.cancel import CALLER_GONE, SHUTDOWN, CancelToken, Cancelled
from .scaling.limits import ScalingLimits

if TYPE_CHECKING:
    from .scaling import ScalingFit, ScalingPoint
    from .scaling.fit import ScalingInput

ENSEMBLE = "ensemble"
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
    # the fixed mixture: used when the stacking model below is absent or does not cover the engines
    ensemble_weights: tuple[tuple[str, float], ...] = (("learned", 0.25), ("analytic", 0.75))
    # the stacked ensemble (engines/ensemble.py; models/ensemble-stacking.json, fitted by python -m
    # bench.stacking): weights and spread by observed fraction, curve kind and engine agreement
    stacking: StackingModel | None = field(default_factory=load_stacking)
    max_inflight_curves: int = 4096
    # 25 linear points inside the budget coincide with every second default query point (validation's
    # 50), so an engine call evaluates about 62 x, not 98; 12 geometric points reach 4x the budget.
    decision_grid_inside: int = 25
    decision_grid_beyond: int = 12
    decision_extension: float = 4.0
    retry_after_s: float = 0.05  # the shortest retry hint; longer when the queue needs longer to drain
    retry_after_max_s: float = 10.0
    # time an engine's first single-curve batch (the start-up warm-up) twice: see batching.py
    retime_first_batch: bool = True
    max_concurrent_fits: int = 1  # scaling-law fits at once; more are refused with a retry hint
    scaling_limits: ScalingLimits = ScalingLimits()


class DataPlane:
    def __init__(self, registry: EngineRegistry, executor: Executor, settings: DataPlaneSettings = DataPlaneSettings(),
                 *, max_batch: int = 64, max_delay_s: float = 0.002, observer: BatchObserver | None = None,
                 scaling_executor: Executor | None = None, max_concurrent_batches: int = 2,
                 post_executor: Executor | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self._executor = executor
        # fits get threads of their own (one per admitted fit): a fit of tens of seconds must never hold
        # an engine thread that forecast batches are waiting for
        self._own_scaling = scaling_executor is None
        self._scaling_executor = scaling_executor or ThreadPoolExecutor(
            max_workers=max(settings.max_concurrent_fits, 1), thread_name_prefix="fit")
        # one thread for the per-curve work after the engines: keeps it off the loop without more GIL churn
        self._own_post = post_executor is None
        self._post = post_executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        self._batchers: dict[str, MicroBatcher] = {}
        self._batch_args = dict(max_batch=max_batch, max_delay_s=max_delay_s, observer=self._observe,
                                max_concurrent_batches=max_concurrent_batches,
                                retime_first=settings.retime_first_batch)
        self._observer = observer
        self.admission = ForecastAdmission(settings.max_inflight_curves, max_batch, settings.retry_after_s,
                                           settings.retry_after_max_s, backlog=self._engine_backlog)
        self.fit_admission = FitAdmission(settings.max_concurrent_fits, settings.retry_after_s,
                                          settings.retry_after_max_s, calibrate=_calibrate_fit)
        self._fit_tokens: set[CancelToken] = set()
        self._closing = False

    # ---- admission (admission.py decides; here: what the engines hold) ----------------------------
    @property
    def inflight(self) -> int:
        return self.admission.inflight

    @property
    def queue_depth(self) -> int:
        return sum(b.depth for b in self._batchers.values())

    def _engine_backlog(self) -> dict[str, float]:
        return {name: b.backlog_units for name, b in self._batchers.items()}

    def _observe(self, engine: str, size: int, units: float, seconds: float, overlap: float = 1.0) -> None:
        self.admission.observe(engine, units, seconds, overlap)
        if self._observer is not None:
            self._observer(engine, size, seconds)

    def expected_wait_s(self) -> float:
        """Rough seconds until the work admitted, or still inside the engines, is done."""
        return self.admission.pending_s()

    @property
    def pending_curves(self) -> int:
        """Curves admitted, or still queued or computing in the engines: a caller that timed out leaves,
        but a batch already in an engine still takes its time, and the next caller waits for it."""
        in_engines = sum(b.depth + b.running for b in self._batchers.values())
        return max(self.inflight, in_engines)

    def retry_hint_s(self) -> float:
        return self.admission.retry_hint_s()

    def precheck(self, sizes: Sequence[CurveSize], deadline: float | None = None) -> None:
        """Refuse a call before it is decoded and validated when it certainly could not be admitted: a
        flood of refused 1,000-curve batches must not cost the server their validation. ``sizes`` are
        lower bounds of the curves' sizes (``CurveSize.lower_bound``); never refuses what admission
        of the validated curves would accept."""
        self.admission.precheck(sizes, deadline, list(self.registry.engines))

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
        limit, or when the work queued plus its own (priced by query points, levels and curve length)
        would outlast the caller's deadline."""
        early: dict[int, BaseException] = {}
        names: dict[int, list[tuple[str, float]]] = {}
        for i, q in enumerate(queries):
            try:
                names[i] = self._engine_names_one(q)
            except Exception as exc:  # noqa: BLE001 - this item only
                early[i] = exc
        limit = self.settings.max_inflight_curves
        if len(queries) > limit:  # could never be admitted: retrying would not help
            raise InvalidRequest.single("requests", f"has {len(queries)} curves; this server admits at most "
                                        f"{limit} at once (split the batch)")
        grid = self.settings.decision_grid_inside + self.settings.decision_grid_beyond
        sizes = [CurveSize.of_query(q, grid) for q in queries]
        ticket = self.admission.admit([Work(sizes[i], tuple(n for n, _ in names.get(i, ()))) for i in
                                       range(len(queries))], deadline)
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
                units = [shape_of(name).units(sizes[i]) for i in idx]
                jobs[name] = (idx, self._batcher(name).submit_many(expanded, deadline, units))
            gathered = await asyncio.gather(*(job for _, job in jobs.values()))
            for (name, (idx, _)), results in zip(jobs.items(), gathered):
                per_engine[name] = dict(zip(idx, results))
            finish_units = sum(shape_of(FINISH).units(sizes[i]) for i in plans)
            return await self.offload(self._finish_all, queries, early, plans, names, per_engine, post, finish_units)
        finally:
            self.admission.release(ticket)

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """Run CPU work (ensembling, decisions, response building) off the event loop, so health checks
        and admission answer at once even while a large batch is being finished."""
        return await asyncio.get_running_loop().run_in_executor(self._post, fn, *args)

    def _finish_all(self, queries, early, plans, names, per_engine, post=None, units: float = 0.0) -> list:
        started = time.perf_counter()
        out = self._finish_each(queries, early, plans, names, per_engine, post)
        if len(plans):
            self.admission.observe(FINISH, units, time.perf_counter() - started)
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
        warnings: list[str] = list(query.notes)  # validation's notes on input accepted with a documented meaning
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
        # the engines see the decision grid too (up to 4x the budget): warn only about the x the caller asked
        limit = min((p.details.get("prior_limit_x", np.inf) for p, _ in parts), default=np.inf)
        if len(query.x_query) and float(np.max(query.x_query)) > limit:
            warnings.append(f"queries beyond x = {limit:.6g} (the budget) are outside the learned engine's "
                            "training prior: an extrapolation it was never trained for")
        if len(parts) < len(names) and isinstance(errors[0], InvalidRequest):
            return errors[0]
        # extreme but valid curves (values near 1e300, tiny spreads) may overflow inside the mixture's tails
        # or the decision maths; the results are checked below instead of leaking warnings
        with np.errstate(all="ignore"):
            combined = combine(query, parts, final_idx, self._stacking())  # engines/ensemble.py decides
            marginals = combined.marginals.clip(query.curve.lower_bound, query.curve.upper_bound)
            from .domain.plausibility import review  # every engine's answer passes it before decisions

            checked = review(query, marginals)  # limits, degenerate rows, goal contradicting the curve
            marginals = checked.marginals
            warnings.extend(checked.warnings)
            if not (np.all(np.isfinite(marginals.values)) and np.all(np.isfinite(marginals.mean))):
                return FloatingPointError("combining the engines' forecasts overflowed for this curve")
            from .sweep import apply_sweep  # sibling runs' evidence (sweep context); no siblings: unchanged

            swept = apply_sweep(query, marginals)
            marginals = swept.marginals
            warnings.extend(swept.warnings)
            uses = tuple(self._use(name, w) for name, w in combined.weights)
            grid = marginals.at(grid_idx)
            final = marginals.at(np.array([final_idx]))
            ctt = compute_to_target(query, grid)
            answered_by = parts[0][0].engine if len(parts) == 1 else ENSEMBLE
            # the map fitted for what "result" means here: the best checkpoint, or the value at the budget
            beat_event = "beat_incumbent" if query.policy.keep_best_checkpoint else "beat_incumbent_last"
            rec = decide(query, final, grid, ctt, recal_beat=recalibration_for(answered_by, beat_event),
                         recal_target=recalibration_for(answered_by, "target_within_budget"),
                         checkpoint_best=query.policy.keep_best_checkpoint)
        return ForecastResult(query=query, predictions=marginals.at(req_idx), final=final, compute_to_target=ctt,
                              recommendation=rec, engines=uses, warnings=tuple(dict.fromkeys(warnings)))

    def _stacking(self) -> StackingModel | None:
        """The stacking model, if it was fitted for the learned model now serving (a hot-reloaded or
        --model file gets the fixed mixture instead)."""
        model = self.settings.stacking
        if model is None or not model.learned_sha256:
            return model
        try:
            version = self.registry.get("learned").info().version
        except Exception:  # noqa: BLE001 - learned not loaded: the ensemble is analytic alone anyway
            return None
        return model if model.learned_sha256[:12] in version else None

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
    async def fit_scaling_request(self, n_points: int, bootstrap: int | None, form: str,
                                  decode: Callable[[], "ScalingInput"], deadline: float | None = None
                                  ) -> tuple["ScalingInput", "ScalingFit"]:
        """A transport's one call for a scaling-law request: admission from the counts alone first (the
        fit slots busy, or no time left before ``deadline``: refused before a single point is decoded, so a
        flood of large refused requests costs nothing), then ``decode`` (the transport's validation, off the
        loop), then ``fit_scaling_law``. ``bootstrap`` None: the limits' default for ``n_points``."""
        limits = self.settings.scaling_limits
        boot = limits.default_bootstrap(n_points) if bootstrap is None else bootstrap
        if not limits.violations(n_points, boot):  # over the limits: ``decode`` names the field instead
            self.precheck_fit(n_points, boot, form, deadline)
        inp = await self.offload(decode)
        fit = await self.fit_scaling_law(inp.points, inp.form, inp.bootstrap, deadline,
                                         drop_early_fraction=inp.drop_early_fraction, huber_delta=inp.huber_delta,
                                         isoflop=inp.isoflop)
        return inp, fit

    async def fit_scaling_law(self, points: Sequence["ScalingPoint"], form: str, bootstrap: int,
                              deadline: float | None = None, **options: object) -> "ScalingFit":
        """Fit a scaling law in the scaling executor, admitted like forecasts (one fit at a time by
        default; refused up front when it would outlast ``deadline``) and stopped cooperatively within
        one objective evaluation when the deadline passes, the awaiting caller is cancelled (the client
        left) or the data plane closes (the server drains): the worker never computes for nobody.
        ``options``: ``fit_scaling_law``'s drop_early_fraction, huber_delta, isoflop."""
        bad = self.settings.scaling_limits.violations(len(points), bootstrap)
        if bad:
            raise InvalidRequest(bad)
        if self._closing:
            raise Cancelled("the server is shutting down; not started", SHUTDOWN)
        size = FitSize(len(points), bootstrap, form)
        ticket = self.fit_admission.admit(size, deadline, _grid_cells(form, len(points)))
        token = CancelToken(deadline)
        self._fit_tokens.add(token)
        job = self._scaling_executor.submit(self._fit_job, ticket, size, list(points), token, options)
        # a job cancelled before it started (executor shut down) never reaches its own release
        job.add_done_callback(lambda f: self.fit_admission.release(ticket) if f.cancelled() else None)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            token.cancel(CALLER_GONE, "the caller went away; fit stopped")
            raise
        finally:
            self._fit_tokens.discard(token)

    def precheck_fit(self, n_points: int, bootstrap: int, form: str, deadline: float | None = None) -> None:
        """Refuse a fit before its request is decoded when admission would refuse it (the fit slots are
        busy, or it could not finish before ``deadline``): a flood of large refused requests must not
        cost the server their decoding."""
        if self._closing:
            raise Cancelled("the server is shutting down; not started", SHUTDOWN)
        self.fit_admission.precheck(FitSize(n_points, bootstrap, form), deadline, _grid_cells(form, n_points))

    @property
    def running_fits(self) -> tuple[CancelToken, ...]:
        """The cancel tokens of the fits being awaited (``token.checks`` shows a worker's progress)."""
        return tuple(self._fit_tokens)

    def _fit_job(self, ticket: int, size: FitSize, points: list, token: CancelToken,
                 options: dict | None = None) -> "ScalingFit":
        """Runs in the scaling executor; reports its work to admission however it ends."""
        from .scaling.laws import FitStats

        stats, started, completed = FitStats(), time.perf_counter(), False
        try:
            fit = _fit(points, size.form, size.bootstrap, token, stats, **(options or {}))
            completed = True
            return fit
        finally:
            self.fit_admission.release(ticket, size, FitOutcome(
                stats.evaluations, stats.main_evaluations, stats.replicates, stats.grid_cells,
                time.perf_counter() - started, completed))

    def engine_infos(self) -> list[EngineInfo]:
        return self.registry.infos()

    async def close(self) -> None:
        """Stop: running fits are cancelled (they stop within one objective evaluation), then the
        batchers and the finishing thread."""
        self._closing = True
        for token in list(self._fit_tokens):
            token.cancel(SHUTDOWN, "the server is shutting down; fit stopped")
        for b in self._batchers.values():
            await b.close()
        if self._own_post:
            self._post.shutdown(wait=False, cancel_futures=True)
        if self._own_scaling:
            self._scaling_executor.shutdown(wait=False, cancel_futures=True)


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


def _fit(points: list["ScalingPoint"], form: str, bootstrap: int, token: CancelToken | None = None,
         stats=None, **options) -> "ScalingFit":
    """Scaling fits are imported on first use: forecasting never needs them."""
    from .scaling import fit_scaling_law

    return fit_scaling_law(points, form=form, bootstrap=bootstrap, cancel=token, stats=stats, **options)


def _grid_cells(form: str, n_points: int) -> int:
    from .scaling.laws import FORMS, grid_cells

    return grid_cells(FORMS[form], n_points) if form in FORMS else 0


def _calibrate_fit() -> float:
    """Seconds per point-evaluation on this machine: the prior of a fit's time estimate (a few ms, once)."""
    from .admission import EVAL_OVERHEAD_POINTS
    from .scaling.laws import seconds_per_evaluation

    n = 4096
    return seconds_per_evaluation(n) / (n + EVAL_OVERHEAD_POINTS)

