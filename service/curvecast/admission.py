"""Admission control: refuse at once (``Overloaded``) what the server cannot do in time, before any CPU
is spent on it.

Work is priced in cost units, not curves: a curve asking for 10,000 query points costs the analytic
engine about 70 times what a default curve (50 query points) does, and its response about 15 times.
Each stage (every engine, and ``FINISH``: ensembling, decisions and the response) has a ``CostShape``
saying how its time grows with a curve's size; one unit is a default curve in every stage. The seconds
per unit of each stage are measured live (a running average over its batches, the first one being the
warm-up that start-up runs through the real path), so an idle server already knows what a call costs
and refuses a call that could not be answered before its deadline, instead of burning the CPU and
timing out.

``FitAdmission`` does the same for scaling-law fits: a fixed number of fits at a time, and a fit whose
estimated time (from the points, the replicates and measured fits) outlasts the deadline is refused.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Sequence

from .domain.curve import ForecastQuery
from .domain.errors import DeadlineExceeded, Overloaded

FINISH = "finish"  # the stage after the engines: ensembling, decisions, response building
REFUSED_WINDOW_S = 2.0  # refusals this recent count towards the retry hint


def ewma(old: float | None, new: float) -> float:
    """Recent average: the first observation as is, then 80% memory."""
    return new if old is None else 0.8 * old + 0.2 * new


# ---- what a curve costs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveSize:
    """What admission knows of one curve before computing it."""

    n_x: int  # x the engines evaluate: the query points plus the decision grid
    n_levels: int  # quantile levels in the response
    n_points: int  # observed curve points

    @classmethod
    def of_query(cls, query: ForecastQuery, grid_points: int) -> "CurveSize":
        """Sibling curves (sweep context) are read point by point like the run's own, so they count too."""
        sibling_points = sum(len(s.curve.x) for s in query.sweep.siblings) if query.sweep is not None else 0
        return cls(len(query.x_query) + grid_points, len(query.quantiles), len(query.curve.x) + sibling_points)

    @classmethod
    def lower_bound(cls, n_query_x: int, n_quantiles: int, grid_points: int,
                    default_quantiles: int) -> "CurveSize":
        """At most what ``of_query`` finds once the request is validated, from the raw counts: no query
        points means the default (50, or 1 when the budget is spent), no levels the default ones, and the
        curve's length is not counted (validation may shorten it)."""
        return cls(max(n_query_x, 1) + grid_points, n_quantiles or default_quantiles, 0)


DEFAULT_SIZE = CurveSize(n_x=50 + 37, n_levels=5, n_points=100)  # 50 default query points + the grid


@dataclass(frozen=True)
class CostShape:
    """A stage's time for one curve: fixed + per_x * n_x + per_x_level * n_x * n_levels + per_point *
    n_points. Microseconds on the 2-core reference VM, but only the ratios matter: the scale is measured."""

    fixed: float
    per_x: float = 0.0
    per_x_level: float = 0.0
    per_point: float = 0.0

    def cost(self, s: CurveSize) -> float:
        return self.fixed + self.per_x * s.n_x + self.per_x_level * s.n_x * s.n_levels + self.per_point * s.n_points

    def units(self, s: CurveSize) -> float:
        """Cost in default curves."""
        return self.cost(s) / self.cost(DEFAULT_SIZE)


# Measured through DataPlane.forecast_many with the real engines and response building (CPU per curve):
# analytic 10 ms at 50 query points, 36 / 123 / 711 ms at 500 / 2,000 / 10,000, +8 ms for a 100,000-point
# curve; learned 4.3 ms, 65 ms at 10,000; the response ~1 ms, 11 ms at 10,000 x 5 levels, ~400 ms at x 99.
SHAPES: dict[str, CostShape] = {
    "analytic": CostShape(fixed=9000.0, per_x=65.0, per_point=0.085),
    "learned": CostShape(fixed=3500.0, per_x=5.0, per_point=0.05),
    FINISH: CostShape(fixed=800.0, per_x_level=0.35),
}
GENERIC = CostShape(fixed=5000.0, per_x=20.0, per_point=0.05)  # an engine measured nowhere above


def shape_of(stage: str) -> CostShape:
    return SHAPES.get(stage, GENERIC)


