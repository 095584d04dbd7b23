"""Fit a scaling law to (N, D, loss) points of many runs, with bootstrap intervals over runs.

Intermediate checkpoints are welcome (several points with one ``run_id``): per "A Hitchhiker's Guide
to Scaling Law Estimation" they improve the fit, once each run's earliest checkpoints are dropped.
Checkpoints of one run are correlated, so the bootstrap resamples runs, not points.

Time and memory are linear in the points (see laws.py; bench/scaling_speed.py measures them). A long
fit can be stopped from another thread through a ``CancelToken``: it is checked before every objective
evaluation, so a fit stops within one pass over its points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..domain.errors import FieldViolation, InvalidRequest
from ..blas import single_threaded_blas
from .cancel import CancelToken
from .laws import FORMS, Design, FitStats, Form, fit_form, log_pred
from .limits import MAX_LISTED

DEFAULT_DROP_EARLY = 0.25
_PREDICT_CELLS = 1 << 21  # replicates x points per prediction chunk: bounded memory for any request


@dataclass(frozen=True)
class ScalingPoint:
    n_params: float
    tokens: float
    loss: float
    run_id: str = ""
    flops: float | None = None


@dataclass(frozen=True)
class ScalingFit:
    """A fitted law. ``params`` in natural units; ``intervals`` are 95% bootstrap intervals over runs.

    chinchilla: L = E + A/N^alpha + B/D^beta
    gadre:      L = E + (a*M^eta + b*M^-eta) * C^-eta with M = D/N, C = 6ND (same as chinchilla with
                alpha = beta = 2*eta; A and B are reported too)
    kaplan:     L = E + (C_c/C)^alpha_C, C the training FLOPs (6ND unless given)
    ``residual_rmse`` is the RMSE of log L_hat - log L on the fitted points (about a relative error).
    """

    form: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    residual_rmse: float
    n_points: int
    n_runs: int
    warnings: tuple[str, ...]
    theta: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    boot_theta: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros((0, 0)))

    def _X(self, n_params, tokens) -> np.ndarray:
        n = np.atleast_1d(np.asarray(n_params, dtype=np.float64))
        d = np.atleast_1d(np.asarray(tokens, dtype=np.float64))
        n, d = np.broadcast_arrays(n, d)
        if FORMS[self.form].needs == "C":
            return np.log(6.0 * n * d)[:, None]
        return np.column_stack([np.log(n), np.log(d)])

    def predict(self, n_params, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Loss at (N, D): point estimate and 95% bootstrap band (for kaplan, C = 6ND)."""
        X = self._X(n_params, tokens)
        form = FORMS[self.form]
        with np.errstate(all="ignore"):
            mean = np.exp(log_pred(form, self.theta[None], X)[0])
            if len(self.boot_theta):
                lo, hi = np.empty_like(mean), np.empty_like(mean)
                step = max(1, _PREDICT_CELLS // len(self.boot_theta))
                for i in range(0, len(X), step):
                    boot = np.exp(log_pred(form, self.boot_theta, X[i : i + step]))
                    lo[i : i + step], hi[i : i + step] = np.quantile(boot, [0.025, 0.975], axis=0)
            else:
                lo, hi = mean.copy(), mean.copy()
        return mean, np.minimum(lo, mean), np.maximum(hi, mean)

    def compute_optimal(self, flops: float) -> tuple[float, float, float]:
        """N_opt, D_opt and the loss there for a budget C = 6ND (Hoffmann et al., Approach 3 closed form)."""
        if self.form == "kaplan":
            raise InvalidRequest.single("form", "the kaplan L(C) law has no N/D split; fit chinchilla or gadre")
        if not (np.isfinite(flops) and flops > 0):
            raise InvalidRequest.single("flops", "must be a positive finite number")
        p = self.params
        A, B, al, be = p["A"], p["B"], p["alpha"], p["beta"]
        if al <= 0 or be <= 0:
            raise InvalidRequest.single("form", "fitted exponents are zero: no compute-optimal split exists")
        G = (al * A / (be * B)) ** (1.0 / (al + be))
        n_opt = G * (flops / 6.0) ** (be / (al + be))
        d_opt = (flops / 6.0) ** (al / (al + be)) / G
        loss = p["E"] + A / n_opt**al + B / d_opt**be
        return float(n_opt), float(d_opt), float(loss)


def _validate(points: Sequence[ScalingPoint], form: str, bootstrap: int, drop_early_fraction: float) -> None:
    if form not in FORMS:
        raise InvalidRequest.single("form", f"unknown form {form!r}; expected one of {sorted(FORMS)}")
    found: list[tuple[int, int, FieldViolation]] = []  # (point, field order, violation)
    n_bad = 0
    for order, (name, why) in enumerate((("n_params", "must be a positive finite number"),
                                         ("tokens", "must be a positive finite number"),
                                         ("loss", "must be a positive finite number"),
                                         ("flops", "must be a positive finite number when given"))):
        idx = _bad_indices(points, name, optional=name == "flops")
        n_bad += len(idx)
        found.extend((int(i), order, FieldViolation(f"points[{i}].{name}", why)) for i in idx[:MAX_LISTED])
    bad = [v for _, _, v in sorted(found, key=lambda t: t[:2])][:MAX_LISTED]
    if n_bad > len(bad):
        bad.append(FieldViolation("points", f"{n_bad - len(bad)} more bad values not listed"))
    if bootstrap < 0:
        bad.append(FieldViolation("bootstrap", "must be >= 0"))
    if not 0.0 <= drop_early_fraction < 1.0:
        bad.append(FieldViolation("drop_early_fraction", "must be in [0, 1)"))
    if bad:
        raise InvalidRequest(bad)


def _bad_indices(points: Sequence[ScalingPoint], name: str, optional: bool = False) -> np.ndarray:
    """Indices of points whose ``name`` is not a positive finite number (None allowed when
    ``optional``), in one vectorised pass: a 100,000-point request is checked in milliseconds."""
    raw = [getattr(p, name) for p in points]
    v = np.array([float(x) if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)
                  else (1.0 if optional and x is None else np.nan) for x in raw], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(~(np.isfinite(v) & (v > 0)))


def _select(points: Sequence[ScalingPoint], drop_early_fraction: float) -> tuple[list[int], list[str]]:
    """Indices kept after dropping each run's earliest checkpoints, and each kept point's run key."""
    runs: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        runs.setdefault(p.run_id if p.run_id else f"#point{i}", []).append(i)
    keep, keys = [], []
    for key, idx in runs.items():
        if len(idx) > 1 and drop_early_fraction > 0:
            final = max(points[i].tokens for i in idx)
            idx = [i for i in idx if points[i].tokens >= drop_early_fraction * final]
        keep.extend(idx)
        keys.extend([key] * len(idx))
    return keep, keys


def _natural(form: Form, theta: np.ndarray) -> dict[str, float]:
    t = dict(zip(form.param_names, map(float, theta)))
    if form.name == "chinchilla":
        return {"E": np.exp(t["e"]), "A": np.exp(t["a"]), "B": np.exp(t["b"]), "alpha": t["alpha"], "beta": t["beta"]}
    if form.name == "gadre":
        eta = t["k"] / 2.0
        A, B = np.exp(t["a"]), np.exp(t["b"])
        # L = E + A N^-2eta + B D^-2eta = E + (a M^eta + b M^-eta) C^-eta with C = 6ND, M = D/N
        return {"E": np.exp(t["e"]), "A": A, "B": B, "alpha": t["k"], "beta": t["k"], "eta": eta, "a": A * 6.0**eta, "b": B * 6.0**eta}
    alpha = t["alpha"]
    A = np.exp(t["a"])
    cc = A ** (1.0 / alpha) if alpha > 1e-9 else float("inf")
    return {"E": np.exp(t["e"]), "A": A, "alpha_C": alpha, "C_c": float(min(cc, 1e308))}


def fit_scaling_law(
    points: Sequence[ScalingPoint],
    form: str = "chinchilla",
    bootstrap: int = 200,
    seed: int = 0,
    drop_early_fraction: float = DEFAULT_DROP_EARLY,
    *,
    cancel: CancelToken | None = None,
    stats: FitStats | None = None,
) -> ScalingFit:
    """Fit ``form`` to the points; invalid input raises InvalidRequest naming the field.

    ``cancel`` stops the fit (``Cancelled`` or ``DeadlineExceeded`` is raised) before its next objective
    evaluation; ``stats`` counts the work done (for admission control's cost estimates)."""
    stats = stats if stats is not None else FitStats()
    with single_threaded_blas(), np.errstate(all="ignore"):
        return _fit(points, form, bootstrap, seed, drop_early_fraction, cancel.check if cancel else None, stats)


def _fit(points, form, bootstrap, seed, drop_early_fraction, check, stats: FitStats) -> ScalingFit:
    _validate(points, form, bootstrap, drop_early_fraction)
    law = FORMS[form]
    keep, keys = _select(points, drop_early_fraction)
    n_par = len(law.param_names)
    if len(keep) < n_par:
        raise InvalidRequest.single(
            "points", f"the {form} law has {n_par} parameters but only {len(keep)} usable points remain"
        )
    P = [points[i] for i in keep]
    N = np.array([p.n_params for p in P], dtype=np.float64)
    D = np.array([p.tokens for p in P], dtype=np.float64)
    y = np.array([p.loss for p in P], dtype=np.float64)
    if law.needs == "C":
        C = np.array([p.flops if p.flops is not None else 6.0 * p.n_params * p.tokens for p in P])
        X = np.log(C)[:, None]
    else:
        X = np.column_stack([np.log(N), np.log(D)])
    ly = np.log(y)
    warnings: list[str] = []
    design = Design.build(law, X, ly)  # shared by the full fit and every replicate
    theta, _ = fit_form(law, X, ly, design=design, check=check, stats=stats)
    stats.main_evaluations = stats.evaluations
    resid = log_pred(law, theta[None], X)[0] - ly
    run_keys = sorted(set(keys))
    position = {k: i for i, k in enumerate(run_keys)}  # (list.index here was quadratic in the points)
    key_idx = np.array([position[k] for k in keys], dtype=np.int64)
    boots = []
    if bootstrap > 0 and len(run_keys) >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap):
            if check is not None:
                check()
            pick = rng.integers(0, len(run_keys), len(run_keys))
            w = np.bincount(pick, minlength=len(run_keys)).astype(np.float64)[key_idx]
            if np.count_nonzero(w) < n_par:
                continue
            tb, _ = fit_form(law, X, ly, w=w, n_starts=0, extra_starts=[theta], design=design, check=check,
                             stats=stats)
            stats.replicates += 1
            boots.append(tb)
        if len(boots) < bootstrap:
            warnings.append(f"{bootstrap - len(boots)} of {bootstrap} bootstrap replicates had too few runs and were skipped")
    boot_theta = np.array(boots) if boots else np.zeros((0, n_par))
    params = _natural(law, theta)
    intervals: dict[str, tuple[float, float]] = {}
    if len(boot_theta):
        nat = [_natural(law, b) for b in boot_theta]
        for k in params:
            vals = np.array([d[k] for d in nat])
            vals = vals[np.isfinite(vals)]
            if len(vals):
                intervals[k] = (float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975)))
    else:
        warnings.append("no bootstrap intervals (bootstrap=0 or fewer than two runs)")
    if law.needs == "ND":
        if len(np.unique(np.round(np.log(N), 3))) < 3:
            warnings.append("fewer than 3 distinct model sizes: the N exponent is poorly identified")
        at_bound = [nm for nm, v, lo, hi in zip(law.param_names, theta, law.lo, law.hi) if nm in ("alpha", "beta", "k") and (v <= lo + 1e-6 or v >= hi - 1e-6)]
        if at_bound:
            warnings.append(f"exponent(s) {', '.join(at_bound)} at their bound: the law does not fit these points well")
    return ScalingFit(
        form=form,
        params={k: float(v) for k, v in params.items()},
        intervals=intervals,
        residual_rmse=float(np.sqrt(np.mean(resid**2))),
        n_points=len(P),
        n_runs=len(run_keys),
        warnings=tuple(warnings),
        theta=theta,
        boot_theta=boot_theta,
    )
