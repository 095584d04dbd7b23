"""Cross-run scaling laws: Chinchilla L(N, D), Gadre et al.'s over-training form, Kaplan's L(C).

All forms are fitted the way Hoffmann et al. fit Approach 3: the law is written as a log-sum-exp of
linear terms in log N, log D (or log C), so log L_hat = LSE(a - alpha*log N, b - beta*log D, e), and the
Huber loss (delta 1e-3) of log L_hat - log L is minimised with L-BFGS-B from many grid starts, with
analytic gradients and tight tolerances (default tolerances stop near the start: see the notes).
The whole grid is scored in one vectorised pass and only the best starts are refined; an answer left exactly
on a grid start value is restarted from jittered points (``_off_start``), so none stays there by accident.

Cost is linear in the number of points: the terms are linear in theta, so their Jacobian is built once
per fit (``Design``) and never per grid row; the grid only ranks starts, so it is scored on an evenly
strided subset of at most ``GRID_POINTS`` points, in chunks of bounded size. A ``check`` callable, called
before every objective evaluation, lets a caller stop a fit between two evaluations (cancellation).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import optimize

HUBER_DELTA = 1e-3
GRID_POINTS = 2048  # the start grid is ranked on at most this many points (every point is refined on)
_GRID_CELLS = 1 << 20  # values per grid chunk (rows x points x terms): about 8 MB per temporary


@dataclass(frozen=True)
class Form:
    """One law as a log-sum-exp of terms; ``terms(theta, X, grad)`` -> (S, n, T) and d terms / d theta
    (S, n, T, P), or None when ``grad`` is false (only values: no (S, n, T, P) array)."""

    name: str
    param_names: tuple[str, ...]  # names of theta entries
    grid: tuple[tuple[float, ...], ...]  # start values per theta entry
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    terms: Callable[..., tuple[np.ndarray, np.ndarray | None]]
    needs: str  # "ND" or "C"


def _chinchilla_terms(theta: np.ndarray, X: np.ndarray, grad: bool = True):
    # theta (S, 5) = a, b, e, alpha, beta ; X (n, 2) = log N, log D
    a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
    lN, lD = X[None, :, 0], X[None, :, 1]
    S, n = theta.shape[0], X.shape[0]
    t = np.stack([a - al * lN, b - be * lD, np.broadcast_to(e, (S, n))], axis=-1)
    if not grad:
        return t, None
    g = np.zeros((S, n, 3, 5))
    g[:, :, 0, 0] = 1.0
    g[:, :, 0, 3] = -np.broadcast_to(lN, (S, n))
    g[:, :, 1, 1] = 1.0
    g[:, :, 1, 4] = -np.broadcast_to(lD, (S, n))
    g[:, :, 2, 2] = 1.0
    return t, g


def _gadre_terms(theta: np.ndarray, X: np.ndarray, grad: bool = True):
    # theta (S, 4) = a, b, e, k with k = 2*eta the shared exponent of N and D
    a, b, e, k = (theta[:, i : i + 1] for i in range(4))
    lN, lD = X[None, :, 0], X[None, :, 1]
    S, n = theta.shape[0], X.shape[0]
    t = np.stack([a - k * lN, b - k * lD, np.broadcast_to(e, (S, n))], axis=-1)
    if not grad:
        return t, None
    g = np.zeros((S, n, 3, 4))
    g[:, :, 0, 0] = 1.0
    g[:, :, 0, 3] = -np.broadcast_to(lN, (S, n))
    g[:, :, 1, 1] = 1.0
    g[:, :, 1, 3] = -np.broadcast_to(lD, (S, n))
    g[:, :, 2, 2] = 1.0
    return t, g


def _kaplan_terms(theta: np.ndarray, X: np.ndarray, grad: bool = True):
    # theta (S, 3) = a, e, alpha ; X (n, 1) = log C
    a, e, al = (theta[:, i : i + 1] for i in range(3))
    lC = X[None, :, 0]
    S, n = theta.shape[0], X.shape[0]
    t = np.stack([a - al * lC, np.broadcast_to(e, (S, n))], axis=-1)
    if not grad:
        return t, None
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
    t, _ = form.terms(np.atleast_2d(theta), X, grad=False)
    return _lse(np.moveaxis(t, -1, 0))


def _lse(t: np.ndarray) -> np.ndarray:
    """log-sum-exp over the first axis (the few terms): elementwise over the points, which numpy does
    much faster than a reduction along a short last axis."""
    m = t.max(axis=0)
    return m + np.log(np.exp(t - m).sum(axis=0))


def _huber(r: np.ndarray, c: np.ndarray | None = None, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss of residuals r: 0.5 r^2 inside +-delta, linear outside; ``c`` = r clipped to +-delta."""
    c = np.clip(r, -delta, delta) if c is None else c
    return c * (r - 0.5 * c)


