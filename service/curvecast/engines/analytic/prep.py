"""Turn an observed curve into the small, well-conditioned problem the per-run fitters solve.

Everything downstream works in "z space" (``z = goal.sign * y``, lower is better) and in normalised
time ``u = t / t_last`` (the last observed point sits at u = 1), so one set of grids and bounds serves
losses and accuracies, steps and epochs alike. Long curves are binned (median per bin, robust to
spikes) to a bounded number of points so the cost per curve does not grow with its length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...domain.curve import Curve, Goal

MAX_POINTS = 48  # points handed to the fitters after binning
TAIL_RAW = 6  # the last raw points are kept unbinned: they matter most for extrapolation
MIN_FIT_POINTS = 5  # below this the curve is "too short to say much"


@dataclass(frozen=True)
class Prepared:
    """A curve ready for fitting. ``u``/``z`` are the (binned) fit points."""

    u: np.ndarray  # normalised time of fit points, last == 1
    z: np.ndarray  # sign * value of fit points
    noise_sd: np.ndarray  # noise sd of each fit point (smaller for bins of many raw points)
    raw_noise: float  # noise sd of one raw observation (added to predictive samples)
    t_shift: float  # t = x - t_shift (only non-zero when x starts at or below 0)
    t_last: float  # t of the last observed point
    sign: float
    z_floor: float | None  # known best-possible value in z space (loss lower bound, -accuracy ceiling)
    z_ceiling: float | None  # known worst-possible value in z space
    z_last: float  # smoothed last value
    z_range: float  # robust spread of the fitted part of the curve
    skipped_warmup: int  # raw points dropped before the fit window

    def to_u(self, x: np.ndarray) -> np.ndarray:
        return np.maximum((np.asarray(x, dtype=np.float64) - self.t_shift) / self.t_last, 1e-9)

    @property
    def all_positive(self) -> bool:
        return bool(np.all(self.z > 0))


def z_bounds(curve: Curve) -> tuple[float | None, float | None]:
    """Known bounds mapped to z space: (best possible, worst possible)."""
    if curve.goal is Goal.MINIMIZE:
        return curve.lower_bound, curve.upper_bound
    lo = None if curve.upper_bound is None else -curve.upper_bound
    hi = None if curve.lower_bound is None else -curve.lower_bound
    return lo, hi


def robust_noise(z: np.ndarray) -> float:
    """Noise sd of raw observations from second differences of the curve's later half (trend-free)."""
    tail = z[len(z) // 2 :] if len(z) >= 10 else z
    if len(tail) < 4:
        return 0.0
    d2 = tail[2:] - 2.0 * tail[1:-1] + tail[:-2]
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / np.sqrt(6.0))


