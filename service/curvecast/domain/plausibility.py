"""Plausibility review: the last check every engine's answer passes before decisions are made from it.

An engine can answer absurdly without noticing: a lower tail at 0 for a loss that sits at 2.7, a median
50% off a curve that has moved 2% in its last third, a band of zero width, an accuracy above 100%.
``review`` catches what the curve itself rules out and says so:

* limits: quantiles stay within the metric's declared bounds, or within the ones its values imply (a
  minimised metric that was never negative is >= 0; an accuracy-like metric lies in [0, 1], or in
  [0, 100] when its values say percent). A bound is a limit, not a target: piling the forecast onto it
  while the curve sits far away is itself implausible (below);
* degenerate rows beyond the observed curve: a median (or the central half of the band, on the
  improving side) outside what the curve supports, or most of the improving tail on a floor the curve
  is far from, is replaced by a conservative answer; a band of (almost) zero width is widened;
* goal: a curve that steadily gets worse under its stated goal (an accuracy rising with
  goal=minimize, the default) gets a warning, since every decision would then read it upside down.

"What the curve supports" is deliberately generous: within SUPPORT_K times the curve's recent
movement, or SUPPORT_REL of its level if that is wider, growing with 1 + log(x / last x), of its
current level. Only answers outside that envelope, which no curve law fitted to these points would
give, are touched; curves of fewer than MIN_SUPPORT_POINTS points only get the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
from scipy import special, stats

from .curve import Curve, ForecastQuery, Goal
from .distribution import LEVELS, Marginals

SUPPORT_K = 4.0  # the support envelope: this many recent movements per (1 + log horizon) from the level,
SUPPORT_REL = 0.25  # ... or this share of the level, whichever is wider (a flat curve may still move)
MIN_SUPPORT_POINTS = 5  # fewer points say too little about the curve's movement to rule anything out
STABLE_REL = 0.10  # "the last value is within 10%": the last third moved less than this share ...
JUMP_REL = 0.50  # ... yet the median moves more than this share of the level: replaced
MIN_WIDTH_NOISE = 0.1  # a 90% band narrower than this many noise sds (or 1e-6 of the level) is widened
STUCK_WIDTH = 0.2  # a curve that has not moved at all: 90% width per unit log-horizon, share of its level
STUCK_RANGE_SHARE = 0.01  # ... or of this share of its earlier range, when the level is 0
CONSERVATIVE_DF = 3.0  # the replacement's Student-t: heavy enough that a miss costs nats, not thousands
TREND_RANK = 0.8  # Spearman correlation of value with x that counts as "steadily" rising or falling
_ACCURACY = re.compile(r"(^|[^a-z])(acc|accuracy|top-?[15]|auc|auroc|f1|precision|recall|iou|map|exact_match|em|hit(s)?@?\d*)([^a-z]|$)")
_LOSS = re.compile(r"(loss|nll|perplexity|ppl|error|err|mse|rmse|mae|wer|cer|bpb|bpc)")
_TINY = float(np.finfo(np.float64).tiny)  # floors that stay below any curve's own scale
_T_LEVELS = stats.t.ppf(LEVELS, CONSERVATIVE_DF)
_Z_LEVELS = special.ndtri(LEVELS)
_I05, _I25, _I50, _I75, _I95 = (int(np.argmin(np.abs(LEVELS - p))) for p in (0.05, 0.25, 0.5, 0.75, 0.95))


@dataclass(frozen=True)
class Limits:
    """What the metric cannot cross; ``why`` says where each limit came from (for warnings)."""

    lower: float | None
    upper: float | None
    why: str = ""


@dataclass(frozen=True)
class Review:
    marginals: Marginals
    warnings: tuple[str, ...]


def accuracy_like(curve: Curve) -> bool:
    """A metric whose name says accuracy (acc, top-1, AUC, F1, ...) and not loss or error, or, with
    neither in its name, a maximised metric whose values all lie in [0, 1]."""
    name = curve.metric.lower()
    if _LOSS.search(name):
        return False
    if _ACCURACY.search(name):
        return True
    y = np.asarray(curve.y, dtype=np.float64)
    return curve.goal is Goal.MAXIMIZE and len(y) > 0 and bool(np.all((y >= 0) & (y <= 1)))


def limits(curve: Curve) -> Limits:
    """Declared bounds, else the ones the values imply (see the module docstring)."""
    y = np.asarray(curve.y, dtype=np.float64)
    lo, hi, why = curve.lower_bound, curve.upper_bound, []
    if len(y) == 0:
        return Limits(lo, hi)
    if accuracy_like(curve) and y.min() >= 0:
        top = 1.0 if y.max() <= 1.0 else (100.0 if y.max() <= 100.0 else None)
        if top is not None:
            lo = 0.0 if lo is None else lo
            if hi is None:
                hi = top
                why.append(f"an accuracy-like metric lies in [0, {top:g}]")
    if lo is None and curve.goal is Goal.MINIMIZE and y.min() >= 0:
        lo = 0.0
        why.append("a loss that was never negative stays >= 0")
    return Limits(lo, hi, "; ".join(why))


def review(query: ForecastQuery, marginals: Marginals) -> Review:
    """The answer with limits applied and degenerate rows repaired, plus a warning for each repair.

    Checks read a few quantile columns only; the full rows are rebuilt just where something is wrong,
    so an answer with nothing to repair costs about a hundred microseconds."""
    curve = query.curve
    y = np.asarray(curve.y, dtype=np.float64)
    warnings: list[str] = []
    noise = _noise(y)
    goal_note = goal_contradiction(curve, noise)
    if goal_note:
        warnings.append(goal_note)
    lim = limits(curve)
    lo, hi = _bounds(lim)
    values, mean = marginals.values, marginals.mean
    if len(values) and (values[:, 0].min() < lo or values[:, -1].max() > hi):  # rows are sorted
        med_before = values[:, _I50]
        values, mean = np.clip(values, lo, hi), np.clip(mean, lo, hi)
        moved = values[:, _I50] != med_before
        if moved.any():
            warnings.append(f"the forecast median left the metric's range at {_xs(marginals.x[moved])} "
                            f"({lim.why or 'declared bounds'}); limited to it")
    if len(y) < MIN_SUPPORT_POINTS or len(values) == 0:
        return Review(Marginals(marginals.x, values, mean), tuple(warnings))
    sign = curve.goal.sign
    ctx = _Context.of(curve, sign * y, noise)
    # the z-space (lower is better) 5%, 25%, 50% and 95% quantiles: negation swaps the levels
    i05, i25, i50, i95 = (_I05, _I25, _I50, _I95) if sign > 0 else (_I95, _I75, _I50, _I05)
    q05, q25, q50, q95 = (sign * values[:, i] for i in (i05, i25, i50, i95))
    floor_z = _z_floor(lim, sign)
    x = np.asarray(marginals.x, dtype=np.float64)
    ahead = x > curve.last_x
    lh = np.log(np.maximum((x - ctx.origin) / max(curve.last_x - ctx.origin, _TINY), 1.0))
    reach = (1.0 + lh) * max(SUPPORT_K * ctx.move, SUPPORT_REL * abs(ctx.level))
    lo_s, hi_s = ctx.level - reach, ctx.level + reach
    # a curve that moved less than 10% over its last third does not move 50% (unless the horizon
    # is so long that even half the envelope allows it)
    jump = ctx.stable & (np.abs(q50 - ctx.level) > np.maximum(JUMP_REL * abs(ctx.level), 0.5 * reach))
    off = (q50 < lo_s) | (q50 > hi_s) | jump
    collapsed = q25 < lo_s
    if floor_z is not None:
        far = ctx.level - floor_z > reach
        collapsed |= far & (q05 <= floor_z + 1e-12 * max(abs(floor_z), abs(ctx.level), _TINY))
    bad = ahead & (off | collapsed)
    min_width = np.full(len(x), max(MIN_WIDTH_NOISE * ctx.noise, 1e-6 * abs(ctx.level), _TINY))
    if ctx.stuck:  # nothing measured says how far it may move: no narrower than a share of its level
        # (or, for a curve stuck at 0, of how far it moved before it stalled)
        base = max(abs(ctx.level), STUCK_RANGE_SHARE * float(np.ptp(y)))
        min_width = np.maximum(min_width, STUCK_WIDTH * lh * base)
    narrow = ahead & ~bad & (q95 - q05 < min_width)
    if not (bad.any() or narrow.any()):
        return Review(Marginals(marginals.x, values, mean), tuple(warnings))
    zv = sign * values if sign > 0 else (sign * values)[:, ::-1]  # z space, rows sorted
    mean = mean.copy()
    if bad.any():
        centre = np.where(off, np.clip(ctx.level, lo_s, hi_s), np.clip(q50, lo_s, hi_s))
        zv[bad] = _conservative(centre[bad], ctx, lh[bad])
        if floor_z is not None:
            zv[bad] = np.maximum(zv[bad], floor_z)
        kinds = []
        if (bad & off).any():
            kinds.append("a median far outside anything the curve supports")
        if (bad & collapsed & ~off).any():
            kinds.append("an improving tail collapsed onto the metric's floor or far beyond the curve")
        warnings.append(f"the engines' answer at {_xs(x[bad])} had {' and '.join(kinds)} "
                        f"(level {sign * ctx.level:.4g}, recent movement {ctx.move:.3g}); replaced by a "
                        "conservative forecast around the curve's level")
    if narrow.any():
        zv[narrow] = zv[narrow] + (min_width[narrow, None] / (2.0 * 1.6448536269514722)) * _Z_LEVELS[None]
        why = ("the curve has not moved at all, so nothing bounds how far it may move: a share of its level"
               if ctx.stuck else "the curve's noise")
        warnings.append(f"the forecast band at {_xs(x[narrow])} had (almost) zero width; widened to "
                        f"{float(np.max(min_width[narrow])):.3g} ({why})")
    out = np.clip(zv * sign if sign > 0 else (zv * sign)[:, ::-1], lo, hi)
    redo = bad | narrow
    fresh = Marginals.from_quantile_values(x[redo], out[redo])
    out[redo] = fresh.values
    mean[redo] = np.where(bad[redo], fresh.mean, mean[redo])  # a symmetric widening keeps the mean
    return Review(Marginals(marginals.x, out, np.clip(mean, lo, hi)), tuple(warnings))


def direction(curve: Curve) -> Goal:
    """The goal to fit the curve with: the stated one, unless the curve moves steadily against it (an
    accuracy sent without goal=maximize). The curve ahead does not depend on what the caller calls
    better; decisions still read the stated goal, and ``review`` warns about the contradiction."""
    if not goal_contradiction(curve):
        return curve.goal
    return Goal.MAXIMIZE if curve.goal is Goal.MINIMIZE else Goal.MINIMIZE


def goal_contradiction(curve: Curve, noise: float | None = None) -> str:
    """A warning when the curve steadily gets worse under its stated goal, else "". Steadily: rank
    correlation with x above TREND_RANK, and the change well beyond the noise."""
    y = np.asarray(curve.y, dtype=np.float64)
    if len(y) < 5 or np.ptp(y) <= 0:
        return ""
    rho = _rank_correlation(y)  # x is strictly increasing: its ranks are 0..n-1
    third = max(len(y) // 3, 1)
    rise = _med(y[-third:]) - _med(y[:third])
    noise = _noise(y) if noise is None else noise
    if curve.goal is Goal.MINIMIZE:
        worse = rho > TREND_RANK and rise > 5.0 * noise
    else:
        worse = rho < -TREND_RANK and -rise > 5.0 * noise
    if not worse:
        return ""
    if curve.goal is Goal.MINIMIZE:
        kind = "an accuracy-like metric" if accuracy_like(replace(curve, goal=Goal.MAXIMIZE)) else "a metric"
        what, fix = f"{kind} that steadily rises", "if higher is better, send goal=maximize"
    else:
        kind = "a loss-like metric" if _LOSS.search(curve.metric.lower()) else "a metric"
        what, fix = f"{kind} that steadily falls", "if lower is better, send goal=minimize"
    return (f"goal={curve.goal.value} contradicts the curve: {what} ({y[0]:.4g} to {y[-1]:.4g}) would be getting "
            f"worse all along; {fix} (as sent, every decision reads the curve the other way round, e.g. its "
            "first point counts as its best)")


# ---- helpers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    """The observed curve in z space (lower is better), summarised for the support envelope."""

    level: float  # median of the last three values
    move: float  # recent movement: range of the later half, at least a few noise sds
    noise: float
    stable: bool  # the last third stayed within STABLE_REL of the last value
    origin: float  # x origin for the horizon ratio
    stuck: bool = False  # the later half is exactly flat (a saturated or quantised metric, a stalled run)

    @classmethod
    def of(cls, curve: Curve, z: np.ndarray, noise: float) -> "_Context":
        """``noise``: of the values (the same in z space, which only flips their sign)."""
        n = len(z)
        level = _med(z[-3:])
        late = z[n // 2 :] if n >= 4 else z
        scale = max(abs(level), _TINY)
        move = max(float(np.ptp(late)), 3.0 * noise, 1e-6 * scale, _TINY)
        third = z[-max(n // 3, 2) :]
        stable = bool(np.max(np.abs(third - z[-1])) <= STABLE_REL * max(abs(z[-1]), _TINY)) and abs(z[-1]) > 0
        x = np.asarray(curve.x, dtype=np.float64)
        stuck = bool(np.ptp(late) <= 1e-12 * scale)
        if stuck:  # its recent movement says nothing: how far it moved before it stalled does
            move = max(move, STUCK_RANGE_SHARE * float(np.ptp(z)))
        return cls(level, move, noise, stable, min(float(x[0]), 0.0), stuck)


def _conservative(centre: np.ndarray, ctx: _Context, lh: np.ndarray) -> np.ndarray:
    """Quantile rows (z space) of a Student-t around ``centre`` whose scale is the recent movement,
    growing with log horizon: the answer the curve alone can stand behind."""
    scale = ctx.move * (0.5 + 0.5 * lh)
    return centre[:, None] + scale[:, None] * _T_LEVELS[None]


def _rank_correlation(y: np.ndarray) -> float:
    """Spearman correlation of ``y`` with its position (ties get the mean of their ranks' order)."""
    ranks = np.empty(len(y))
    ranks[np.argsort(y, kind="stable")] = np.arange(len(y))
    pos = np.arange(len(y), dtype=np.float64)
    r = ranks - ranks.mean()
    p = pos - pos.mean()
    den = float(np.sqrt((r @ r) * (p @ p)))
    return float(r @ p) / den if den > 0 else 0.0


def _noise(y: np.ndarray) -> float:
    """Robust noise sd of single values from second differences of the later half (trend-free)."""
    tail = y[len(y) // 2 :] if len(y) >= 10 else y
    if len(tail) < 4:
        return 0.0
    d2 = tail[2:] - 2.0 * tail[1:-1] + tail[:-2]
    return float(1.4826 * _med(np.abs(d2 - _med(d2))) / np.sqrt(6.0))


def _med(a: np.ndarray) -> float:
    """``np.median`` of a 1-d array, without its overhead (these arrays are short)."""
    srt = np.sort(a)
    k = len(srt) // 2
    return float(srt[k]) if len(srt) % 2 else float(0.5 * (srt[k - 1] + srt[k]))


def _bounds(lim: Limits) -> tuple[float, float]:
    return (-np.inf if lim.lower is None else lim.lower, np.inf if lim.upper is None else lim.upper)


def _z_floor(lim: Limits, sign: float) -> float | None:
    """The best possible value in z space (a loss's lower limit, minus an accuracy's upper one)."""
    v = lim.lower if sign > 0 else lim.upper
    return None if v is None else sign * v


def _xs(x: np.ndarray) -> str:
    """A short description of where: one x, or the range of several."""
    x = np.asarray(x, dtype=np.float64)
    return f"x={x[0]:g}" if len(x) == 1 else f"{len(x)} x in [{x.min():g}, {x.max():g}]"