@dataclass(frozen=True)
class Work:
    """One curve to admit: its size and the engines that will compute it (none: it fails before them)."""

    size: CurveSize
    engines: tuple[str, ...]

    def units(self) -> dict[str, float]:
        """Cost units per stage (the finishing stage only for curves that reach the engines)."""
        stages = self.engines + ((FINISH,) if self.engines else ())
        return {stage: shape_of(stage).units(self.size) for stage in stages}


@dataclass
class Ticket:
    """What one admitted call holds until it is released."""

    curves: int
    units: dict[str, float] = field(default_factory=dict)  # per stage


# ---- forecasts ------------------------------------------------------------------------------------------
class ForecastAdmission:
    """In-flight limit (curves), measured cost per unit (per stage) and deadline-aware refusals.

    ``backlog`` reports the units each engine still has queued or computing, including those of callers
    that already left: the next caller waits for them too. All methods run on the event loop's thread,
    except ``observe`` for the finishing stage (a float assignment: safe under the GIL)."""

    def __init__(self, max_inflight_curves: int, max_batch: int, retry_after_s: float = 0.05,
                 retry_after_max_s: float = 10.0, backlog: Callable[[], Mapping[str, float]] = dict) -> None:
        self.max_inflight_curves = max_inflight_curves
        self.max_batch = max_batch
        self.retry_after_s = retry_after_s
        self.retry_after_max_s = retry_after_max_s
        self._backlog = backlog
        self._s_per_unit: dict[str, float] = {}
        self._admitted: dict[str, float] = {}  # units per stage of the calls admitted and not yet released
        self._inflight = 0
        self._refused: deque[tuple[float, float]] = deque()  # (when, seconds of work refused)
        self._refused_s = 0.0

    # -- measurement
    def observe(self, stage: str, units: float, seconds: float, overlap: float = 1.0) -> None:
        """A stage took ``seconds`` for ``units``; ``overlap`` batches shared the CPU meanwhile."""
        if units > 0 and seconds >= 0:
            self._s_per_unit[stage] = ewma(self._s_per_unit.get(stage), seconds / units / max(overlap, 1.0))

    def seconds_per_unit(self, stage: str) -> float:
        """Measured seconds per unit of a stage; 0 until it has been measured once."""
        return self._s_per_unit.get(stage, 0.0)

    # -- state
    @property
    def inflight(self) -> int:
        return self._inflight

    def pending_units(self, stage: str) -> float:
        return max(self._admitted.get(stage, 0.0), float(self._backlog().get(stage, 0.0)))

    def pending_s(self) -> float:
        """Seconds of work ahead of a new call: admitted or still inside an engine, at measured cost."""
        stages = set(self._admitted) | set(self._backlog())
        return sum(self.pending_units(st) * self.seconds_per_unit(st) for st in stages)

    # -- decisions
    def admit(self, work: Sequence[Work], deadline: float | None = None) -> Ticket:
        """Take the curves in, or raise ``Overloaded`` (too many curves in flight, or the call would be
        answered after ``deadline``) or ``DeadlineExceeded`` (it has passed). Release the ticket when done."""
        units: dict[str, float] = {}
        for w in work:
            for st, u in w.units().items():
                units[st] = units.get(st, 0.0) + u
        own = sum(u * self.seconds_per_unit(st) for st, u in units.items())
        self._check(len(work), own, self._batch_slack_s(set(units)), deadline)
        for st, u in units.items():
            self._admitted[st] = self._admitted.get(st, 0.0) + u
        self._inflight += len(work)
        return Ticket(len(work), units)

    def release(self, ticket: Ticket) -> None:
        self._inflight -= ticket.curves
        for st, u in ticket.units.items():
            left = self._admitted.get(st, 0.0) - u
            if left > 1e-9:
                self._admitted[st] = left
            else:
                self._admitted.pop(st, None)

    def precheck(self, sizes: Sequence[CurveSize], deadline: float | None, engines: Collection[str]) -> None:
        """Refuse a call before it is decoded when it certainly could not be admitted. ``sizes`` must not
        exceed what validation will find and each curve is priced at the cheapest of ``engines``, so this
        never refuses what ``admit`` would accept."""
        n = len(sizes)
        if n > self.max_inflight_curves:  # ``admit``'s caller refuses it as invalid: never retryable
            return
        finish = self.seconds_per_unit(FINISH)
        own = 0.0
        for s in sizes:
            cheapest = min((shape_of(e).units(s) * self.seconds_per_unit(e) for e in engines), default=0.0)
            own += cheapest + shape_of(FINISH).units(s) * finish
        slack = min((self.seconds_per_unit(e) for e in engines), default=0.0) + finish
        self._check(n, own, slack, deadline)

    def _batch_slack_s(self, stages: set[str]) -> float:
        """Seconds of one more default curve in every stage of the call: times ``max_batch`` it is the
        slack of a batch (curves are answered a batch at a time, from whatever is queued)."""
        return sum(self.seconds_per_unit(st) for st in stages)

    def _check(self, n: int, own_s: float, slack_per_curve_s: float, deadline: float | None) -> None:
        limit = self.max_inflight_curves
        if self._inflight + n > limit:
            raise self._refuse(own_s, f"server busy: {self._inflight} curves in flight (limit {limit}); retry shortly")
        if deadline is None:
            return
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineExceeded("deadline passed before the call was admitted; not computed")
        pending = self.pending_s()
        # Curves are answered a batch at a time, so a call may also wait for the rest of a batch: at most a
        # batch's worth, and never more than the work actually ahead (a lone curve left in an engine must
        # not price a new call as if a full batch of 64 were queued)
        done_in = pending + own_s + min(self.max_batch * slack_per_curve_s, pending)
        if own_s > 0 and now + done_in > deadline:  # (a call that costs nothing measured is let through)
            if own_s > deadline - now:  # too much for its deadline even on an idle server
                raise self._refuse(0.0, f"this call needs about {own_s:.2f} s here, more than its deadline allows "
                                   f"({deadline - now:.2f} s); split it, ask for fewer query points or levels, "
                                   "or allow a longer deadline")
            raise self._refuse(own_s, f"server busy: this call would be done in about {done_in:.2f} s, later than "
                               "its deadline; retry shortly or with a longer deadline")

    def _refuse(self, own_s: float, message: str) -> Overloaded:
        """``own_s``: the refused work, counted in the retry hints of the next ``REFUSED_WINDOW_S`` (0 for
        a call that no retry with the same deadline could make)."""
        self._refused.append((time.monotonic(), own_s))
        self._refused_s += own_s
        return Overloaded(message, self.retry_hint_s())

    def retry_hint_s(self) -> float:
        """When a refused caller should come back: about when the queued work, and the work refused in
        the last ``REFUSED_WINDOW_S``, would be done, jittered (x0.5..1.5). Counting what was refused
        spreads a crowd of refused clients over the time the server needs to serve them all, instead
        of having them all return (and be refused again) at once."""
        now = time.monotonic()
        while self._refused and self._refused[0][0] < now - REFUSED_WINDOW_S:
            self._refused_s -= self._refused.popleft()[1]
        wait = self.pending_s() + max(self._refused_s, 0.0)
        return min(max(wait, self.retry_after_s), self.retry_after_max_s) * random.uniform(0.5, 1.5)


