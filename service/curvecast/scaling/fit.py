"""Fit a scaling law to (N, D, loss) points of many runs, with bootstrap intervals over runs.

Intermediate checkpoints are welcome (several points with one ``run_id``): per "A Hitchhiker's Guide
to Scaling Law Estimation" they improve the fit, once each run's earliest checkpoints are dropped
(``drop_early_fraction``, default 0.5: the benchmark's choice). Checkpoints of one run are correlated, so
the bootstrap resamples runs, not points. Points carry optional weights (0 leaves a point out); what was
left out, and why, is counted in ``dropped``. ``huber_delta`` fixes the estimator; ``isoflop`` adds
Approach 2 (isoflop.py); the kaplan L(C) law answers the loss at compute budgets (``loss_at_compute``).

Parameter intervals are that bootstrap (sampling error only). Predictions also get a predictive interval
that adds model error measured by refitting without the largest sizes and predicting them
(calibrate.py), because a bootstrap band covers larger held-out models far less often than 95%
(docs/bench/scaling_heldout.md). The same folds choose the estimator (Approach 3's Huber, or least
squares on log loss where that predicts the held-out sizes clearly better). Failure modes that used to
pass silently (parameters at bounds, dead terms, outliers, degenerate intervals, dropped checkpoints)
are reported in ``warnings``.

Time and memory are linear in the points (see laws.py; bench/scaling_speed.py measures them). A long
fit can be stopped from another thread through a ``CancelToken``: it is checked before every objective
evaluation, so a fit stops within one pass over its points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..domain.errors import FieldViolation, InvalidRequest
from ..blas import single_threaded_blas
from .calibrate import Calibration, calibrate, size_keys
from .cancel import CancelToken
from .laws import BOOTSTRAP_LBFGS, FORMS, HUBER_DELTA, Design, FitStats, Form, fit_form, log_pred
from .limits import MAX_LISTED

if TYPE_CHECKING:
    from .isoflop import IsoFlopFit

# Checkpoints before this fraction of each run's final tokens are dropped: on Gemstones' ~2B held-out
# models (the data with checkpoints) 0.5 beats 0, 0.1 and 0.25 on both data sets, for Curvecast and both
# baselines (ARE 0.70/0.73% vs 0.76/0.79% at 0.25: docs/bench/scaling_heldout.md).
DEFAULT_DROP_EARLY = 0.5
OUTLIER_Z = 5.0  # robust z (MAD-scaled log residual) above which a point is named as an outlier
MAX_OUTLIERS_NAMED = 5
MIN_RUNS_FOR_BOOTSTRAP = 5  # fewer runs: a bootstrap over runs gives degenerate (near zero-width) intervals
DEAD_TERM_SHARE = 1e-3  # a term below this share of the loss at every point is not identified
# Estimators tried, chosen by their leave-largest-out error (calibrate.py): Approach 3's Huber on log loss,
# then least squares on log loss (better where the law is misspecified: docs/bench/scaling_heldout.md).
HUBER_DELTAS = (HUBER_DELTA, 1.0)
# ... each as (Huber delta, size-weight power p: point weights times (N / N_max)^p, for L(C) (C / C_max)^p):
# least squares leaning ever more on the larger sizes, nearer the extrapolation target. On Porian's 15
# settings (two largest sizes held out) choosing among these by the folds gives 4.12% ARE, vs 6.17% with
# (1e-3, 0) and (1, 0) only and 5.36% with p <= 0.5 (docs/bench/scaling_heldout.md).
ESTIMATORS = ((HUBER_DELTA, 0.0), (1.0, 0.0), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (1.0, 4.0))
MIN_FOLDS_TO_CHOOSE = 2
# ... and only where the law measurably misfits (calibration kappa above this): where it fits (synthetic
# Chinchilla data, Porian's chinchilla-convention settings, Gemstones: kappa <= 0.025) Huber's robustness
# wins; on Porian's kaplan-convention settings (kappa 0.11-0.37) least squares predicts the held-out sizes
# 4-26% better.
MISSPEC_KAPPA = 0.05
_PREDICT_CELLS = 1 << 21  # replicates x points per prediction chunk: bounded memory for any request


@dataclass(frozen=True)
class ScalingPoint:
    n_params: float
    tokens: float
    loss: float
    run_id: str = ""
    flops: float | None = None
    weight: float = 1.0  # relative weight in the objective and the bootstrap; 0 leaves the point out


@dataclass(frozen=True)
class ScalingInput:
    """One decoded request: what to fit, how, and what to answer (``at``: (k, 2) N, D queries; ``budgets``:
    FLOPs; ``notes``: warnings decoding produced, e.g. a lowered default bootstrap)."""

    points: Sequence[ScalingPoint]
    form: str = "chinchilla"
    bootstrap: int = 200
    drop_early_fraction: float = DEFAULT_DROP_EARLY
    huber_delta: float | None = None
    isoflop: bool = False
    at: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    budgets: np.ndarray = field(default_factory=lambda: np.zeros(0))
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScalingFit:
    """A fitted law. ``params`` in natural units; ``intervals`` are 95% bootstrap intervals over runs.

    chinchilla: L = E + A/N^alpha + B/D^beta
    gadre:      L = E + (a*M^eta + b*M^-eta) * C^-eta with M = D/N, C = 6ND (same as chinchilla with
                alpha = beta = 2*eta; A and B are reported too)
    kaplan:     L = E + (C_c/C)^alpha_C, C the training FLOPs (6ND unless given)
    ``residual_rmse`` is the RMSE of log L_hat - log L on the fitted points (about a relative error).
    ``intervals`` are bootstrap intervals over runs; ``predictive`` gives intervals for new points.
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
    calibration: Calibration | None = field(repr=False, compare=False, default=None)
    drop_early_fraction: float = 0.0
    n_dropped: int = 0  # points left out (n_points counts those kept); ``dropped`` says why
    huber_delta: float = HUBER_DELTA  # the estimator chosen (Huber threshold on log residuals)
    dropped: dict[str, int] = field(default_factory=dict)  # reason ("early_checkpoint", "zero_weight") -> count
    isoflop: "IsoFlopFit | None" = field(repr=False, compare=False, default=None)

    def _X(self, n_params, tokens) -> np.ndarray:
        n = np.atleast_1d(np.asarray(n_params, dtype=np.float64))
        d = np.atleast_1d(np.asarray(tokens, dtype=np.float64))
        n, d = np.broadcast_arrays(n, d)
        if FORMS[self.form].needs == "C":
            return np.log(6.0 * n * d)[:, None]
        return np.column_stack([np.log(n), np.log(d)])

    def predict(self, n_params, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Loss at (N, D): point estimate and 95% bootstrap band over runs (for kaplan, C = 6ND).

        Sampling error only: the band is widened to contain the point estimate when the replicates all
        fall on one side of it (``band_warnings`` says where); use ``predictive`` for extrapolation."""
        return self._widened(self._X(n_params, tokens))

    def _widened(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean, lo, hi = self._band_X(X)
        return mean, np.minimum(lo, mean), np.maximum(hi, mean)

    def predictive(self, n_params, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Loss at (N, D) with a 95% predictive interval: the bootstrap band combined (in log loss, in
        quadrature, each side) with the model error measured by leave-largest-out (calibrate.py), which
        grows with the distance beyond the fitted data."""
        return self._predictive_X(self._X(n_params, tokens))

    def loss_at_compute(self, flops) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """kaplan L(C) at training budgets C (FLOPs): loss, 95% bootstrap band, 95% predictive interval."""
        if FORMS[self.form].needs != "C":
            raise InvalidRequest.single("form", "loss_at_compute needs the kaplan L(C) law; use compute_optimal")
        X = np.log(np.atleast_1d(np.asarray(flops, dtype=np.float64)))[:, None]
        mean, lo, hi = self._widened(X)
        _, plo, phi = self._predictive_X(X)
        return mean, lo, hi, plo, phi

    def _predictive_X(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean, lo, hi = self._widened(X)
        if self.calibration is None:
            return mean, lo, hi
        m = self.calibration.half_width(X)
        with np.errstate(all="ignore"):
            lm = np.log(mean)
            dlo = np.nan_to_num(lm - np.log(lo), nan=0.0, posinf=0.0)
            dhi = np.nan_to_num(np.log(hi) - lm, nan=0.0, posinf=0.0)
            return mean, np.exp(lm - np.hypot(dlo, m)), np.exp(lm + np.hypot(dhi, m))

    def band_warnings(self, n_params, tokens) -> list[str]:
        """One warning per query whose point estimate lies outside its raw bootstrap band."""
        mean, lo, hi = self._boot_band(n_params, tokens)
        n = np.broadcast_to(np.atleast_1d(n_params), mean.shape)
        d = np.broadcast_to(np.atleast_1d(tokens), mean.shape)
        bad = np.flatnonzero((mean < lo) | (mean > hi))
        return [f"prediction at N={n[i]:.3g}, D={d[i]:.3g}: the point estimate {mean[i]:.4g} lies outside its "
                f"bootstrap band [{lo[i]:.4g}, {hi[i]:.4g}] (the fit is unstable there); the reported "
                "lower95/upper95 were widened to contain it" for i in bad[:MAX_OUTLIERS_NAMED]]

    def _boot_band(self, n_params, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._band_X(self._X(n_params, tokens))

    def _band_X(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        return mean, lo, hi

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

    def compute_optimal_interval(self, flops: float) -> dict[str, tuple[float, float]]:
        """95% intervals of N_opt, D_opt and the loss there: for N and D the bootstrap spread combined
        (log scale, in quadrature) with the spread of the leave-largest-out fold fits' optima (how much
        the split moves when the largest sizes are unseen); for the loss, the predictive interval."""
        n_opt, d_opt, _ = self.compute_optimal(flops)
        ln, ld = np.log(n_opt), np.log(d_opt)
        out: dict[str, tuple[float, float]] = {}
        bn, bd = _log_optimum(self.form, self.boot_theta, flops)
        folds = self.calibration.fold_theta if self.calibration is not None else np.zeros((0, 0))
        fn, fd = _log_optimum(self.form, folds, flops)
        for key, centre, boot, fold in (("n_params", ln, bn, fn), ("tokens", ld, bd, fd)):
            lo_b, hi_b = (np.quantile(boot, [0.025, 0.975]) if len(boot) else (centre, centre))
            m = float(np.max(np.abs(fold - centre))) if len(fold) else 0.0
            out[key] = (float(np.exp(centre - np.hypot(max(centre - lo_b, 0.0), m))),
                        float(np.exp(centre + np.hypot(max(hi_b - centre, 0.0), m))))
        _, plo, phi = self.predictive(n_opt, d_opt)
        out["loss"] = (float(plo[0]), float(phi[0]))
        return out


def _log_optimum(form: str, theta: np.ndarray, flops: float) -> tuple[np.ndarray, np.ndarray]:
    """log N_opt, log D_opt of parameter rows theta (S, P) at budget C = 6ND (rows without one dropped)."""
    if len(theta) == 0 or theta.ndim != 2 or theta.shape[1] < 4:
        return np.zeros(0), np.zeros(0)
    a, b = theta[:, 0], theta[:, 1]
    al = theta[:, 3]
    be = theta[:, 4] if form == "chinchilla" else theta[:, 3]
    with np.errstate(all="ignore"):
        lg = (np.log(al) + a - np.log(be) - b) / (al + be)
        lc = np.log(flops / 6.0)
        ln, ld = lg + be / (al + be) * lc, al / (al + be) * lc - lg
    ok = np.isfinite(ln) & np.isfinite(ld) & (al > 0) & (be > 0)
    return ln[ok], ld[ok]


def _validate(points: Sequence[ScalingPoint], form: str, bootstrap: int, drop_early_fraction: float,
              huber_delta: float | None = None) -> None:
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
    w = _weights(points)
    bad_w = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
    n_bad += len(bad_w)
    found.extend((int(i), 4, FieldViolation(f"points[{i}].weight", "must be a finite number >= 0"))
                 for i in bad_w[:MAX_LISTED])
    bad = [v for _, _, v in sorted(found, key=lambda t: t[:2])][:MAX_LISTED]
    if n_bad > len(bad):
        bad.append(FieldViolation("points", f"{n_bad - len(bad)} more bad values not listed"))
    if bootstrap < 0:
        bad.append(FieldViolation("bootstrap", "must be >= 0"))
    if not 0.0 <= drop_early_fraction < 1.0:
        bad.append(FieldViolation("drop_early_fraction", "must be in [0, 1)"))
    if huber_delta is not None and not (np.isfinite(huber_delta) and huber_delta > 0):
        bad.append(FieldViolation("huber_delta", f"must be a finite number > 0 (log-loss units), got {huber_delta}"))
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


def _weights(points: Sequence[ScalingPoint]) -> np.ndarray:
    raw = [getattr(p, "weight", 1.0) for p in points]
    return np.array([float(x) if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)
                     else np.nan for x in raw], dtype=np.float64)


def _select(points: Sequence[ScalingPoint], drop_early_fraction: float
            ) -> tuple[list[int], list[str], dict[str, int]]:
    """Indices kept after dropping zero-weight points and each run's earliest checkpoints (a run's final
    tokens count all its points), each kept point's run key, and the counts dropped by reason."""
    runs: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        runs.setdefault(p.run_id if p.run_id else f"#point{i}", []).append(i)
    keep, keys = [], []
    early = zero = 0
    for key, idx in runs.items():
        if len(idx) > 1 and drop_early_fraction > 0:
            final = max(points[i].tokens for i in idx)
            kept = [i for i in idx if points[i].tokens >= drop_early_fraction * final]
            early += len(idx) - len(kept)
            idx = kept
        kept = [i for i in idx if points[i].weight > 0]
        zero += len(idx) - len(kept)
        keep.extend(kept)
        keys.extend([key] * len(kept))
    dropped = {k: v for k, v in (("early_checkpoint", early), ("zero_weight", zero)) if v}
    return keep, keys, dropped


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
    huber_delta: float | None = None,
    isoflop: bool = False,
    cancel: CancelToken | None = None,
    stats: FitStats | None = None,
) -> ScalingFit:
    """Fit ``form`` to the points; invalid input raises InvalidRequest naming the field.

    ``huber_delta`` fixes the estimator (None: chosen by leave-largest-out, see HUBER_DELTAS); ``isoflop``
    also fits Approach 2 (isoflop.py) on the same selected points. ``cancel`` stops the fit (``Cancelled``
    or ``DeadlineExceeded`` is raised) before its next objective evaluation; ``stats`` counts the work done
    (for admission control's cost estimates)."""
    stats = stats if stats is not None else FitStats()
    with single_threaded_blas(), np.errstate(all="ignore"):
        return _fit(points, form, bootstrap, seed, drop_early_fraction, cancel.check if cancel else None, stats,
                    huber_delta, isoflop)


def _fit(points, form, bootstrap, seed, drop_early_fraction, check, stats: FitStats,
         huber_delta: float | None = None, isoflop: bool = False) -> ScalingFit:
    _validate(points, form, bootstrap, drop_early_fraction, huber_delta)
    law = FORMS[form]
    keep, keys, dropped = _select(points, drop_early_fraction)
    n_par = len(law.param_names)
    if len(keep) < n_par:
        raise InvalidRequest.single(
            "points", f"the {form} law has {n_par} parameters but only {len(keep)} usable points remain"
        )
    P = [points[i] for i in keep]
    N = np.array([p.n_params for p in P], dtype=np.float64)
    D = np.array([p.tokens for p in P], dtype=np.float64)
    y = np.array([p.loss for p in P], dtype=np.float64)
    pw = np.array([p.weight for p in P], dtype=np.float64)  # point weights (all > 0 after _select)
    if law.needs == "C":
        C = np.array([p.flops if p.flops is not None else 6.0 * p.n_params * p.tokens for p in P])
        X = np.log(C)[:, None]
    else:
        X = np.column_stack([np.log(N), np.log(D)])
    ly = np.log(y)
    warnings: list[str] = []
    design = Design.build(law, X, ly)  # shared by the full fit and every replicate
    delta = HUBER_DELTA if huber_delta is None else float(huber_delta)
    theta, _ = fit_form(law, X, ly, w=pw, design=design, check=check, stats=stats, delta=delta)
    resid = log_pred(law, theta[None], X)[0] - ly
    cal = calibrate(law, X, ly, theta, resid, check, stats, delta, w=pw)
    size_power, base_mae, pw_fit = 0.0, cal.heldout_mae, pw
    choose = huber_delta is None and cal.folds >= MIN_FOLDS_TO_CHOOSE and cal.kappa > MISSPEC_KAPPA
    for alt, power in ESTIMATORS[1:] if choose else ():  # keep Approach 3 unless another estimator predicts
        wa = pw * np.exp(power * (X[:, 0] - X[:, 0].max()))  # the held-out largest sizes better
        th2, _ = fit_form(law, X, ly, w=wa, design=design, check=check, stats=stats, delta=alt, extra_starts=[theta])
        r2 = log_pred(law, th2[None], X)[0] - ly
        cal2 = calibrate(law, X, ly, th2, r2, check, stats, alt, w=wa)
        if cal2.heldout_mae < cal.heldout_mae:
            theta, resid, cal, delta, size_power, pw_fit = th2, r2, cal2, alt, power, wa
    if size_power or delta != (HUBER_DELTA if huber_delta is None else huber_delta):
        how = f"Huber delta {delta:g} on log loss (least squares)" + (
            f", points weighted by (size / largest)^{size_power:g}" if size_power else "")
        warnings.append(f"estimator: {how} instead of Approach 3's {HUBER_DELTA:g}: its error predicting the held-out "
                        f"largest sizes was {100 * cal.heldout_mae:.2f}% vs {100 * base_mae:.2f}% (the law is "
                        "misspecified here)")
        pw = pw_fit
    stats.main_evaluations = stats.evaluations  # the fit, its calibration folds and the estimator choice
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
            w = np.bincount(pick, minlength=len(run_keys)).astype(np.float64)[key_idx] * pw
            if np.count_nonzero(w) < n_par:
                continue
            tb, _ = fit_form(law, X, ly, w=w, n_starts=0, extra_starts=[theta], design=design, check=check,
                             stats=stats, delta=delta, lbfgs=BOOTSTRAP_LBFGS)
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
    if len(run_keys) < MIN_RUNS_FOR_BOOTSTRAP and len(boot_theta):
        warnings.append(f"only {len(run_keys)} runs: a bootstrap over so few runs understates the uncertainty "
                        "(intervals near zero width); rely on the predictive intervals")
    warnings.extend(_interval_warnings(params, intervals))
    n_sizes = len(np.unique(size_keys(X)))
    if n_sizes < 3:
        what = "compute budgets" if law.needs == "C" else "model sizes"
        warnings.append(f"only {n_sizes} distinct {what}: the size exponent is poorly identified")
    warnings.extend(_bound_warnings(law, theta))
    warnings.extend(_dead_term_warnings(law, theta, X))
    warnings.extend(_outlier_warnings(law, theta, X, ly, resid, keep, P, params,
                                      design, check, stats, delta, pw))
    if cal.folds == 0:
        warnings.append(f"only {n_sizes} distinct sizes: too few to measure out-of-sample error by holding out the "
                        f"largest (needs at least 4); predictive intervals hold in-sample noise only and "
                        "understate extrapolation error")
    n_dropped = len(points) - len(keep)
    if dropped.get("early_checkpoint"):
        warnings.append(f"dropped {dropped['early_checkpoint']} of {len(points)} checkpoints below "
                        f"{drop_early_fraction:g} of their run's final tokens (drop_early_fraction)")
    if dropped.get("zero_weight"):
        warnings.append(f"left out {dropped['zero_weight']} point(s) with weight 0")
    iso = None
    if isoflop:
        from .isoflop import fit_isoflop

        iso = fit_isoflop(P, keys)
        warnings.extend(iso.warnings)
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
        calibration=cal,
        drop_early_fraction=float(drop_early_fraction),
        n_dropped=n_dropped,
        huber_delta=delta,
        dropped=dropped,
        isoflop=iso,
    )


_NATURAL_OF = {"a": "A", "b": "B", "e": "E", "alpha": "alpha", "beta": "beta", "k": "alpha=beta"}


def _interval_warnings(params: dict[str, float], intervals: dict[str, tuple[float, float]]) -> list[str]:
    """Zero-width intervals and point estimates outside their own bootstrap interval."""
    out = []
    zero = [k for k, (lo, hi) in intervals.items() if hi - lo <= 1e-9 * max(abs(params[k]), 1e-300)]
    if zero:
        out.append(f"zero-width bootstrap interval for {', '.join(zero)}: every replicate gave the same value "
                   "(too few runs, or a parameter at its bound); the interval says nothing")
    outside = [k for k, (lo, hi) in intervals.items() if k not in zero and not lo <= params[k] <= hi]
    if outside:
        out.append(f"point estimate outside its own 95% bootstrap interval for {', '.join(outside)}: the fit is "
                   "unstable under resampling of runs")
    return out


def _bound_warnings(law: Form, theta: np.ndarray) -> list[str]:
    """Every parameter at a bound of the search box (log-scale E, A, B at -20/-60 means ~0)."""
    out = []
    for nm, v, lo, hi in zip(law.param_names, theta, law.lo, law.hi):
        tol = 1e-6 * (hi - lo)
        if v <= lo + tol or v >= hi - tol:
            side = "lower" if v <= lo + tol else "upper"
            name = _NATURAL_OF.get(nm, nm)
            shown = np.exp(v) if nm in ("a", "b", "e") else v
            out.append(f"{name} at its {side} bound ({shown:.3g}): the law does not fit these points well or "
                       f"{name} is not identified by them")
    return out


def _dead_term_warnings(law: Form, theta: np.ndarray, X: np.ndarray) -> list[str]:
    """A term that is a negligible share of the loss at every point leaves its exponent free: L-BFGS-B
    then stops at (or near) the start value, e.g. alpha = 2.0 or 1.5, and reports it as if fitted."""
    t, _ = law.terms(theta[None], X, grad=False)  # (1, n, T)
    share = np.exp(t[0] - _lse_last(t[0])[:, None])  # (n, T)
    out = []
    labels = {"chinchilla": (("A/N^alpha", "alpha", 3), ("B/D^beta", "beta", 4)),
              "gadre": (("A/N^alpha", "alpha", 3), ("B/D^beta", "beta", 3)),
              "kaplan": (("(C_c/C)^alpha_C", "alpha_C", 2),)}[law.name]
    for j, (term, exp_name, idx) in enumerate(labels):
        top = float(share[:, j].max())
        if abs(float(theta[idx])) < 1e-6:
            out.append(f"{exp_name} = 0: the {term} term is a constant, not separately identified from E "
                       f"(nor its exponent)")
        elif top < DEAD_TERM_SHARE:
            v = float(theta[idx])
            start = any(abs(v - g) < 1e-6 for g in law.grid[idx])
            why = f"{exp_name} = {v:.4g} is a grid start value" if start else f"{exp_name} = {v:.4g}"
            out.append(f"the {term} term is at most {100 * top:.2g}% of the loss at every point: {why} and is not "
                       f"identified by these points (nor is its coefficient)")
    return out


def _lse_last(t: np.ndarray) -> np.ndarray:
    m = t.max(axis=-1)
    return m + np.log(np.exp(t - m[..., None]).sum(axis=-1))


def _outlier_warnings(law: Form, theta: np.ndarray, X: np.ndarray, ly: np.ndarray, resid: np.ndarray,
                      index: list[int], P: list[ScalingPoint], params: dict[str, float], design: Design,
                      check, stats: FitStats, delta: float = HUBER_DELTA,
                      pw: np.ndarray | None = None) -> list[str]:
    """Points whose log residual is over ``OUTLIER_Z`` robust standard deviations, named, with how much
    the parameters move when they are left out (a refit from the fitted optimum)."""
    med = float(np.median(resid))
    scale = 1.4826 * float(np.median(np.abs(resid - med)))
    if not scale > 0:
        return []
    z = (resid - med) / scale
    bad = np.flatnonzero(np.abs(z) > OUTLIER_Z)
    if len(bad) == 0 or len(ly) - len(bad) < len(law.param_names):
        return []
    w = np.ones_like(ly) if pw is None else pw.copy()
    w[bad] = 0.0
    tb, _ = fit_form(law, X, ly, w=w, n_starts=4, extra_starts=[theta], design=design, check=check, stats=stats,
                     delta=delta)
    without = _natural(law, tb)
    moves = {k: without[k] / params[k] for k in params if params[k] > 0 and without[k] > 0}
    k_max = max(moves, key=lambda k: abs(np.log(moves[k]))) if moves else None
    order = bad[np.argsort(-np.abs(z[bad]))]
    named = ", ".join(f"points[{index[i]}]" + (f" (run {P[i].run_id})" if P[i].run_id else "")
                      + f" N={P[i].n_params:.3g} D={P[i].tokens:.3g} z={z[i]:+.1f}" for i in order[:MAX_OUTLIERS_NAMED])
    more = f" and {len(bad) - MAX_OUTLIERS_NAMED} more" if len(bad) > MAX_OUTLIERS_NAMED else ""
    move = (f"; without them {k_max} changes {moves[k_max]:.3g}-fold ({params[k_max]:.4g} -> {without[k_max]:.4g})"
            if k_max is not None else "")
    return [f"{len(bad)} outlying point(s) (|log residual| > {OUTLIER_Z:g} robust SD): {named}{more}{move}"]
