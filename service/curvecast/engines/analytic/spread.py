"""Honest predictive spread: a horizon-growing floor and a heavy-tailed "the law is wrong" component.

A fitted law can be confidently wrong (a phase change in an accuracy curve, a loss that keeps falling
after a short flat prefix, a spike): its parameter and noise samples then put all mass far from the
truth and the log-likelihood of the outcome is catastrophic. Two guards, both in the curve's own units
and independent of which law was fitted:

* ``floor_sd``: a minimum model-error sd that grows with log(horizon / observed span), proportional to
  the curve's recent slope per unit log x, so extrapolating 10x the observed span is never more certain
  than the change the curve is still making allows;
* ``with_wide_component``: a small weight of Student-t samples around the forecast median, scaled by the
  same range and by the gap between the forecast and the last value, so a miss costs a few nats, not 1e9.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats

from ...domain.curve import ForecastQuery

WIDE_WEIGHT = 0.05  # mass of the heavy-tailed component (costs log(0.95) = 0.05 nats on a hit)
WIDE_DF = 1.0  # Student-t degrees of freedom of that component (Cauchy: spikes and divergence too)
FLOOR_GROWTH = 0.1  # minimum model-error sd per unit log-horizon, in units of the recent slope
WIDE_BASE = 0.25  # wide-component scale at the last observed x, in units of the observed range
WIDE_LEVEL = 0.05  # ... and at least this share of the level (loss spikes scale with the loss, not the range)


def curve_scale(z: np.ndarray, noise: float, spread: float | None = None) -> float:
    """Robust size of the observed curve's movement; never below a few noise sds or 1e-3 of its level.

    ``spread``: the 5-95% range of ``z`` when the caller has it already (``Prepared.z_range``)."""
    z = np.asarray(z, dtype=np.float64)
    if spread is not None:
        rng = float(spread)
    elif len(z) > 1:
        q05, q95 = np.quantile(z, [0.05, 0.95])
        rng = float(q95 - q05)
    else:
        rng = 0.0
    level = float(np.median(np.abs(z))) if len(z) else 0.0
    return max(rng, 3.0 * noise, 1e-3 * level, 1e-12)


def recent_slope(u: np.ndarray, z: np.ndarray, noise: float) -> float:
    """|change of z per unit log u| over the last halving of the observed span (robust medians).

    For the power-law-like curves the families describe, the change still to come is about this slope
    times log(horizon), so it sets the scale of an honest extrapolation error; the full range would be
    dominated by the early drop and the noise alone by nothing at all.
    """
    late = u >= 0.5
    mid = (u >= 0.25) & (u < 0.5)
    if late.sum() >= 1 and mid.sum() >= 1:
        a, b = float(np.median(z[mid])), float(np.median(z[late]))
        ua, ub = float(np.median(u[mid])), float(np.median(u[late]))
        slope = abs(b - a) / max(np.log(ub / ua), 1e-3)
    elif len(z) >= 2:
        slope = abs(float(z[-1] - z[0])) / max(float(np.log(u[-1] / u[0])), 1e-3)
    else:
        slope = 0.0
    return max(slope, noise)


def log_horizon(ratio: np.ndarray) -> np.ndarray:
    """log of (queried x / last observed x), 0 inside the observed range."""
    return np.log(np.maximum(np.asarray(ratio, dtype=np.float64), 1.0))


def floor_sd(slope: float, ratio: np.ndarray) -> np.ndarray:
    """Minimum model-error sd at horizon ``ratio`` (queried x over last observed x): a share of the
    change the recent slope alone would make over that horizon."""
    return FLOOR_GROWTH * slope * log_horizon(ratio)


@functools.lru_cache(maxsize=8)
def _t_levels(k: int) -> np.ndarray:
    return stats.t.ppf((np.arange(k) + 0.5) / k, WIDE_DF)


def sorted_median(srt: np.ndarray) -> np.ndarray:
    """``np.median(samples, axis=0)`` from ``np.sort(samples, axis=0)``: the same middle order
    statistics and the same mean of the two, and NaN where a column has one (sorted last)."""
    n = len(srt)
    half = n // 2
    med = np.mean(srt[half - 1 : half + 1], axis=0) if n % 2 == 0 else np.mean(srt[half : half + 1], axis=0)
    return np.where(np.isnan(srt[-1]), np.nan, med)


def with_wide_component_sorted(samples: np.ndarray, srt: np.ndarray, z_last: float, scale: float, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``with_wide_component`` given ``srt = np.sort(samples, axis=0)``; also returns the result sorted.

    One sort serves the median here and the quantiles later: the appended rows are one more sorted
    run, which a merge sort joins in linear time (partition for the median and a full sort of the
    result cost about as much as the sort each)."""
    out = with_wide_component(samples, z_last, scale, ratio, med=sorted_median(srt))
    wide = out[len(samples) :]
    return out, np.sort(np.concatenate([srt, wide], axis=0), axis=0, kind="stable")


