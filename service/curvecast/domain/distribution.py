"""Predictive marginals: one distribution per queried x, stored as a dense grid of quantiles.

Every engine answers in this one form, so ensembling, decisions, compute-to-target and the benchmark
never need to know which engine produced a forecast. The quantile grid is dense enough (103 levels)
to give log-densities and CRPS; outside the outermost levels an exponential tail keeps the density
proper so a surprising observation costs a finite, honest log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import special

LEVELS: np.ndarray = np.concatenate(([0.001, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.999]))
_TAIL_MASS = float(LEVELS[0])  # mass beyond each outermost level
_MIN_WIDTH = 1e-12


def _sorted_rows(values: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(values, axis=-1)


def count_le_rows(rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per row ``i``, how many of ``rows[i]`` (sorted) are <= each ``v[i, g]``: a row-wise searchsorted.

    numpy has no batched searchsorted. Mapping each row and its queries affinely into [0, 1] and
    shifting row ``i`` by ``2 i`` makes all rows one sorted array, so a single ``np.searchsorted`` serves
    them all; rows whose span is not finite (values near 1e308) take a slower merge by stable argsort.
    """
    m, k = rows.shape
    if m == 0:
        return np.zeros(v.shape, dtype=np.int64)
    with np.errstate(all="ignore"):
        lo = np.minimum(rows[:, :1], v.min(axis=1, keepdims=True))
        span = np.maximum(rows[:, -1:], v.max(axis=1, keepdims=True)) - lo
        ok = bool(np.all(np.isfinite(span)) and np.all(np.isfinite(v)))
        if ok:
            scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)
            shift = 2.0 * np.arange(m)[:, None]
            flat = ((rows - lo) * scale + shift).ravel()
            idx = np.searchsorted(flat, ((v - lo) * scale + shift).ravel(), side="right").reshape(v.shape)
            return idx - k * np.arange(m)[:, None]
    merged = np.concatenate([rows, v], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    from_rows = order < k
    seen = np.cumsum(from_rows, axis=1)
    r, pos = np.nonzero(~from_rows)
    out = np.empty(v.shape, dtype=np.int64)
    out[r, order[r, pos] - k] = seen[r, pos]
    return out


def interp_rows(v: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp(v[i], xp[i], fp[i])`` for every row at once; ``fp`` may be one shared row (K,)."""
    m, k = xp.shape
    fp = np.broadcast_to(fp, (m, k))
    j = np.clip(count_le_rows(xp, v), 1, k - 1)
    x0, x1 = np.take_along_axis(xp, j - 1, axis=1), np.take_along_axis(xp, j, axis=1)
    f0, f1 = np.take_along_axis(fp, j - 1, axis=1), np.take_along_axis(fp, j, axis=1)
    with np.errstate(all="ignore"):
        frac = np.where(x1 > x0, (v - x0) / (x1 - x0), 1.0)
    return f0 + np.clip(frac, 0.0, 1.0) * (f1 - f0)


@dataclass(frozen=True)
class Marginals:
    """Quantiles ``values[i, k]`` of the value at ``x[i]`` for probability ``LEVELS[k]``."""

    x: np.ndarray  # (m,)
    values: np.ndarray  # (m, K), nondecreasing along K
    mean: np.ndarray  # (m,)

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.x), len(LEVELS)):
            raise ValueError(f"values must have shape ({len(self.x)}, {len(LEVELS)}), got {self.values.shape}")

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_quantile_values(cls, x: np.ndarray, values: np.ndarray, mean: np.ndarray | None = None) -> "Marginals":
        values = _sorted_rows(np.asarray(values, dtype=np.float64))
        if mean is None:
            mean = _mean_from_quantiles(values)
        return cls(np.asarray(x, dtype=np.float64), values, np.asarray(mean, dtype=np.float64))

    @classmethod
    def from_samples(cls, x: np.ndarray, samples: np.ndarray) -> "Marginals":
        """From Monte-Carlo samples of shape (n_samples, m)."""
        samples = np.asarray(samples, dtype=np.float64)
        values = np.quantile(samples, LEVELS, axis=0).T
        return cls.from_quantile_values(x, values, samples.mean(axis=0))

    @classmethod
    def from_gaussian(cls, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> "Marginals":
        mean = np.asarray(mean, dtype=np.float64)
        std = np.maximum(np.asarray(std, dtype=np.float64), _MIN_WIDTH)
        z = special.ndtri(LEVELS)
        return cls.from_quantile_values(x, mean[:, None] + std[:, None] * z[None, :], mean)

    @classmethod
    def mixture(cls, parts: Sequence["Marginals"], weights: Sequence[float]) -> "Marginals":
        """Mixture of marginals at the same x (CDFs averaged with the given weights)."""
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        if len(parts) == 1:
            return parts[0]
        x = parts[0].x
        # every part's CDF is linear between its own quantile values, so the mixture's CDF is linear
        # between the union of them: inverting it there is exact, and all levels lie inside that range
        support = np.sort(np.concatenate([p.values for p in parts], axis=1), axis=1)  # (m, P*K)
        cdf = np.maximum.accumulate(sum(wi * p.cdf_grid(support) for wi, p in zip(w, parts)), axis=1)
        values = interp_rows(np.broadcast_to(LEVELS, (len(x), len(LEVELS))), cdf, support)
        mean = sum(wi * p.mean for wi, p in zip(w, parts))
        return cls.from_quantile_values(x, values, mean)

    # ---- queries ------------------------------------------------------------------------------
    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Values at probability levels ``q``: shape (m,) for a scalar, (m, len(q)) for a sequence."""
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        vals, k = self.values, len(LEVELS)
        j = np.clip(np.searchsorted(LEVELS, qs, side="right"), 1, k - 1)  # levels are shared by all rows
        frac = np.clip((qs - LEVELS[j - 1]) / (LEVELS[j] - LEVELS[j - 1]), 0.0, 1.0)
        out = vals[:, j - 1] + frac * (vals[:, j] - vals[:, j - 1])
        below, above = qs < LEVELS[0], qs > LEVELS[-1]
        if below.any() or above.any():  # exponential tails beyond the outermost levels
            lo_scale, hi_scale = self._tail_scales()
            with np.errstate(divide="ignore"):
                lo = vals[:, :1] - lo_scale[:, None] * np.log(_TAIL_MASS / np.maximum(qs, 1e-300))
                hi = vals[:, -1:] + hi_scale[:, None] * np.log(_TAIL_MASS / np.maximum(1.0 - qs, 1e-300))
            out = np.where(below, lo, np.where(above, hi, out))
        return out[:, 0] if np.ndim(q) == 0 else out

    def _tail_scales(self) -> tuple[np.ndarray, np.ndarray]:
        """Exponential-tail scales matched to the density just inside the outermost levels."""
        d_lo = (LEVELS[1] - LEVELS[0]) / np.maximum(self.values[:, 1] - self.values[:, 0], _MIN_WIDTH)
        d_hi = (LEVELS[-1] - LEVELS[-2]) / np.maximum(self.values[:, -1] - self.values[:, -2], _MIN_WIDTH)
        return _TAIL_MASS / d_lo, _TAIL_MASS / d_hi

    def cdf(self, v: np.ndarray | float) -> np.ndarray:
        """P(value at x[i] <= v[i]) for each i; ``v`` broadcasts to (m,).

        Vectorised over x (decisions call it for every grid point of every forecast); agrees with
        ``cdf_grid``, which serves many values per x.
        """
        vals = self.values
        m, k = vals.shape
        if m == 0:
            return np.zeros(0)
        v = np.broadcast_to(np.asarray(v, dtype=np.float64), (m,))
        rows = np.arange(m)
        idx = np.clip((vals <= v[:, None]).sum(axis=1), 1, k - 1)  # v in [vals[idx-1], vals[idx]] inside
        lo, hi = vals[rows, idx - 1], vals[rows, idx]
        lo_scale, hi_scale = self._tail_scales()
        with np.errstate(all="ignore"):
            frac = np.where(hi > lo, (v - lo) / (hi - lo), 1.0)
            inner = LEVELS[idx - 1] + np.clip(frac, 0.0, 1.0) * (LEVELS[idx] - LEVELS[idx - 1])
            below = _TAIL_MASS * np.exp(np.minimum((v - vals[:, 0]) / lo_scale, 0.0))
            above = 1.0 - _TAIL_MASS * np.exp(-np.maximum((v - vals[:, -1]) / hi_scale, 0.0))
        return _probability(np.where(v < vals[:, 0], below, np.where(v > vals[:, -1], above, inner)))

    def cdf_grid(self, v: np.ndarray) -> np.ndarray:
        """CDF at a grid of values per x: ``v`` has shape (m, G)."""
        v = np.asarray(v, dtype=np.float64)
        vals = self.values
        lo_scale, hi_scale = self._tail_scales()
        inner = interp_rows(v, vals, LEVELS)
        with np.errstate(all="ignore"):  # huge spans overflow to inf here; the tails then saturate at 0 or 1
            below = _TAIL_MASS * np.exp(np.minimum((v - vals[:, :1]) / lo_scale[:, None], 0.0))
            above = 1.0 - _TAIL_MASS * np.exp(-np.maximum((v - vals[:, -1:]) / hi_scale[:, None], 0.0))
        return _probability(np.where(v < vals[:, :1], below, np.where(v > vals[:, -1:], above, inner)))

    def log_pdf(self, v: np.ndarray) -> np.ndarray:
        """Log-density of the value at each x; piecewise constant between grid levels."""
        v = np.asarray(v, dtype=np.float64)
        vals = self.values
        lo_scale, hi_scale = self._tail_scales()
        dl = np.diff(LEVELS)
        k = np.clip(count_le_rows(vals, v[:, None])[:, 0] - 1, 0, len(dl) - 1)
        rows = np.arange(len(vals))
        width = np.maximum(vals[rows, k + 1] - vals[rows, k], _MIN_WIDTH)
        with np.errstate(all="ignore"):
            inner = np.log(dl[k] / width)
            below = np.log(_TAIL_MASS / lo_scale) + (v - vals[:, 0]) / lo_scale
            above = np.log(_TAIL_MASS / hi_scale) - (v - vals[:, -1]) / hi_scale
        return np.where(v < vals[:, 0], below, np.where(v > vals[:, -1], above, inner))

    def crps(self, v: np.ndarray) -> np.ndarray:
        """Continuous ranked probability score, from the quantile (pinball) decomposition."""
        v = np.asarray(v, dtype=np.float64)[:, None]
        err = v - self.values
        pinball = np.maximum(LEVELS * err, (LEVELS - 1.0) * err)
        weights = np.gradient(LEVELS)
        return 2.0 * (pinball * weights).sum(axis=1)

    def at(self, index: int | slice | np.ndarray) -> "Marginals":
        idx = np.atleast_1d(np.arange(len(self.x))[index])
        return Marginals(self.x[idx], self.values[idx], self.mean[idx])

    def affine(self, scale: float, offset: float) -> "Marginals":
        """Distribution of ``offset + scale * value`` (a negative scale flips the quantiles)."""
        vals = offset + scale * self.values
        if scale < 0:
            vals = vals[:, ::-1]
        return Marginals(self.x, vals, offset + scale * self.mean)

    def clip(self, lower: float | None, upper: float | None) -> "Marginals":
        """Respect known bounds of the metric (e.g. accuracy in [0, 1], loss >= 0)."""
        lo = -np.inf if lower is None else lower
        hi = np.inf if upper is None else upper
        return Marginals(self.x, np.clip(self.values, lo, hi), np.clip(self.mean, lo, hi))


def _probability(p: np.ndarray) -> np.ndarray:
    """CDF values as probabilities: NaN (from overflowing tails) counts as 0, the rest is clipped to [0, 1]."""
    return np.clip(np.where(np.isnan(p), 0.0, p), 0.0, 1.0)


def _mean_from_quantiles(values: np.ndarray) -> np.ndarray:
    weights = np.gradient(LEVELS)
    return (values * weights).sum(axis=1) / weights.sum()
