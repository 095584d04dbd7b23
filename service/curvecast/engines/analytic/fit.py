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
CHUNK_ELEMS = 40_000  # elements per IRLS temporary (smaller blocks measured slower: more numpy calls)


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
def _linear(phi: np.ndarray, w: np.ndarray, pb: Problem, n_free: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted LS for (c, a) in ``z = c + a*phi`` with a >= 0 and c in [c_lo, c_hi].

    ``phi`` (K|1, G, n) holds the grid columns of several families side by side; the first ``n_free``
    columns are free families, the rest the pinned one (c fixed or tied to a). ``w`` is (K, G|1, n).
    """
    G = phi.shape[1]
    if n_free >= G:
        return _linear_free(phi, w, pb)
    if n_free <= 0:
        return _linear_pinned(phi, w, pb)
    wf, wp = (w, w) if w.shape[1] == 1 else (w[:, :n_free], w[:, n_free:])
    c1, a1 = _linear_free(phi[:, :n_free], wf, pb)
    c2, a2 = _linear_pinned(phi[:, n_free:], wp, pb)
    return np.concatenate([c1, c2], axis=1), np.concatenate([a1, a2], axis=1)


def _linear_pinned(phi, w, pb: Problem):
    assert pb.pin_base is not None
    psi = phi - 1.0 if pb.pin_start else phi
    num = (w * psi * (pb.z - pb.pin_base)).sum(-1)
    den = (w * psi * psi).sum(-1)
    a = np.maximum(num / np.maximum(den, _TINY), 0.0)
    c = pb.pin_base - a if pb.pin_start else np.full_like(a, pb.pin_base)
    return c, a


def _linear_free(phi, w, pb: Problem):
    z = pb.z
    s0 = w.sum(-1)
    wp = w * phi
    s1 = wp.sum(-1)
    tmp = np.multiply(wp, phi)
    s2 = tmp.sum(-1)
    sz = (w * z).sum(-1)
    np.multiply(wp, z, out=tmp)
    szp = tmp.sum(-1)
    det = s0 * s2 - s1 * s1
    ok = np.abs(det) > 1e-12 * np.maximum(s0 * s2, _TINY)
    a = np.where(ok, (s0 * szp - s1 * sz) / np.where(ok, det, 1.0), 0.0)
    s0t = np.maximum(s0, _TINY)
    c = (sz - a * s1) / s0t
    out = (c < pb.c_lo) | (c > pb.c_hi)
    cc = np.clip(c, pb.c_lo, pb.c_hi)
    a = np.where(out, (szp - cc * s1) / np.maximum(s2, _TINY), a)
    neg = a < 0
    a = np.where(neg, 0.0, a)
    c = np.where(neg, np.clip(sz / s0t, pb.c_lo, pb.c_hi), cc)
    return c, a


def _huber_obj(r: np.ndarray, d: np.ndarray, apply_mask) -> np.ndarray:
    """Masked Huber objective ``sum(mask * where(|r| <= d, r*r/2, d*(|r| - d/2)))``, computed as
    m * (|r| - m/2) with m = min(|r|, d)
    (|r| - |r|/2 and (r/2)*r are exact, so the quadratic branch rounds as 0.5*r*r does). r is overwritten."""
    ar = np.abs(r, out=r)
    m = np.minimum(ar, d)
    hm = np.multiply(m, 0.5)
    ar -= hm
    ar *= m
    apply_mask(ar)
    return ar.sum(-1)


def _masker(masks: np.ndarray):
    """In-place ``arr *= masks[:, None, :]`` for arr (K, G, n), touching only the masked-out entries
    (multiplying by 1 is exact; by 0 keeps the NaN of an infinite entry, as the full product does)."""
    plan = []
    for k, m in enumerate(masks):
        zeros = np.flatnonzero(m == 0)
        if len(zeros) == 0:
            continue
        if np.all(m[: zeros[0]] == 1.0) and zeros[-1] == len(m) - 1 and len(zeros) == len(m) - zeros[0]:
            plan.append((k, int(zeros[0]), None))  # a masked-out suffix
        else:
            plan.append((k, None, m))

    def apply(arr: np.ndarray) -> None:
        for k, start, m in plan:
            if m is None:
                arr[k, :, start:] *= 0.0
            else:
                arr[k] *= m
    return apply


def _robust_deltas(rows: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Huber threshold per row: HUBER_K * MAD-scale of the |residuals| inside each mask, at least
    1e-9; rows (F, K, n) under masks (K, n), all at once -> (F, K)."""
    F, K, _ = rows.shape
    out = np.empty((F, K))
    for k in range(K):
        vals = np.abs(rows[:, k, masks[k] > 0])
        if vals.shape[1]:
            out[:, k] = np.maximum(HUBER_K * (1.4826 * np.median(vals, axis=1)), 1e-9)
        else:
            out[:, k] = 1e-9
    return out


class _Segments:
    """Grid columns of several families side by side: per-family argmin in one call."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        total, gmax = int(sum(sizes)), max(sizes)
        idx = np.full((len(sizes), gmax), total, dtype=int)  # column `total` is a +inf pad
        for f, (s, g) in enumerate(zip(self.starts, sizes)):
            idx[f, :g] = np.arange(s, s + g)
        self.idx = idx

    def argmin(self, obj: np.ndarray) -> np.ndarray:
        """obj (K, G) -> (F, K) column index of each family's minimum (first one on ties, like argmin)."""
        ext = np.concatenate([obj, np.full((obj.shape[0], 1), np.inf)], axis=1)
        local = np.argmin(ext[:, self.idx], axis=2)  # (K, F)
        return (local + self.starts[None]).T

    def expand(self, per_family: np.ndarray) -> np.ndarray:
        """(F, K) -> (K, G, 1), each family's value over its columns."""
        return np.repeat(per_family.T, self.sizes, axis=1)[..., None]


_GRIDS: dict[str, tuple] = {}


def _grid_consts(fam: BasisFamily) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """(grid, zoom offsets, lo, hi, {shrink: scaled zoom offsets}) of a family, built once."""
    got = _GRIDS.get(fam.name)
    if got is None or got[0].shape[1] != fam.n_theta or got[2].tolist() != list(fam.lo) or got[3].tolist() != list(fam.hi):
        p = fam.n_theta
        base = np.stack(np.meshgrid(*([np.linspace(-1.0, 1.0, 5)] * p), indexing="ij"), axis=-1).reshape(-1, p)
        step = fam.step
        got = (fam.grid(), base, np.asarray(fam.lo), np.asarray(fam.hi), {sh: base[None] * (step * sh) for sh in ZOOM_ROUNDS})
        _GRIDS[fam.name] = got
    return got


_SEGMENTS: dict[tuple[int, ...], "_Segments"] = {}


def _segments(sizes: list[int]) -> "_Segments":
    key = tuple(sizes)
    seg = _SEGMENTS.get(key)
    if seg is None:
        seg = _SEGMENTS[key] = _Segments(list(sizes))
    return seg


@dataclass(frozen=True)
class _Partial:
    """A family fit before its holdout scores (computed for all families of a curve at once)."""

    name: str
    params: np.ndarray
    cov: np.ndarray
    rmse: float
    pred: np.ndarray  # (K, n) fitted values of the full and prefix fits

    def finish(self, hold: float | None, growth: float) -> FamilyFit:
        return FamilyFit(self.name, self.params, self.cov, hold, growth, self.rmse)


def _fit_basis_all(fams: list[BasisFamily], pb: Problem) -> list[_Partial | None]:
    """Fit several basis families at once; same answers as fitting them one by one.

    Per zoom round the grid columns of all families sit side by side in one (K, G, n) array, so the
    IRLS costs a few dozen numpy calls per round instead of that many per family. Every row of every
    reduction is the same computation as for a single family, so results are bit-identical.
    """
    use = [f for f in fams if not (f.pinned and pb.pin_base is None)]
    order = [f for f in use if not f.pinned] + [f for f in use if f.pinned]
    if not order:
        return [None] * len(fams)
    K = len(pb.masks)
    consts = [_grid_consts(f) for f in order]
    n_free_fams = sum(1 for f in order if not f.pinned)
    masks3 = pb.masks[:, None, :]
    w0 = masks3 / (pb.scale * pb.scale)  # (K, 1, n)
    apply_mask = _masker(pb.masks)

    def resid(c: np.ndarray, a: np.ndarray, phi: np.ndarray) -> np.ndarray:
        r = a[..., None] * phi  # in place, same operations in the same order as (c + a*phi - z) / scale
        r += c[..., None]
        r -= pb.z
        r /= pb.scale
        return r

    def chunks(G: int, n_free: int) -> list[tuple[int, int]]:
        # column blocks: bounded (K, block, n) temporaries; never straddling the free/pinned boundary
        step = max(1, CHUNK_ELEMS // (K * len(pb.u)))
        out = []
        for lo_, hi_ in ((0, n_free), (n_free, G)):
            out += [(j, min(j + step, hi_)) for j in range(lo_, hi_, step)]
        return out

    def huber_weights(r: np.ndarray, d: np.ndarray, w0: np.ndarray = w0) -> np.ndarray:
        w = np.abs(r)  # w0 * min(1, d / max(|r|, tiny)), in place
        # (max(|r|, tiny) is not needed: |r| < tiny gives d/|r| > 1, or inf, and the min makes both 1)
        np.divide(d, w, out=w)
        np.minimum(w, 1.0, out=w)
        w *= w0
        return w

    def irls(phi: np.ndarray, seg: _Segments, d: np.ndarray | None):
        """Two IRLS rounds of Huber regression for every (K, G) column; returns c, a, obj, delta and
        the first-round (c, a) (from which the Huber weights of any column can be rebuilt)."""
        G = phi.shape[1]
        n_free = int(sum(seg.sizes[:n_free_fams]))
        c1, a1 = np.empty((K, G)), np.empty((K, G))
        c2, a2, obj = np.empty((K, G)), np.empty((K, G)), np.empty((K, G))
        blocks = chunks(G, n_free)
        delta = None
        if d is None:
            sq = np.empty((K, G))
            for j0, j1 in blocks:
                ph = phi[:, j0:j1]
                c1[:, j0:j1], a1[:, j0:j1] = _linear(ph, w0, pb, n_free - j0)
                r = resid(c1[:, j0:j1], a1[:, j0:j1], ph)
                r *= r
                apply_mask(r)
                sq[:, j0:j1] = r.sum(-1)
            best = seg.argmin(sq)  # (F, K)
            kk = np.arange(K)[None, :]
            rows = resid(c1[kk, best], a1[kk, best], phi[np.zeros_like(kk) if phi.shape[0] == 1 else kk, best])  # (F, K, n)
            delta = _robust_deltas(rows, pb.masks)
            d = seg.expand(delta)
        for j0, j1 in blocks:
            ph, dd = phi[:, j0:j1], d[:, j0:j1]
            if delta is None:
                c1[:, j0:j1], a1[:, j0:j1] = _linear(ph, w0, pb, n_free - j0)
            w = huber_weights(resid(c1[:, j0:j1], a1[:, j0:j1], ph), dd)
            c2[:, j0:j1], a2[:, j0:j1] = _linear(ph, w, pb, n_free - j0)
            obj[:, j0:j1] = _huber_obj(resid(c2[:, j0:j1], a2[:, j0:j1], ph), dd, apply_mask)
        return c2, a2, obj, delta, (c1, a1, d)

    seg0 = _segments([len(c[0]) for c in consts])
    phi = np.concatenate([f.phi(c[0], pb.u)[None] for f, c in zip(order, consts)], axis=1)  # (1, G, n)
    c, a, obj, delta, first = irls(phi, seg0, None)
    best = seg0.argmin(obj)
    thetas = [c[0][best[i] - seg0.starts[i]] for i, c in enumerate(consts)]  # (K, p) each
    seg = _segments([len(c[1]) for c in consts])
    d = seg.expand(delta)
    kk = np.arange(K)
    for shrink in ZOOM_ROUNDS:
        locals_ = []
        for t, c in zip(thetas, consts):  # clip(theta + offsets, lo, hi)
            offs = c[4].get(shrink)
            if offs is None:
                offs = c[1][None] * (order[len(locals_)].step * shrink)
            loc = t[:, None, :] + offs
            np.maximum(loc, c[2], out=loc)
            np.minimum(loc, c[3], out=loc)
            locals_.append(loc)
        phi = np.concatenate([f.phi(loc, pb.u) for f, loc in zip(order, locals_)], axis=1)  # (K, G2, n)
        c, a, obj, _, first = irls(phi, seg, d)
        best = seg.argmin(obj)
        thetas = [loc[kk, best[i] - seg.starts[i]] for i, loc in enumerate(locals_)]

    def weights_at(col: int) -> np.ndarray:
        """Huber weights (full-curve row) of column ``col`` of the last round, as the IRLS used them."""
        c1, a1, dd = first
        return huber_weights(resid(c1[0:1, col : col + 1], a1[0:1, col : col + 1], phi[0:1, col : col + 1]), dd[0:1, col : col + 1], w0[0:1])[0, 0]

    noise_floor = float(np.mean((pb.noise_sd / pb.scale) ** 2))
    done: dict[str, _Partial | None] = {}
    for i, fam in enumerate(order):
        col = best[i]
        params = np.column_stack([c[kk, col], a[kk, col], thetas[i]])  # (K, P)
        if not np.all(np.isfinite(params)):
            done[fam.name] = None
            continue
        pred = basis_predict(fam, params, pb.u)  # (K, n)
        cov, rmse = _laplace_basis(fam, params[0], weights_at(int(col[0])), pred[0], pb, noise_floor)
        done[fam.name] = _Partial(fam.name, params[0], cov, rmse, pred)
    return [done.get(f.name) for f in fams]


def _laplace_basis(fam: BasisFamily, params: np.ndarray, w: np.ndarray, pred: np.ndarray, pb: Problem, noise_floor: float):
    a, theta = params[1], params[2:]
    h = 1e-4
    p = len(theta)
    th = np.repeat(theta[None], 1 + 2 * p, axis=0)
    for j in range(p):
        th[1 + 2 * j, j] += h
        th[2 + 2 * j, j] -= h
    ph = fam.phi(th, pb.u)  # rows: theta, then +h/-h per component (row-wise identical to one-by-one calls)
    cols = []
    if not fam.pinned:
        cols.append(np.ones_like(pb.u))
    cols.append((ph[0] - 1.0) if (fam.pinned and pb.pin_start) else ph[0])
    for j in range(p):
        cols.append(a * (ph[1 + 2 * j] - ph[2 + 2 * j]) / (2 * h))
    J = np.column_stack(cols)
    cov_free, rmse = _weighted_cov(J, w, pred - pb.z, noise_floor)
    P = 2 + p
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


def _weighted_cov(J: np.ndarray, w: np.ndarray, resid: np.ndarray, noise_floor: float) -> tuple[np.ndarray, float]:
    n, P = J.shape
    wr = w * resid * resid
    dof = max(float(np.count_nonzero(w > 0)) - P, 1.0)
    s2 = float(wr.sum()) / dof
    s2 = max(s2, noise_floor)
    H = (J * w[:, None]).T @ J
    vals, vecs = np.linalg.eigh(H)
    vmax = max(float(vals.max()), _TINY)
    inv = np.where(vals > 1e-10 * vmax, 1.0 / np.maximum(vals, 1e-10 * vmax), 0.0)
    cov = (vecs * inv) @ vecs.T * s2
    rmse = float(np.sqrt(np.mean(resid * resid)))
    return cov, rmse


def _holdout_stats_many(preds: np.ndarray, pb: Problem) -> list[tuple[float | None, float]]:
    """Out-of-sample rms error of each family's prefix fits, and its growth per log-horizon, for the
    predictions (F, K, n) of several families at once (rows contiguous: the same sums as one by one)."""
    F = len(preds)
    if len(pb.masks) < 2:
        return [(None, 0.0)] * F
    errs, rates = [], []
    for k in range(1, len(pb.masks)):
        out = pb.masks[k] == 0
        e = np.ascontiguousarray(preds[:, k, out]) - pb.z[out]  # rows contiguous: same sums as one by one
        rms = np.sqrt(np.mean(e * e, axis=1))
        errs.append(rms)
        noise2 = float(np.mean(pb.noise_sd[out] ** 2))
        horizon = float(np.mean(np.log(pb.u[out] / pb.cuts[k])))
        rates.append(np.sqrt(np.maximum(rms * rms - noise2, 0.0)) / max(horizon, 1e-3))
    hold = np.mean(np.stack(errs), axis=0)
    growth = np.mean(np.stack(rates), axis=0)
    return [(float(h), float(g)) for h, g in zip(hold, growth)]


def _fit_vapor(pb: Problem) -> _Partial | None:
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
    delta = _robust_deltas(r[None], pb.masks)[0]
    w = w0 * np.minimum(1.0, delta[:, None] / np.maximum(np.abs(r), _TINY))
    for _ in range(2):
        beta = solve(w)
        r = lv[None] - beta @ X.T
        w = w0 * np.minimum(1.0, delta[:, None] / np.maximum(np.abs(r), _TINY))
    if not np.all(np.isfinite(beta)):
        return None
    pred = vapor_predict(beta, pb.u, pb.sign)
    # z = sign*exp(X beta): dz/dbeta = z*X; log-space weights w equal z-space weights w/v^2
    cov, rmse = _weighted_cov(X * pred[0][:, None], w[0] / (v * v), pred[0] - pb.z, float(np.mean((pb.noise_sd / pb.scale) ** 2)))
    return _Partial("vapor", beta[0], cov, rmse, pred)


def _fit_flat(pb: Problem) -> _Partial:
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
    rmse = float(np.sqrt(np.mean((pred[0] - pb.z) ** 2)))
    return _Partial("flat", np.array([levels[0]]), np.array([[var]]), rmse, pred)


def fit_all(pb: Problem, names: tuple[str, ...] | None = None) -> tuple[list[FamilyFit], list[str]]:
    """Fit every family; a family that fails is skipped and named in the returned notes."""
    parts: list[_Partial] = []
    notes: list[str] = []
    fams = [fam for fam in BASIS_FAMILIES if names is None or fam.name in names]
    try:
        with np.errstate(all="ignore"):
            got = _fit_basis_all(fams, pb)
    except (FloatingPointError, np.linalg.LinAlgError, ValueError):  # pragma: no cover - defensive
        got = []
        for fam in fams:  # one by one, so one failing family does not take the others down
            try:
                with np.errstate(all="ignore"):
                    got.append(_fit_basis_all([fam], pb)[0])
            except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:
                notes.append(f"{fam.name} fit failed: {exc}")
                got.append(None)
    parts.extend(p for p in got if p is not None)
    if names is None or "vapor" in names:
        try:
            with np.errstate(all="ignore"):
                p = _fit_vapor(pb)
            if p is not None:
                parts.append(p)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:  # pragma: no cover
            notes.append(f"vapor fit failed: {exc}")
    if names is None or "flat" in names:
        parts.append(_fit_flat(pb))
    if not parts:
        return [], notes
    with np.errstate(all="ignore"):
        stats = _holdout_stats_many(np.stack([np.broadcast_to(p.pred, pb.masks.shape) for p in parts]), pb)
    return [p.finish(*st) for p, st in zip(parts, stats)], notes
