"""Predictive intervals that hold out of sample: model error measured inside the data.

A bootstrap over runs measures sampling error only; a law that is slightly wrong (the usual case: see
Besiroglu et al. and the Hitchhiker's Guide) extrapolates with an error the bootstrap cannot see, so its
band covers larger models far less often than 95%. Here the fit is repeated with the largest 1, 2, 3
model sizes held out (leave-largest-out), and each held-out point's log error is divided by how far it
lies beyond the fold's training data (log N and log D past their maxima). The 95% quantile of that ratio
(conformal-style: a score measured on held-out data, pooled over the folds) is ``kappa``; a query
``u`` log-units beyond the data gets a model-error half-width ``sqrt(floor^2 + (kappa * u)^2)`` in log
loss, added in quadrature to the bootstrap band. ``floor`` is the 95% quantile of the in-sample absolute
log residuals (noise and misfit at zero distance), each counted by its weight in the fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .laws import HUBER_DELTA, Design, FitStats, Form, fit_form, log_pred

MAX_FOLDS = 3  # hold out the largest 1..3 sizes
MIN_TRAIN_SIZES = 3  # a fold keeps at least this many distinct sizes (N exponent identifiable)
MIN_DISTANCE = 0.25  # log units: a held-out point nearer than this scores as if at this distance
MANY_SIZES = 12  # more distinct sizes than this (sizes on a continuum): folds cut the log-size range instead
RANGE_CUTS = (0.1, 0.2, 0.3)  # ... at these fractions of it below the largest
COVER = 0.95


@dataclass(frozen=True)
class Calibration:
    """Measured model error. ``kappa``: 95% log error per log unit of extrapolation; ``floor``: 95% log
    error at zero distance; ``folds`` / ``n_heldout``: what it was measured on (0: not measured);
    ``log_max``: the data's max log N, log D (or log C); ``fold_theta``: the fold fits (for the
    compute-optimal split's sensitivity)."""

    kappa: float
    floor: float
    folds: int
    n_heldout: int
    log_max: np.ndarray
    heldout_mae: float = float("nan")  # mean |log error| on the held-out points (for choosing the estimator)
    heldout_errors: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    fold_theta: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros((0, 0)))

    def distance(self, X: np.ndarray) -> np.ndarray:
        """Log units beyond the data, summed over the axes (0 inside)."""
        return np.maximum(X - self.log_max[None, :], 0.0).sum(axis=1)

    def half_width(self, X: np.ndarray) -> np.ndarray:
        """Model-error half-width in log loss at each query row of X."""
        return np.sqrt(self.floor**2 + (self.kappa * self.distance(X)) ** 2)


def _weighted_quantile(v: np.ndarray, q: float, w: np.ndarray | None) -> float:
    """The q quantile of v, each value counted by its weight (the fit's weights: points a size-weighted fit
    all but ignores do not set the noise floor at the sizes it predicts)."""
    if w is None or np.all(w == w[0]):
        return float(np.quantile(v, q))
    order = np.argsort(v)
    cw = np.cumsum(w[order])
    return float(v[order][min(int(np.searchsorted(cw, q * cw[-1])), len(v) - 1)])


def size_keys(X: np.ndarray) -> np.ndarray:
    """The model-size coordinate of each point (log N, or log C for L(C)), rounded to merge equal sizes."""
    return np.round(X[:, 0], 3)


def calibrate(form: Form, X: np.ndarray, ly: np.ndarray, theta: np.ndarray, resid: np.ndarray,
              check: Callable[[], None] | None, stats: FitStats, delta: float = HUBER_DELTA,
              w: np.ndarray | None = None) -> Calibration:
    """Leave-largest-out calibration of the predictive band (see the module docstring); ``w``: point
    weights of the fold fits."""
    floor = _weighted_quantile(np.abs(resid), COVER, w) if len(resid) else 0.0
    log_max = X.max(axis=0)
    keys = size_keys(X)
    sizes = np.unique(keys)
    if len(sizes) > MANY_SIZES:
        span = sizes[-1] - sizes[0]
        cuts = [sizes[-1] - f * span for f in RANGE_CUTS]
    else:
        cuts = [sizes[-k] for k in range(1, MAX_FOLDS + 1) if len(sizes) - k >= MIN_TRAIN_SIZES]
    folds, scores, fold_theta, n_held, errors = 0, [], [], 0, []
    for cut in cuts:
        if check is not None:
            check()
        train = keys < cut
        if len(np.unique(keys[train])) < MIN_TRAIN_SIZES:
            break
        if np.count_nonzero(train) < 2 * len(form.param_names):
            break
        Xt, lyt = X[train], ly[train]
        th, _ = fit_form(form, Xt, lyt, w=None if w is None else w[train], n_starts=4, extra_starts=[theta], design=Design.build(form, Xt, lyt),
                         check=check, stats=stats, delta=delta)
        test = ~train
        err = np.abs(log_pred(form, th[None], X[test])[0] - ly[test])
        u = np.maximum(np.maximum(X[test] - Xt.max(axis=0)[None, :], 0.0).sum(axis=1), MIN_DISTANCE)
        errors.extend(err)
        excess = np.sqrt(np.maximum(err**2 - floor**2, 0.0))
        scores.extend(excess / u)
        fold_theta.append(th)
        folds += 1
        n_held += int(np.count_nonzero(test))
    kappa = float(np.quantile(scores, COVER)) if scores else 0.0
    return Calibration(kappa=kappa, floor=floor, folds=folds, n_heldout=n_held, log_max=log_max,
                       heldout_mae=float(np.mean(errors)) if errors else float("nan"),
                       heldout_errors=np.array(errors, dtype=np.float64),
                       fold_theta=np.array(fold_theta) if fold_theta else np.zeros((0, len(theta))))