@dataclass
class FitStats:
    """What a fit cost: objective evaluations (each one pass over the points), those of the multi-start
    fit before the bootstrap, and grid values scored."""

    evaluations: int = 0
    main_evaluations: int = 0
    replicates: int = 0
    grid_cells: int = 0


def grid_cells(form: Form, n_points: int) -> int:
    """Values ``huber_grid`` scores for ``n_points`` points (starts x ranked points)."""
    return int(np.prod([len(g) for g in form.grid])) * min(n_points, GRID_POINTS)


def seconds_per_evaluation(n_points: int = 4096, evaluations: int = 10, repeats: int = 3) -> float:
    """Seconds one objective evaluation takes on ``n_points`` points on this machine (best of
    ``repeats``): a few milliseconds, the prior of admission control's estimate of a fit's time."""
    rng = np.random.default_rng(0)
    n = 10.0 ** rng.uniform(7, 10, n_points)
    d = n * 10.0 ** rng.uniform(0.5, 2.5, n_points)
    X = np.column_stack([np.log(n), np.log(d)])
    ly = np.log(1.8 + 480 / n**0.35 + 2100 / d**0.37)
    form = FORMS["chinchilla"]
    f = _objective(Design.build(form, X, ly), np.ones(n_points), None, FitStats())
    theta = np.array([6.0, 7.0, 0.5, 0.35, 0.37])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(evaluations):
            f(theta)
        best = min(best, (time.perf_counter() - started) / evaluations)
    return best


@dataclass(frozen=True)
class Design:
    """The law on the fitted points, built once per fit: every term is linear in theta, so
    terms = t0 + M @ theta, and an evaluation is one pass over the points with nothing rebuilt per start.
    Term-major layout (T, n, ...): the log-sum-exp over terms runs elementwise over contiguous points."""

    form: Form
    ly: np.ndarray  # (n,)
    t0: np.ndarray  # (T, n): the terms at theta = 0
    M: np.ndarray  # (T, n, P): d terms / d theta

    @classmethod
    def build(cls, form: Form, X: np.ndarray, ly: np.ndarray) -> "Design":
        t0, M = form.terms(np.zeros((1, len(form.lo))), X)
        assert M is not None
        return cls(form, ly, np.ascontiguousarray(np.moveaxis(t0[0], -1, 0)),
                   np.ascontiguousarray(np.moveaxis(M[0], 1, 0)))

    def subset(self, idx: np.ndarray | None) -> "Design":
        if idx is None:
            return self
        return Design(self.form, self.ly[idx], self.t0[:, idx], self.M[:, idx])


def _objective(design: Design, w: np.ndarray, check: Callable[[], None] | None, stats: FitStats,
               delta: float = HUBER_DELTA):
    """Huber objective (weighted sum) and its analytic gradient, for L-BFGS-B; ``check`` runs first."""
    t0, M, ly = design.t0, design.M, design.ly
    M2 = M.reshape(-1, M.shape[-1])  # (T * n, P)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if check is not None:
            check()
        stats.evaluations += 1
        t = t0 + M @ theta  # (T, n)
        m = t.max(axis=0)
        ex = np.exp(t - m)
        s = ex.sum(axis=0)
        r = m + np.log(s) - ly
        c = np.clip(r, -delta, delta)
        val = float(w @ _huber(r, c, delta))
        psi = w * c  # d loss / d r, (n,)
        ex *= psi / s  # softmax weights times psi, in place
        return val, ex.reshape(-1) @ M2

    return f


def _grid_subset(n: int) -> np.ndarray | None:
    """Evenly strided indices of at most ``GRID_POINTS`` points (None: use all)."""
    if n <= GRID_POINTS:
        return None
    return np.unique(np.linspace(0, n - 1, GRID_POINTS).round().astype(np.int64))


