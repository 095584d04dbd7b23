"""Summary statistics of loss curves, computed the same way on real curves and on prior draws.

``training.fit_prior`` matches these between the prior and real dev curves. Every statistic works in
log-loss space around a local quadratic (Savitzky-Golay) smooth (window ``2h + 1``, ``h = max(2, n // 25)``),
so it is scale-free and follows the steps, cooldowns and plateaus a global law fit would leave as residual:

* ``noise``: log10 of the robust std (1.4826 MAD) of the log residuals: the relative per-point noise;
* ``lag1``: lag-1 autocorrelation of the residuals (batch noise is autocorrelated);
* ``tail``: q95 / q50 of |residual| (2.9 for Gaussian noise; larger = heavier tails);
* ``kappa``: 1 + slope of log|residual| on log(smooth loss): noise std ~ loss^kappa;
* ``drop_decade``: fall of the smoothed log loss per decade of x from 20% of the points to the end;
* ``curvature``: log-log slope over the second half minus the first half (> 0: the curve flattens);
* ``overfit``: 1 if the smoothed loss ends clearly above a minimum reached before 85% of the curve;
* ``cooldown``: for curves whose LR decays late (below 80% of its peak only after 40% of the points,
  to < 50% of the peak at the end: WSD, step, two-stage), how far the end lies below the log-log trend
  of the stretch before the decay (log units; NaN otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import savgol_filter

STATS = ("noise", "lag1", "tail", "kappa", "drop_decade", "curvature", "overfit", "cooldown")
MIN_POINTS_NOISE = 20
MIN_POINTS_SHAPE = 5


@dataclass(frozen=True)
class Curve:
    """One minimised curve: positions x > 0 (increasing), values y > 0, optional LR per point."""

    x: np.ndarray
    y: np.ndarray
    lr: np.ndarray | None = None
    source: str = ""


def smooth(logy: np.ndarray) -> np.ndarray:
    """Local quadratic fit of the log values (zero residual on any smooth curve, unlike a median)."""
    h = max(2, len(logy) // 25)
    w = min(2 * h + 1, len(logy) - (1 - len(logy) % 2))
    if w < 3:
        return logy.copy()
    return savgol_filter(logy, w, min(2, w - 1), mode="interp")


def _slope(u: np.ndarray, v: np.ndarray) -> float:
    if len(u) < 2 or np.ptp(u) <= 0:
        return float("nan")
    return float(np.polyfit(u, v, 1)[0])


def noise_stats(logy: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """noise, lag1, tail and kappa from the residuals about the smooth."""
    r = logy - s
    r = r - np.median(r)
    mad = 1.4826 * float(np.median(np.abs(r)))
    out = {"noise": float(np.log10(max(mad, 1e-7))), "lag1": float("nan"), "tail": float("nan"), "kappa": float("nan")}
    if mad <= 0 or not np.isfinite(mad):
        return out
    a = np.abs(r)
    out["lag1"] = float(np.corrcoef(r[:-1], r[1:])[0, 1]) if np.std(r) > 0 else float("nan")
    out["tail"] = float(np.quantile(a, 0.95) / max(np.quantile(a, 0.5), 1e-300))
    if np.ptp(s) > np.log(1.5):  # the level must change enough for a slope
        ok = a > 0
        out["kappa"] = 1.0 + _slope(s[ok], np.log(a[ok]))
    return out


def shape_stats(logx: np.ndarray, s: np.ndarray, noise: float) -> dict[str, float]:
    """drop_decade, curvature and overfit from the smoothed curve."""
    n = len(s)
    a = max(1, n // 5)
    decades = (logx[-1] - logx[a]) / np.log(10.0)
    drop = (s[a] - s[-1]) / decades if decades > 1e-3 else float("nan")
    half = n // 2
    curv = _slope(logx[half:], s[half:]) - _slope(logx[: half + 1], s[: half + 1])
    i_min = int(np.argmin(s))
    overfit = float(i_min < 0.85 * n and s[-1] - s[i_min] > max(3.0 * noise, 0.01))
    return {"drop_decade": float(drop), "curvature": float(curv), "overfit": overfit}


def cooldown_stat(logx: np.ndarray, s: np.ndarray, lr: np.ndarray | None) -> float:
    """End of the curve below the pre-decay log-log trend (log units), for decaying LRs; else NaN."""
    if lr is None or len(lr) != len(s):
        return float("nan")
    peak = int(np.argmax(lr))
    after = np.flatnonzero((np.arange(len(lr)) > peak) & (lr < 0.8 * lr[peak]))
    if len(after) == 0 or lr[-1] > 0.5 * lr[peak] or after[0] < 0.4 * len(lr):
        return float("nan")
    d = int(after[0])
    lo = max(peak, d // 2)
    if d - lo < 4:
        return float("nan")
    k = np.polyfit(logx[lo:d], s[lo:d], 1)
    return float(np.polyval(k, logx[-1]) - s[-1])


def curve_stats(c: Curve) -> dict[str, float]:
    """All STATS for one curve (NaN where the curve is too short or the statistic does not apply)."""
    ok = np.isfinite(c.y) & (c.y > 0) & np.isfinite(c.x) & (c.x > 0)
    x, y = c.x[ok], c.y[ok]
    lr = c.lr[ok] if c.lr is not None else None
    out = dict.fromkeys(STATS, float("nan"))
    if len(y) < MIN_POINTS_SHAPE:
        return out
    logy, logx = np.log(y), np.log(x)
    s = smooth(logy)
    noise = float("nan")
    if len(y) >= MIN_POINTS_NOISE:
        out.update(noise_stats(logy, s))
        noise = out["noise"]
    out.update(shape_stats(logx, s, 10.0**noise if np.isfinite(noise) else 0.0))
    out["cooldown"] = cooldown_stat(logx, s, lr)
    return out


def stats_table(curves: list[Curve]) -> dict[str, np.ndarray]:
    """Per-statistic arrays over curves (NaN kept; callers use nan-aware summaries)."""
    rows = [curve_stats(c) for c in curves]
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in STATS}


def summarise(table: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Median, quartiles and count of each statistic (the rate for ``overfit``)."""
    out = {}
    for k, v in table.items():
        v = v[np.isfinite(v)]
        if len(v) == 0:
            out[k] = {"n": 0, "median": float("nan"), "q25": float("nan"), "q75": float("nan")}
            continue
        q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
        out[k] = {"n": int(len(v)), "median": float(v.mean() if k == "overfit" else med),
                  "q25": float(q25), "q75": float(q75)}
    return out
