"""Learning-rate-schedule path of the analytic engine (Tissue and Multi-Power laws).

Used when the caller gives the planned schedule (``RunInfo.schedule``) or the LR actually used
(``Curve.lr``) for a step-indexed loss curve. The laws are fitted on the observed prefix and then run
forward under the planned schedule, so the forecast anticipates cool-downs; a "what if" question is
the same query with another schedule. The annealing strength is invisible before the LR first decays,
so it gets a wide log-normal prior (its spread reaches the forecast through the Laplace samples).
"""

from __future__ import annotations

import numpy as np

from ...domain.curve import ForecastQuery, Goal, XKind
from ..base import EngineForecast
from .lr_laws import (
    MultiPowerLaw,
    Observed,
    Prior,
    ScheduleFeatures,
    features,
    fit_mpl,
    fit_tissue,
    gauss_samples,
    mpl_predict_samples,
    tissue_predict,
)
from .prep import robust_noise
from .spread import curve_scale, with_wide_component_sorted

MIN_POINTS = 8
MAX_GRID = 20000  # schedule grid points; longer runs use a coarser step
MAX_FIT_POINTS = 64
N_SAMPLES = 600
# Annealing strength in peak-normalised LR units, from the Tissue / MPL fits on the Multi-Power-Law
# curves (25M-400M GPTs, 16k-72k steps): Tissue C ~ 1.2e-4-1.7e-4 per step, MPL B ~ 0.11-0.16. Runs of
# another length or optimiser differ, hence the wide spread (a factor e per sd).
TISSUE_PRIOR = Prior(1.4e-4, 1.0)
MPL_PRIOR = Prior(0.13, 1.0)
MAX_ANCHORS = 64
# relative model error per unit log(horizon / observed steps): the laws' own misfit on unseen schedules
# is ~0.1-0.3% (bench/lr_laws.py); this widens the interval beyond the parameter uncertainty
MODEL_ERROR_GROWTH = 0.004
MPL_MIN_ANNEAL = 0.1  # fit the MPL only once the LR has dropped by 10% of its peak


def wants_lr_law(q: ForecastQuery) -> bool:
    c = q.curve
    has_lr = q.run.schedule is not None or (c.lr is not None and len(c.lr) == len(c.x))
    return (
        has_lr
        and c.goal is Goal.MINIMIZE
        and c.x_kind is XKind.STEP
        and len(c.x) >= MIN_POINTS
        and bool(np.all(c.y > 0))
        and float(c.x[-1]) >= 10.0
    )


def _schedule_grid(q: ForecastQuery) -> tuple[ScheduleFeatures, float] | None:
    c = q.curve
    horizon = max(float(np.max(q.x_query)) if len(q.x_query) else 0.0, c.last_x, q.horizon)
    h = max(1.0, float(np.ceil((horizon + 1) / MAX_GRID)))
    grid = np.arange(int(np.ceil(horizon / h)) + 2) * h
    if q.run.schedule is not None:
        lr = q.run.schedule.lr_at(grid)
    else:
        assert c.lr is not None
        lr = np.interp(grid, *_with_origin(c.x, c.lr))
    if not np.all(np.isfinite(lr)) or lr.max() <= 0:
        return None
    return features(lr, step=h), h


