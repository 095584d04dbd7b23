"""Overfitting: a validation loss that has turned up (an accuracy that has turned down) keeps turning.

Every curve family is monotone, so fitted to a U-shaped curve it flattens at the minimum and forecasts
the run as if it had never started to overfit (image classifiers' test loss: 36-41% too optimistic).
When the curve has clearly turned (a minimum well inside the observed part, a steady worsening after
it, beyond the noise), most sample paths continue the turn from the curve's current level, with the
U-shaped law z = a + b * u^-c + d * u fitted to the whole curve (robust loss), its parameters drawn
from their Laplace posterior. The remaining paths keep the families' answer, so
the band still covers a recovery (an LR drop, a regulariser kicking in). Every path's slope and noise
are drawn once and evaluated at each x, so the answer at an x does not depend on the other x asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

MIN_POINTS = 8  # shorter curves cannot tell a turn from noise
MIN_AFTER = 3  # points after the minimum ...
MIN_AFTER_SHARE = 1 / 6  # ... and at least this share of the curve
TURN_RANK = 0.6  # Spearman correlation with x of the points after the minimum: "steadily" worse
MIN_RISE_NOISE = 3.0  # the rise must exceed this many noise sds ...
MIN_RISE_RANGE = 0.03  # ... and this share of the curve's range
MIN_RISE_LEVEL = 0.01  # ... and this share of its level (a flat curve's wiggles are no turn)
TURN_SHARE = 0.75  # share of sample paths that continue the turn


@dataclass(frozen=True)
class Turn:
    """A curve that got worse after an interior minimum, fitted in z space (lower is better) by the
    U-shaped law z = a + b * u^-c + d * u (u = x / last x): improvement decaying, worsening growing."""

    x_min: float  # where the (smoothed) curve was best
    x_last: float
    params: np.ndarray  # (a, b, c, d)
    cov: np.ndarray  # their Laplace covariance
    noise: float  # sd of one observation around the law

    @property
    def slope(self) -> float:
        """Worsening per unit x at the last observed point."""
        a, b, c, d = self.params
        return float((d - b * c) / self.x_last)


def _u_law(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    return p[..., 0:1] + p[..., 1:2] * u ** (-p[..., 2:3]) + p[..., 3:4] * u


def detect_turn(x: np.ndarray, z: np.ndarray) -> Turn | None:
    """The turn of a curve in z space, or None when it has not clearly turned."""
    n = len(z)
    if n < MIN_POINTS:
        return None
    k = max(3, (n // 8) | 1)
    pad = np.concatenate([np.full(k // 2, z[0]), z, np.full(k // 2, z[-1])])
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)
    i_min = int(np.argmin(smooth))
    after = n - 1 - i_min
    if after < max(MIN_AFTER, int(np.ceil(MIN_AFTER_SHARE * n))):
        return None
    xs, zs = x[i_min:], z[i_min:]
    if np.ptp(zs) <= 0 or stats.spearmanr(xs, zs).statistic < TURN_RANK:
        return None
    slope, intercept, _, _ = stats.theilslopes(zs, xs)
    resid = zs - (intercept + slope * xs)
    line_noise = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    rise = slope * (xs[-1] - xs[0])
    drop = float(smooth[0] - smooth[i_min])  # a U: the curve improved first, by more than it turned
    if not np.isfinite(slope) or rise <= max(MIN_RISE_NOISE * line_noise, MIN_RISE_RANGE * float(np.ptp(z)),
                                             MIN_RISE_LEVEL * abs(float(smooth[i_min]))) or drop < rise:
        return None
    return _fit_u(x, z, float(xs[0]), max(float(slope), 0.0))


def _fit_u(x: np.ndarray, z: np.ndarray, x_min: float, slope: float) -> Turn | None:
    x_last = float(x[-1])
    u = np.maximum(x / x_last, 1e-12)
    scale = max(float(np.ptp(z)), 1e-12)
    d0 = slope * x_last
    c0 = 0.5
    A = np.stack([np.ones_like(u), u**-c0], axis=1)
    ab, *_ = np.linalg.lstsq(A, z - d0 * u, rcond=None)
    p0 = np.array([ab[0], max(ab[1], 1e-9), c0, max(d0, 1e-12)])
    lo, hi = np.array([-np.inf, 0.0, 0.02, 0.0]), np.array([np.inf, np.inf, 4.0, np.inf])
    res = optimize.least_squares(lambda p: (_u_law(p, u) - z) / scale, np.clip(p0, lo + 1e-12, hi - 1e-12), bounds=(lo, hi), loss="soft_l1", f_scale=0.05)
    if not res.success or res.x[3] <= 0:
        return None
    resid = res.fun * scale
    dof = max(len(z) - 4, 1)
    s2 = float(np.sum(resid**2) / dof)
    try:
        cov = np.linalg.pinv(res.jac.T @ res.jac) * s2 / scale**2
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(cov)):
        return None
    turn = Turn(x_min, x_last, res.x, cov, float(np.sqrt(s2)))
    return turn if turn.slope > 0 else None


def with_turn(turn: Turn, z_samples: np.ndarray, x_query: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``z_samples`` (paths x queried x) with TURN_SHARE of the paths following the U-shaped law beyond
    the last observed x (parameters drawn from its Laplace posterior, slope kept >= 0 at the
    start); the other paths and every x inside the observed range are left as they are."""
    n_paths = len(z_samples)
    n_turn = int(round(TURN_SHARE * n_paths))
    xq = np.asarray(x_query, dtype=np.float64)
    ahead = np.flatnonzero(xq > turn.x_last)
    if n_turn == 0 or not len(ahead):
        return z_samples
    rows = rng.permutation(n_paths)[:n_turn]
    draws = rng.multivariate_normal(turn.params, turn.cov, size=n_turn, method="svd")
    draws[:, 1:] = np.maximum(draws[:, 1:], [0.0, 0.02, 0.0])
    noise = turn.noise * rng.standard_normal(n_turn)
    out = z_samples.copy()
    out[np.ix_(rows, ahead)] = _u_law(draws, xq[ahead] / turn.x_last) + noise[:, None]
    return out


def turn_warning(turn: Turn, sign: float) -> str:
    what = "risen" if sign > 0 else "fallen"
    return (f"the curve has {what} steadily since x={turn.x_min:g} (overfitting?): {int(TURN_SHARE * 100)}% of the "
            f"forecast continues that trend (now {sign * turn.slope:+.3g} per unit x), the rest allows a recovery")
