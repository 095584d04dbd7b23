"""Parametric learning-curve families, robust fits and residual-bootstrap predictive samples.

Benchmark-only code (never on the serving path). Every family is written as ``w = c + A * phi(t; eta)``
on a normalised prefix: ``t = (x + shift) / (x_last + shift)`` and ``w = (v_last - v) / s`` with
``v = sign * y`` (lower is better) and ``s`` the prefix range, so ``w`` rises as the run improves and
the literature's accuracy forms (Domhan et al. 2015; LCDB, Mohr et al.) apply unchanged:

==============  ==========================================  =====================================
name            published form (accuracy form, in t)        here
==============  ==========================================  =====================================
pow3            c - a t^-alpha                              phi = t^-alpha
pow4            a - b (d + t)^-c  (LCDB; Domhan's           phi = (t + d)^-alpha
                c - (a t + b)^-alpha reparameterised)
exp4            c - exp(-a t^alpha + b)                     phi = exp(-k t^delta), A < 0
janoschek       a - (a - beta) exp(-k t^delta)              phi = exp(-k t^delta), A free
                (= LCDB's WBL4 c - b exp(-a t^d), and
                Domhan's Weibull, reparameterised)
log_power       c + a / (1 + (t / e^b)^d)                    phi = 1 / (1 + (t / tau)^d)
                (= LCDB's MMF4 (ab + c t^d) / (b + t^d))
==============  ==========================================  =====================================

WBL4 and MMF4 span exactly the same curves as Janoschek and the 4-parameter log-power, so each is
fitted once under the first name. Fits: scipy.optimize.least_squares with a soft-L1 loss whose scale
is a robust noise estimate of the prefix (MAD of first differences), bounded parameters, started from
the best points of a variable-projection grid (for each grid value of the nonlinear parameters the
linear ones, c and A, are solved in closed form).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy import optimize, special

MAD_TO_SD = 1.4826
LIN_BOUND = 1e3  # |c|, |A| in normalised units (the prefix spans 1)
N_STARTS = 2  # grid points refined by least_squares per family
BAND_FLOOR = 0.01  # noise level (fraction of the prefix range) assumed when too few points estimate it
NOISE_FLOOR = 0.5  # smallest predictive smoothing bandwidth, as a fraction of the noise level ...
LEVEL_FLOOR = 1e-4  # ... and of the curve's level
VALIDATION_FRACTION = 0.2
FIT_TOL = 1e-5  # least_squares ftol/xtol/gtol (1e-7 leaves the median forecast unchanged on real prefixes)
MIN_DOF = 2  # residual degrees of freedom a residual bootstrap needs
FIT_NFEV = 30  # per parameter: caps the slow drift along the flat ridges some families have
BOOT_TOL = 1e-4
BOOT_NFEV = 40


@dataclass(frozen=True)
class Prefix:
    """An observed prefix in normalised coordinates, and the maps back to the curve's units."""

    t: np.ndarray
    w: np.ndarray
    shift: float
    x_ref: float
    v_last: float
    scale: float
    sign: float
    w_max: float = LIN_BOUND  # the metric's ideal bound (0 loss, accuracy 1) in w units: caps the asymptote
    floor: float = BAND_FLOOR  # smallest predictive smoothing bandwidth, w units

    @classmethod
    def from_curve(cls, x: np.ndarray, y: np.ndarray, sign: float, ideal: float | None = None) -> "Prefix":
        """``ideal``: the bound the metric improves towards (a loss's lower, an accuracy's upper bound)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        v = sign * y
        shift = 0.0 if x[0] > 0 else -float(x[0]) + float(x[1] - x[0] if len(x) > 1 else 1.0)
        x_ref = float(x[-1]) + shift
        level = max(float(np.max(np.abs(y))), 1e-12)
        scale = max(float(np.ptp(v)), 1e-9 * level)
        w_max = LIN_BOUND if ideal is None else float(np.clip((v[-1] - sign * ideal) / scale, 0.0, LIN_BOUND))
        pre = cls((x + shift) / x_ref, (v[-1] - v) / scale, shift, x_ref, float(v[-1]), scale, sign, w_max)
        return replace(pre, floor=max(NOISE_FLOOR * pre.noise(), LEVEL_FLOOR * level / scale))

    def t_of(self, x: np.ndarray) -> np.ndarray:
        return np.maximum((np.asarray(x, dtype=np.float64) + self.shift) / self.x_ref, 1e-12)

    def y_of(self, w: np.ndarray) -> np.ndarray:
        return self.sign * (self.v_last - self.scale * np.asarray(w))

    def noise(self) -> float:
        """Robust noise level of w: MAD of first differences / sqrt(2), floored."""
        d = np.diff(self.w)
        if len(d) < 2:
            return BAND_FLOOR
        mad = float(np.median(np.abs(d - np.median(d))))
        return max(MAD_TO_SD * mad / np.sqrt(2.0), 1e-4)


@dataclass(frozen=True)
class Family:
    """``w = c + A * phi(t; eta)``; ``theta = (c, A, *eta)``."""

    name: str
    phi: Callable[[np.ndarray, np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (t, eta, phi) -> (n, len(eta))
    eta_lower: tuple[float, ...]
    eta_upper: tuple[float, ...]
    eta_grid: np.ndarray  # (G, len(eta)) start values
    a_sign: float = 0.0  # -1: A must be negative (improving only), 0: free

    @property
    def n_params(self) -> int:
        return 2 + len(self.eta_lower)

    def bounds(self, c_max: float = LIN_BOUND) -> tuple[np.ndarray, np.ndarray]:
        """Box bounds of theta; ``c_max`` caps the asymptote c (every family tends to c as t grows)."""
        a_hi = -1e-12 if self.a_sign < 0 else LIN_BOUND
        lo = np.array([-LIN_BOUND, -LIN_BOUND, *self.eta_lower])
        hi = np.array([max(min(c_max, LIN_BOUND), -LIN_BOUND + 1.0), a_hi, *self.eta_upper])
        return lo, hi

    def __call__(self, t: np.ndarray, theta: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return theta[0] + theta[1] * self.phi(t, theta[2:])

    def jac(self, t: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """d w / d theta, shape (n, n_params)."""
        with np.errstate(all="ignore"):
            phi = self.phi(t, theta[2:])
            d_eta = theta[1] * self.dphi(t, theta[2:], phi)
        return np.column_stack([np.ones_like(t), phi, d_eta])


def _grid(*axes: np.ndarray) -> np.ndarray:
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(axes), -1).T


def _pow(t: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return t ** -eta[0]


def _d_pow(t: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    return (-np.log(t) * phi)[:, None]


def _pow4(t: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return (t + eta[1]) ** -eta[0]


def _d_pow4(t: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    td = t + eta[1]
    return np.column_stack([-np.log(td) * phi, -eta[0] * phi / td])


def _stretched_exp(t: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return np.exp(-np.exp(eta[0]) * t ** eta[1])  # eta = (ln k, delta)


def _d_stretched_exp(t: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    ktd = np.exp(eta[0]) * t ** eta[1]
    return np.column_stack([-ktd * phi, -ktd * np.log(t) * phi])


def _log_power(t: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return special.expit(-eta[1] * (np.log(t) - eta[0]))


def _d_log_power(t: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    g = phi * (1.0 - phi)
    return np.column_stack([eta[1] * g, -(np.log(t) - eta[0]) * g])


_EXP_GRID = _grid(np.log(np.logspace(-2, 2, 9)), np.array([0.15, 0.3, 0.6, 1.0, 1.6, 2.5]))
_LN_K = (float(np.log(1e-3)), float(np.log(1e3)))
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("pow3", _pow, _d_pow, (1e-3,), (5.0,), np.logspace(-2, np.log10(5.0), 24)[:, None]),
        Family("pow4", _pow4, _d_pow4, (1e-3, 0.0), (5.0, 10.0), _grid(np.logspace(-2, np.log10(5.0), 10), np.array([0.0, 0.03, 0.1, 0.3, 1.0, 3.0]))),
        Family("exp4", _stretched_exp, _d_stretched_exp, (_LN_K[0], 0.01), (_LN_K[1], 5.0), _EXP_GRID, a_sign=-1.0),
        Family("janoschek", _stretched_exp, _d_stretched_exp, (_LN_K[0], 0.01), (_LN_K[1], 5.0), _EXP_GRID),
        Family("log_power", _log_power, _d_log_power, (-10.0, 0.01), (5.0, 10.0), _grid(np.array([-6.0, -4.0, -2.5, -1.5, -0.5, 0.5, 1.5]), np.array([0.3, 0.6, 1.0, 2.0, 4.0]))),
    )
}
FAMILY_ALIASES = {"wbl4": "janoschek", "weibull": "janoschek", "mmf4": "log_power", "mmf": "log_power"}


@dataclass(frozen=True)
class Fit:
    family: Family
    theta: np.ndarray
    cost: float
    n_free: int = 0  # free parameters (0: all of the family's)

    @property
    def n_fitted(self) -> int:
        return self.n_free or self.family.n_params

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return self.family(t, self.theta)


def _soft_l1(r: np.ndarray, f_scale: float) -> np.ndarray:
    z = (r / f_scale) ** 2
    return 2.0 * (np.sqrt(1.0 + z) - 1.0)


def grid_starts(fam: Family, t: np.ndarray, w: np.ndarray, f_scale: float, k: int = N_STARTS, c_max: float = LIN_BOUND) -> list[np.ndarray]:
    """Variable projection: per grid eta, the least-squares (c, A); the k best by robust cost."""
    c_hi = fam.bounds(c_max)[1][0]
    scored: list[tuple[float, np.ndarray]] = []
    for eta in fam.eta_grid:
        phi = fam.phi(t, eta)
        if not np.all(np.isfinite(phi)):
            continue
        pc = phi - phi.mean()
        var = float(pc @ pc)
        a = float(pc @ (w - w.mean())) / var if var > 1e-300 else 0.0
        if fam.a_sign < 0:
            a = min(a, -1e-9)
        a = float(np.clip(a, -LIN_BOUND, LIN_BOUND))
        c = float(np.clip(np.mean(w - a * phi), -LIN_BOUND, c_hi))
        cost = float(np.sum(_soft_l1(c + a * phi - w, f_scale)))
        if np.isfinite(cost):
            scored.append((cost, np.array([c, a, *eta], dtype=np.float64)))
    scored.sort(key=lambda s: s[0])
    return [th for _, th in scored[:k]]


def refine(fam: Family, t: np.ndarray, w: np.ndarray, theta0: np.ndarray, f_scale: float, max_nfev: int | None = None, tol: float = FIT_TOL, c_max: float = LIN_BOUND) -> Fit | None:
    """One bounded soft-L1 least_squares run from theta0; None if it produced nothing finite."""
    lo, hi = fam.bounds(c_max)
    theta0 = np.clip(theta0, lo + 1e-12 * (hi - lo), hi - 1e-12 * (hi - lo))

    def resid(th: np.ndarray) -> np.ndarray:
        r = fam(t, th) - w
        return np.where(np.isfinite(r), r, 1e6)

    def jac(th: np.ndarray) -> np.ndarray:
        j = fam.jac(t, th)
        return np.where(np.isfinite(j), j, 0.0)

    try:
        res = optimize.least_squares(resid, theta0, jac=jac, bounds=(lo, hi), loss="soft_l1", f_scale=f_scale, x_scale="jac", ftol=tol, xtol=tol, gtol=tol, max_nfev=max_nfev)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(res.x)) or not np.isfinite(res.cost):
        return None
    return Fit(fam, res.x, float(res.cost))


def fit_family(fam: Family, t: np.ndarray, w: np.ndarray, f_scale: float, c_max: float = LIN_BOUND) -> Fit | None:
    """Robust fit of one family: the best of N_STARTS refined variable-projection starts."""
    best: Fit | None = None
    for th0 in grid_starts(fam, t, w, f_scale, c_max=c_max):
        fit = refine(fam, t, w, th0, f_scale, max_nfev=FIT_NFEV * fam.n_params, c_max=c_max)
        if fit is not None and (best is None or fit.cost < best.cost):
            best = fit
    return best


def fit_pow3_small(t: np.ndarray, w: np.ndarray, f_scale: float, c_max: float = LIN_BOUND) -> Fit:
    """pow3 for prefixes too short for 3 free parameters: alpha fixed at 0.5, (c, A) fitted."""
    fam = FAMILIES["pow3"]
    fixed = Family("pow3", _pow, _d_pow, (0.5 - 1e-9,), (0.5 + 1e-9,), np.array([[0.5]]))
    th = grid_starts(fixed, t, w, f_scale, k=1, c_max=c_max)[0]
    if len(t) > 2:
        fit = refine(fixed, t, w, th, f_scale, c_max=c_max)
        th = fit.theta if fit is not None else th
    return Fit(fam, th, 0.5 * float(np.sum(_soft_l1(fam(t, th) - w, f_scale))), n_free=2)


def fit_robust(name: str, pre: Prefix) -> Fit:
    """Robust fit of family ``name`` to the whole prefix (short prefixes fall back to fixed-alpha pow3)."""
    fam = FAMILIES[FAMILY_ALIASES.get(name, name)]
    sigma = pre.noise()
    if len(pre.t) <= fam.n_params:
        return fit_pow3_small(pre.t, pre.w, sigma, pre.w_max)
    fit = fit_family(fam, pre.t, pre.w, sigma, pre.w_max)
    return fit if fit is not None else fit_pow3_small(pre.t, pre.w, sigma, pre.w_max)


@dataclass(frozen=True)
class Selection:
    """Which family won the hold-out comparison and every family's hold-out error."""

    name: str
    errors: dict[str, float]
    fallback: bool = False


