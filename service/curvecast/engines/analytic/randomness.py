"""Deterministic Monte Carlo: every draw a forecast makes is keyed by the curve, never by call order.

The same request must give the same answer bit for bit, whichever batch, worker process or position
it arrives in, and the value at one x must not depend on which other x were asked (the service adds
its decision grid to every query). So the generator is seeded from a hash of the observed curve, the
parameter draws are made once per curve, and the observation noise is one standard-normal score per
sample path shared by every x ("common random numbers"): each x's marginal is still exactly the
predictive distribution, and no draw depends on how many x there are or where they sit.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from scipy import special

from ...domain.curve import Curve


def curve_seed(curve: Curve, base: int = 0) -> int:
    """64-bit seed from the observed curve's content (values, x, goal, bounds, LR) and ``base``.

    The run's plan is left out on purpose: "what if" queries on the same curve under two schedules then
    share their draws, so their difference is not Monte Carlo noise."""
    h = hashlib.blake2b(digest_size=8)
    h.update(_digest_bytes(curve.x))
    h.update(b"|")
    h.update(_digest_bytes(curve.y))
    if curve.lr is not None:
        h.update(b"|lr")
        h.update(_digest_bytes(curve.lr))
    meta = (curve.goal.value, curve.x_kind.value, curve.lower_bound, curve.upper_bound, curve.diverged_at, int(base))
    h.update(repr(meta).encode())
    return int.from_bytes(h.digest(), "little")


HASHED_POINTS = 4096  # longer curves hash an even subsample (and their tail): the seed only needs to be
# a function of the curve, and hashing 20,000 points would cost more than drawing the samples


def _digest_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.float64)
    if len(a) <= HASHED_POINTS:
        return a.tobytes()
    stride = -(-len(a) // HASHED_POINTS)
    return a[::stride].tobytes() + a[-64:].tobytes() + len(a).to_bytes(8, "little")


def curve_rng(curve: Curve, base: int = 0) -> np.random.Generator:
    return np.random.default_rng(curve_seed(curve, base))


@functools.lru_cache(maxsize=16)
def _scores(k: int) -> np.ndarray:
    out = special.ndtri((np.arange(k) + 0.5) / k)
    out.setflags(write=False)
    return out


def normal_scores(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` standard-normal scores, one per sample path: stratified (the k quantiles at (i + 0.5) / k,
    so the tails do not hinge on a few extreme draws) and randomly assigned to the paths."""
    return _scores(k)[rng.permutation(k)]