# ---- scaling-law fits ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitSize:
    """What admission knows of a fit before running it."""

    n_points: int
    bootstrap: int
    form: str = "chinchilla"


@dataclass(frozen=True)
class FitOutcome:
    """What a fit's worker did, reported when it is done (finished, failed or stopped)."""

    evaluations: int
    main_evaluations: int  # of the multi-start fit, before the bootstrap
    replicates: int  # bootstrap replicates fitted
    grid_cells: int
    seconds: float
    completed: bool


@dataclass
class _FitRates:
    """Objective evaluations of the multi-start fit and of one bootstrap replicate, learned per form."""

    main: float
    replicate: float


# Objective evaluations measured on synthetic Chinchilla-shaped data (30 to 100,000 points): the
# multi-start fit 700-1,500 (kaplan ~500), a bootstrap replicate 55-80 (kaplan ~35).
_PRIOR_RATES = {"chinchilla": (900.0, 60.0), "gadre": (900.0, 60.0), "kaplan": (450.0, 35.0)}
EVAL_OVERHEAD_POINTS = 1000.0  # one evaluation's fixed cost (scipy, Python), in points' worth


class FitAdmission:
    """At most ``max_concurrent`` fits at once (more: ``Overloaded`` with a retry hint), and a fit whose
    estimated time outlasts its deadline is refused up front.

    A fit's work is counted in point-evaluations: evaluations x (points + ``EVAL_OVERHEAD_POINTS``) plus
    the grid values scored. Seconds per point-evaluation start from ``calibrate`` (a few milliseconds of
    real objective evaluations on this machine) and follow every fit that ran, finished or stopped.
    Thread-safe: fits finish in worker threads."""

    def __init__(self, max_concurrent: int = 1, retry_after_s: float = 0.05, retry_after_max_s: float = 10.0,
                 calibrate: Callable[[], float] | None = None) -> None:
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self.retry_after_max_s = retry_after_max_s
        self._calibrate = calibrate
        self._s_per_work: float | None = None
        self._rates: dict[str, _FitRates] = {}
        self._running: dict[int, tuple[float, float]] = {}  # ticket -> (started, estimated seconds)
        self._next = 0
        self._lock = threading.Condition()

    def work(self, size: FitSize, grid_cells: int = 0) -> float:
        """Estimated point-evaluations of a fit (``grid_cells``: values the start grid scores)."""
        r = self._rates_of(size.form)
        evals = r.main + size.bootstrap * r.replicate
        return evals * (size.n_points + EVAL_OVERHEAD_POINTS) + grid_cells

    def estimate_s(self, size: FitSize, grid_cells: int = 0) -> float:
        if self._s_per_work is None and self._calibrate is not None:
            self._s_per_work = self._calibrate()
        return self.work(size, grid_cells) * (self._s_per_work or 0.0)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def admit(self, size: FitSize, deadline: float | None = None, grid_cells: int = 0) -> int:
        """A ticket for ``release``, or ``Overloaded`` (all slots busy, or done only after the deadline)."""
        estimate = self.estimate_s(size, grid_cells)
        now = time.monotonic()
        with self._lock:
            self._check(size, deadline, estimate, now)
            self._next += 1
            self._running[self._next] = (now, estimate)
            return self._next

    def precheck(self, size: FitSize, deadline: float | None = None, grid_cells: int = 0) -> None:
        """``admit``'s refusals without taking a slot: run before a large request is decoded."""
        estimate = self.estimate_s(size, grid_cells)
        with self._lock:
            self._check(size, deadline, estimate, time.monotonic())

    def _check(self, size: FitSize, deadline: float | None, estimate: float, now: float) -> None:
        if len(self._running) >= self.max_concurrent:
            raise Overloaded(f"server busy: {len(self._running)} scaling-law fit(s) running (limit "
                             f"{self.max_concurrent}); retry shortly", self._hint(now))
        if deadline is None:
            return
        if deadline <= now:
            raise DeadlineExceeded("deadline passed before the fit was admitted; not computed")
        if estimate > deadline - now:
            raise Overloaded(f"this fit needs about {estimate:.1f} s here ({size.n_points} points, "
                             f"{size.bootstrap} bootstrap replicates), more than its deadline allows "
                             f"({deadline - now:.1f} s); send fewer points or replicates, or allow longer",
                             self._jitter(self.retry_after_s))

    def release(self, ticket: int, size: FitSize | None = None, outcome: FitOutcome | None = None) -> None:
        """The fit's worker is done (finished, failed or stopped): free the slot and learn from its work
        (the time of any work done; the evaluation counts only of fits that ran to the end)."""
        with self._lock:
            self._running.pop(ticket, None)
            if size is not None and outcome is not None and outcome.evaluations > 0 and outcome.seconds > 0:
                done = outcome.evaluations * (size.n_points + EVAL_OVERHEAD_POINTS) + outcome.grid_cells
                self._s_per_work = ewma(self._s_per_work, outcome.seconds / done)
                if outcome.completed:
                    r = self._rates_of(size.form)
                    rep = ((outcome.evaluations - outcome.main_evaluations) / outcome.replicates
                           if outcome.replicates else r.replicate)
                    self._rates[size.form] = _FitRates(ewma(r.main, outcome.main_evaluations), ewma(r.replicate, rep))
            self._lock.notify_all()

    def _rates_of(self, form: str) -> _FitRates:
        return self._rates.get(form) or _FitRates(*_PRIOR_RATES.get(form, _PRIOR_RATES["chinchilla"]))

    def wait_idle(self, timeout: float) -> bool:
        """Block until no fit's worker is running (True), or ``timeout`` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._running, timeout)

    def _hint(self, now: float) -> float:
        left = min((max(est - (now - t0), 0.0) for t0, est in self._running.values()), default=0.0)
        return self._jitter(min(max(left, self.retry_after_s), self.retry_after_max_s))

    @staticmethod
    def _jitter(s: float) -> float:
        return s * random.uniform(0.5, 1.5)