def select_family(pre: Prefix, names: tuple[str, ...] | None = None) -> Selection:
    """Fit every family on the first 80% of the prefix; pick the lowest mean |error| on the last 20%.

    One-standard-error rule: families whose hold-out error is within one standard error of the lowest
    (the spread of the best family's absolute errors / sqrt(n)) are tied, and the tie goes to the fewest
    parameters (then the listed order). Prefixes too short for a hold-out fit of any family select
    pow3 (``fallback``).
    """
    names = names or tuple(FAMILIES)
    n = len(pre.t)
    n_val = max(1, int(round(VALIDATION_FRACTION * n)))
    n_fit = n - n_val
    sigma = pre.noise()
    abs_err: dict[str, np.ndarray] = {}
    for name in names:
        fam = FAMILIES[name]
        if n_fit <= fam.n_params:
            continue
        fit = fit_family(fam, pre.t[:n_fit], pre.w[:n_fit], sigma, pre.w_max)
        if fit is None:
            continue
        err = np.abs(fit(pre.t[n_fit:]) - pre.w[n_fit:])
        if np.all(np.isfinite(err)):
            abs_err[name] = err
    if not abs_err:
        return Selection("pow3", {}, fallback=True)
    errors = {k: float(np.mean(v)) for k, v in abs_err.items()}
    best = min(errors, key=lambda k: errors[k])
    se = float(np.std(abs_err[best], ddof=1)) / np.sqrt(n_val) if n_val > 1 else 0.0
    tied = [m for m in names if m in errors and errors[m] <= errors[best] + se]
    return Selection(min(tied, key=lambda m: FAMILIES[m].n_params), errors)


