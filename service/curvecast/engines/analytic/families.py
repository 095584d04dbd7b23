"""The per-run curve families of Domhan et al. (2015), in z space (lower is better).

Every "basis" family is ``z(u) = c + a * phi(u; theta)`` with ``a >= 0`` and ``phi`` decreasing from
``phi(0+)`` to 0, where ``theta`` holds the family's nonlinear parameters on a log scale. For a fixed
theta the best ``c`` and ``a`` are a closed-form weighted least-squares solution, so a fit is a
vectorised search over theta (variable projection): global, deterministic and free of Python callbacks.

Loss-form names map to the accuracy forms as follows (accuracy = -z):
  pow3       c + a*u^-alpha                      Domhan pow3
  pow4       c + a*(u + t0)^-alpha               Domhan pow4 ((a*t + b)^-alpha rewritten)
  mmf        c + a / (1 + (u/tau)^d)             Morgan-Mercer-Flodin (Domhan's MMF)
  log_power  MMF with one end pinned: the asymptote at the known floor for a loss (Domhan's
             a/(1+(t/e^b)^c) has no offset), the start at the worst value for an accuracy
  exp4       c + a*exp(-k*u^d)                   Domhan exp4; janoschek and weibull are the same function
             class under reparameterisation (a - (a-b)exp(-k t^d), a - (a-b)exp(-(k t)^d)), so they
             are served by this one fit and listed as aliases
  ilog2      c + a / ln(e + u/s)                 Domhan ilog2 (c + a/ln t) with a time scale s
  vapor      s * exp(a + b/u + c*ln u)           vapor pressure, linear in log space
``u`` is time normalised so that the last observed point is at 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

E = float(np.e)
ALIASES: dict[str, str] = {"janoschek": "exp4", "weibull": "exp4"}


@dataclass(frozen=True)
class BasisFamily:
    name: str
    lo: tuple[float, ...]  # theta bounds (log scale)
    hi: tuple[float, ...]
    n_grid: tuple[int, ...]
    phi: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta (..., p), u (n,)) -> (..., n)
    phi_inv: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta (..., p), q (...)) -> u (...)
    pinned: bool = False

    @property
    def n_theta(self) -> int:
        return len(self.lo)

    def grid(self) -> np.ndarray:
        axes = [np.linspace(lo, hi, n) for lo, hi, n in zip(self.lo, self.hi, self.n_grid)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1)

    @property
    def step(self) -> np.ndarray:
        return (np.asarray(self.hi) - np.asarray(self.lo)) / (np.asarray(self.n_grid) - 1)

    def phi_at_zero(self, theta: np.ndarray) -> np.ndarray:
        """phi(0+): targets at or above c + a*phi(0+) were reached at the start."""
        if self.name in ("pow3",):
            return np.full(theta.shape[:-1], np.inf)
        if self.name == "pow4":
            return np.exp(-np.exp(theta[..., 0]) * theta[..., 1])
        return np.ones(theta.shape[:-1])


def _t(theta: np.ndarray, j: int) -> np.ndarray:
    return np.exp(theta[..., j])[..., None]


def _pow3(theta, u):
    return u ** (-_t(theta, 0))


def _pow3_inv(theta, q):
    return q ** (-1.0 / np.exp(theta[..., 0]))


def _pow4(theta, u):
    return (u + _t(theta, 1)) ** (-_t(theta, 0))


def _pow4_inv(theta, q):
    return q ** (-1.0 / np.exp(theta[..., 0])) - np.exp(theta[..., 1])


def _mmf(theta, u):
    return 1.0 / (1.0 + (u / _t(theta, 0)) ** _t(theta, 1))


def _mmf_inv(theta, q):
    return np.exp(theta[..., 0]) * np.maximum(1.0 / q - 1.0, 0.0) ** (1.0 / np.exp(theta[..., 1]))


def _exp4(theta, u):
    return np.exp(-_t(theta, 0) * u ** _t(theta, 1))


def _exp4_inv(theta, q):
    return (np.maximum(-np.log(q), 0.0) / np.exp(theta[..., 0])) ** (1.0 / np.exp(theta[..., 1]))


def _ilog2(theta, u):
    return 1.0 / np.log(E + u / _t(theta, 0))


def _ilog2_inv(theta, q):
    return np.exp(theta[..., 0]) * np.maximum(np.exp(np.minimum(1.0 / q, 700.0)) - E, 0.0)


LN = np.log
BASIS_FAMILIES: tuple[BasisFamily, ...] = (
    BasisFamily("pow3", (LN(0.01),), (LN(4.0),), (30,), _pow3, _pow3_inv),
    BasisFamily("pow4", (LN(0.01), LN(1e-3)), (LN(4.0), LN(3.0)), (12, 10), _pow4, _pow4_inv),
    BasisFamily("mmf", (LN(1e-3), LN(0.1)), (LN(30.0), LN(5.0)), (12, 10), _mmf, _mmf_inv),
    BasisFamily("log_power", (LN(1e-3), LN(0.1)), (LN(30.0), LN(5.0)), (12, 10), _mmf, _mmf_inv, pinned=True),
    BasisFamily("exp4", (LN(1e-2), LN(0.05)), (LN(30.0), LN(3.0)), (12, 10), _exp4, _exp4_inv),
    BasisFamily("ilog2", (LN(1e-3),), (LN(10.0),), (24,), _ilog2, _ilog2_inv),
)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in BASIS_FAMILIES) + ("vapor",)
BY_NAME: dict[str, BasisFamily] = {f.name: f for f in BASIS_FAMILIES}


def basis_predict(fam: BasisFamily, params: np.ndarray, u: np.ndarray) -> np.ndarray:
    """z at u for parameter rows ``[c, a, *theta]`` (S, P) -> (S, n)."""
    c, a, theta = params[:, 0:1], params[:, 1:2], params[:, 2:]
    return c + a * fam.phi(theta, u)


def basis_steps_to_target(fam: BasisFamily, params: np.ndarray, z_target: float) -> np.ndarray:
    """u at which each parameter row first reaches ``z_target`` (inf if never, 0 if at the start)."""
    c, a, theta = params[:, 0], params[:, 1], params[:, 2:]
    with np.errstate(all="ignore"):
        q = (z_target - c) / np.where(a > 0, a, np.nan)
        u = fam.phi_inv(theta, np.where(q > 0, q, np.nan))
        u = np.where(q >= fam.phi_at_zero(theta), 0.0, u)
        u = np.where((q <= 0) | ~np.isfinite(q), np.inf, u)
    return np.where(np.isnan(u), np.inf, np.maximum(u, 0.0))


def vapor_predict(params: np.ndarray, u: np.ndarray, sign: float) -> np.ndarray:
    """Vapor pressure ``sign * exp(a + b/u + c ln u)``; ``sign`` makes it a loss (+1) or -accuracy (-1)."""
    a, b, c = params[:, 0:1], params[:, 1:2], params[:, 2:3]
    log_v = np.clip(a + b / u + c * np.log(u), -700.0, 700.0)
    return sign * np.exp(log_v)


def vapor_steps_to_target(params: np.ndarray, z_target: float, sign: float) -> np.ndarray:
    """Bisection on log u over [1e-3, 1e6] (the law is not monotone in general: first crossing
    among the bracket's end is approximated by the sign change of the monotone hull)."""
    lo = np.full(len(params), np.log(1e-3))
    hi = np.full(len(params), np.log(1e6))
    a, b, c = (np.ascontiguousarray(params[:, j]) for j in range(3))
    # g(log u) = sign*exp(clip(a + b/u + c*ln u)) - z_target, the operations of vapor_predict; only its
    # sign is used, and for finite values x - z <= 0 exactly when x <= z, so compare instead of subtract
    # (exp of a clipped exponent is finite)

    def value(log_u: np.ndarray) -> np.ndarray:
        u = np.exp(log_u)
        t = np.divide(b, u)
        t += a
        np.log(u, out=u)
        u *= c
        t += u
        np.maximum(t, -700.0, out=t)
        np.minimum(t, 700.0, out=t)
        np.exp(t, out=t)
        if sign != 1.0:
            t *= sign
        return t

    with np.errstate(all="ignore"):
        v_lo, v_hi = value(lo), value(hi)
        for _ in range(60):
            mid = lo + hi
            mid *= 0.5
            left = value(mid) <= z_target
            hi = np.where(left, mid, hi)
            lo = np.where(left, lo, mid)
    out = np.exp(hi)
    out = np.where(v_lo <= z_target, 0.0, out)
    return np.where(v_hi > z_target, np.inf, out)