def with_wide_component(samples: np.ndarray, z_last: float, scale: float, ratio: np.ndarray, med: np.ndarray | None = None) -> np.ndarray:
    """Append WIDE_WEIGHT (of the total) Student-t samples centred on the per-x median of ``samples``.

    Its scale is the largest of the observed range (times 0.25 + log-horizon), the distance between
    the forecast median and the last value (a bold extrapolation is exactly when the law may be wrong)
    and 5% of the level.
    """
    s = len(samples)
    k = max(int(round(s * WIDE_WEIGHT / (1.0 - WIDE_WEIGHT))), 1)
    med = np.median(samples, axis=0) if med is None else med
    width = np.maximum(scale * (WIDE_BASE + log_horizon(ratio)), np.abs(med - z_last))
    width = np.maximum(width, WIDE_LEVEL * abs(z_last))
    # stratified Student-t quantiles, not random draws: the outermost quantile levels (and so the
    # exponential tails of the marginals beyond them) must not hinge on one or two extreme draws
    t = _t_levels(k)[:, None]
    return np.concatenate([samples, med[None] + width[None] * t], axis=0)


# Loss drop per unit of relative LR decrease still to come (a cool-down to ~0 gains 2-4% of the loss for
# 25M-400M GPTs in the Multi-Power-Law runs, more for small short runs); the curve families know nothing
# of schedules, so when the caller gives one, samples get a drop drawn uniformly from 0 to twice this.
ANNEAL_GAIN = 0.04
# The most a cool-down still ahead can gain, as a share of the loss: on the 419 complete ScAn-Bench LLM
# WSD runs the loss fell from the decay start to the end by 3.9% (median), 8.5% (95%) and 20% at most,
# the ongoing power-law gain included. The LR laws' annealing strength is log-normal (a factor e per
# prior sd), so its upper tail alone would promise drops to a loss of 0; ``soft_cap_gain`` bounds it.
ANNEAL_MAX_GAIN = 0.15


def soft_cap_gain(gain: np.ndarray, cap: float | np.ndarray) -> np.ndarray:
    """``cap * tanh(gain / cap)`` for positive gains: unchanged while small, never beyond ``cap``, and
    smooth, so no samples pile up on the cap (a pile would be a zero-width tail). Negative gains
    (the LR rising again) pass unchanged."""
    cap = np.maximum(cap, 1e-300)
    return np.where(gain > 0, cap * np.tanh(np.maximum(gain, 0.0) / cap), gain)


def planned_lr_drop(schedule, x_last: float, x_query: np.ndarray) -> np.ndarray:
    """LR decrease from the last observed x to each queried x, in units of the schedule's peak LR.

    Peak units, as in the Multi-Power Law's annealing term: late in a cosine schedule little decay is
    left (and the observed trend already carries it), before a WSD cool-down all of it is.
    """
    xs = np.concatenate([[x_last], np.asarray(x_query, dtype=np.float64)])
    lr = np.asarray(schedule.lr_at(xs), dtype=np.float64)
    peak = float(schedule.peak_lr) if np.isfinite(schedule.peak_lr) and schedule.peak_lr > 0 else float(np.nanmax(lr))
    if not np.isfinite(peak) or peak <= 0 or not np.isfinite(lr[0]):
        return np.zeros(len(xs) - 1)
    drop = np.where(np.isfinite(lr[1:]), (lr[0] - lr[1:]) / peak, 0.0)
    return np.clip(drop, 0.0, 1.0)


def with_anneal_drop(samples: np.ndarray, drop: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Lower (z space: improve) each sample path by ``drop * level * ANNEAL_GAIN * U(0, 2)``.

    ``level`` is the loss, capped by the caller at what the run has improved so far (a run that never
    learned gains nothing from a cool-down)."""
    if not np.any(drop > 0) or level <= 0:
        return samples
    k = len(samples)
    v = rng.permutation((np.arange(k) + 0.5) / k * 2.0)[:, None]
    return samples - v * (ANNEAL_GAIN * level) * drop[None]


def with_planned_anneal(q: ForecastQuery, z_samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Room for the extra loss drop of a planned LR decay the observed part has not seen yet.

    Only for positive losses with a known schedule; the drop is bounded (``with_anneal_drop``)."""
    curve = q.curve
    if q.run.schedule is None or curve.goal.sign < 0 or not np.all(curve.y > 0):
        return z_samples
    drop = planned_lr_drop(q.run.schedule, float(curve.x[-1]), np.asarray(q.x_query, dtype=np.float64))
    level = min(float(np.median(curve.y[-3:])), float(np.ptp(curve.y)) / ANNEAL_GAIN)
    return with_anneal_drop(z_samples, drop, level, rng)
