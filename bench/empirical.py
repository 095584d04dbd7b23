"""Last value with an empirical spread: the calibration bar (benchmark only, never on the serving path).

The forecast at a queried x is the last observed value moved the way the *other* curves of the same
source moved between the same two relative positions of their budgets (x / budget): the query's last
observed point and the queried x. Moves are taken on the log of the gap to the metric's ideal bound
(log(y - lower) for a loss with a lower bound, log(upper - y) for an accuracy with an upper bound,
log(y) for a positive curve, y itself otherwise), so curves of different levels compare. The predictive
quantiles are those of a Gaussian kernel smooth of the sibling moves (Silverman bandwidth).

Which curves count as siblings: the pipeline hands the engine every curve of the bench through
``prepare(records, tasks)``. For a query, the curve it was cut from is always left out, and so is its
whole group (TaskSet task, LCDB dataset, nanogpt track, ...: ``meta["group"]``) while at least
``MIN_SIBLINGS`` curves of other groups remain; otherwise only the run itself is left out. Queries
are matched to their curve by content (x, y, budget), so any copy of a task's query is recognised; a
query the engine was not prepared for falls back to ``LastValueEngine`` (with a warning).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from curvecast.domain.curve import ForecastQuery, Goal, XKind
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.sweep.model import GapTransform  # the service's sweep model moves curves on the same scale

from .baselines import LastValueEngine, _clip, forecast_each
from .data.record import CurveRecord
from .families import smoothed_quantile_samples
from .tasks import Task

MIN_SIBLINGS = 5
KERNEL_FLOOR = 1e-4  # smallest kernel bandwidth on the log scale (x max|y| on the identity scale)


@dataclass(frozen=True)
class Sibling:
    """One full recorded curve, on its relative x axis (x / budget)."""

    run_id: str
    source: str
    group: str
    goal: Goal
    r: np.ndarray
    y: np.ndarray
    log_axis: bool

    def at(self, r: np.ndarray) -> np.ndarray:
        """Values at relative positions ``r`` (linear interpolation; in log r on geometric axes)."""
        if self.log_axis:
            return np.interp(np.log(np.maximum(r, 1e-300)), np.log(self.r), self.y)
        return np.interp(r, self.r, self.y)


def query_key(x: np.ndarray, y: np.ndarray, horizon: float) -> str:
    """Content key of a prefix: the same curve, cutoff and budget give the same key."""
    h = hashlib.sha1(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    h.update(np.float64(horizon).tobytes())
    return h.hexdigest()


def _sibling(rec: CurveRecord) -> Sibling:
    r = rec.x / rec.budget
    log_axis = rec.x_kind in (XKind.SAMPLES, XKind.TOKENS) and bool(rec.x[0] > 0)
    return Sibling(rec.run_id, rec.source, str(rec.meta.get("group", "")), rec.goal, r, rec.y, log_axis)


class EmpiricalSpreadEngine:
    """Last value plus the empirical distribution of sibling curves' moves to the queried positions."""

    name = "empirical_spread"

    def __init__(self, min_siblings: int = MIN_SIBLINGS):
        self.min_siblings = min_siblings
        self._by_source: dict[str, list[Sibling]] = {}
        self._owners: dict[str, list[tuple[str, str, str]]] = {}  # query key -> [(source, run_id, group)]
        self._source_digest: dict[str, str] = {}
        self._fallback = LastValueEngine()

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "1", "numpy", detail=f"last value + moves of the source's other curves from the same relative position (leave the group out while >= {self.min_siblings} curves remain, else the run)")

    def prepare(self, records: Sequence[CurveRecord], tasks: Sequence[Task]) -> None:
        """Index every curve by source and every task's query by content."""
        self._by_source = {}
        for rec in records:
            self._by_source.setdefault(rec.source, []).append(_sibling(rec))
        group = {rec.run_id: str(rec.meta.get("group", "")) for rec in records}
        self._owners = {}
        for t in tasks:
            key = query_key(t.query.curve.x, t.query.curve.y, t.query.horizon)
            self._owners.setdefault(key, []).append((t.source, t.run_id, group.get(t.run_id, "")))
        self._source_digest = {}
        for src, sibs in self._by_source.items():
            h = hashlib.sha1()
            for s in sorted(sibs, key=lambda s: s.run_id):
                h.update(s.run_id.encode())
                h.update(np.ascontiguousarray(s.r).tobytes())
                h.update(np.ascontiguousarray(s.y).tobytes())
            self._source_digest[src] = h.hexdigest()

    def cache_token(self, q: ForecastQuery) -> str:
        """What besides the query decides the answer: the sibling curves of its source."""
        owners = self._owners.get(query_key(q.curve.x, q.curve.y, q.horizon), [])
        return ";".join(sorted({f"{src}:{self._source_digest.get(src, '')}:{rid}" for src, rid, _ in owners})) + f";min{self.min_siblings}"

    def siblings(self, q: ForecastQuery) -> list[Sibling]:
        """The curves whose moves make this query's spread (never its own curve or, if possible, group)."""
        owners = self._owners.get(query_key(q.curve.x, q.curve.y, q.horizon), [])
        if not owners:
            return []
        sources = {src for src, _, _ in owners}
        runs = {rid for _, rid, _ in owners}
        groups = {g for _, _, g in owners}
        pool = [s for src in sorted(sources) for s in self._by_source.get(src, []) if s.goal is q.curve.goal and s.run_id not in runs]
        other_groups = [s for s in pool if s.group not in groups]
        return other_groups if len(other_groups) >= self.min_siblings else pool

    def moves(self, q: ForecastQuery, sibs: Sequence[Sibling], tf: GapTransform) -> np.ndarray:
        """(n_siblings, n_query) moves on the transformed scale, from the query's relative position."""
        r0 = float(q.curve.x[-1]) / q.horizon
        rq = np.asarray(q.x_query, dtype=np.float64) / q.horizon
        level = float(q.curve.y[-1])
        rows = []
        for s in sibs:
            if s.r[0] > r0 + 1e-12:  # the sibling starts after the anchor: no move to read off
                continue
            z0 = tf.forward(s.at(np.array([r0])), level)[0]
            rows.append(tf.forward(s.at(rq), level) - z0)
        return np.array(rows).reshape(len(rows), len(rq))

    def _one(self, q: ForecastQuery) -> EngineForecast:
        sibs = self.siblings(q)
        y = q.curve.y
        tf = GapTransform.for_curve(q.curve.goal, q.curve.lower_bound, q.curve.upper_bound, y)
        mv = self.moves(q, sibs, tf) if sibs else np.zeros((0, len(q.x_query)))
        if len(mv) < 2:
            fb = self._fallback._one(q)
            return EngineForecast(fb.marginals, self.name, warnings=("fewer than 2 sibling curves: random-walk spread of the prefix",), details={"n_siblings": float(len(mv))})
        z_last = tf.forward(np.array([y[-1]]), float(y[-1]))[0]
        floor = KERNEL_FLOOR * (max(float(np.max(np.abs(y))), 1e-12) if tf.kind == "identity" else 1.0)
        z = z_last + smoothed_quantile_samples(mv, floor)
        samples = tf.inverse(z)
        m = Marginals.from_samples(q.x_query, samples)
        return EngineForecast(_clip(m, q), self.name, details={"n_siblings": float(len(mv))})

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        return forecast_each(self._one, queries)
