"""Cross-run scaling laws: Chinchilla L(N, D), Gadre et al.'s over-training form, Kaplan's L(C).

All forms are fitted the way Hoffmann et al. fit Approach 3: the law is written as a log-sum-exp of
linear terms in log N, log D (or log C), so log L_hat = LSE(a - alpha*log N, b - beta*log D, e), and the
Huber loss (delta 1e-3) of log L_hat - log L is minimised with L-BFGS-B from many grid starts, with
analytic gradients and tight tolerances (default tolerances stop near the start: see the notes).
The whole grid is scored in one vectorised pass and only the best starts are refined.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import optimize

HUBER_DELTA = 1e-3


@dataclass(frozen=True)
class Form:
    """One law as a log-sum-exp of terms; ``terms(theta, X)`` -> (S, n, T) and d terms / d theta."""

    name: str
    param_names: tuple[str, ...]  # names of theta entries
    grid: tuple[tuple[float, ...], ...]  # start values per theta entry
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    terms: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    needs: str  # "ND" or "C"


def _chinchilla_terms(theta: np.ndarray, X: np.ndarray):
    # theta (S, 5) = a, b, e, alpha, beta ; X (n, 2) = log N, log D
    a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
    lN, lD = X[None, :, 0], X[None, :, 1]
    S, n = theta.shape[0], X.shape[0]
    t = np.stack([a - al * lN, b - be * lD, np.broadcast_to(e, (S, n))], axis=-1)
    g = np.zeros((S, n, 3, 5))
    g[:, :, 0, 0] = 1.0
    g[:, :, 0, 3] = -np.broadcast_to(lN, (S, n))
    g[:, :, 1, 1] = 1.0
    g[:, :, 1, 4] = -np.broadcast_to(lD, (S, n))
    g[:, :, 2, 2] = 1.0
    return t, g


def _gadre_terms(theta: np.ndarray, X: np.ndarray):
    # theta (S, 4) = a, b, e, k with k = 2*eta the shared exponent of N and D
    a, b, e, k = (theta[:, i : i + 1] for i in range(4))
    lN, lD = X[None, :, 0], X[None, :, 1]
    S, n = theta.shape[0], X.shape[0]
    t = np.stack([a - k * lN, b - k * lD, np.broadcast_to(e, (S, n))], axis=-1)
    g = np.zeros((S, n, 3, 4))
    g[:, :, 0, 0] = 1.0
    g[:, :, 0, 3] = -np.broadcast_to(lN, (S, n))
    g[:, :, 1, 1] = 1.0
    g[:, :, 1, 3] = -np.broadcast_to(lD, (S, n))
    g[:, :, 2, 2] = 1.0
    return t, g


def _kaplan_terms(theta: np.ndarray, X: np.ndarray):
    # theta (S, 3) = a, e, alpha ; X (n, 1) = log C
    a, e, al = (theta[:, i : i + 1] for i in range(3))
    lC = X[None, :, 0]
    S, n = theta.shape[0], X.shape[0]
    t = np.stack([a - al * lC, np.broadcast_to(e, (S, n))], axis=-1)
    g = np.zeros((S, n, 2, 3))
    g[:, :, 0, 0] = 1.0
    g[:, :, 0, 2] = -np.broadcast_to(lC, (S, n))
    g[:, :, 1, 1] = 1.0
    return t, g


_AB = tuple(np.arange(0.0, 26.0, 5.0))
_E = tuple(np.arange(-1.0, 1.01, 0.5))
_EXP = tuple(np.arange(0.0, 2.01, 0.5))

FORMS: dict[str, Form] = {
    "chinchilla": Form(
        "chinchilla",
        ("a", "b", "e", "alpha", "beta"),
        (_AB, _AB, _E, _EXP, _EXP),
        (-60.0, -60.0, -20.0, 0.0, 0.0),
        (80.0, 80.0, 5.0, 5.0, 5.0),
        _chinchilla_terms,
        "ND",
    ),
    "gadre": Form(
        "gadre",
        ("a", "b", "e", "k"),
        (_AB, _AB, _E, _EXP),
        (-60.0, -60.0, -20.0, 0.0),
        (80.0, 80.0, 5.0, 5.0),
        _gadre_terms,
        "ND",
    ),
    "kaplan": Form(
        "kaplan",
        ("a", "e", "alpha"),
        (tuple(np.arange(0.0, 26.0, 2.5)), (-20.0,) + _E, (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0)),
        (-60.0, -20.0, 0.0),
        (80.0, 5.0, 3.0),
        _kaplan_terms,
        "C",
    ),
}


def log_pred(form: Form, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """log L_hat for parameter rows theta (S, P) -> (S, n)."""
    t, _ = form.terms(np.atleast_2d(theta), X)
    m = t.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(t - m).sum(axis=-1, keepdims=True)))[..., 0]


def _objective(form: Form, X: np.ndarray, ly: np.ndarray, w: np.ndarray):
    """Huber objective (weighted sum) and its analytic gradient, for L-BFGS-B.

    Every term is linear in theta, so the term Jacobian M (n, T, P) is computed once.
    """
    probe = np.zeros((1, len(form.lo)))
    t0, M = form.terms(probe, X)
    t0, M = t0[0], M[0]  # t = t0 + M @ theta (t0 = terms at theta = 0)
    T, P = M.shape[1], M.shape[2]
    M2 = M.reshape(-1, P)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = t0 + (M2 @ theta).reshape(-1, T)
        m = t.max(axis=1, keepdims=True)
        ex = np.exp(t - m)
        s = ex.sum(axis=1, keepdims=True)
        lp = m[:, 0] + np.log(s[:, 0])
        soft = ex / s  # (n, T)
        r = lp - ly
        a = np.abs(r)
        val = float(np.sum(w * np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))))
        psi = w * np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # (n,)
        grad = ((psi[:, None] * soft).reshape(-1)) @ M2
        return val, grad

    return f


def huber_grid(form: Form, X: np.ndarray, ly: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every grid start and its objective, best first."""
    grid = np.array(list(itertools.product(*form.grid)), dtype=np.float64)
    vals = np.empty(len(grid))
    for i in range(0, len(grid), 512):  # bounded memory
        lp = log_pred(form, grid[i : i + 512], X)
        r = lp - ly[None]
        a = np.abs(r)
        vals[i : i + 512] = (w[None] * np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))).sum(axis=1)
    order = np.argsort(vals)
    return grid[order], vals[order]


def fit_form(
    form: Form, X: np.ndarray, ly: np.ndarray, w: np.ndarray | None = None, n_starts: int = 8, extra_starts: list[np.ndarray] | None = None
) -> tuple[np.ndarray, float]:
    """Best theta from the top ``n_starts`` grid starts plus any given ones, refined by L-BFGS-B.

    ``n_starts=0`` skips the grid (bootstrap replicates start from the full-data optimum).
    """
    w = np.ones_like(ly) if w is None else w
    f = _objective(form, X, ly, w)
    cand = list(extra_starts or [])
    if n_starts > 0:
        starts, _ = huber_grid(form, X, ly, w)
        cand = list(starts[:n_starts]) + cand
    bounds = list(zip(form.lo, form.hi))
    best_theta, best_val = cand[0], np.inf
    with np.errstate(all="ignore"):
        for x0 in cand:
            x0 = np.clip(x0, form.lo, form.hi)
            res = optimize.minimize(
                f, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000, "maxfun": 20000},
            )
            if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and res.fun < best_val:
                best_theta, best_val = res.x, float(res.fun)
    return np.asarray(best_theta, dtype=np.float64), best_val
