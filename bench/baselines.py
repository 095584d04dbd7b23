"""Baselines that run through the same Engine protocol as Curvecast's engines.

- ``LastValueEngine``: the last observed value, with a random-walk spread estimated from the prefix's
  recent changes, so the band widens like sqrt(horizon).
- ``BestFamilyEngine``: the best single parametric family of Domhan et al. / LC-PFN, pow3
  (y = c + a * t^-alpha), fitted by least squares (variable projection over a grid of alpha), with
  Gaussian residual noise.
Both clip to the metric's known bounds and never fail on a valid query.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import optimize

from curvecast.domain.curve import ForecastQuery, XKind
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo

_ALPHAS = np.logspace(-2, np.log10(20.0), 80)


def _sigma_floor(y: np.ndarray) -> float:
    return 1e-4 * max(float(np.max(np.abs(y))), 1e-9)


def _clip(m: Marginals, q: ForecastQuery) -> Marginals:
    return m.clip(q.curve.lower_bound, q.curve.upper_bound)


class LastValueEngine:
    """Predicts no further change; spread from the recent changes in the later half of the prefix
    (a random walk in x, or in log x for sample-wise curves)."""

    name = "last_value"

    def __init__(self, recent: int = 10):
        self.recent = recent

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "1", "numpy", detail="last value, random-walk spread from recent changes")

    def _one(self, q: ForecastQuery) -> EngineForecast:
        x, y = q.curve.x, q.curve.y
        xq = q.x_query
        if q.curve.x_kind is XKind.SAMPLES and x[0] > 0:  # sample-wise anchors are geometric: walk in log x
            x, xq = np.log(x), np.log(np.maximum(xq, x[0] * 1e-12))
        k = min(self.recent, max(1, (len(x) - 1) // 2))  # the later half: early transients are not noise
        if k >= 1:
            d = np.diff(y[-k - 1 :])
            dx = np.maximum(np.diff(x[-k - 1 :]), 1e-12)
            rate = float(np.mean(d**2 / dx))  # variance per unit x
            base = float(np.mean(d**2)) / 2.0  # noise of the last point itself
        else:
            rate, base = 0.0, 0.0
        h = np.maximum(xq - x[-1], 0.0)
        std = np.sqrt(base + rate * h) + _sigma_floor(y)
        mean = np.full(len(q.x_query), float(y[-1]))
        return EngineForecast(_clip(Marginals.from_gaussian(q.x_query, mean, std), q), self.name)

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        out: list[EngineForecast | Exception] = []
        for q in queries:
            try:
                out.append(self._one(q))
            except Exception as e:  # noqa: BLE001 - one bad query fails only itself
                out.append(e)
        return out


def fit_pow3(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least-squares pow3 fit ``y = c + a * t^-alpha`` with ``t = (x + shift) / (x_last + shift)``.

    Returns (c, a, alpha, shift, rss). With 3 or fewer points alpha is fixed to 0.5 (the fit would
    otherwise be exact for every alpha).
    """
    shift = 0.0
    if x[0] <= 0:
        shift = -float(x[0]) + float(x[1] - x[0])
    t = (x + shift) / (x[-1] + shift)
    if len(x) <= 3:
        c, a, rss = _linear_fit(t, y, np.array([0.5]))
        return (float(c[0]), float(a[0]), 0.5, shift, float(rss[0])) if np.isfinite(rss[0]) else (float(y[-1]), 0.0, 0.5, shift, 0.0)
    c, a, rss = _linear_fit(t, y, _ALPHAS)
    i = int(np.argmin(rss))
    if not np.isfinite(rss[i]):
        return float(y[-1]), 0.0, 0.5, shift, 0.0
    # refine alpha between the grid neighbours of the best grid point (rss is smooth in log alpha)
    lo, hi = np.log(_ALPHAS[max(i - 1, 0)]), np.log(_ALPHAS[min(i + 1, len(_ALPHAS) - 1)])
    res = optimize.minimize_scalar(lambda la: float(_linear_fit(t, y, np.array([np.exp(la)]))[2][0]), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    alpha = float(np.exp(res.x))
    c1, a1, rss1 = _linear_fit(t, y, np.array([alpha]))
    if np.isfinite(rss1[0]) and rss1[0] <= rss[i]:
        return float(c1[0]), float(a1[0]), alpha, shift, float(rss1[0])
    return float(c[i]), float(a[i]), float(_ALPHAS[i]), shift, float(rss[i])


def _linear_fit(t: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each alpha, the least-squares (c, a) of ``y = c + a t^-alpha`` and its residual sum of squares."""
    with np.errstate(all="ignore"):
        feats = t[None, :] ** (-alphas[:, None])  # (A, n)
        fm = feats.mean(axis=1, keepdims=True)
        ym = y.mean()
        fc = feats - fm
        var = (fc**2).sum(axis=1)
        a = np.where(var > 0, (fc * (y - ym)[None, :]).sum(axis=1) / np.maximum(var, 1e-300), 0.0)
        c = ym - a * fm[:, 0]
        rss = ((c[:, None] + a[:, None] * feats - y[None, :]) ** 2).sum(axis=1)
    ok = np.isfinite(rss) & np.isfinite(a) & np.isfinite(c)
    return c, a, np.where(ok, rss, np.inf)


class BestFamilyEngine:
    """pow3 least-squares fit with Gaussian residual noise (the classic parametric baseline)."""

    name = "best_family"

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "1", "numpy", detail="pow3 least squares, Gaussian residual noise")

    def _one(self, q: ForecastQuery) -> EngineForecast:
        x, y = q.curve.x, q.curve.y
        c, a, alpha, shift, rss = fit_pow3(x, y)
        n = len(x)
        resid = np.sqrt(rss / max(n - 3, 1))
        obs_range = float(np.max(y) - np.min(y))
        std = max(resid, 0.01 * obs_range, _sigma_floor(y))
        t = (q.x_query + shift) / (x[-1] + shift)
        with np.errstate(all="ignore"):
            mean = c + a * np.maximum(t, 1e-12) ** (-alpha)
        mean = np.where(np.isfinite(mean), mean, float(y[-1]))
        lo = -np.inf if q.curve.lower_bound is None else q.curve.lower_bound
        hi = np.inf if q.curve.upper_bound is None else q.curve.upper_bound
        mean = np.clip(mean, lo, hi)  # clip the centre first so the band never collapses onto a bound
        m = Marginals.from_gaussian(q.x_query, mean, np.full(len(mean), std))
        return EngineForecast(_clip(m, q), self.name, details={"c": c, "a": a, "alpha": alpha})

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        out: list[EngineForecast | Exception] = []
        for q in queries:
            try:
                out.append(self._one(q))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out
