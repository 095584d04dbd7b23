"""Baselines that run through the same Engine protocol as Curvecast's engines.

- ``LastValueEngine``: the last observed value, with a random-walk spread estimated from the prefix's
  recent changes, so the band widens like sqrt(horizon).
- ``Pow3LSEngine`` (``pow3_ls``, reported as ``best_family`` before issue 16): pow3
  (y = c + a * t^-alpha) fitted by plain least squares (variable projection over a grid of alpha),
  with Gaussian residual noise. Kept as the classic straw man.
- ``RobustPow3Engine`` (``pow3_robust``): pow3 fitted with a soft-L1 loss scaled by the prefix's robust
  noise (MAD of differences), variable-projection starts, bounded parameters; quantiles from a
  residual bootstrap (B = 50 refits).
- ``BestOfFamiliesEngine`` (``best_of_families``): pow3, pow4, exp4, Janoschek (= WBL4) and log-power
  (= MMF4) each fitted robustly on the first 80% of the prefix; the one with the lowest error on the
  last 20% is refitted on the whole prefix, with the same bootstrap (bench/families.py).
- ``EmpiricalSpreadEngine`` (``empirical_spread``, bench/empirical.py): the last value, with quantiles
  from how the source's other curves moved from the same relative position to the end.
All clip to the metric's known bounds and never fail on a valid query.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import optimize

from curvecast.blas import single_threaded_blas
from curvecast.domain.curve import ForecastQuery, XKind
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo

from .families import FAMILIES, Fit, Prefix, bootstrap_predictions, fit_robust, select_family, smoothed_quantile_samples

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
        return forecast_each(self._one, queries)


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


class Pow3LSEngine:
    """pow3 least-squares fit with Gaussian residual noise (the classic parametric straw man)."""

    name = "pow3_ls"

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
        return forecast_each(self._one, queries)


def forecast_each(one: Callable[[ForecastQuery], EngineForecast],
                  queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
    """The Engine protocol's batch call for a per-query baseline: one bad query fails only itself."""
    out: list[EngineForecast | Exception] = []
    for q in queries:
        try:
            out.append(one(q))
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out


def _forecast_each(engine: "_BootstrapEngine", queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
    with single_threaded_blas(), np.errstate(all="ignore"):  # threaded BLAS slows each small fit step ~10x
        return forecast_each(engine._one, queries)


class _BootstrapEngine:
    """Shared tail of the robust family baselines: residual-bootstrap samples -> smoothed marginals."""

    name = "bootstrap"

    def __init__(self, n_boot: int = 50):
        if n_boot < 1:
            raise ValueError("n_boot must be >= 1")
        self.n_boot = n_boot

    def _fit(self, pre: Prefix) -> tuple[Fit, dict[str, float]]:
        raise NotImplementedError

    def _one(self, q: ForecastQuery) -> EngineForecast:
        ideal = q.curve.lower_bound if q.curve.goal.sign > 0 else q.curve.upper_bound
        pre = Prefix.from_curve(q.curve.x, q.curve.y, q.curve.goal.sign, ideal)
        fit, details = self._fit(pre)
        w = bootstrap_predictions(fit, pre, pre.t_of(q.x_query), n_boot=self.n_boot)
        y = pre.y_of(smoothed_quantile_samples(w, pre.floor))
        m = Marginals.from_samples(q.x_query, y)
        details.update({f"theta{i}": float(v) for i, v in enumerate(fit.theta)})
        return EngineForecast(_clip(m, q), self.name, details=details)

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        return _forecast_each(self, queries)


class RobustPow3Engine(_BootstrapEngine):
    """pow3, soft-L1 fit scaled by the prefix's MAD noise, residual-bootstrap quantiles."""

    name = "pow3_robust"

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "1", "scipy", detail=f"pow3, soft-L1 least_squares (MAD-of-differences scale), variable-projection starts, residual bootstrap B={self.n_boot}")

    def _fit(self, pre: Prefix) -> tuple[Fit, dict[str, float]]:
        return fit_robust("pow3", pre), {}


class BestOfFamiliesEngine(_BootstrapEngine):
    """The family with the lowest hold-out error on the prefix's last 20%, refitted, bootstrapped."""

    name = "best_of_families"

    def __init__(self, n_boot: int = 50, families: tuple[str, ...] | None = None):
        super().__init__(n_boot)
        self.families = families or tuple(FAMILIES)

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "1", "scipy", detail=f"best of {', '.join(self.families)} (WBL4 = janoschek, MMF4 = log_power) on the prefix's last 20%, soft-L1, residual bootstrap B={self.n_boot}")

    def _fit(self, pre: Prefix) -> tuple[Fit, dict[str, float]]:
        sel = select_family(pre, self.families)
        details = {f"holdout_err_{k}": v for k, v in sel.errors.items()}
        details["family_index"] = float(list(FAMILIES).index(sel.name))
        details["fallback"] = float(sel.fallback)
        return fit_robust(sel.name, pre), details
