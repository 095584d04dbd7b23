"""Empirical-Bayes sharing across a sweep: siblings' moves from this run's relative position.

Curves of one sweep share shape, noise and crossing rates, so what the siblings did after the same
relative point (r = x / budget) is evidence about this run. For each queried x past the last observation
the sibling forecast is this run's last value moved, on the log of the gap to the metric's ideal bound
(``GapTransform``), by each sibling's move from r0 = last_x / budget to r = x / budget (a Gaussian kernel
smooth of those moves, Silverman bandwidth): the leave-group-out "empirical_spread" baseline of the
ruler (bench/empirical.py), here with the caller's own siblings. It is combined with the engine's
forecast as a mixture whose sibling weight per x is

    w = max_weight * n / (n + prior_siblings) * (s_e^2 / (s_e^2 + s_s^2)) ** agreement_power

with n the siblings that reach that far (each weighted by how alike its recent shape is to the run's:
``shape_bandwidth``), s_s the spread of their moves and s_e the engine's spread on the same scale: more
siblings and siblings that agree (a spread small next to the engine's) weigh more. Each sibling's moves
are scaled by the run's recent move relative to its own (``ratio_ridge``), so curves that share a floor
and an exponent but not a scale move alike even when the declared bound is not their floor. The
constants are fitted on the tuning tasks of the ruler check (bench/sweep_ruler.py, docs/bench/sweeps/ruler.md). x with fewer than
``min_siblings`` siblings reaching it, x at or before the last observation, and queries without siblings
keep the engine's answer bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from ..domain.curve import ForecastQuery, Goal, SiblingRun, XKind
from ..domain.distribution import LEVELS, Marginals, interp_rows

GAP_FLOOR = 1e-6  # smallest gap to the bound, as a fraction of the curve's level
KERNEL_FLOOR = 1e-4  # smallest kernel bandwidth on the log scale (x max|y| on the identity scale)
_ANCHORS = 24  # siblings (quantile-spaced) whose kernel neighbourhood gets support points
_OFFSETS = np.array([-4.0, -2.5, -1.5, -0.75, -0.25, 0.0, 0.25, 0.75, 1.5, 2.5, 4.0])  # support, in bandwidths
_Z75 = 0.6744897501960817
SHAPE_POINTS = 8  # the run's last points (before the anchor) that its shape is compared on


@dataclass(frozen=True)
class SweepParams:
    """Constants of the combination (fitted on the ruler's tuning tasks; see the module docstring)."""

    prior_siblings: float = 16.0  # pseudo-count of the engine's side: n / (n + this) of the weight at most
    agreement_power: float = 2.0  # 0: agreement ignored; 1: precision weighting; 2: siblings must agree more
    max_weight: float = 0.9  # the engine always keeps some mass (siblings can share a blind spot)
    min_siblings: int = 3  # fewer siblings reaching an x: that x keeps the engine's answer
    max_siblings: int = 200  # those closest to the run at r0 (on the gap scale) when more are sent
    # siblings whose gap at r0 differs from the run's by d (log scale) weigh exp(-(d / this)^2 / 2); None: equal
    level_bandwidth: float | None = None
    # ... and whose moves into r0 (the prefix's shape) differ by an RMS d weigh exp(-(d / this)^2 / 2)
    shape_bandwidth: float | None = 0.05
    # scale each sibling's moves by the run's recent move / the sibling's (ridge in gap-scale units); None: off
    ratio_ridge: float | None = 0.003
    anchor_points: int = 1  # moves start from the mean of the run's last this many points (noise)


DEFAULT_PARAMS = SweepParams()


@dataclass(frozen=True)
class SweepAdjustment:
    marginals: Marginals
    warnings: tuple[str, ...] = ()
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GapTransform:
    """z = log(gap to the ideal bound), or log y, or y: the scale on which moves are compared."""

    kind: str  # "lower", "upper", "log", "identity"
    bound: float = 0.0

    @classmethod
    def for_curve(cls, goal: Goal, lower: float | None, upper: float | None, y: np.ndarray) -> "GapTransform":
        if goal is Goal.MINIMIZE and lower is not None and np.all(y > lower):
            return cls("lower", float(lower))
        if goal is Goal.MAXIMIZE and upper is not None and np.all(y < upper):
            return cls("upper", float(upper))
        if np.all(y > 0):
            return cls("log")
        return cls("identity")

    @property
    def decreasing(self) -> bool:
        return self.kind == "upper"

    def forward(self, y: np.ndarray, level: float) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        floor = GAP_FLOOR * max(abs(level), 1e-12)
        if self.kind == "lower":
            return np.log(np.maximum(y - self.bound, floor))
        if self.kind == "upper":
            return np.log(np.maximum(self.bound - y, floor))
        if self.kind == "log":
            return np.log(np.maximum(y, floor))
        return y

    def inverse(self, z: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            if self.kind == "lower":
                return self.bound + np.exp(z)
            if self.kind == "upper":
                return self.bound - np.exp(z)
            if self.kind == "log":
                return np.exp(z)
        return z


def _relative(s: SiblingRun) -> tuple[np.ndarray, bool]:
    r = s.curve.x / s.budget
    return r, s.curve.x_kind in (XKind.SAMPLES, XKind.TOKENS) and bool(s.curve.x[0] > 0)


def _at(r: np.ndarray, y: np.ndarray, log_axis: bool, at: np.ndarray) -> np.ndarray:
    """Values at relative positions ``at`` (linear interpolation; in log r on geometric axes)."""
    if log_axis:
        return np.interp(np.log(np.maximum(at, 1e-300)), np.log(r), y)
    return np.interp(at, r, y)


def sibling_moves(query: ForecastQuery, x: np.ndarray, tf: GapTransform, ratio_ridge: float | None = None,
                  anchor_points: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(n, len(x)) moves on the gap scale from the run's relative position to each x (NaN where a sibling
    does not reach); each sibling's distance to the run at r0 on that scale; and the RMS difference of
    their prefixes' moves into r0 (the shape so far, over the run's last ``SHAPE_POINTS`` points).

    With ``ratio_ridge`` a sibling's moves are scaled by how far the run moved over its own recent past
    (r0 / 2 to r0) relative to how far the sibling moved there (a ridge-shrunk ratio, towards 1 when the
    sibling's past move is small next to the ridge): curves y = c + a x^-b that share c and b but not a
    then move alike whatever the bound used.

    ``anchor_points`` > 1 anchors the moves at the mean over the run's last points (the same relative
    positions on each sibling) instead of the last point alone: less of one point's noise in every move.
    Returns the run's anchor on the gap scale last."""
    budget = float(query.run.total_steps)  # type: ignore[arg-type]
    r0 = query.curve.last_x / budget
    rq = np.asarray(x, dtype=np.float64) / budget
    level = float(query.curve.y[-1])
    z_run = float(tf.forward(np.array([level]), level)[0])
    r_pre = query.curve.x[-SHAPE_POINTS - 1:-1] / budget
    d_pre = tf.forward(query.curve.y[-SHAPE_POINTS - 1:-1], level) - z_run
    k = max(1, min(int(anchor_points), len(query.curve.x)))
    r_anc = query.curve.x[-k:] / budget
    z_anchor = float(np.mean(tf.forward(query.curve.y[-k:], level)))
    r_half = max(0.5 * r0, float(query.curve.x[0]) / budget)
    past_run = z_run - float(tf.forward(np.interp([r_half * budget], query.curve.x, query.curve.y), level)[0])
    rows, dist, shape = [], [], []
    for s in query.sweep.siblings if query.sweep is not None else ():
        r, log_axis = _relative(s)
        tol = 1e-9 * max(r[-1], 1e-300)
        if r[0] > r0 + tol or r[-1] < r0 - tol:  # the sibling does not cover the anchor: no move to read
            continue
        z = tf.forward(_at(r, s.curve.y, log_axis, np.concatenate([[r0], rq, r_pre, [r_half], r_anc])), level)
        z_anc = z[len(z) - k:]
        z = z[: len(z) - k]
        base = float(np.mean(z_anc)) if r[0] <= r_anc[0] + tol else z[0]
        mv = z[1:1 + len(rq)] - base
        if ratio_ridge is not None and r_half < r0 and r[0] <= r_half + tol:
            past = z[0] - z[-1]
            mv = mv * float(np.clip((past_run * past + ratio_ridge**2) / (past**2 + ratio_ridge**2), 0.0, 5.0))
        mv[rq > r[-1] + tol] = np.nan
        rows.append(mv)
        dist.append(abs(z[0] - z_run))
        inside = r_pre >= r[0] - tol
        diff = (z[1 + len(rq):-1] - z[0]) - d_pre
        shape.append(float(np.sqrt(np.mean(diff[inside] ** 2))) if inside.any() else 0.0)
    return (np.array(rows, dtype=np.float64).reshape(len(rows), len(rq)), np.array(dist, dtype=np.float64),
            np.array(shape, dtype=np.float64), z_anchor)


def _kernel_quantiles(z0: float, moves: np.ndarray, weights: np.ndarray,
                      floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantiles at LEVELS of a weighted Gaussian-kernel smooth of z0 + moves per column (NaN = absent), the
    evidence per column (the sum of the weights, each <= 1: the count of siblings like this run) and the
    siblings' weighted spread (std)."""
    ok = np.isfinite(moves)
    mv = np.where(ok, moves, 0.0)
    wt = np.where(ok, weights[:, None], 0.0)
    sw = wt.sum(axis=0)
    n = sw
    nn = np.maximum(n, 1.0)
    swn = np.maximum(sw, 1e-300)
    mean = (wt * mv).sum(axis=0) / swn
    var = (wt * (mv - mean) ** 2).sum(axis=0) / swn * nn / np.maximum(nn - 1, 1)
    sd = np.sqrt(var)
    h = np.maximum(0.9 * sd * nn ** -0.2, floor)
    # the mixture's CDF on support points around every sibling (exact enough between them, whatever the
    # range: one far sibling does not coarsen the grid where the others are)
    if len(moves) <= _ANCHORS:  # few siblings (a scheduler's usual case): every x at once
        centre = np.where(ok, moves, mean[None, :])  # absent siblings add harmless support at the mean
        grid = np.sort((centre.T[:, :, None] + h[:, None, None] * _OFFSETS[None, None, :]).reshape(len(h), -1), axis=1)
        k = special.ndtr((grid[None, :, :] - mv[:, :, None]) / h[None, :, None])  # (n, m, S)
        cdf = np.maximum.accumulate(np.einsum("nm,nms->ms", wt, k) / swn[:, None], axis=1)
        return z0 + interp_rows(np.broadcast_to(LEVELS, (len(h), len(LEVELS))), cdf, grid), n, sd
    q = np.zeros((len(h), len(LEVELS)))
    for j in range(len(h)):  # one x at a time: (siblings x support) stays small for any sibling count
        c = moves[ok[:, j], j]
        if not len(c):
            continue
        anchors = c if len(c) <= _ANCHORS else np.quantile(c, np.linspace(0.0, 1.0, _ANCHORS))
        grid = np.sort(np.concatenate([c, (anchors[:, None] + h[j] * _OFFSETS[None, :]).ravel()]))
        cdf = wt[ok[:, j], j] @ special.ndtr((grid[None, :] - c[:, None]) / h[j]) / swn[j]
        q[j] = np.interp(LEVELS, np.maximum.accumulate(cdf), grid)
    return z0 + q, n, sd


def _mix_rows(a: Marginals, b: Marginals, w: np.ndarray) -> Marginals:
    """Per-row mixture (1 - w) a + w b of two marginals at the same x; rows with w = 0 are a's, unchanged."""
    support = np.sort(np.concatenate([a.values, b.values], axis=1), axis=1)
    cdf = np.maximum.accumulate((1 - w)[:, None] * a.cdf_grid(support) + w[:, None] * b.cdf_grid(support), axis=1)
    values = interp_rows(np.broadcast_to(LEVELS, (len(a.x), len(LEVELS))), cdf, support)
    mixed = Marginals.from_quantile_values(a.x, values, (1 - w) * a.mean + w * b.mean)
    keep = w <= 0
    return Marginals(a.x, np.where(keep[:, None], a.values, mixed.values), np.where(keep, a.mean, mixed.mean))


def apply_sweep(query: ForecastQuery, marginals: Marginals, params: SweepParams = DEFAULT_PARAMS) -> SweepAdjustment:
    """The engine's marginals (at ``marginals.x``) combined with the siblings' evidence; unchanged (the same
    object) without sweep context."""
    sweep = query.sweep
    if sweep is None or not sweep.siblings:
        return SweepAdjustment(marginals)
    if query.run.total_steps is None:
        return SweepAdjustment(marginals, ("sweep context not used: it needs run.total_steps (the run's relative "
                                           "position is x / total_steps)",))
    curve = query.curve
    tf = GapTransform.for_curve(curve.goal, curve.lower_bound, curve.upper_bound, curve.y)
    x = marginals.x
    future = np.flatnonzero(x > curve.last_x)
    moves, dist, shape, z_anchor = sibling_moves(query, x[future], tf, params.ratio_ridge, params.anchor_points)
    n_cover = len(moves)
    if n_cover > params.max_siblings:
        keep = np.sort(np.argsort(dist, kind="stable")[: params.max_siblings])
        moves, dist, shape = moves[keep], dist[keep], shape[keep]
    if n_cover < params.min_siblings or not len(future):
        why = (f"only {n_cover} of {len(sweep.siblings)} siblings cover this run's relative position "
               f"{curve.last_x / query.run.total_steps:.3g}" if len(future) else "nothing queried past the last point")
        return SweepAdjustment(marginals, (f"sweep context not used: {why}",) if len(future) else (),
                               {"sweep_siblings": float(n_cover)})
    level = float(curve.y[-1])
    floor = KERNEL_FLOOR * (max(float(np.max(np.abs(curve.y))), 1e-12) if tf.kind == "identity" else 1.0)
    lw = np.ones(len(moves))
    if params.level_bandwidth is not None:
        lw = lw * np.exp(-0.5 * (dist / params.level_bandwidth) ** 2)
    if params.shape_bandwidth is not None:
        lw = lw * np.exp(-0.5 * (shape / params.shape_bandwidth) ** 2)
    zq, n, s_sib = _kernel_quantiles(z_anchor, moves, lw, floor)
    with np.errstate(all="ignore"):
        ysib = tf.inverse(zq)
        if tf.decreasing:
            ysib = ysib[:, ::-1]
        eng = marginals.at(future)
        ze = tf.forward(eng.values, level)
        k25, k75 = np.searchsorted(LEVELS, 0.25), np.searchsorted(LEVELS, 0.75)
        s_eng = np.abs(ze[:, k75] - ze[:, k25]) / (2 * _Z75)
        agree = np.where(s_eng**2 + s_sib**2 > 0, s_eng**2 / (s_eng**2 + s_sib**2), 1.0)
        w = params.max_weight * n / (n + params.prior_siblings) * agree**params.agreement_power
    w = np.where((n >= params.min_siblings) & np.isfinite(w) & np.all(np.isfinite(ysib), axis=1), w, 0.0)
    if not np.any(w > 0):
        return SweepAdjustment(marginals, (), {"sweep_siblings": float(n_cover)})
    sib = Marginals.from_quantile_values(x[future], np.where(np.isfinite(ysib), ysib, eng.values))
    with np.errstate(all="ignore"):
        mixed = _mix_rows(eng, sib, w).clip(curve.lower_bound, curve.upper_bound)
    values, mean = marginals.values.copy(), marginals.mean.copy()
    values[future], mean[future] = mixed.values, mixed.mean
    out = Marginals(x, values, mean)
    return SweepAdjustment(out, (), {"sweep_siblings": float(n_cover), "sweep_weight_at_budget": float(
        w[int(np.argmin(np.abs(x[future] - query.run.total_steps)))])})
