"""Loss-vs-step laws that know the learning-rate schedule.

* Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing"): ``L = L0 + A*S1^-alpha - C*S2``;
  S1 is the LR area so far, S2 the annealing area with momentum ``lambda`` (0.999).
* Luo et al. 2025, the Multi-Power Law (MPL): ``L = L0 + A*S1^-alpha - B*sum_k d_k G(eta_k^-gamma S_k(t))``
  with ``G(x) = 1 - (C x + 1)^-beta``, ``d_k = eta_{k-1} - eta_k`` and ``S_k(t) = sum_{tau=k..t} eta_tau``.

Learning rates are normalised by the schedule's peak, so fitted constants do not depend on LR units
(``TissueLaw.in_raw_units`` converts back). LR *increases* up to the end of warm-up are ignored in
the annealing terms: a rising LR must not leave a permanent offset in S2 (it would tend to
``-eta_max/(1-lambda)`` and silently shift L0).

Fits minimise Huber (delta 1e-3) on log loss, as both papers do: Tissue by a grid over alpha with the
linear parameters in closed form, then a bounded trust-region refinement; MPL from Tissue-derived starts
with analytic Jacobians. Both accept several curves (schedules) at once, and an optional log-normal
prior on the annealing strength for prefixes that have not annealed yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize, signal

DECAY = 0.999
HUBER_DELTA = 1e-3
MAX_BLOCKS = 400
# MPL exponents beta and gamma came out near 0.6 for every model size in Luo et al. (2025); the training
# schedules pin them down poorly (many fits reach a lower training loss with beta -> 0 or gamma -> 0 and
# then extrapolate worse), so a weak log-normal prior keeps them in the published range.
SHAPE_PRIOR = (0.6, 0.15)  # MPL: LR decrements are merged into at most this many blocks


# ---- schedule features ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleFeatures:
    """Per-step quantities of one LR schedule, for steps 0..T (index = step)."""

    lr: np.ndarray  # normalised by peak
    peak: float
    s1: np.ndarray  # cumulative LR area, s1[t] = sum_{i<=t} lr_i
    s2: np.ndarray  # Tissue annealing area with momentum
    d: np.ndarray  # lr decrements d[k] = lr[k-1] - lr[k] (0 during warm-up)
    warmup_end: int
    decay: float = DECAY

    @property
    def n_steps(self) -> int:
        return len(self.lr) - 1


def features(lr_per_step: np.ndarray, decay: float = DECAY, step: float = 1.0, anneal_warmup: bool = False) -> ScheduleFeatures:
    """Features of an LR array sampled every ``step`` training steps (index i = step i*step).

    ``step > 1`` lets very long runs use a coarser grid: areas are scaled by ``step`` and the momentum
    decays by ``decay**step`` per grid point. ``anneal_warmup=True`` keeps the warm-up increments in
    the annealing terms (the MPL repository's convention, which L0 then absorbs); the default drops them.
    """
    lr = np.asarray(lr_per_step, dtype=np.float64)
    lr = np.where(np.isfinite(lr), np.maximum(lr, 0.0), 0.0)
    peak = float(lr.max()) if lr.size and lr.max() > 0 else 1.0
    lr = lr / peak
    warm = int(np.argmax(lr >= 0.999 * lr.max())) if lr.size else 0
    d = np.zeros_like(lr)
    d[1:] = lr[:-1] - lr[1:]
    if not anneal_warmup:
        d[: warm + 1] = 0.0  # warm-up increments leave no trace in the annealing terms
    lam = decay**step
    m = signal.lfilter([1.0], [1.0, -lam], d)
    s2 = np.cumsum(m) * step
    s1 = np.cumsum(lr) * step
    return ScheduleFeatures(lr=lr, peak=peak, s1=s1, s2=s2, d=d, warmup_end=warm, decay=decay)


def lr_per_step_from_points(steps: np.ndarray, lrs: np.ndarray, total: int) -> np.ndarray:
    """Per-step LR from sparse (step, lr) observations: linear in between, flat outside, and a linear
    warm-up from 0 before the first observation when the curve starts late."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(lrs, dtype=np.float64)
    grid = np.arange(total + 1, dtype=np.float64)
    if s[0] > 0:
        s = np.concatenate([[0.0], s])
        v = np.concatenate([[0.0], v])
    return np.interp(grid, s, v)


# ---- Tissue et al. --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TissueLaw:
    L0: float
    A: float
    alpha: float
    C: float
    decay: float = DECAY
    cov: np.ndarray | None = field(default=None, compare=False, repr=False)  # of x (see below)

    @property
    def x(self) -> np.ndarray:
        """Fit vector [L0, log A, log alpha, log C]."""
        return np.array([self.L0, np.log(self.A), np.log(self.alpha), np.log(max(self.C, 1e-300))])

    def predict(self, f: ScheduleFeatures, steps: np.ndarray) -> np.ndarray:
        idx = np.clip(np.asarray(steps, dtype=int), 0, f.n_steps)
        return tissue_predict(self.x[None], f.s1[idx], f.s2[idx])[0]

    def in_raw_units(self, peak: float) -> dict[str, float]:
        """Constants for S1, S2 measured in raw LR units (as the papers report them)."""
        return {"L0": self.L0, "A": self.A * peak**self.alpha, "alpha": self.alpha, "C": self.C / peak}


def tissue_predict(x: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Tissue law for fit vectors x (S, 4) at (s1, s2) (J,) -> (S, J)."""
    L0, A, alpha, C = x[:, 0:1], np.exp(x[:, 1:2]), np.exp(x[:, 2:3]), np.exp(x[:, 3:4])
    return L0 + A * np.maximum(s1, 1e-12)[None] ** (-alpha) - C * s2[None]


@dataclass(frozen=True)
class Observed:
    """One training curve under a known schedule: losses at integer steps."""

    steps: np.ndarray
    loss: np.ndarray
    sched: ScheduleFeatures

    def s1(self) -> np.ndarray:
        return self.sched.s1[np.clip(self.steps.astype(int), 0, self.sched.n_steps)]

    def s2(self) -> np.ndarray:
        return self.sched.s2[np.clip(self.steps.astype(int), 0, self.sched.n_steps)]


@dataclass(frozen=True)
class Prior:
    """Log-normal prior on the annealing strength (Tissue C, or MPL B) in normalised-LR units."""

    center: float
    sd_log: float = 1.0


def tissue_bounds(y_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Box of the Tissue fit vector [L0, log A, log alpha, log C] for curves whose lowest loss is ``y_min``."""
    return np.array([0.0, -30.0, np.log(0.02), -40.0]), np.array([y_min * 0.999, 30.0, np.log(3.0), 10.0])


def fit_tissue(curves: Sequence[Observed], prior: Prior | None = None) -> TissueLaw:
    s1 = np.concatenate([c.s1() for c in curves])
    s2 = np.concatenate([c.s2() for c in curves])
    y = np.concatenate([c.loss for c in curves])
    ly = np.log(y)
    lo, hi = tissue_bounds(float(np.min(y)))
    with np.errstate(all="ignore"):
        x0 = _tissue_grid(s1, s2, y)
        if prior is not None and (x0[3] < np.log(prior.center) - 3 * prior.sd_log):
            x0[3] = np.log(prior.center)
        x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)

        def resid(x):
            p = tissue_predict(x[None], s1, s2)[0]
            r = np.log(np.maximum(p, 1e-12)) - ly
            return _with_prior(r, x[3], prior)

        def jac(x):
            A, alpha, C = np.exp(x[1]), np.exp(x[2]), np.exp(x[3])
            sp = np.maximum(s1, 1e-12) ** (-alpha)
            p = np.maximum(x[0] + A * sp - C * s2, 1e-12)
            J = np.column_stack([np.ones_like(s1), A * sp, -alpha * A * sp * np.log(np.maximum(s1, 1e-12)), -C * s2]) / p[:, None]
            return _with_prior_jac(J, prior, 3)

        res = optimize.least_squares(
            resid, x0, jac=jac, bounds=(lo, hi), loss="huber", f_scale=HUBER_DELTA, xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=400
        )
        x = res.x if np.all(np.isfinite(res.x)) else x0
        cov = _laplace(jac(x), resid(x), len(x), n_prior=0 if prior is None else 1)
    return TissueLaw(L0=float(x[0]), A=float(np.exp(x[1])), alpha=float(np.exp(x[2])), C=float(np.exp(x[3])), cov=cov)


_TISSUE_ALPHAS = np.exp(np.linspace(np.log(0.03), np.log(2.0), 60))


def _tissue_grid(s1, s2, y) -> np.ndarray:
    """Best (L0, A, C) in closed form (relative least squares) for each alpha on a grid."""
    try:
        return _tissue_grid_batched(s1, s2, y)
    except np.linalg.LinAlgError:  # a singular system: the loop skips just that alpha
        return _tissue_grid_loop(s1, s2, y)


def _tissue_grid_batched(s1, s2, y) -> np.ndarray:
    """All alphas at once; per alpha the same products and LAPACK solve as ``_tissue_grid_loop``."""
    alphas = _TISSUE_ALPHAS
    w = 1.0 / (y * y)
    n = len(y)
    X = np.empty((len(alphas), n, 3))
    X[:, :, 0] = 1.0
    X[:, :, 1] = np.maximum(s1, 1e-12)[None] ** (-alphas[:, None])
    X[:, :, 2] = -s2
    XW = X * w[None, :, None]
    XWt = XW.transpose(0, 2, 1)
    H = XWt @ X + 1e-12 * np.eye(3)
    g = XWt @ y
    beta = np.linalg.solve(H, g[..., None])[..., 0]
    beta[:, 1] = np.maximum(beta[:, 1], 1e-9)
    beta[:, 2] = np.maximum(beta[:, 2], 1e-12)
    beta[:, 0] = np.minimum(np.maximum(beta[:, 0], 0.0), float(np.min(y)) * 0.999)
    fitted = (X @ beta[..., None])[..., 0]
    sse = np.sum(np.abs((fitted - y) / y), axis=1)
    sse = np.where(sse < np.inf, sse, np.inf)  # NaN never wins, as with `sse < best`
    i = int(np.argmin(sse))
    if not sse[i] < np.inf:
        return np.array([0.5 * float(np.min(y)), 0.0, np.log(0.5), -20.0])
    b = beta[i]
    return np.array([b[0], np.log(b[1]), np.log(alphas[i]), np.log(b[2])])


def _tissue_grid_loop(s1, s2, y) -> np.ndarray:
    alphas = _TISSUE_ALPHAS
    w = 1.0 / (y * y)
    best, best_x = np.inf, None
    for a in alphas:
        X = np.column_stack([np.ones_like(s1), np.maximum(s1, 1e-12) ** (-a), -s2])
        H = (X * w[:, None]).T @ X + 1e-12 * np.eye(3)
        g = (X * w[:, None]).T @ y
        try:
            beta = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            continue
        beta[1] = max(beta[1], 1e-9)
        beta[2] = max(beta[2], 1e-12)
        beta[0] = min(max(beta[0], 0.0), float(np.min(y)) * 0.999)
        r = (X @ beta - y) / y
        sse = float(np.sum(np.abs(r)))
        if sse < best:
            best, best_x = sse, np.array([beta[0], np.log(beta[1]), np.log(a), np.log(beta[2])])
    if best_x is None:
        best_x = np.array([0.5 * float(np.min(y)), 0.0, np.log(0.5), -20.0])
    return best_x


PRIOR_WEIGHT = 3.0 * HUBER_DELTA  # one prior sd costs about as much as a few points off by 3 deltas


def _with_prior(r: np.ndarray, log_strength: float, prior: Prior | None) -> np.ndarray:
    """Append the prior as one pseudo-residual on the log of the annealing strength."""
    if prior is None:
        return r
    z = (log_strength - np.log(prior.center)) / prior.sd_log
    return np.concatenate([r, [PRIOR_WEIGHT * z]])


def _with_prior_jac(J: np.ndarray, prior: Prior | None, col: int) -> np.ndarray:
    if prior is None:
        return J
    row = np.zeros((1, J.shape[1]))
    row[0, col] = PRIOR_WEIGHT / prior.sd_log
    return np.vstack([J, row])


def _laplace(J: np.ndarray, r: np.ndarray, p: int, n_prior: int = 0) -> np.ndarray:
    """Laplace covariance of the fit vector: the data's curvature over their residual variance, plus
    the priors' precision, never less than their own (1 / sd^2).

    The last ``n_prior`` rows of ``J`` and ``r`` are prior pseudo-residuals (``PRIOR_WEIGHT * z``). Read
    as data with the curve's residual variance, as the plain Laplace formula does, they make the prior
    tighter than stated on smooth curves (the fit's prior weight stands for the laws' misfit, ~0.3%,
    and the Multi-Power-Law runs are scored better for it) but much wider on noisy ones: at 1% noise a
    prior of a factor e per sd became a factor e^3 and more, so the annealing strength of a run that
    had not decayed yet was anywhere, and so was the loss after its cool-down. Hence the floor.
    """
    n = len(r) - n_prior
    rd = r[:n]
    s2 = max(float(np.sum(rd * rd)) / max(n - p, 1), 1e-300)
    Jd = J[:n]
    H = (Jd.T @ Jd) / s2
    if n_prior:
        Jp = J[n:] / PRIOR_WEIGHT  # rows of (1 / sd) at the prior's parameter
        H = H + (Jp.T @ Jp) * max(1.0, PRIOR_WEIGHT**2 / s2)
    vals, vecs = np.linalg.eigh(H)
    vmax = max(float(vals.max()), 1e-300)
    inv = np.where(vals > 1e-12 * vmax, 1.0 / np.maximum(vals, 1e-12 * vmax), 0.0)
    return (vecs * inv) @ vecs.T


def gauss_samples(x: np.ndarray, cov: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """n parameter vectors ~ N(x, cov); row 0 is x itself."""
    if cov is None:
        return np.repeat(x[None], n, axis=0)
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    out = x[None] + rng.standard_normal((n, len(x))) @ root.T
    out[0] = x
    return out


# ---- Multi-Power Law ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MplBlocks:
    """LR decrements merged into blocks: position k, LR after the decrement and its size."""

    k: np.ndarray
    lr_k: np.ndarray
    d: np.ndarray


def mpl_blocks(f: ScheduleFeatures, upto: int | None = None, max_blocks: int = MAX_BLOCKS) -> MplBlocks:
    d = f.d if upto is None else f.d[: upto + 1]
    idx = np.flatnonzero(d != 0.0)
    if len(idx) > max_blocks:
        groups = np.array_split(idx, max_blocks)
        k = np.array([int(np.round(np.average(g, weights=np.abs(d[g]) + 1e-300))) for g in groups])
        dd = np.array([float(d[g].sum()) for g in groups])
    else:
        k, dd = idx, d[idx]
    return MplBlocks(k=k, lr_k=np.maximum(f.lr[k], 1e-6), d=dd)


@dataclass(frozen=True)
class MultiPowerLaw:
    L0: float
    A: float
    alpha: float
    B: float
    C: float
    beta: float
    gamma: float
    cov: np.ndarray | None = field(default=None, compare=False, repr=False)  # of the fit vector

    @property
    def x(self) -> np.ndarray:
        return np.array([self.L0, *np.log([self.A, self.alpha, self.B, self.C, self.beta, self.gamma])])

    def predict(self, f: ScheduleFeatures, steps: np.ndarray) -> np.ndarray:
        return _mpl_pred(self.x[None], _MplDesign.build(f, steps))[0]

    def in_raw_units(self, peak: float) -> dict[str, float]:
        """Constants as in the MPL paper (raw LR units)."""
        return {
            "L0": self.L0,
            "A": self.A * peak**self.alpha,
            "alpha": self.alpha,
            "B": self.B / peak,
            "C": self.C * peak ** (self.gamma - 1.0),
            "beta": self.beta,
            "gamma": self.gamma,
        }


@dataclass(frozen=True)
class _MplDesign:
    """Everything the MPL needs at a set of evaluation steps of one schedule."""

    s1: np.ndarray  # (J,)
    seg: np.ndarray  # (J, K) S_k(t) = s1[t] - s1[k-1], 0 where k > t
    active: np.ndarray  # (J, K) k <= t
    log_lr: np.ndarray  # (K,)
    d: np.ndarray  # (K,)

    @classmethod
    def build(cls, f: ScheduleFeatures, steps: np.ndarray, max_blocks: int = MAX_BLOCKS,
              blocks_upto: int | None = None) -> "_MplDesign":
        """``blocks_upto``: merge the LR decrements up to this step into blocks (default: the last of
        ``steps``); a fixed value makes the prediction at a step independent of the other steps."""
        t = np.clip(np.asarray(steps, dtype=int), 0, f.n_steps)
        upto = (int(t.max()) if len(t) else 0) if blocks_upto is None else max(int(blocks_upto), int(t.max()) if len(t) else 0)
        b = mpl_blocks(f, upto, max_blocks)
        s1 = f.s1[t]
        prev = f.s1[np.maximum(b.k - 1, 0)]
        seg = s1[:, None] - prev[None, :]
        active = b.k[None, :] <= t[:, None]
        return cls(s1=s1, seg=np.where(active, seg, 0.0), active=active, log_lr=np.log(b.lr_k), d=b.d)


def _mpl_parts(x: np.ndarray, des: _MplDesign):
    L0 = x[:, 0:1]
    A, alpha, B, C, beta, gamma = (np.exp(x[:, i : i + 1]) for i in range(1, 7))
    s1 = np.maximum(des.s1, 1e-12)[None]  # (1, J)
    sp = s1 ** (-alpha)  # (S, J)
    xk = np.exp(-gamma[:, :, None] * des.log_lr[None, None, :]) * des.seg[None]  # (S, J, K)
    base = C[:, :, None] * xk + 1.0
    powb = base ** (-beta[:, :, None])
    G = 1.0 - powb
    ld = np.einsum("sjk,k->sj", G * des.active[None], des.d)
    pred = L0 + A * sp - B * ld
    return pred, (A, alpha, B, C, beta, gamma, sp, s1, xk, base, powb, ld)


def _mpl_pred(x: np.ndarray, des: _MplDesign) -> np.ndarray:
    return _mpl_parts(x, des)[0]


def _mpl_jac(x: np.ndarray, des: _MplDesign) -> tuple[np.ndarray, np.ndarray]:
    """Prediction (J,) and its Jacobian (J, 7) w.r.t. [L0, log A, log alpha, log B, log C, log beta, log gamma]."""
    pred, (A, alpha, B, C, beta, gamma, sp, s1, xk, base, powb, ld) = _mpl_parts(x[None], des)
    act = des.active[None]
    dmask = des.d[None, None, :] * act
    common = beta[:, :, None] * xk * base ** (-beta[:, :, None] - 1.0)  # dG/dC
    dC = np.einsum("sjk,sjk->sj", dmask, common * C[:, :, None])
    dbeta = np.einsum("sjk,sjk->sj", dmask, powb * np.log(base) * beta[:, :, None])
    dgamma = np.einsum("sjk,sjk->sj", dmask, C[:, :, None] * common * (-des.log_lr[None, None, :]) * gamma[:, :, None])
    J = np.column_stack(
        [
            np.ones(pred.shape[1]),
            (A * sp)[0],
            (-alpha * A * sp * np.log(s1))[0],
            (-B * ld)[0],
            (-B * dC)[0],
            (-B * dbeta)[0],
            (-B * dgamma)[0],
        ]
    )
    return pred[0], J


def mpl_bounds(y_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Box of the MPL fit vector [L0, log A, log alpha, log B, log C, log beta, log gamma]."""
    lo = np.array([0.0, -20.0, np.log(0.02), np.log(1e-6), np.log(1e-6), np.log(0.02), np.log(0.01)])
    hi = np.array([y_min * 0.999, 20.0, np.log(3.0), np.log(1e3), np.log(1e4), np.log(5.0), np.log(2.0)])
    return lo, hi


def fit_mpl(
    curves: Sequence[Observed],
    start: TissueLaw | None = None,
    prior: Prior | None = None,
    max_blocks: int = MAX_BLOCKS,
    max_nfev: int = 300,
    shape_prior_sd: float | None = SHAPE_PRIOR[1],
    n_refine: int = 3,
) -> MultiPowerLaw:
    """Huber-on-log-loss fit of the MPL from a few starts derived from a Tissue fit."""
    designs = [_MplDesign.build(c.sched, c.steps, max_blocks) for c in curves]
    ly = np.concatenate([np.log(c.loss) for c in curves])
    y_min = float(np.exp(ly.min()))
    if start is None:
        start = fit_tissue(curves, None if prior is None else Prior(prior.center * (1.0 - DECAY), prior.sd_log))
    lo, hi = mpl_bounds(y_min)

    def resid_jac(x):
        preds, jacs = zip(*(_mpl_jac(x, d) for d in designs))
        p = np.maximum(np.concatenate(preds), 1e-12)
        J = np.vstack(jacs) / p[:, None]
        return np.log(p) - ly, J

    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def rj(x):
        key = x.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = resid_jac(x)
        return cache[key]

    shape = np.log(SHAPE_PRIOR[0])

    def resid(x):
        r = _with_prior(rj(x)[0], float(x[3]), prior)
        if shape_prior_sd is None:
            return r
        return np.concatenate([r, PRIOR_WEIGHT * (x[5:7] - shape) / shape_prior_sd])

    def jac(x):
        J = _with_prior_jac(rj(x)[1], prior, 3)
        if shape_prior_sd is None:
            return J
        rows = np.zeros((2, 7))
        rows[0, 5] = rows[1, 6] = PRIOR_WEIGHT / shape_prior_sd
        return np.vstack([J, rows])

    b0 = max(start.C, 1e-6) / (1.0 - start.decay)
    starts = []
    for c0 in (0.02, 0.2, 2.0):
        for be in (0.4, 0.8):
            for ga in (0.3, 0.6):
                starts.append(np.array([start.L0, np.log(start.A), np.log(start.alpha), np.log(b0), np.log(c0), np.log(be), np.log(ga)]))
    best = None
    with np.errstate(all="ignore"):
        # cheap screening of the starts, then a full refinement of the best two
        scored = []
        for x0 in starts:
            x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
            r = resid(x0)
            scored.append((float(np.sum(_huber(r))) if np.all(np.isfinite(r)) else np.inf, x0))
        scored.sort(key=lambda t: t[0])
        for _, x0 in scored[:n_refine]:
            try:
                res = optimize.least_squares(
                    resid, x0, jac=jac, bounds=(lo, hi), loss="huber", f_scale=HUBER_DELTA,
                    xtol=1e-10, ftol=1e-12, gtol=1e-10, max_nfev=max_nfev,
                )
            except (ValueError, np.linalg.LinAlgError):
                continue
            if not np.all(np.isfinite(res.x)):
                continue
            cost = float(np.sum(_huber(res.fun)))
            if best is None or cost < best[0]:
                best = (cost, res)
    if best is None:
        x = np.clip(starts[0], lo + 1e-9, hi - 1e-9)
        cov = None
    else:
        x = best[1].x
        n_prior = (0 if prior is None else 1) + (0 if shape_prior_sd is None else 2)
        cov = _laplace(jac(x), resid(x), len(x), n_prior=n_prior)
    return MultiPowerLaw(float(x[0]), *map(float, np.exp(x[1:])), cov=cov)


def _huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def mpl_predict_samples(x: np.ndarray, f: ScheduleFeatures, steps: np.ndarray, max_blocks: int = 200,
                        blocks_upto: int | None = None) -> np.ndarray:
    """MPL predictions for many parameter vectors (S, 7) at ``steps`` -> (S, J)."""
    des = _MplDesign.build(f, steps, max_blocks, blocks_upto)
    out = np.empty((len(x), len(des.s1)))
    bufs = (np.empty((64,) + des.seg.shape), np.empty((64,) + des.seg.shape))  # reused: no fresh pages per chunk
    for i in range(0, len(x), 64):  # bounded memory: (64, J, K)
        out[i : i + 64] = _mpl_pred_active(x[i : i + 64], des, bufs)
    return out


def _mpl_pred_active(x: np.ndarray, des: _MplDesign, bufs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``_mpl_pred`` that takes the costly power only where a block is active (k <= t).

    Inactive entries are exactly 0 in ``_mpl_parts`` (seg = 0, so base = 1 and G = 1 - 1 = 0) as long
    as the per-sample factors are finite; then the einsum sees the same array and the result is
    bit-identical. Non-finite draws take the plain path (whose NaNs the caller replaces).
    """
    L0 = x[:, 0:1]
    A, alpha, B, C, beta, gamma = (np.exp(x[:, i : i + 1]) for i in range(1, 7))
    ek = np.exp(-gamma[:, :, None] * des.log_lr[None, None, :])  # (S, 1, K)
    if not (np.all(np.isfinite(ek)) and np.all(np.isfinite(C)) and np.all(np.isfinite(beta))):
        return _mpl_pred(x, des)
    s1 = np.maximum(des.s1, 1e-12)[None]
    sp = s1 ** (-alpha)
    S = len(x)
    shape = (S,) + des.seg.shape
    base, G = (np.empty(shape), np.empty(shape)) if bufs is None else (bufs[0][:S], bufs[1][:S])
    np.multiply(ek, des.seg[None], out=base)  # xk
    base *= C[:, :, None]  # C * xk + 1
    base += 1.0
    G.fill(1.0)
    np.power(base, -beta[:, :, None], out=G, where=np.broadcast_to(des.active[None], shape))
    np.subtract(1.0, G, out=G)
    ld = np.einsum("sjk,k->sj", G, des.d)
    return L0 + A * sp - B * ld