def warmup_end(z: np.ndarray) -> int:
    """Index where the curve starts improving: the worst (smoothed) point within its first third.

    Loss curves often rise first (warm-up, a non-monotone start); power laws only describe what
    follows. Long curves are block-medianed first so the cost stays bounded.
    """
    n = len(z)
    if n < 2 * MIN_FIT_POINTS:
        return 0
    if n > 400:
        # the 400 blocks of np.array_split: the first n % 400 one longer; medians by block length at once
        q, r = divmod(n, 400)
        cut = r * (q + 1)
        zb = np.concatenate([np.median(z[:cut].reshape(r, q + 1), axis=1), np.median(z[cut:].reshape(400 - r, q), axis=1)])
        k = warmup_end(zb)
        return int(k * (q + 1) if k < r else cut + (k - r) * q)
    head = _rolling_median(z, max(5, (n // 20) | 1))[: max(n // 3, 1) + 1]  # a lone spike is no peak
    return int(np.argmax(head))


TRANSIENT_MIN_POINTS = 200  # per-step logs: shorter curves are evaluations, whose first point is data
TRANSIENT_BINS = 24  # log-spaced bins for the slope profile
TRANSIENT_KEEP = 0.5  # never drop more than this share of the observed x range


def transient_end(t: np.ndarray, z: np.ndarray) -> int:
    """Index where an initial transient of a raw per-step log ends, or 0.

    A training loss logged from step 0 first sits near its initial value, then falls steeply (the
    unigram/bigram phase of an LLM), and only then follows a power law. In log-time a power law's
    improvement rate only slows down; a transient shows as a rate that first *rises* to a peak. The
    transient ends where the rate, after its peak, has fallen to half of it."""
    n = len(z)
    if n < TRANSIENT_MIN_POINTS or t[0] <= 0:
        return 0
    edges = np.geomspace(t[0], t[-1] * (1 + 1e-12), TRANSIENT_BINS + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, TRANSIENT_BINS - 1)
    counts = np.bincount(idx, minlength=TRANSIENT_BINS)
    filled = np.flatnonzero(counts > 0)
    if len(filled) < 8:
        return 0
    lt = (np.bincount(idx, weights=np.log(t), minlength=TRANSIENT_BINS) / np.maximum(counts, 1))[filled]
    zb = np.array([np.median(z[idx == b]) for b in filled])
    rate = -np.diff(zb) / np.diff(lt)
    peak = int(np.argmax(rate))
    if peak == 0 or rate[0] > 0.5 * rate[peak] or rate[peak] <= 0:
        return 0
    below = np.flatnonzero(rate[peak:] < 0.5 * rate[peak])
    if not len(below):
        return 0
    t_end = float(np.exp(lt[peak + below[0]]))
    t_end = min(t_end, t[0] + TRANSIENT_KEEP * (t[-1] - t[0]))
    return int(np.searchsorted(t, t_end))


def _rolling_median(z: np.ndarray, k: int) -> np.ndarray:
    if len(z) < k:
        return z
    pad = np.concatenate([np.full(k // 2, z[0]), z, np.full(k // 2, z[-1])])
    windows = np.lib.stride_tricks.sliding_window_view(pad, k)
    return np.median(windows, axis=1)


def prepare(curve: Curve, max_points: int = MAX_POINTS) -> Prepared:
    x = np.asarray(curve.x, dtype=np.float64)
    z = curve.goal.sign * np.asarray(curve.y, dtype=np.float64)
    floor, ceiling = z_bounds(curve)
    i0 = warmup_end(z)
    x, z = x[i0:], z[i0:]
    t_shift = 0.0
    if x[0] <= 0:
        step = float(x[1] - x[0]) if len(x) > 1 else 1.0
        t_shift = float(x[0] - step)
    t = x - t_shift
    k0 = transient_end(t, z)
    if k0:
        x, z, t = x[k0:], z[k0:], t[k0:]
        i0 += k0
    raw_noise = max(robust_noise(z), 1e-5 * float(np.median(np.abs(z))), 1e-12)
    u_raw = t / t[-1]
    if len(z) > max_points:
        u, zb, counts = _bin(u_raw, z, max_points)
    else:
        u, zb, counts = u_raw, z, np.ones(len(z))
    noise = raw_noise / np.sqrt(counts)
    k = min(len(zb), 5)
    z_last = float(np.median(zb[-k:]))
    z_range = float(np.subtract(*np.quantile(zb, [0.95, 0.05]))) if len(zb) > 1 else 0.0
    return Prepared(
        u=u,
        z=zb,
        noise_sd=noise,
        raw_noise=raw_noise,
        t_shift=t_shift,
        t_last=float(t[-1]),
        sign=curve.goal.sign,
        z_floor=floor,
        z_ceiling=ceiling,
        z_last=z_last,
        z_range=z_range,
        skipped_warmup=i0,
    )


def _bin(u: np.ndarray, z: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median-bin all but the last ``TAIL_RAW`` points into equal-width bins in u."""
    head_u, head_z = u[:-TAIL_RAW], z[:-TAIL_RAW]
    nb = max_points - TAIL_RAW
    edges = np.linspace(head_u[0], head_u[-1], nb + 1)
    idx = np.clip(np.searchsorted(edges, head_u, side="right") - 1, 0, nb - 1)
    order = np.argsort(idx, kind="stable")
    starts = np.concatenate([[0], np.flatnonzero(np.diff(idx[order])) + 1])
    sizes = np.diff(np.concatenate([starts, [len(order)]]))
    us, zs = np.empty(len(starts)), np.empty(len(starts))
    for size in np.unique(sizes):  # bins of equal length at once: row-wise mean/median, same values
        sel = np.flatnonzero(sizes == size)
        members = order[starts[sel][:, None] + np.arange(size)]
        us[sel] = np.mean(head_u[members], axis=1)
        zs[sel] = np.median(head_z[members], axis=1)
    return (
        np.concatenate([us, u[-TAIL_RAW:]]),
        np.concatenate([zs, z[-TAIL_RAW:]]),
        np.concatenate([sizes.astype(np.float64), np.ones(TAIL_RAW)]),
    )
