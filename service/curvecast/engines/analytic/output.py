"""The analytic engine's shared output path: samples to marginals, steps-to-target details, fallback.

Both the curve-family path (``engine``) and the learning-rate-law path (``lr_engine``) end here, so
bounds, divergence and non-finite handling are the same whichever law answered; neither path imports
the other's internals.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ...domain.curve import ForecastQuery
from ...domain.distribution import LEVELS, Marginals
from ..base import EngineForecast
from .spread import log_horizon, with_planned_anneal, with_wide_component


def target_details(details: dict[str, float], x_star: np.ndarray, q: ForecastQuery) -> None:
    """Steps-to-target summary: probability it is ever reached, by the horizon, and its quantiles."""
    finite = np.isfinite(x_star)
    details["target_prob_reachable"] = float(np.mean(finite))
    details["target_prob_by_horizon"] = float(np.mean(x_star <= q.horizon))
    if finite.any():
        xs = np.where(finite, x_star, np.inf)
        for lvl, v in zip((0.05, 0.5, 0.95), np.quantile(xs, [0.05, 0.5, 0.95])):  # one partition, same values
            if np.isfinite(v):
                details[f"target_x_q{int(lvl * 100):02d}"] = float(v)


def to_marginals(q: ForecastQuery, z_samples: np.ndarray, warnings: list[str], z_sorted: np.ndarray | None = None) -> Marginals:
    """Quantiles of the samples, in the curve's units; ``z_sorted`` (``np.sort(z_samples, axis=0)``)
    spares the sort when nothing below reorders the samples."""
    curve = q.curve
    z = curve.goal.sign * np.asarray(curve.y, dtype=np.float64)
    if curve.diverged:
        warnings.append(f"run diverged at x={curve.diverged_at:g}; values after it assume the run stays broken")
        dead = np.asarray(q.x_query) >= float(curve.diverged_at)
        worst = float(np.max(z))
        z_samples = np.where(dead[None], worst + np.abs(z_samples - np.median(z_samples, axis=0)), z_samples)
        z_sorted = None
    y = curve.goal.sign * z_samples
    finite = np.isfinite(y)
    srt = None
    if finite.all():
        if z_sorted is not None:  # negation reverses the order exactly
            srt = z_sorted if curve.goal.sign > 0 else curve.goal.sign * z_sorted[::-1]
    else:
        y = np.where(finite, y, curve.goal.sign * z[-1])
    marg = from_samples(np.asarray(q.x_query, dtype=np.float64), y, srt)
    return finite_marginals(marg.clip(curve.lower_bound, curve.upper_bound), float(curve.y[-1]))


def from_samples(x: np.ndarray, samples: np.ndarray, srt: np.ndarray | None = None) -> Marginals:
    """Like ``Marginals.from_samples`` but one sort instead of 103 partitions (the hot spot)."""
    if srt is None:
        srt = np.sort(samples, axis=0)
    pos = LEVELS * (len(srt) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(srt) - 1)
    frac = (pos - lo)[:, None]
    values = (srt[lo] * (1.0 - frac) + srt[hi] * frac).T
    return Marginals.from_quantile_values(x, values, column_means(samples))


def column_means(samples: np.ndarray) -> np.ndarray:
    """``samples.mean(axis=0)`` summed in the same order whatever the number of columns: numpy sums a
    lone column pairwise but several columns row by row, and the mean at an x must not depend on how
    many other x were asked. Each row of the transposed copy is reduced on its own, the same way."""
    return np.ascontiguousarray(samples.T).mean(axis=1)


def finite_marginals(m: Marginals, default: float) -> Marginals:
    """Non-finite quantiles or means replaced by ``default`` (the last observed value)."""
    if np.isfinite(m.values).all() and np.isfinite(m.mean).all():
        return m  # rebuilding would give the same (already non-decreasing) rows
    vals = np.where(np.isfinite(m.values), m.values, default)
    mean = np.where(np.isfinite(m.mean), m.mean, default)
    return Marginals.from_quantile_values(m.x, vals, mean)


# ---- fallback: last value with a spread that widens with the horizon ----------------------------------
FALLBACK_TREND = 0.5  # share of the latest log-x slope continued (improving direction)
FALLBACK_TREND_WORSE = 0.25  # ... and when the curve got worse over the observed part
FALLBACK_LEVEL = 0.06  # base spread at least this share of the level (3% missed short ScAn curves by far)
FALLBACK_SD_BASE = 0.25  # sd per unit log-horizon, in units of the base spread
FALLBACK_SD_SHIFT = 0.5  # extra sd per unit of the trend shift (the trend itself is uncertain)
N_FALLBACK_SAMPLES = 2000


def fallback(q: ForecastQuery, warnings: list[str]) -> EngineForecast:
    """Last value, the latest trend in log x damped, a spread growing with log-horizon, heavy tails.

    Used for very short curves and after numerical failures, so it must never be overconfident: its
    base spread is the latest change, at least 6% of the level (20% with a single point); the slope
    of the last segment in log x is continued at half strength (curves decelerate). Every x is
    computed on its own from stratified normal scores, so it is deterministic and does not depend on
    which other x were asked.
    """
    curve = q.curve
    x = np.asarray(curve.x, dtype=np.float64)
    z = curve.goal.sign * np.asarray(curve.y, dtype=np.float64)
    xq = np.asarray(q.x_query, dtype=np.float64)
    last = float(z[-1])
    # the latest change is what the curve does now; the full range is dominated by the early drop
    step = abs(last - float(z[-2])) if len(z) > 1 else 0.0
    base = max(step, (FALLBACK_LEVEL if len(z) > 1 else 0.2) * abs(last), 1e-9)
    if curve.lower_bound is not None and curve.upper_bound is not None:
        base = min(base, 0.5 * (curve.upper_bound - curve.lower_bound))
    x_last = float(x[-1])
    x0 = float(x[0]) if len(x) else 0.0
    origin = min(x0, 0.0)
    span = max(x_last - origin, 1e-12)
    ratio = np.maximum((xq - origin) / span, 1e-12)
    lh = log_horizon(ratio)
    inside = xq <= x_last
    center = np.where(inside, np.interp(xq, x, z), last)
    trend = 0.0
    x_prev = float(x[-2]) if len(x) >= 2 else x0
    if len(z) >= 2 and x_prev - origin > 0:  # latest slope per unit log x
        trend = (last - float(z[-2])) / max(np.log((x_last - origin) / (x_prev - origin)), 1e-12)
    trend *= FALLBACK_TREND if trend < 0 else FALLBACK_TREND_WORSE
    # without a trend, the typical direction of travel is "better": shift the centre a little that way
    shift = np.where(trend != 0.0, trend * lh, -0.05 * base * lh)
    center = center + shift
    sd = base * np.where(inside, 0.25, np.minimum(FALLBACK_SD_BASE * (0.5 + lh), 2.0)) + FALLBACK_SD_SHIFT * np.abs(shift)
    std_normal = special.ndtri((np.arange(N_FALLBACK_SAMPLES) + 0.5) / N_FALLBACK_SAMPLES)[:, None]
    z_samples = with_planned_anneal(q, center[None] + sd[None] * std_normal, np.random.default_rng(0))
    z_samples = with_wide_component(z_samples, last, base, ratio)
    y = curve.goal.sign * z_samples
    marg = from_samples(xq, y).clip(curve.lower_bound, curve.upper_bound)
    if curve.diverged:
        warnings = warnings + [f"run diverged at x={curve.diverged_at:g}"]
    return EngineForecast(
        marginals=finite_marginals(marg, float(curve.y[-1])), engine="analytic", warnings=tuple(warnings), details={"fallback": 1.0}
    )
