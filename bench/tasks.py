"""Cut each recorded curve into forecasting tasks: observe a prefix of the budget, predict the rest.

The ``ForecastQuery`` a task hands to an engine is built from the observed prefix only (x, y, the LR
actually used up to the cutoff) plus the run's *plan* (budget and planned LR schedule). Held-out values
live only on the task for scoring; tests/test_bench_tasks.py checks that none of them leaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curvecast.domain.curve import Curve, ForecastQuery, LrSchedule, RunInfo, ScheduleShape

from .data.record import CurveRecord

CUTOFFS: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)
TARGET_FRACTION = 0.9  # the steps-to-target target is the true value reached 90% into the remaining run
MIN_TARGET_POINTS = 5  # fewer held-out points make steps-to-target trivially exact (the last point)
MAX_HELD_OUT = 256  # longer held-out parts (raw per-step logs) are scored on this many evenly spaced points


@dataclass(frozen=True)
class Task:
    """One (curve, cutoff) forecasting problem and the truth it is scored on."""

    source: str
    run_id: str
    cutoff: float
    query: ForecastQuery  # what the engine sees
    x_obs: np.ndarray
    y_obs: np.ndarray
    x_true: np.ndarray  # held-out x (== query.x_query)
    y_true: np.ndarray  # held-out truth
    scale: float  # per-curve normalisation scale (range of the whole recorded curve), for cross-source metrics
    target: float | None  # steps-to-target target value, if one is set
    target_x_true: float | None  # first held-out x where the truth reaches the target
    incumbent: float | None = None  # median final value of the other runs in the curve's group
    top_target: float | None = None  # best-quartile final value of the other runs in the group
    final_truth: float | None = None  # the run's final value when its last point is noisy (raw logs), else y_true[-1]

    @property
    def final_true(self) -> float:
        return float(self.y_true[-1]) if self.final_truth is None else self.final_truth

    @property
    def key(self) -> str:
        return f"{self.source}|{self.run_id}|{self.cutoff:g}"


def planned_schedule(rec: CurveRecord) -> LrSchedule | None:
    """The run's planned LR schedule: its parametric form, or the recorded per-x LR as an explicit plan."""
    if rec.schedule is not None:
        return rec.schedule
    if rec.lr is not None and len(rec.lr):
        return LrSchedule(ScheduleShape.EXPLICIT, peak_lr=float(np.max(rec.lr)), final_lr=float(rec.lr[-1]), total_steps=rec.budget, steps=rec.x.copy(), values=rec.lr.copy())
    return None


def curve_scale(rec: CurveRecord) -> float:
    """Range of the recorded curve, floored so flat curves do not explode normalised scores."""
    rng = float(np.max(rec.y) - np.min(rec.y))
    return max(rng, 1e-3 * max(abs(float(np.mean(rec.y))), 1e-9), 1e-12)


def _target(rec: CurveRecord, x_c: float, x_true: np.ndarray, y_true: np.ndarray, y_obs: np.ndarray) -> tuple[float | None, float | None]:
    if len(x_true) < MIN_TARGET_POINTS:
        return None, None
    x_t = x_c + TARGET_FRACTION * (rec.budget - x_c)
    target = float(np.interp(x_t, x_true, y_true))
    sign = rec.goal.sign  # sign * value: lower is better
    if sign * target >= float(np.min(sign * y_obs)):  # already reached in the prefix: nothing to forecast
        return None, None
    reached = np.nonzero(sign * y_true <= sign * target + 1e-15)[0]
    return target, (float(x_true[reached[0]]) if len(reached) else None)


MIN_PEERS = 3


def peer_thresholds(records: list[CurveRecord]) -> dict[str, tuple[float, float]]:
    """Per run: (median, best-quartile) final value of the *other* runs of its group (source, meta group).

    These are the "incumbent" and "ambitious target" of a model-selection decision, taken from peers so
    the run's own held-out values never define its event. Groups need at least MIN_PEERS other runs.
    """
    groups: dict[tuple[str, str], list[CurveRecord]] = {}
    for r in records:
        groups.setdefault((r.source, str(r.meta.get("group", ""))), []).append(r)
    out: dict[str, tuple[float, float]] = {}
    for members in groups.values():
        finals = np.array([m.final for m in members])
        for i, r in enumerate(members):
            others = np.delete(finals, i)
            if len(others) < MIN_PEERS:
                continue
            best_q = 0.25 if r.goal.sign > 0 else 0.75
            out[r.run_id] = (float(np.median(others)), float(np.quantile(others, best_q)))
    return out


def make_tasks(records: list[CurveRecord], cutoffs: tuple[float, ...] = CUTOFFS, min_obs: int = 2) -> list[Task]:
    """All (record, cutoff) tasks with at least ``min_obs`` observed points and one point to predict."""
    tasks: list[Task] = []
    peers = peer_thresholds(records)
    for rec in records:
        incumbent, top = peers.get(rec.run_id, (None, None))
        sched = planned_schedule(rec)
        scale = curve_scale(rec)
        for c in cutoffs:
            x_c = c * rec.budget
            obs = rec.x <= x_c + 1e-9 * max(abs(x_c), 1.0)
            n_obs = int(obs.sum())
            if n_obs < min_obs or n_obs == len(rec.x):
                continue
            x_obs, y_obs = rec.x[:n_obs].copy(), rec.y[:n_obs].copy()
            x_true, y_true = rec.x[n_obs:].copy(), rec.y[n_obs:].copy()
            if len(x_true) > MAX_HELD_OUT:  # always keeps the last point
                keep = np.unique(np.round(np.linspace(0, len(x_true) - 1, MAX_HELD_OUT)).astype(int))
                x_true, y_true = x_true[keep], y_true[keep]
            curve = Curve(
                x=x_obs,
                y=y_obs,
                goal=rec.goal,
                x_kind=rec.x_kind,
                metric=rec.metric,
                lower_bound=rec.lower_bound,
                upper_bound=rec.upper_bound,
                lr=None if rec.lr is None else rec.lr[:n_obs].copy(),
            )
            run = RunInfo(total_steps=rec.budget, schedule=sched, model_params=rec.n_params, tokens_per_step=rec.tokens_per_step)
            query = ForecastQuery(curve=curve, run=run, x_query=x_true.copy())
            target, target_x = _target(rec, x_c, x_true, y_true, y_obs)
            final_truth = rec.meta.get("final_truth")
            tasks.append(Task(rec.source, rec.run_id, c, query, x_obs, y_obs, x_true, y_true, scale, target, target_x, incumbent, top, None if final_truth is None else float(final_truth)))
    return tasks