def _with_origin(x: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LR observations with a linear warm-up from 0 at step 0 when the curve starts late."""
    if x[0] > 0:
        return np.concatenate([[0.0], x]), np.concatenate([[0.0], lr])
    return np.asarray(x, dtype=np.float64), np.asarray(lr, dtype=np.float64)


def lr_forecast(q: ForecastQuery, seed: int = 0) -> EngineForecast | None:
    """Forecast under the planned schedule, or None to let the curve families answer."""
    from .engine import _target_details, _to_marginals  # shared output path (bounds, divergence, no NaN)

    c = q.curve
    built = _schedule_grid(q)
    if built is None:
        return None
    f, h = built
    idx = np.clip(np.round(np.asarray(c.x) / h).astype(int), 0, f.n_steps)
    keep = idx > f.warmup_end  # warm-up points follow other dynamics
    if keep.sum() < MIN_POINTS:
        return None
    steps, loss = idx[keep], np.asarray(c.y, dtype=np.float64)[keep]
    if len(steps) > MAX_FIT_POINTS:  # median-bin to bound the cost, keep the last points
        steps, loss = _thin(steps, loss, MAX_FIT_POINTS)
    obs = Observed(steps, loss, f)
    warnings: list[str] = []
    with np.errstate(all="ignore"):
        tissue = fit_tissue([obs], TISSUE_PRIOR)
        mpl: MultiPowerLaw | None = None
        # the MPL only adds to Tissue once the observed part has annealed (its extra parameters
        # describe the shape of loss drops); before that it costs time and says the same
        annealed = float(f.d[: int(steps[-1]) + 1].sum())
        if annealed >= MPL_MIN_ANNEAL:
            try:
                mpl = fit_mpl([obs], start=tissue, prior=MPL_PRIOR, max_blocks=64, max_nfev=40, n_refine=1)
            except Exception as exc:  # noqa: BLE001 - any failure: keep Tissue alone
                warnings.append(f"multi-power-law fit failed ({type(exc).__name__}); using the Tissue law alone")
    q_idx = np.clip(np.round(np.asarray(q.x_query) / h).astype(int), 0, f.n_steps)
    t_idx = np.zeros(0, dtype=int)
    if q.target is not None:  # steps-to-target: simulate the planned schedule up to the horizon
        hz = int(min(f.n_steps, round(q.horizon / h)))
        t_idx = np.unique(np.round(np.linspace(int(steps[-1]), max(hz, int(steps[-1])), 128)).astype(int))
    all_idx = np.concatenate([q_idx, t_idx])
    rng = np.random.default_rng(seed)
    fits_ok = [("tissue", tissue)] + ([("mpl", mpl)] if mpl is not None else [])
    resid_sd = robust_noise(np.asarray(c.y, dtype=np.float64)[keep])
    preds, target_hits, details = [], [], {}
    y_min = float(np.min(loss))
    for name, law in fits_ok:
        k = N_SAMPLES // len(fits_ok)
        x = gauss_samples(law.x, law.cov, k, rng)
        if name == "tissue":
            p = tissue_predict(x, f.s1[all_idx], f.s2[all_idx])
        else:
            # the MPL is costly per point: evaluate at <= MAX_ANCHORS steps and interpolate
            anchors = np.unique(all_idx)
            if len(anchors) > MAX_ANCHORS:
                anchors = np.unique(np.round(np.linspace(anchors[0], anchors[-1], MAX_ANCHORS)).astype(int))
            pa = mpl_predict_samples(x, f, anchors, max_blocks=64)
            p = np.stack([np.interp(all_idx, anchors, row) for row in pa])
        p = np.where(np.isfinite(p), p, p[:1])
        preds.append(p[:, : len(q_idx)])
        if len(t_idx):
            pt = p[:, len(q_idx) :]
            hit = pt <= q.target
            first = np.argmax(hit, axis=1)
            target_hits.append(np.where(hit.any(axis=1), t_idx[first] * h, np.inf))
        for key, val in (law.in_raw_units(f.peak)).items():
            details[f"{name}_{key}"] = float(val)
    z = np.concatenate(preds, axis=0)
    # observation noise, and model error growing with the forecast horizon (relative to observed span):
    # at least the laws' misfit on unseen schedules, more when a fit on the first part of the observed
    # curve missed its own held-out suffix (the annealing strength is often unidentified early on)
    growth = max(MODEL_ERROR_GROWTH, _holdout_growth(f, steps, loss))
    ratio = np.maximum(q_idx / max(float(steps[-1]), 1.0), 1.0)
    extra = np.sqrt(resid_sd**2 + (growth * y_min * (np.log(ratio) + 0.25 * (ratio > 1))) ** 2)
    z = np.clip(z, 0.0, float(np.max(c.y)) * 2.0) + rng.standard_normal(z.shape) * extra[None]
    z, z_sorted = with_wide_component_sorted(z, np.sort(z, axis=0), float(np.median(loss[-5:])), curve_scale(loss, resid_sd), ratio)
    z = np.maximum(z, 0.0)
    marg = _to_marginals(q, z, warnings, np.maximum(z_sorted, 0.0))  # a monotone map keeps the order
    details.update(noise_sd=resid_sd, lr_law=1.0, grid_step=h)
    if target_hits:
        # the observed part may already be there
        x_star = np.concatenate(target_hits)
        if float(np.min(c.y)) <= q.target:
            x_star = np.minimum(x_star, float(c.x[int(np.argmax(c.y <= q.target))]))
        _target_details(details, x_star, q)
    return EngineForecast(marginals=marg, engine="analytic", warnings=tuple(warnings), details=details)


HOLDOUT_FRACTION = 0.75  # the holdout fit sees steps <= this share of the observed span


def _holdout_growth(f: ScheduleFeatures, steps: np.ndarray, loss: np.ndarray) -> float:
    """Relative error per unit log-horizon of a Tissue fit on the first part of the observed curve.

    Scored on the rest of the observed curve, it measures how well the law extrapolates this run
    (mainly: whether the annealing strength is identified yet); 0 when the curve is too short to split.
    """
    keep = steps <= HOLDOUT_FRACTION * float(steps[-1])
    out = ~keep & (steps > 0)
    if keep.sum() < MIN_POINTS or out.sum() < 3:
        return 0.0
    law = fit_tissue([Observed(steps[keep], loss[keep], f)], TISSUE_PRIOR)
    pred = tissue_predict(law.x[None], f.s1[steps[out]], f.s2[steps[out]])[0]
    rel = (pred - loss[out]) / loss[out]
    horizon = float(np.mean(np.log(steps[out] / (HOLDOUT_FRACTION * float(steps[-1])))))
    val = float(np.sqrt(np.mean(rel * rel))) / max(horizon, 1e-3)
    return val if np.isfinite(val) else 0.0


def _thin(steps: np.ndarray, loss: np.ndarray, n: int, tail: int = 8) -> tuple[np.ndarray, np.ndarray]:
    head_s, head_l = steps[:-tail], loss[:-tail]
    groups = np.array_split(np.arange(len(head_s)), n - tail)
    s = [int(np.round(np.mean(head_s[g]))) for g in groups if len(g)]
    v = [float(np.median(head_l[g])) for g in groups if len(g)]
    return np.concatenate([s, steps[-tail:]]).astype(int), np.concatenate([v, loss[-tail:]])
