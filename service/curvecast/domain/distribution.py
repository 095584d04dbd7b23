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
    def from_histogram(cls, x: np.ndarray, borders: np.ndarray, probs: np.ndarray) -> "Marginals":
        """From per-x bucket probabilities ``probs`` (m, B) over shared ``borders`` (B+1,)."""
        probs = np.asarray(probs, dtype=np.float64)
        probs = probs / probs.sum(axis=1, keepdims=True)
        cdf = np.concatenate([np.zeros((len(probs), 1)), np.cumsum(probs, axis=1)], axis=1)
        values = np.empty((len(probs), len(LEVELS)))
        for i in range(len(probs)):
            values[i] = np.interp(LEVELS, cdf[i], borders)
        centers = 0.5 * (borders[1:] + borders[:-1])
        return cls.from_quantile_values(x, values, probs @ centers)

    @classmethod
    def mixture(cls, parts: Sequence["Marginals"], weights: Sequence[float]) -> "Marginals":
        """Mixture of marginals at the same x (CDFs averaged with the given weights)."""
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        if len(parts) == 1:
            return parts[0]
        x = parts[0].x
        lo = np.min([p.values[:, 0] for p in parts], axis=0)
        hi = np.max([p.values[:, -1] for p in parts], axis=0)
        grid = np.linspace(0.0, 1.0, 401)
        support = lo[:, None] + (hi - lo)[:, None] * grid[None, :]  # (m, G)
        cdf = sum(wi * p.cdf_grid(support) for wi, p in zip(w, parts))
        values = np.empty((len(x), len(LEVELS)))
        for i in range(len(x)):
            values[i] = np.interp(LEVELS, cdf[i], support[i])
        mean = sum(wi * p.mean for wi, p in zip(w, parts))
        return cls.from_quantile_values(x, values, mean)

    # ---- queries ------------------------------------------------------------------------------
    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Values at probability levels ``q``: shape (m,) for a scalar, (m, len(q)) for a sequence."""
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        out = np.stack([self._quantile_one(float(level)) for level in qs], axis=1)
        return out[:, 0] if np.ndim(q) == 0 else out

    def _quantile_one(self, level: float) -> np.ndarray:
        if LEVELS[0] <= level <= LEVELS[-1]:
            return np.array([np.interp(level, LEVELS, row) for row in self.values])
        lo_scale, hi_scale = self._tail_scales()
        if level < LEVELS[0]:
            return self.values[:, 0] - lo_scale * np.log(_TAIL_MASS / max(level, 1e-300))
        return self.values[:, -1] + hi_scale * np.log(_TAIL_MASS / max(1.0 - level, 1e-300))

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
        out = np.where(v < vals[:, 0], below, np.where(v > vals[:, -1], above, inner))
        return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)

    def cdf_grid(self, v: np.ndarray) -> np.ndarray:
        """CDF at a grid of values per x: ``v`` has shape (m, G)."""
        lo_scale, hi_scale = self._tail_scales()
        out = np.empty(v.shape)
        for i in range(len(self.x)):
            row = self.values[i]
            inner = np.interp(v[i], row, LEVELS)
            below = _TAIL_MASS * np.exp(np.minimum((v[i] - row[0]) / lo_scale[i], 0.0))
            above = 1.0 - _TAIL_MASS * np.exp(-np.maximum((v[i] - row[-1]) / hi_scale[i], 0.0))
            out[i] = np.where(v[i] < row[0], below, np.where(v[i] > row[-1], above, inner))
        return out

    def log_pdf(self, v: np.ndarray) -> np.ndarray:
        """Log-density of the value at each x; piecewise constant between grid levels."""
        v = np.asarray(v, dtype=np.float64)
        lo_scale, hi_scale = self._tail_scales()
        out = np.empty(len(self.x))
        dl = np.diff(LEVELS)
        for i in range(len(self.x)):
            row = self.values[i]
            if v[i] < row[0]:
                out[i] = np.log(_TAIL_MASS / lo_scale[i]) + (v[i] - row[0]) / lo_scale[i]
            elif v[i] > row[-1]:
                out[i] = np.log(_TAIL_MASS / hi_scale[i]) - (v[i] - row[-1]) / hi_scale[i]
            else:
                k = min(int(np.searchsorted(row, v[i], side="right")) - 1, len(dl) - 1)
                k = max(k, 0)
                out[i] = np.log(dl[k] / max(row[k + 1] - row[k], _MIN_WIDTH))
        return out

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


def _mean_from_quantiles(values: np.ndarray) -> np.ndarray:
    weights = np.gradient(LEVELS)
    return (values * weights).sum(axis=1) / weights.sum()
