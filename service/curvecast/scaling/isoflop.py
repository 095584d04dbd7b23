"""Hoffmann et al.'s Approach 2: isoFLOP profiles and the compute-optimal N(C) power law.

Points are grouped into FLOP budgets (training FLOPs within ``GROUP_DECADES`` of each other, one point per
run: its last checkpoint); per budget a parabola of loss vs log N locates the loss-minimising N_opt, and
log N_opt = log k + a log C is fitted by least squares over the budgets whose minimum is found inside their
sizes. Intervals are the regression's 95% t-intervals (exponent) and prediction intervals (N_opt at a new
budget): they hold the scatter of the vertices about the power law, not a misspecification of it; with two
profiles they are degenerate and a warning says so. The loss at a budget comes from the same regression of
log loss_opt on log C (a pure power law: a rough guide beyond the profiles, where the irreducible loss
bends it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

GROUP_DECADES = 0.05  # points whose log10 FLOPs are within this of their neighbour share a profile (12%)
MIN_SIZES = 3  # distinct model sizes a profile needs for a parabola


@dataclass(frozen=True)
class IsoFlopProfile:
    flops: float  # geometric mean of the profile's FLOPs
    n_points: int
    n_opt: float  # nan when not found
    d_opt: float
    loss_opt: float
    used: bool
    note: str = ""


@dataclass(frozen=True)
class _Line:
    """log y = intercept + slope * log C fitted by least squares over ``n`` profiles."""

    intercept: float
    slope: float
    s: float  # residual standard deviation (nan below 3 profiles)
    n: int
    xbar: float
    sxx: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> "_Line":
        xbar = float(np.mean(x))
        sxx = float(np.sum((x - xbar) ** 2))
        slope = float(np.sum((x - xbar) * (y - np.mean(y))) / sxx)
        intercept = float(np.mean(y) - slope * xbar)
        dof = len(x) - 2
        s = float(np.sqrt(np.sum((y - intercept - slope * x) ** 2) / dof)) if dof > 0 else float("nan")
        return cls(intercept, slope, s, len(x), xbar, sxx)

    def _t(self) -> float:
        return float(sps.t.ppf(0.975, self.n - 2)) if self.n > 2 else float("nan")

    def slope_interval(self) -> tuple[float, float]:
        if self.n <= 2:
            return self.slope, self.slope
        h = self._t() * self.s / np.sqrt(self.sxx)
        return self.slope - h, self.slope + h

    def predict(self, x: float) -> tuple[float, float, float]:
        """y at log C = x with its 95% prediction interval (all in log units; zero width below 3 profiles)."""
        m = self.intercept + self.slope * x
        if self.n <= 2:
            return m, m, m
        h = self._t() * self.s * np.sqrt(1.0 + 1.0 / self.n + (x - self.xbar) ** 2 / self.sxx)
        return m, m - h, m + h


@dataclass(frozen=True)
class IsoFlopFit:
    """Approach 2's answer: every profile, the N_opt(C) power law and its 95% interval (nan when fewer than
    two profiles had a minimum), and warnings on what it cannot stand behind."""

    profiles: tuple[IsoFlopProfile, ...]
    exponent: float
    exponent_interval: tuple[float, float]
    coefficient: float
    warnings: tuple[str, ...]
    n_line: _Line | None = None
    loss_line: _Line | None = None

    def budget_warnings(self, flops: float) -> list[str]:
        """A warning when ``flops`` lies beyond the used profiles (the power laws extrapolate there)."""
        used = [p.flops for p in self.profiles if p.used]
        if self.n_line is None or not used or min(used) <= flops <= max(used):
            return []
        return [f"isoflop at C={flops:.3g}: beyond the profiles ({min(used):.3g}-{max(used):.3g} FLOPs); N_opt "
                "extrapolates the fitted power law, and the loss a pure power law in C that ignores the "
                "irreducible loss (it undershoots far out): prefer compute_optimal's loss"]

    def compute_optimal(self, flops: float) -> dict[str, float]:
        """N_opt, D_opt = C / (6 N_opt) and the loss at budget ``flops`` with 95% prediction intervals
        (all nan when no power law was fitted)."""
        keys = ("n_params", "n_params_lower95", "n_params_upper95", "tokens", "tokens_lower95",
                "tokens_upper95", "loss", "loss_lower95", "loss_upper95")
        if self.n_line is None or self.loss_line is None:
            return dict.fromkeys(keys, float("nan"))
        x = float(np.log(flops))
        n, nlo, nhi = np.exp(self.n_line.predict(x))
        l, llo, lhi = np.exp(self.loss_line.predict(x))
        c6 = flops / 6.0
        return dict(zip(keys, (float(n), float(nlo), float(nhi), c6 / n, c6 / nhi, c6 / nlo,
                               float(l), float(llo), float(lhi))))


def _flops(p) -> float:
    return float(p.flops) if p.flops is not None else 6.0 * p.n_params * p.tokens


def fit_isoflop(points: Sequence, run_keys: Sequence[str]) -> IsoFlopFit:
    """Approach 2 on ``points`` (ScalingPoint-like, after checkpoint selection); ``run_keys[i]`` names the
    run of ``points[i]`` (each run enters once, with its last checkpoint)."""
    last: dict[str, int] = {}
    for i, k in enumerate(run_keys):
        if k not in last or points[i].tokens > points[last[k]].tokens:
            last[k] = i
    idx = np.array(sorted(last.values()), dtype=np.int64)
    lc = np.log10([_flops(points[i]) for i in idx])
    order = np.argsort(lc, kind="stable")
    idx, lc = idx[order], lc[order]
    breaks = np.flatnonzero(np.diff(lc) > GROUP_DECADES) + 1
    profiles: list[IsoFlopProfile] = []
    for grp, g_lc in zip(np.split(idx, breaks), np.split(lc, breaks)):
        C = float(10.0 ** np.mean(g_lc))
        ln = np.log([points[i].n_params for i in grp])
        y = np.array([points[i].loss for i in grp], dtype=np.float64)
        w = np.sqrt(np.array([points[i].weight for i in grp], dtype=np.float64))
        nan = float("nan")
        if len(np.unique(np.round(ln, 6))) < MIN_SIZES:
            profiles.append(IsoFlopProfile(C, len(grp), nan, nan, nan, False, f"fewer than {MIN_SIZES} model sizes"))
            continue
        a, b, c = np.polyfit(ln, y, 2, w=w)
        if not a > 0:
            profiles.append(IsoFlopProfile(C, len(grp), nan, nan, nan, False,
                                           "loss vs log N is not convex here: no minimum"))
            continue
        x = -b / (2 * a)
        n_opt, loss = float(np.exp(x)), float(c - b * b / (4 * a))
        inside = bool(ln.min() <= x <= ln.max())
        profiles.append(IsoFlopProfile(C, len(grp), n_opt, C / (6 * n_opt), loss, inside,
                                       "" if inside else "the minimum lies outside the profile's sizes"))
    used = [p for p in profiles if p.used]
    warnings: list[str] = []
    skipped = len(profiles) - len(used)
    if skipped:
        warnings.append(f"isoflop: {skipped} of {len(profiles)} FLOP profiles have no minimum inside their sizes "
                        "and are not used (see isoflop.budgets[].note)")
    if len(used) < 2:
        warnings.append(f"isoflop: only {len(used)} FLOP profile(s) with a minimum; no N_opt(C) power law "
                        "(Approach 2 needs at least 2, 3 for an interval)")
        nan = float("nan")
        return IsoFlopFit(tuple(profiles), nan, (nan, nan), nan, tuple(warnings))
    x = np.log([p.flops for p in used])
    n_line = _Line.fit(x, np.log([p.n_opt for p in used]))
    loss_line = _Line.fit(x, np.log([p.loss_opt for p in used]))
    if len(used) == 2:
        warnings.append("isoflop: only 2 FLOP profiles with a minimum: the N_opt(C) power law passes through both "
                        "and its intervals are zero-width (they say nothing)")
    return IsoFlopFit(tuple(profiles), n_line.slope, n_line.slope_interval(), float(np.exp(n_line.intercept)),
                      tuple(warnings), n_line, loss_line)
