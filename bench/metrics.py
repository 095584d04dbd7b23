"""Scores of one forecast against held-out truth, and their aggregation per source x cutoff x engine.

Definitions (also in bench/README.md):
- ``ll``: mean log-density of the held-out points, in the curve's own units (as in the LC-PFN paper,
  whose curves live in [0, 1]). ``ll_norm`` = ``ll + log(scale)`` is the same density after mapping the
  curve to unit range (``scale`` = range of the whole recorded curve), so sources with different units
  compare; on [0, 1] curves it is the LC-PFN number up to that range.
- ``crps`` in own units and ``crps_norm`` = crps / scale.
- final value: the median forecast at the last recorded x vs the truth; absolute, relative (/|truth|)
  and normalised (/scale) errors.
- coverage of the central 50/80/90% intervals, pooled over held-out points.
- ``ece``: PIT calibration error, mean over levels q = 0.05..0.95 of |P(PIT <= q) - q|, pooled points.
- sanity flags (issue 12), each an answer no user should get: ``below_floor`` (a quantile below the
  metric's floor: the declared lower bound, or 0 for a minimised metric that was never negative; or
  above a declared ceiling), ``absurd_median`` (final median off by > 50% of the truth although the
  last observed value is within 10% of it), ``far_miss`` (the held-out final value lies farther outside
  the 90% interval than the interval is wide).
- steps-to-target: target = the true value 90% into the remaining run; predicted x = first queried x
  where P(reached by x) >= 0.5 (P from the marginal at x, made monotone with a running max); error as a
  fraction of the remaining run; a target the forecast never reaches counts as predicted at the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from curvecast.domain.distribution import Marginals
from curvecast.domain.curve import Goal

from .tasks import Task

INTERVALS: tuple[float, ...] = (0.5, 0.8, 0.9)
OVERCONFIDENT_LL = -10.0  # a task whose mean normalised log-density is below this is an overconfident miss
PIT_LEVELS: np.ndarray = np.round(np.arange(0.05, 0.951, 0.05), 2)


@dataclass(frozen=True)
class TaskScore:
    """Scores of one engine on one task; ``error`` is set (and the rest empty) when the forecast failed."""

    key: str
    source: str
    cutoff: float
    engine: str
    error: str | None = None
    ll: float = float("nan")
    ll_norm: float = float("nan")
    crps: float = float("nan")
    crps_norm: float = float("nan")
    final_pred: float = float("nan")
    final_abs_err: float = float("nan")
    final_rel_err: float = float("nan")
    final_norm_err: float = float("nan")
    pit: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inside: dict[float, int] = field(default_factory=dict)
    n_points: int = 0
    stt_err: float | None = None  # |pred - true| / remaining run, when the truth reaches the target
    stt_pred: float | None = None
    events: dict[str, tuple[float, bool]] = field(default_factory=dict)  # event -> (predicted P, outcome)
    sanity: tuple[str, ...] = ()  # SANITY_FLAGS this answer raised


SANITY_FLAGS: tuple[str, ...] = ("below_floor", "absurd_median", "far_miss")
SANITY_STABLE = 0.10  # "the last value is within 10%" of the final truth ...
SANITY_JUMP = 0.50  # ... yet the median is off by more than this share
SANITY_FLAT_REF = 0.05  # ... of the level, or of this share of the curve's range for a level near 0


def metric_limits(task: Task) -> tuple[float, float]:
    """The floor and ceiling a forecast must respect: declared bounds, else 0 under a never-negative loss."""
    c = task.query.curve
    lo = c.lower_bound if c.lower_bound is not None else (0.0 if c.goal is Goal.MINIMIZE and float(np.min(task.y_obs)) >= 0 else -np.inf)
    hi = c.upper_bound if c.upper_bound is not None else np.inf
    return float(lo), float(hi)


def sanity_flags(task: Task, m: Marginals, final_pred: float, lo90: float, hi90: float) -> tuple[str, ...]:
    """Which SANITY_FLAGS the answer raises (see the module docstring)."""
    flags: list[str] = []
    floor, ceiling = metric_limits(task)
    tol = 1e-9 * max(task.scale, 1e-12)
    if np.any(m.values < floor - tol) or np.any(m.values > ceiling + tol):
        flags.append("below_floor")
    truth = task.final_true
    # relative to the level, or to the curve's range when the level is ~0 (a log-loss at 0 has no "50%")
    ref = max(abs(truth), SANITY_FLAT_REF * task.scale, 1e-12)
    if abs(float(task.y_obs[-1]) - truth) <= SANITY_STABLE * ref and abs(final_pred - truth) > SANITY_JUMP * ref:
        flags.append("absurd_median")
    if max(lo90 - truth, truth - hi90, 0.0) > max(hi90 - lo90, 0.0):
        flags.append("far_miss")
    return tuple(flags)


def check_marginals(m: Marginals, task: Task) -> str | None:
    """Why a forecast cannot be scored, or None if it can."""
    if len(m.x) != len(task.x_true):
        return f"marginals have {len(m.x)} x, expected {len(task.x_true)}"
    if not (np.all(np.isfinite(m.values)) and np.all(np.isfinite(m.mean))):
        return "non-finite marginals"
    return None


def steps_to_target(m: Marginals, task: Task) -> float | None:
    """Predicted x at which the target is reached with probability >= 0.5, or None within the budget."""
    assert task.target is not None
    p = m.cdf(np.full(len(m.x), task.target))
    if task.query.curve.goal is Goal.MAXIMIZE:
        p = 1.0 - p
    p = np.maximum.accumulate(p)
    hit = np.nonzero(p >= 0.5)[0]
    return float(m.x[hit[0]]) if len(hit) else None


def score_task(task: Task, m: Marginals, engine: str) -> TaskScore:
    bad = check_marginals(m, task)
    if bad is not None:
        return TaskScore(task.key, task.source, task.cutoff, engine, error=bad)
    y = task.y_true
    with np.errstate(all="ignore"):
        lp = m.log_pdf(y)
        crps = m.crps(y)
        pit = m.cdf(y)
        qs = m.quantile([0.5] + [lvl for p in INTERVALS for lvl in ((1 - p) / 2, (1 + p) / 2)])
    lp = np.where(np.isfinite(lp), lp, -1e6)
    median = qs[:, 0]
    inside = {}
    for i, p in enumerate(INTERVALS):
        lo, hi = qs[:, 1 + 2 * i], qs[:, 2 + 2 * i]
        inside[p] = int(np.sum((y >= lo) & (y <= hi)))
    final_true = task.final_true
    final_pred = float(median[-1])
    i90 = 1 + 2 * INTERVALS.index(0.9)
    sanity = sanity_flags(task, m, final_pred, float(qs[-1, i90]), float(qs[-1, i90 + 1]))
    abs_err = abs(final_pred - final_true)
    stt_err = stt_pred = None
    if task.target is not None and task.target_x_true is not None:
        stt_pred = steps_to_target(m, task)
        remaining = max(task.query.horizon - task.cutoff * task.query.horizon, 1e-12)
        pred_x = stt_pred if stt_pred is not None else task.query.horizon
        stt_err = abs(pred_x - task.target_x_true) / remaining
    events: dict[str, tuple[float, bool]] = {}
    sign = task.query.curve.goal.sign
    for name, thr in (("beats_incumbent", task.incumbent), ("reaches_top_quartile", task.top_target)):
        if thr is None:
            continue
        p_below = float(m.at(len(m.x) - 1).cdf(np.array([thr]))[0])
        p = p_below if sign > 0 else 1.0 - p_below
        events[name] = (min(max(p, 0.0), 1.0), bool(sign * final_true < sign * thr))
    ll = float(np.mean(lp))
    c = float(np.mean(crps))
    return TaskScore(
        task.key, task.source, task.cutoff, engine,
        ll=ll, ll_norm=ll + float(np.log(task.scale)), crps=c, crps_norm=c / task.scale,
        final_pred=final_pred, final_abs_err=abs_err, final_rel_err=abs_err / max(abs(final_true), 1e-12),
        final_norm_err=abs_err / task.scale, pit=np.asarray(pit, dtype=np.float64), inside=inside,
        n_points=len(y), stt_err=stt_err, stt_pred=stt_pred, events=events, sanity=sanity,
    )


def pit_reliability(pit: np.ndarray) -> np.ndarray:
    """Observed frequency P(PIT <= q) at each of PIT_LEVELS."""
    if len(pit) == 0:
        return np.full(len(PIT_LEVELS), np.nan)
    return np.array([float(np.mean(pit <= q)) for q in PIT_LEVELS])


def pit_ece(pit: np.ndarray) -> float:
    rel = pit_reliability(pit)
    return float(np.mean(np.abs(rel - PIT_LEVELS))) if len(pit) else float("nan")


def _nan_stat(values: list[float], fn) -> float:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return float(fn(v)) if len(v) else float("nan")


def aggregate(scores: Iterable[TaskScore]) -> dict[str, float]:
    """Summary of a group of task scores (one source x cutoff x engine, or any pooling of them)."""
    scores = list(scores)
    ok = [s for s in scores if s.error is None]
    out: dict[str, float] = {"n_tasks": float(len(scores)), "n_failed": float(len(scores) - len(ok))}
    if not ok:
        return out
    n_pts = sum(s.n_points for s in ok)
    pit = np.concatenate([s.pit for s in ok])
    stt = [s.stt_err for s in ok if s.stt_err is not None]
    out.update(
        {
            "ll": _nan_stat([s.ll for s in ok], np.mean),
            "ll_norm": _nan_stat([s.ll_norm for s in ok], np.mean),
            "ll_norm_median": _nan_stat([s.ll_norm for s in ok], np.median),
            "n_overconfident": float(sum(1 for s in ok if s.ll_norm < OVERCONFIDENT_LL)),
            "crps": _nan_stat([s.crps for s in ok], np.mean),
            "crps_norm": _nan_stat([s.crps_norm for s in ok], np.mean),
            "final_abs_err_median": _nan_stat([s.final_abs_err for s in ok], np.median),
            "final_abs_err_mean": _nan_stat([s.final_abs_err for s in ok], np.mean),
            "final_rel_err_median": _nan_stat([s.final_rel_err for s in ok], np.median),
            "final_rel_err_mean": _nan_stat([s.final_rel_err for s in ok], np.mean),
            "final_norm_err_median": _nan_stat([s.final_norm_err for s in ok], np.median),
            "ece": pit_ece(pit),
            "n_points": float(n_pts),
            "stt_err_median": _nan_stat(stt, np.median) if stt else float("nan"),
            "stt_n": float(len(stt)),
            "n_insane": float(sum(1 for s in ok if s.sanity)),
            **{f"n_{flag}": float(sum(1 for s in ok if flag in s.sanity)) for flag in SANITY_FLAGS},
        }
    )
    for p in INTERVALS:
        out[f"cover{int(round(p * 100))}"] = sum(s.inside.get(p, 0) for s in ok) / max(n_pts, 1)
    return out


EVENT_BINS = 10


def event_stats(pairs: list[tuple[float, bool]]) -> dict[str, float]:
    """Brier score, Brier skill vs the base rate, and binned ECE of probabilities for a binary event."""
    if not pairs:
        return {"n": 0.0}
    p = np.array([a for a, _ in pairs])
    o = np.array([float(b) for _, b in pairs])
    base = float(o.mean())
    brier = float(np.mean((p - o) ** 2))
    ref = base * (1.0 - base)
    bins = np.minimum((p * EVENT_BINS).astype(int), EVENT_BINS - 1)
    ece = sum(abs(p[bins == b].mean() - o[bins == b].mean()) * np.sum(bins == b) for b in range(EVENT_BINS) if np.any(bins == b)) / len(p)
    return {"n": float(len(p)), "base_rate": base, "brier": brier, "bss": (1.0 - brier / ref) if ref > 0 else float("nan"), "ece": float(ece)}


def event_reliability(pairs: list[tuple[float, bool]]) -> list[tuple[float, float, int]]:
    """(mean predicted P, observed frequency, count) per probability bin."""
    p = np.array([a for a, _ in pairs])
    o = np.array([float(b) for _, b in pairs])
    bins = np.minimum((p * EVENT_BINS).astype(int), EVENT_BINS - 1)
    return [(float(p[bins == b].mean()), float(o[bins == b].mean()), int(np.sum(bins == b))) for b in range(EVENT_BINS) if np.any(bins == b)]


# Which direction is better for each headline metric (used by the wins table).
HIGHER_IS_BETTER = {"ll_norm": True, "ll": True, "crps_norm": False, "final_rel_err_median": False, "ece": False, "stt_err_median": False}
