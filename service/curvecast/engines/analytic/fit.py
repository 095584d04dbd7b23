"""Robust, vectorised fits of the per-run families, scored on held-out suffixes of the observed curve.

One call fits a family on the full curve AND on K-1 prefixes at once (the "holdout" fits, arrays carry
a leading K axis), so the out-of-sample score that weights the ensemble costs little extra. The loss is
Huber on (relative, for positive losses) residuals, minimised by iteratively reweighted least squares
inside a coarse-to-fine grid over the nonlinear parameters; c and a are solved in closed form.
Parameter uncertainty comes from a Laplace approximation at the optimum; the holdouts also measure how
fast the extrapolation error grows with the forecast horizon, which widens the predictive spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .families import BASIS_FAMILIES, BasisFamily, basis_predict, vapor_predict
from .prep import Prepared

HUBER_K = 1.345
ZOOM_ROUNDS = (1.0, 0.25, 0.0625)
HOLDOUT_FRACTIONS = (0.55, 0.75)  # fit on u <= f, score on the rest of the observed curve
MIN_PREFIX = 5
_TINY = 1e-300


@dataclass(frozen=True)
class FamilyFit:
    name: str
    params: np.ndarray  # basis: [c, a, *theta]; vapor: [a, b, c]
    cov: np.ndarray  # Laplace covariance of params
    holdout_rmse: float | None  # out-of-sample rms error on held-out suffixes (z units)
    growth: float  # extra sd of z per unit of log(u) beyond the observed range
    in_sample_rmse: float

    def predict(self, params: np.ndarray, u: np.ndarray, sign: float) -> np.ndarray:
        if self.name == "flat":
            return np.broadcast_to(params[:, 0:1], (len(params), len(u))).copy()
        if self.name == "vapor":
            return vapor_predict(params, u, sign)
        return basis_predict(_family(self.name), params, u)


def _family(name: str) -> BasisFamily:
    for fam in BASIS_FAMILIES:
        if fam.name == name:
            return fam
    raise KeyError(name)


@dataclass(frozen=True)
class Problem:
    """Everything a family fit needs, shared by all families of one curve."""

    u: np.ndarray  # (n,)
    z: np.ndarray  # (n,)
    scale: np.ndarray  # (n,) residual scale (|z| for positive losses: relative residuals)
    masks: np.ndarray  # (K, n) 1 for points inside each fit window; row 0 is the full curve
    cuts: tuple[float, ...]  # u cutoff of each holdout row (1.0 for row 0)
    c_lo: float
    c_hi: float
    noise_sd: np.ndarray  # (n,)
    pin_base: float | None  # log_power: pinned asymptote (loss) or start (accuracy) in z
    pin_start: bool  # True: the pinned value is z at u=0, not the asymptote
    sign: float


def make_problem(prep: Prepared) -> Problem:
    u, z = prep.u, prep.z
    positive = bool(np.all(z > 0)) and prep.sign > 0
    scale = np.abs(z) if positive else np.full_like(z, max(prep.z_range, 1e-12 + 1e-6 * float(np.max(np.abs(z)))))
    masks = [np.ones_like(u)]
    cuts = [1.0]
    for f in HOLDOUT_FRACTIONS:
        m = (u <= f).astype(np.float64)
        if m.sum() >= MIN_PREFIX and (1 - m).sum() >= 2:
            masks.append(m)
            cuts.append(f)
    z_min = float(np.min(z))
    spread = max(prep.z_range, 1e-9 * max(abs(z_min), 1.0))
    c_lo = z_min - 5.0 * spread
    if prep.z_floor is not None:
        c_lo = max(c_lo, prep.z_floor)
    c_hi = max(z_min + 0.5 * spread * 0.1, c_lo)
    if prep.sign > 0:
        pin = prep.z_floor if prep.z_floor is not None else (0.0 if positive else None)
        pin_start = False
    else:
        pin = prep.z_ceiling if prep.z_ceiling is not None else (0.0 if np.all(z < 0) else None)
        pin_start = True
    return Problem(u, z, scale, np.asarray(masks), tuple(cuts), c_lo, c_hi, prep.noise_sd, pin, pin_start, prep.sign)


# ---- closed-form linear part ------------------------------------------------------------------------
def _linear(phi: np.ndarray, z: np.ndarray, w: np.ndarray, pb: Problem, fam: BasisFamily) -> tuple[np.ndarray, np.ndarray]:
    """Weighted LS for (c, a) in ``z = c + a*phi`` with a >= 0 and c in [c_lo, c_hi]."""
    if fam.pinned:
        assert pb.pin_base is not None
        psi = phi - 1.0 if pb.pin_start else phi
        num = (w * psi * (z - pb.pin_base)).sum(-1)
        den = (w * psi * psi).sum(-1)
        a = np.maximum(num / np.maximum(den, _TINY), 0.0)
        c = pb.pin_base - a if pb.pin_start else np.full_like(a, pb.pin_base)
        return c, a
    s0 = w.sum(-1)
    wp = w * phi
    s1 = wp.sum(-1)
    s2 = (wp * phi).sum(-1)
    sz = (w * z).sum(-1)
    szp = (wp * z).sum(-1)
    det = s0 * s2 - s1 * s1
    ok = np.abs(det) > 1e-12 * np.maximum(s0 * s2, _TINY)
    a = np.where(ok, (s0 * szp - s1 * sz) / np.where(ok, det, 1.0), 0.0)
    c = (sz - a * s1) / np.maximum(s0, _TINY)
    out = (c < pb.c_lo) | (c > pb.c_hi)
    cc = np.clip(c, pb.c_lo, pb.c_hi)
    a = np.where(out, (szp - cc * s1) / np.maximum(s2, _TINY), a)
    neg = a < 0
    a = np.where(neg, 0.0, a)
    c = np.where(neg, np.clip(sz / np.maximum(s0, _TINY), pb.c_lo, pb.c_hi), cc)
    return c, a


def _huber(r: np.ndarray, delta: np.ndarray) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def _robust_delta(r: np.ndarray, mask: np.ndarray) -> float:
    vals = np.abs(r[mask > 0])
    mad = 1.4826 * float(np.median(vals)) if len(vals) else 0.0
    return max(HUBER_K * mad, 1e-9)


def _irls(phi, pb: Problem, fam: BasisFamily, delta: np.ndarray | None):
    """Two IRLS rounds of Huber regression for every (K, G) theta; returns c, a, objective, delta, w."""
    w0 = pb.masks[:, None, :] / (pb.scale * pb.scale)  # (K, 1, n)
    c, a = _linear(phi, pb.z, w0, pb, fam)
    r = (c[..., None] + a[..., None] * phi - pb.z) / pb.scale
    if delta is None:
        sq = (pb.masks[:, None, :] * r * r).sum(-1)
        best = np.argmin(sq, axis=1)
        delta = np.array([_robust_delta(r[k, best[k]], pb.masks[k]) for k in range(len(pb.masks))])
    d = delta[:, None, None]
    w = w0 * np.minimum(1.0, d / np.maximum(np.abs(r), _TINY))
    c, a = _linear(phi, pb.z, w, pb, fam)
    r = (c[..., None] + a[..., None] * phi - pb.z) / pb.scale
    obj = (pb.masks[:, None, :] * _huber(r, d)).sum(-1)
    return c, a, obj, delta, w


def fit_basis(fam: BasisFamily, pb: Problem) -> FamilyFit | None:
    if fam.pinned and pb.pin_base is None:
        return None
    K = len(pb.masks)
    lo, hi = np.asarray(fam.lo), np.asarray(fam.hi)
    grid = fam.grid()
    phi = fam.phi(grid, pb.u)[None]  # (1, G, n)
    c, a, obj, delta, w = _irls(phi, pb, fam, None)
    best = np.argmin(obj, axis=1)
    theta = grid[best]  # (K, p)
    p = fam.n_theta
    base = np.stack(np.meshgrid(*([np.linspace(-1.0, 1.0, 5)] * p), indexing="ij"), axis=-1).reshape(-1, p)
    for shrink in ZOOM_ROUNDS:
        local = np.clip(theta[:, None, :] + base[None] * (fam.step * shrink), lo, hi)  # (K, G2, p)
        phi_l = fam.phi(local, pb.u)
        c, a, obj, _, w = _irls(phi_l, pb, fam, delta)
        best = np.argmin(obj, axis=1)
        theta = local[np.arange(K), best]
    idx = np.arange(K)
    c_k, a_k, w_k = c[idx, best], a[idx, best], w[idx, best]
    params = np.column_stack([c_k, a_k, theta])  # (K, P)
    if not np.all(np.isfinite(params)):
        return None
    pred = basis_predict(fam, params, pb.u)  # (K, n)
    cov, rmse = _laplace_basis(fam, params[0], w_k[0], pred[0], pb)
    hold, growth = _holdout_stats(pred, pb)
    return FamilyFit(fam.name, params[0], cov, hold, growth, rmse)


def _laplace_basis(fam: BasisFamily, params: np.ndarray, w: np.ndarray, pred: np.ndarray, pb: Problem):
    c, a, theta = params[0], params[1], params[2:]
    cols = []
    if not fam.pinned:
        cols.append(np.ones_like(pb.u))
    phi0 = fam.phi(theta[None], pb.u)[0]
    cols.append((phi0 - 1.0) if (fam.pinned and pb.pin_start) else phi0)
    h = 1e-4
    for j in range(len(theta)):
        tp, tm = theta.copy(), theta.copy()
        tp[j] += h
        tm[j] -= h
        cols.append(a * (fam.phi(tp[None], pb.u)[0] - fam.phi(tm[None], pb.u)[0]) / (2 * h))
    J = np.column_stack(cols)
    cov_free, rmse = _weighted_cov(J, w, pred - pb.z, pb)
    P = 2 + len(theta)
    cov = np.zeros((P, P))
    if fam.pinned:
        # c is tied to a (pinned start: c = base - a) or fixed (pinned asymptote)
        T = np.zeros((P, P - 1))
        T[1:, :] = np.eye(P - 1)
        if pb.pin_start:
            T[0, 0] = -1.0
        cov = T @ cov_free @ T.T
    else:
        cov = cov_free
    return cov, rmse


def _weighted_cov(J: np.ndarray, w: np.ndarray, resid: np.ndarray, pb: Problem) -> tuple[np.ndarray, float]:
    n, P = J.shape
    wr = w * resid * resid
    dof = max(float(np.sum(w > 0)) - P, 1.0)
    s2 = float(wr.sum()) / dof
    s2 = max(s2, float(np.mean((pb.noise_sd / pb.scale) ** 2)))
    H = (J * w[:, None]).T @ J
    vals, vecs = np.linalg.eigh(H)
    vmax = max(float(vals.max()), _TINY)
    inv = np.where(vals > 1e-10 * vmax, 1.0 / np.maximum(vals, 1e-10 * vmax), 0.0)
    cov = (vecs * inv) @ vecs.T * s2
    rmse = float(np.sqrt(np.mean(resid * resid)))
    return cov, rmse


def _holdout_stats(pred: np.ndarray, pb: Problem) -> tuple[float | None, float]:
    """Out-of-sample rms error of the prefix fits, and the error growth per log-horizon."""
    if len(pb.masks) < 2:
        return None, 0.0
    errs, rates = [], []
    for k in range(1, len(pb.masks)):
        out = pb.masks[k] == 0
        e = pred[k, out] - pb.z[out]
        rms = float(np.sqrt(np.mean(e * e)))
        errs.append(rms)
        noise2 = float(np.mean(pb.noise_sd[out] ** 2))
        horizon = float(np.mean(np.log(pb.u[out] / pb.cuts[k])))
        rates.append(np.sqrt(max(rms * rms - noise2, 0.0)) / max(horizon, 1e-3))
    return float(np.mean(errs)), float(np.mean(rates))


def fit_vapor(pb: Problem) -> FamilyFit | None:
    """Vapor pressure: weighted Huber regression of log(sign*z) on [1, 1/u, ln u]."""
    v = pb.sign * pb.z
    if np.any(v <= 0):
        return None
    lv = np.log(v)
    X = np.column_stack([np.ones_like(pb.u), 1.0 / pb.u, np.log(pb.u)])  # (n, 3)
    w0 = pb.masks * (v / pb.scale) ** 2  # residual in log v ~ relative residual
    c_max = 0.0 if pb.sign > 0 else 1.0

    def solve(w: np.ndarray) -> np.ndarray:
        H = np.einsum("kn,ni,nj->kij", w, X, X) + 1e-12 * np.eye(3)
        g = np.einsum("kn,ni,n->ki", w, X, lv)
        beta = np.linalg.solve(H, g[..., None])[..., 0]
        bad = beta[:, 2] > c_max
        if np.any(bad):  # refit with c at its bound
            lv2 = lv[None] - c_max * X[None, :, 2]
            H2 = np.einsum("kn,ni,nj->kij", w, X[:, :2], X[:, :2]) + 1e-12 * np.eye(2)
            g2 = np.einsum("kn,kni->ki", w * lv2, np.broadcast_to(X[:, :2], (len(w),) + X[:, :2].shape))
            b2 = np.linalg.solve(H2, g2[..., None])[..., 0]
            beta = np.where(bad[:, None], np.column_stack([b2, np.full(len(w), c_max)]), beta)
        return beta

    beta = solve(w0)
    r = lv[None] - beta @ X.T
    delta = np.array([_robust_delta(r[k], pb.masks[k]) for k in range(len(pb.masks))])
    w = w0 * np.minimum(1.0, delta[:, None] / np.maximum(np.abs(r), _TINY))
    for _ in range(2):
        beta = solve(w)
        r = lv[None] - beta @ X.T
        w = w0 * np.minimum(1.0, delta[:, None] / np.maximum(np.abs(r), _TINY))
    if not np.all(np.isfinite(beta)):
        return None
    pred = vapor_predict(beta, pb.u, pb.sign)
    # z = sign*exp(X beta): dz/dbeta = z*X; log-space weights w equal z-space weights w/v^2
    cov, rmse = _weighted_cov(X * pred[0][:, None], w[0] / (v * v), pred[0] - pb.z, pb)
    hold, growth = _holdout_stats(pred, pb)
    return FamilyFit("vapor", beta[0], cov, hold, growth, rmse)


def fit_flat(pb: Problem) -> FamilyFit:
    """The "already converged" law: the robust level of the window's last quarter, held forever.

    It keeps the ensemble honest on flat, noisy or non-monotone curves where every decreasing law
    extrapolates a trend that is not there (its weight comes from the same held-out suffixes).
    """
    K, n = pb.masks.shape
    levels = np.empty(K)
    tail_sd = np.empty(K)
    for k in range(K):
        idx = np.flatnonzero(pb.masks[k])
        m = max(3, int(np.ceil(0.25 * len(idx))))
        tail = pb.z[idx[-m:]]
        levels[k] = float(np.median(tail))
        tail_sd[k] = 1.4826 * float(np.median(np.abs(tail - levels[k])))
    pred = np.broadcast_to(levels[:, None], (K, n))
    m0 = max(3, int(np.ceil(0.25 * n)))
    var = max(tail_sd[0] ** 2, float(np.mean(pb.noise_sd**2))) * 1.57 / m0
    hold, growth = _holdout_stats(pred, pb)
    rmse = float(np.sqrt(np.mean((pred[0] - pb.z) ** 2)))
    return FamilyFit("flat", np.array([levels[0]]), np.array([[var]]), hold, growth, rmse)


def fit_all(pb: Problem, names: tuple[str, ...] | None = None) -> tuple[list[FamilyFit], list[str]]:
    """Fit every family; a family that fails is skipped and named in the returned notes."""
    fits: list[FamilyFit] = []
    notes: list[str] = []
    for fam in BASIS_FAMILIES:
        if names is not None and fam.name not in names:
            continue
        try:
            with np.errstate(all="ignore"):
                f = fit_basis(fam, pb)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:  # pragma: no cover - defensive
            notes.append(f"{fam.name} fit failed: {exc}")
            continue
        if f is not None:
            fits.append(f)
    if names is None or "vapor" in names:
        try:
            with np.errstate(all="ignore"):
                f = fit_vapor(pb)
            if f is not None:
                fits.append(f)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:  # pragma: no cover
            notes.append(f"vapor fit failed: {exc}")
    if names is None or "flat" in names:
        fits.append(fit_flat(pb))
    return fits, notes
