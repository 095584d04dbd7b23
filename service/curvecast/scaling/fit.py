"""Fit a scaling law to (N, D, loss) points of many runs, with bootstrap intervals over runs.

Intermediate checkpoints are welcome (several points with one ``run_id``): per "A Hitchhiker's Guide
to Scaling Law Estimation" they improve the fit, once each run's earliest checkpoints are dropped.
Checkpoints of one run are correlated, so the bootstrap resamples runs, not points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..domain.errors import FieldViolation, InvalidRequest
from ..blas import single_threaded_blas
from .laws import FORMS, Form, fit_form, log_pred

DEFAULT_DROP_EARLY = 0.25


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
                boot = np.exp(log_pred(form, self.boot_theta, X))
                lo, hi = np.quantile(boot, 0.025, axis=0), np.quantile(boot, 0.975, axis=0)
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
    bad: list[FieldViolation] = []
    for i, p in enumerate(points):
        for name in ("n_params", "tokens", "loss"):
            v = getattr(p, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) or v <= 0:
                bad.append(FieldViolation(f"points[{i}].{name}", "must be a positive finite number"))
        if p.flops is not None and (not np.isfinite(p.flops) or p.flops <= 0):
            bad.append(FieldViolation(f"points[{i}].flops", "must be a positive finite number when given"))
    if bootstrap < 0:
        bad.append(FieldViolation("bootstrap", "must be >= 0"))
    if not 0.0 <= drop_early_fraction < 1.0:
        bad.append(FieldViolation("drop_early_fraction", "must be in [0, 1)"))
    if bad:
        raise InvalidRequest(bad)


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
) -> ScalingFit:
    """Fit ``form`` to the points; invalid input raises InvalidRequest naming the field."""
    with single_threaded_blas(), np.errstate(all="ignore"):
        return _fit(points, form, bootstrap, seed, drop_early_fraction)


def _fit(points, form, bootstrap, seed, drop_early_fraction) -> ScalingFit:
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
    theta, _ = fit_form(law, X, ly)
    resid = log_pred(law, theta[None], X)[0] - ly
    run_keys = sorted(set(keys))
    key_idx = np.array([run_keys.index(k) for k in keys])
    boots = []
    if bootstrap > 0 and len(run_keys) >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap):
            pick = rng.integers(0, len(run_keys), len(run_keys))
            w = np.bincount(pick, minlength=len(run_keys)).astype(np.float64)[key_idx]
            if np.count_nonzero(w) < n_par:
                continue
            tb, _ = fit_form(law, X, ly, w=w, n_starts=0, extra_starts=[theta])
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