def huber_grid(form: Form, X: np.ndarray, ly: np.ndarray, w: np.ndarray, check: Callable[[], None] | None = None,
               stats: FitStats | None = None, design: Design | None = None,
               delta: float = HUBER_DELTA) -> tuple[np.ndarray, np.ndarray]:
    """Every grid start and its objective, best first (ranked on at most ``GRID_POINTS`` points)."""
    idx = _grid_subset(len(ly))
    d = (design or Design.build(form, X, ly)).subset(idx)
    w = w if idx is None else w[idx]
    grid = np.array(list(itertools.product(*form.grid)), dtype=np.float64)
    n_terms, n = d.t0.shape
    rows = max(1, _GRID_CELLS // max(n * n_terms, 1))
    vals = np.empty(len(grid))
    for i in range(0, len(grid), rows):  # bounded memory whatever the number of points
        if check is not None:
            check()
        t = d.t0[:, :, None] + d.M @ grid[i : i + rows].T  # (T, n, rows)
        r = _lse(t) - d.ly[:, None]
        vals[i : i + rows] = w @ _huber(r, delta=delta)
    if stats is not None:
        stats.grid_cells += len(grid) * n
    order = np.argsort(vals)
    return grid[order], vals[order]


def fit_form(
    form: Form, X: np.ndarray, ly: np.ndarray, w: np.ndarray | None = None, n_starts: int = 8,
    extra_starts: list[np.ndarray] | None = None, *, design: Design | None = None,
    check: Callable[[], None] | None = None, stats: FitStats | None = None, delta: float = HUBER_DELTA,
    lbfgs: dict | None = None,
) -> tuple[np.ndarray, float]:
    """Best theta from the top ``n_starts`` grid starts plus any given ones, refined by L-BFGS-B.

    ``n_starts=0`` skips the grid (bootstrap replicates start from the full-data optimum). ``design``
    (``Design.build(form, X, ly)``) is reused across calls on the same points; ``check`` is called before
    every evaluation and may raise to stop the fit; ``stats`` counts the work done; ``delta`` is the
    Huber threshold on log residuals (1e-3: Approach 3; >= 1: least squares on log loss); ``lbfgs``
    overrides the optimiser's options (``BOOTSTRAP_LBFGS`` for replicates started at the optimum).
    """
    w = np.ones_like(ly) if w is None else w
    design = design or Design.build(form, X, ly)
    stats = stats if stats is not None else FitStats()
    f = _objective(design, w, check, stats, delta)
    cand = list(extra_starts or [])
    if n_starts > 0:
        starts, _ = huber_grid(form, X, ly, w, check, stats, design, delta)
        cand = list(starts[:n_starts]) + cand
    bounds = list(zip(form.lo, form.hi))
    best_theta, best_val = cand[0], np.inf
    with np.errstate(all="ignore"):
        for x0 in cand:
            x0 = np.clip(x0, form.lo, form.hi)
            res = optimize.minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=lbfgs or _LBFGS)
            if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and res.fun < best_val:
                best_theta, best_val = res.x, float(res.fun)
        if n_starts > 0:
            best_theta, best_val = _off_start(form, f, np.asarray(best_theta, dtype=np.float64), best_val, bounds)
    return np.asarray(best_theta, dtype=np.float64), best_val


JITTER_RESTARTS = 3
_LBFGS = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000, "maxfun": 20000}
# a bootstrap replicate starts at the full-data optimum, a small step away from its own: a looser stop
# there moved interval ends by < 0.01% of their width and saved 9% of the replicates' evaluations
# (1,000 Chinchilla-like points, 200 replicates: 2.04 -> 1.78 s in one run; python -m bench.scaling_speed)
BOOTSTRAP_LBFGS = {"ftol": 1e-12, "gtol": 1e-7, "maxiter": 5000, "maxfun": 20000}


def at_start_values(form: Form, theta: np.ndarray, tol: float = 1e-7) -> list[int]:
    """Indices of theta entries sitting on one of their grid start values."""
    return [i for i, v in enumerate(theta) if any(abs(float(v) - g) <= tol for g in form.grid[i])]


def _off_start(form: Form, f, theta: np.ndarray, val: float, bounds) -> tuple[np.ndarray, float]:
    """L-BFGS-B never moves a coordinate the objective is flat in, so an answer exactly on a grid start
    value is either the optimum or an artefact of the start (a dead term's exponent left at 2.0). Restart
    from points jittered in those coordinates (a fifth of a grid step) and take a result that is at least
    as good and off the start values: a true optimum there pulls the restarts back (to within the
    tolerances), a flat coordinate does not, so no answer stays on a start value by accident."""
    idx = at_start_values(form, theta)
    if not idx:
        return theta, val
    steps = np.array([abs(g[1] - g[0]) if len(g) > 1 else 0.1 for g in form.grid])[idx]
    rng = np.random.default_rng(0)
    lo, hi = np.array(form.lo), np.array(form.hi)
    for _ in range(JITTER_RESTARTS):
        x0 = theta.copy()
        x0[idx] += 0.2 * steps * rng.choice([-1.0, 1.0], len(idx)) * rng.uniform(0.5, 1.0, len(idx))
        res = optimize.minimize(f, np.clip(x0, lo, hi), jac=True, method="L-BFGS-B", bounds=bounds, options=_LBFGS)
        if not (np.all(np.isfinite(res.x)) and np.isfinite(res.fun)):
            continue
        if res.fun <= val + 1e-9 * abs(val) + 1e-15 and (res.fun < val or not at_start_values(form, res.x)):
            theta, val = np.asarray(res.x, dtype=np.float64), float(res.fun)
            if not at_start_values(form, theta):
                break
    return theta, val
