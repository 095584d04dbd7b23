"""Magnitude normalisation: curves near 1e-300 or 1e300 are fitted as if they were ordinary numbers.

The engines square residuals and differences (``1e-300 ** 2`` underflows to 0, ``1e300 ** 2``
overflows) and hold absolute floors sized for ordinary values (a 1e-12 noise floor, a 1e-8 spread),
so a curve of tiny or huge values used to come back as "gain 6.79e+285" or "Eigenvalues did not
converge". An engine therefore sees such a curve multiplied by a power of two (exact in floating
point, ``np.ldexp``, subnormal values included) that brings its typical value near 1, and its
answer is divided by the same factor.
Curves of ordinary magnitude are passed through untouched, so their answers do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..domain.curve import ForecastQuery
from ..domain.distribution import Marginals
from .base import EngineForecast

SAFE_LOW, SAFE_HIGH = 1e-4, 1e8  # typical |value| inside this range needs no rescaling
MAX_SCALED = 1e300  # a scaled target, bound or detail never goes past the validated value range
# engine details measured in the curve's units (the rest are dimensionless, in x units or counts)
VALUE_DETAILS = frozenset({"noise_sd", "tissue_L0", "tissue_A", "tissue_C", "mpl_L0", "mpl_A", "mpl_B"})


@dataclass(frozen=True)
class Rescaled:
    """A query as the engine sees it: values times 2**``exp`` (``exp`` = 0 for most curves)."""

    query: ForecastQuery
    exp: int

    @property
    def factor(self) -> float:
        return math.ldexp(1.0, self.exp) if abs(self.exp) < 1020 else math.inf if self.exp > 0 else 0.0

    def restore(self, result: EngineForecast | Exception) -> EngineForecast | Exception:
        """The engine's answer back in the caller's units."""
        if self.exp == 0 or not isinstance(result, EngineForecast):
            return result
        m = result.marginals
        marg = Marginals(m.x, np.ldexp(m.values, -self.exp), np.ldexp(m.mean, -self.exp))
        details = {k: (_ldexp_clamped(v, -self.exp) if k in VALUE_DETAILS else v) for k, v in result.details.items()}
        return EngineForecast(marg, result.engine, result.warnings, details)


def _ldexp_clamped(v: float, e: int) -> float:
    """v * 2**e, held inside +-MAX_SCALED: a target or bound far from the curve's own scale (1.0 beside
    values of 1e-323) stays far away instead of overflowing to inf or raising."""
    try:
        out = math.ldexp(v, e)
    except OverflowError:
        out = math.copysign(MAX_SCALED, v)
    return max(-MAX_SCALED, min(MAX_SCALED, out))


def scale_exponent(y: np.ndarray) -> int:
    """``e`` such that 2**e brings the median |value| near 1, or 0 when it is already ordinary."""
    a = np.abs(np.asarray(y, dtype=np.float64))
    if len(a) == 0 or (SAFE_LOW <= float(a.min()) and float(a.max()) <= SAFE_HIGH):
        return 0  # every value ordinary: the common case, two reductions
    if len(a) > 4096:
        a = a[:: -(-len(a) // 4096)]
    a = a[np.isfinite(a) & (a > 0)]
    if len(a) == 0:
        return 0
    typical = float(np.median(a))
    if SAFE_LOW <= typical <= SAFE_HIGH:
        return 0
    # the largest value must stay finite after scaling (subnormal inputs scale exactly with ldexp)
    exp = -int(round(math.log2(typical)))
    return min(exp, 1000 - int(math.ceil(math.log2(float(np.max(a))))))


def scale_factor(y: np.ndarray) -> float:
    """2**``scale_exponent(y)`` (inf or 0 beyond the float range; the engines use the exponent)."""
    return Rescaled(None, scale_exponent(y)).factor  # type: ignore[arg-type]


def rescale(q: ForecastQuery) -> Rescaled:
    """``q`` with its values, bounds and target multiplied by 2**``scale_exponent(values)``."""
    e = scale_exponent(q.curve.y)
    if e == 0:
        return Rescaled(q, 0)

    def s(v: float | None) -> float | None:
        return None if v is None else _ldexp_clamped(v, e)

    c = q.curve
    curve = replace(c, y=np.ldexp(np.asarray(c.y, dtype=np.float64), e), lower_bound=s(c.lower_bound), upper_bound=s(c.upper_bound))
    return Rescaled(replace(q, curve=curve, target=s(q.target), incumbent=s(q.incumbent)), e)