def seed_of(*arrays: np.ndarray) -> int:
    """A deterministic seed from the data, so a task's bootstrap never depends on run order."""
    h = 0
    for a in arrays:
        h = zlib.crc32(np.ascontiguousarray(a, dtype=np.float64).tobytes(), h)
    return h


def random_walk_sd(pre: Prefix, t_query: np.ndarray) -> np.ndarray:
    """``last_value``'s spread on the normalised axes: noise of the last point plus a random walk in t."""
    d, dt = np.diff(pre.w), np.maximum(np.diff(pre.t), 1e-12)
    rate, base = float(np.mean(d**2 / dt)), float(np.mean(d**2)) / 2.0
    return np.sqrt(base + rate * np.maximum(t_query - 1.0, 0.0))


def bootstrap_predictions(fit: Fit, pre: Prefix, t_query: np.ndarray, n_boot: int = 50, draws: int = 4) -> np.ndarray:
    """Residual bootstrap: refit on fitted + resampled residuals; predict and add a resampled residual.

    Returns (n_boot * draws, len(t_query)) samples of w (parameter and observation uncertainty). A fit
    with fewer than MIN_DOF residual degrees of freedom has no residuals to resample: its samples are
    the fit's forecast plus Gaussian noise of ``random_walk_sd`` (the ``last_value`` spread).
    """
    rng = np.random.default_rng(seed_of(pre.t, pre.w))
    if len(pre.t) - fit.n_fitted < MIN_DOF:
        z = rng.standard_normal((n_boot * draws, len(t_query)))
        return fit(t_query)[None, :] + z * random_walk_sd(pre, t_query)[None, :]
    fitted = fit(pre.t)
    resid = pre.w - fitted
    resid = resid - np.median(resid)
    sigma = pre.noise()
    rows = []
    for _ in range(n_boot):
        w_b = fitted + rng.choice(resid, size=len(resid), replace=True)
        if fit.n_free == 0:
            refit = refine(fit.family, pre.t, w_b, fit.theta, sigma, max_nfev=BOOT_NFEV, tol=BOOT_TOL, c_max=pre.w_max)
            theta = refit.theta if refit is not None else fit.theta
        else:
            theta = fit.theta
        pred = fit.family(t_query, theta)
        rows.append(pred[None, :] + rng.choice(resid, size=(draws, len(t_query)), replace=True))
    out = np.concatenate(rows, axis=0)
    return np.where(np.isfinite(out), out, fitted[-1])


def smoothed_quantile_samples(samples: np.ndarray, floor: float | np.ndarray, n_kernel: int = 7) -> np.ndarray:
    """Samples (n, m) -> (n * n_kernel, m) draws of their Gaussian kernel smooth (Silverman bandwidth).

    Each sample is spread over ``n_kernel`` fixed normal quantiles, so quantiles and densities built
    from the result are those of a kernel density estimate, deterministic and never degenerate.
    """
    n = samples.shape[0]
    sd = samples.std(axis=0)
    iqr = np.subtract(*np.percentile(samples, [75, 25], axis=0)) / 1.349
    spread = np.where(iqr > 0, np.minimum(sd, iqr), sd)
    h = np.maximum(0.9 * spread * n ** -0.2, floor)
    z = special.ndtri((np.arange(n_kernel) + 0.5) / n_kernel)
    return (samples[:, None, :] + z[None, :, None] * h[None, None, :]).reshape(n * n_kernel, -1)
