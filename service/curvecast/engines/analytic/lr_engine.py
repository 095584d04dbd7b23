"""Learning-rate-schedule path of the analytic engine (Tissue and Multi-Power laws).

Used when the caller gives the planned schedule (``RunInfo.schedule``) or the LR actually used
(``Curve.lr``) for a step-indexed loss curve. The laws are fitted on the observed prefix and then run
forward under the planned schedule, so the forecast anticipates cool-downs; a "what if" question is
the same query with another schedule. The annealing strength is invisible before the LR first decays,
so it gets a wide log-normal prior (its spread reaches the forecast through the Laplace samples), and
the gain a cool-down still ahead may bring is soft-capped (``spread.ANNEAL_MAX_GAIN``).

A fit the observed curve cannot stand behind (a parameter at its bound, an annealing strength far from
its prior before the LR has decayed enough to identify it, a negative loss at the budget) is not
used: ``lr_forecast`` returns None with the reason in ``notes`` and the curve families answer.

Everything a sample path is evaluated on (the schedule grid, the MPL anchor steps, the noise) depends
on the curve and the run's plan only, never on the queried x, so an x's value does not depend on the
other x asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

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
    mpl_bounds,
    mpl_predict_samples,
    tissue_bounds,
    tissue_predict,
)
from .output import target_details, to_marginals
from .prep import robust_noise
from .randomness import curve_rng, normal_scores
from .spread import ANNEAL_MAX_GAIN, curve_scale, soft_cap_gain, with_wide_component_sorted

MIN_POINTS = 8
MAX_GRID = 20000  # schedule grid points up to GRID_EXTENSION x the budget; longer runs use a coarser step
GRID_EXTENSION = 4.0  # the service's decision grid reaches 4x the budget (DataPlaneSettings)
MAX_GRID_POINTS = 4 * MAX_GRID  # queries beyond the fixed grid extend it, with the same step, this far
MAX_FIT_POINTS = 64
N_SAMPLES = 600
# Annealing strength in peak-normalised LR units, from the Tissue / MPL fits on the Multi-Power-Law
# curves (25M-400M GPTs, 16k-72k steps): Tissue C ~ 1.2e-4-1.7e-4 per step, MPL B ~ 0.11-0.16. Runs of
# another length or optimiser differ, hence the wide spread (a factor e per sd). Both are loss drops,
# measured on losses of about PRIOR_LOSS nats: a run is given them in proportion to its own loss level
# (``_at_level``), so a curve and the same curve in other units get the same forecast.
TISSUE_PRIOR = Prior(1.4e-4, 1.0)
MPL_PRIOR = Prior(0.13, 1.0)
PRIOR_LOSS = 3.0
MAX_ANCHORS = 64
# relative model error per unit log(horizon / observed steps): the laws' own misfit on unseen schedules
# is ~0.1-0.3% (bench/lr_laws.py); this widens the interval beyond the parameter uncertainty
MODEL_ERROR_GROWTH = 0.01  # tuned on the ruler's tune split (0.004 covered 71% at a 20% prefix of Multi-Power-Law runs)
MPL_MIN_ANNEAL = 0.1  # fit the MPL only once the LR has dropped by 10% of its peak
# plausibility of a fit: before the LR has decayed by IDENTIFIED_ANNEAL of its peak the curve cannot
# tell the annealing strength apart from the power law's curvature, so a strength more than
# MAX_PRIOR_SDS prior sds (a factor e^2 = 7.4) from the prior's centre is noise, not information
IDENTIFIED_ANNEAL = 0.5
MAX_PRIOR_SDS = 2.0
CHI2_99 = {p: float(stats.chi2.ppf(0.99, p)) for p in (4, 7)}
BOUND_TOL = 1e-4  # a parameter within this share of its range from a bound sits at the bound
TISSUE_NAMES = ("floor L0", "amplitude A", "exponent alpha", "annealing strength C")
MPL_NAMES = ("floor L0", "amplitude A", "exponent alpha", "annealing strength B", "annealing rate C",
             "annealing exponent beta", "annealing exponent gamma")


def wants_lr_law(q: ForecastQuery) -> bool:
    """A minimised, positive curve with a known LR. Any x unit works (steps, tokens, epochs, samples): the
    schedule is in the curve's x units, and rescaling x only rescales the laws' amplitudes."""
    c = q.curve
    has_lr = q.run.schedule is not None or (c.lr is not None and len(c.lr) == len(c.x))
    return (
        has_lr
        and c.goal is Goal.MINIMIZE
        and len(c.x) >= MIN_POINTS
        and bool(np.all(c.y > 0))
        and (c.x_kind is not XKind.STEP or float(c.x[-1]) >= 10.0)
    )


def _plan_end(q: ForecastQuery) -> float:
    """The planned last step from the run alone (not from the queried x): budget, else schedule, else last x."""
    c = q.curve
    end = q.run.total_steps
    if end is None and q.run.schedule is not None and q.run.schedule.total_steps > 0:
        end = q.run.schedule.total_steps
    return max(float(end) if end is not None else 0.0, c.last_x)


def _schedule_grid(q: ForecastQuery) -> tuple[ScheduleFeatures, float, int] | None:
    """Schedule features on a grid of step ``h`` fixed by the plan (up to GRID_EXTENSION x its end),
    extended with the same step to the farthest query; also the index of the fixed grid's end.

    Features are causal sums, so extending the grid leaves every earlier value bit-identical."""
    c = q.curve
    base = _plan_end(q)
    h = max(1.0, float(np.ceil((GRID_EXTENSION * base + 1) / MAX_GRID)))
    fixed_end = int(np.ceil(GRID_EXTENSION * base / h))
    far = float(np.max(q.x_query)) if len(q.x_query) else 0.0
    n = int(min(max(fixed_end, np.ceil(far / h)) + 2, MAX_GRID_POINTS))
    grid = np.arange(n) * h
    if q.run.schedule is not None:
        lr = q.run.schedule.lr_at(grid)
    else:
        assert c.lr is not None
        lr = np.interp(grid, *_with_origin(c.x, c.lr))
    if not np.all(np.isfinite(lr)) or lr.max() <= 0:
        return None
    return features(lr, step=h), h, min(fixed_end, n - 1)


def _with_origin(x: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LR observations with a linear warm-up from 0 at step 0 when the curve starts late."""
    if x[0] > 0:
        return np.concatenate([[0.0], x]), np.concatenate([[0.0], lr])
    return np.asarray(x, dtype=np.float64), np.asarray(lr, dtype=np.float64)


NOMINAL_STEPS = 10_000.0  # x units without a known step count are mapped so the plan lasts this many steps


def steps_per_x(q: ForecastQuery) -> float:
    """Training steps per x unit: 1 for steps, 1/tokens_per_step for tokens when known; otherwise (epochs,
    samples, tokens at an unknown rate) a nominal rate that makes the plan NOMINAL_STEPS long. The laws'
    optimiser-momentum time constant and priors are per step, so the fit must see (nominal) steps."""
    if q.curve.x_kind is XKind.STEP:
        return 1.0
    if q.curve.x_kind is XKind.TOKENS and q.run.tokens_per_step:
        return 1.0 / q.run.tokens_per_step
    return NOMINAL_STEPS / max(_plan_end(q), 1e-300)


def lr_forecast(q: ForecastQuery, seed: int = 0, notes: list[str] | None = None) -> EngineForecast | None:
    """Forecast under the planned schedule, or None to let the curve families answer (with the reason
    appended to ``notes`` when the fitted law is implausible). Curves in epochs, samples or tokens are
    fitted in steps (``steps_per_x``) and answered in their own x units."""
    k = steps_per_x(q)
    if k == 1.0:
        return _lr_forecast_steps(q, seed, notes)
    c, run = q.curve, q.run
    in_steps = replace(
        q,
        curve=replace(c, x=np.asarray(c.x, dtype=np.float64) * k, x_kind=XKind.STEP,
                      diverged_at=None if c.diverged_at is None else c.diverged_at * k),
        run=replace(run, total_steps=None if run.total_steps is None else run.total_steps * k,
                    schedule=None if run.schedule is None else run.schedule.rescaled(k)),
        x_query=np.asarray(q.x_query, dtype=np.float64) * k,
    )
    res = _lr_forecast_steps(in_steps, seed, notes)
    if res is None:
        return None
    m = res.marginals
    details = {key: (v / k if key.startswith("target_x_") or key == "grid_step" else v) for key, v in res.details.items()}
    return replace(res, marginals=type(m)(np.asarray(q.x_query, dtype=np.float64), m.values, m.mean), details=details)


def _lr_forecast_steps(q: ForecastQuery, seed: int = 0, notes: list[str] | None = None) -> EngineForecast | None:
    notes = [] if notes is None else notes
    c = q.curve
    built = _schedule_grid(q)
    if built is None:
        return None
    f, h, fixed_end = built
    idx = np.clip(np.round(np.asarray(c.x) / h).astype(int), 0, f.n_steps)
    keep = idx > f.warmup_end  # warm-up points follow other dynamics
    if keep.sum() < MIN_POINTS:
        return None
    steps, loss = idx[keep], np.asarray(c.y, dtype=np.float64)[keep]
    if len(steps) > MAX_FIT_POINTS:  # median-bin to bound the cost, keep the last points
        steps, loss = _thin(steps, loss, MAX_FIT_POINTS)
    obs = Observed(steps, loss, f)
    warnings: list[str] = []
    annealed = float(f.d[: int(steps[-1]) + 1].sum())
    hz = int(min(f.n_steps, round(q.horizon / h)))
    budget_idx = int(min(f.n_steps, round(_plan_end(q) / h)))
    level = float(np.median(loss[-5:]))
    tissue_prior, mpl_prior = _at_level(TISSUE_PRIOR, level), _at_level(MPL_PRIOR, level)
    with np.errstate(all="ignore"):
        tissue = fit_tissue([obs], tissue_prior)
        why = _implausible(tissue.x, tissue_bounds(float(np.min(loss))), TISSUE_NAMES, tissue_prior, annealed, tissue.cov)
        if why is None and not tissue_predict(tissue.x[None], f.s1[[budget_idx]], f.s2[[budget_idx]])[0, 0] > 0:
            why = f"it predicts a loss <= 0 by step {budget_idx * h:g}"
        if why is not None:
            notes.append(f"learning-rate-law fit implausible ({why}); used curve families instead")
            return None
        mpl: MultiPowerLaw | None = None
        # the MPL only adds to Tissue once the observed part has annealed (its extra parameters
        # describe the shape of loss drops); before that it costs time and says the same
        if annealed >= MPL_MIN_ANNEAL:
            try:
                mpl = fit_mpl([obs], start=tissue, prior=mpl_prior, max_blocks=64, max_nfev=40, n_refine=1)
            except Exception as exc:  # noqa: BLE001 - any failure: keep Tissue alone
                warnings.append(f"multi-power-law fit failed ({type(exc).__name__}); using the Tissue law alone")
            if mpl is not None:
                why = _implausible(mpl.x, mpl_bounds(float(np.min(loss))), MPL_NAMES, mpl_prior, annealed, mpl.cov)
                if why is not None:
                    warnings.append(f"multi-power-law fit implausible ({why}); using the Tissue law alone")
                    mpl = None
    q_idx = np.clip(np.round(np.asarray(q.x_query) / h).astype(int), 0, f.n_steps)
    if len(q.x_query) and float(np.max(q.x_query)) / h > f.n_steps + 0.5:
        warnings.append(f"queries beyond step {f.n_steps * h:g} are answered as at that step")
    t_idx = np.zeros(0, dtype=int)
    if q.target is not None:  # steps-to-target: simulate the planned schedule up to the horizon
        t_idx = np.unique(np.round(np.linspace(int(steps[-1]), max(hz, int(steps[-1])), 128)).astype(int))
    last = int(steps[-1])
    all_idx = np.concatenate([q_idx, t_idx, [last]])
    rng = curve_rng(c, seed)
    fits_ok = [("tissue", tissue)] + ([("mpl", mpl)] if mpl is not None else [])
    resid_sd = robust_noise(np.asarray(c.y, dtype=np.float64)[keep])
    preds, target_hits, details = [], [], {}
    y_min = float(np.min(loss))
    anchors = _Anchors.build(f, int(steps[0]), last, budget_idx, fixed_end) if mpl is not None else None
    for name, law in fits_ok:
        k = N_SAMPLES // len(fits_ok)
        x = gauss_samples(law.x, law.cov, k, rng)
        if name == "tissue":
            p = tissue_predict(x, f.s1[all_idx], f.s2[all_idx])
            p_obs = tissue_predict(x, obs.s1(), obs.s2())
        else:
            assert anchors is not None
            both = anchors.mpl_at(x, f, np.concatenate([all_idx, steps]))
            p, p_obs = both[:, : len(all_idx)], both[:, len(all_idx) :]
        rows = _plausible_rows(p_obs, loss, x.shape[1], rng)
        x, p = x[rows], p[rows]
        p = _capped_anneal(p, _power_part(x, f.s1[all_idx]), level)
        p = np.where(np.isfinite(p), p, p[:1])
        preds.append(p[:, : len(q_idx)])
        if len(t_idx):
            pt = p[:, len(q_idx) : len(q_idx) + len(t_idx)]
            hit = pt <= q.target
            first = np.argmax(hit, axis=1)
            target_hits.append(np.where(hit.any(axis=1), t_idx[first] * h, np.inf))
        for key, val in (law.in_raw_units(f.peak)).items():
            details[f"{name}_{key}"] = float(val)
    z = np.concatenate(preds, axis=0)
    # observation noise, and model error growing with the forecast horizon (relative to observed span):
    # at least the laws' misfit on unseen schedules, more when a fit on the first part of the observed
    # curve missed its own held-out suffix (the annealing strength is often unidentified early on)
    growth = max(MODEL_ERROR_GROWTH, _holdout_growth(f, steps, loss, tissue_prior))
    ratio = np.maximum(q_idx / max(float(steps[-1]), 1.0), 1.0)
    extra = np.sqrt(resid_sd**2 + (growth * y_min * (np.log(ratio) + 0.25 * (ratio > 1))) ** 2)
    # one noise score per sample path, shared by every x (see randomness.py)
    z = np.clip(z, 0.0, float(np.max(c.y)) * 2.0) + normal_scores(rng, len(z))[:, None] * extra[None]
    z, z_sorted = with_wide_component_sorted(z, np.sort(z, axis=0), float(np.median(loss[-5:])), curve_scale(loss, resid_sd), ratio)
    z = np.maximum(z, 0.0)
    marg = to_marginals(q, z, warnings, np.maximum(z_sorted, 0.0))  # a monotone map keeps the order
    details.update(noise_sd=resid_sd, lr_law=1.0, grid_step=h)
    if target_hits:
        # the observed part may already be there
        x_star = np.concatenate(target_hits)
        if float(np.min(c.y)) <= q.target:
            x_star = np.minimum(x_star, float(c.x[int(np.argmax(c.y <= q.target))]))
        target_details(details, x_star, q)
    return EngineForecast(marginals=marg, engine="analytic", warnings=tuple(warnings), details=details)


def _implausible(x: np.ndarray, bounds: tuple[np.ndarray, np.ndarray], names: tuple[str, ...], prior: Prior,
                 annealed: float, cov: np.ndarray | None = None) -> str | None:
    """Why a fitted law cannot be trusted to extrapolate, or None.

    At a bound the optimum is the box's, not the curve's (e.g. the floor pinned at 0.999 x the lowest
    loss of a run that has not annealed: the law then says the loss is done improving), and the Laplace
    samples around it mean nothing; an annealing strength far from its prior before the LR has decayed
    enough to reveal it (and, once it has decayed by MPL_MIN_ANNEAL, while the curve has not narrowed it
    down to half the prior's sd either, ``cov``) was fitted to noise (index 3 in both fit vectors)."""
    lo, hi = bounds
    tol = BOUND_TOL * (hi - lo)
    for i, name in enumerate(names):
        at_lo, at_hi = x[i] - lo[i] <= tol[i], hi[i] - x[i] <= tol[i]
        if i == 0 and annealed >= MPL_MIN_ANNEAL:
            at_hi = False  # once the LR has decayed the loss may sit below L0: the box binds legitimately
        if at_lo or at_hi:
            side = "lower" if at_lo else "upper"
            value = x[i] if i == 0 else math.exp(x[i])
            return f"the {name} = {value:.4g} sits at its {side} bound"
    dist = (float(x[3]) - math.log(prior.center)) / prior.sd_log
    sd_post = prior.sd_log if cov is None else math.sqrt(max(float(cov[3, 3]), 0.0))
    # a narrow posterior counts only once the LR has decayed a little: before that a smooth curve's
    # tiny noise "identifies" C from the power law's curvature, which it does not
    narrowed = annealed >= MPL_MIN_ANNEAL and sd_post <= 0.5 * prior.sd_log
    if annealed < IDENTIFIED_ANNEAL and abs(dist) > MAX_PRIOR_SDS and not narrowed:
        return (f"the {names[3]} came out {math.exp(dist * prior.sd_log):.3g} x its prior centre while the LR has "
                f"decayed by only {annealed:.0%} of its peak, too little to identify it")
    return None


def _plausible_rows(p_obs: np.ndarray, loss: np.ndarray, n_params: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of the parameter draws (row 0: the fit) to use: each draw the observed curve does not rule
    out, and in place of each one it does, a random one of those.

    On a noisy curve the floor and the exponent are nearly collinear (correlation 0.999) and the
    Gaussian of the Laplace approximation proposes laws far off the observed points that extrapolate
    anywhere. A draw is kept when its sum of squared log-loss residuals at the observed steps
    (``p_obs``) exceeds the optimum's by less than the 99% chi-square quantile for the parameter count
    (the likelihood-ratio region, as the curve families do); the annealing strength, which the curve
    does not constrain before the LR decays, keeps its prior."""
    rows = np.arange(len(p_obs))
    if len(rows) <= 1:
        return rows
    r = np.log(np.maximum(p_obs, 1e-12)) - np.log(loss)[None]
    ssr = np.sum(r * r, axis=1)
    ssr = np.where(np.isfinite(ssr), ssr, np.inf)
    s2 = max(float(ssr[0]) / max(len(loss) - n_params, 1), 1e-300)
    keep = ssr <= ssr[0] + s2 * CHI2_99[n_params]
    keep[0] = True
    if keep.all():
        return rows
    ok = np.flatnonzero(keep)
    bad = np.flatnonzero(~keep)
    rows[bad] = ok[rng.integers(0, len(ok), len(bad))]
    return rows


def _power_part(x: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """``L0 + A * S1^-alpha`` of Tissue or MPL fit vectors (both start [L0, log A, log alpha]): the law
    without its annealing term."""
    return x[:, 0:1] + np.exp(x[:, 1:2]) * np.maximum(s1, 1e-12)[None] ** (-np.exp(x[:, 2:3]))


def _capped_anneal(p: np.ndarray, power: np.ndarray, level: float) -> np.ndarray:
    """Predictions with the annealing gain beyond the last observed step (the last column of ``p``)
    soft-capped at ANNEAL_MAX_GAIN of the loss level: the log-normal annealing strength must not
    promise a cool-down that takes the loss to 0."""
    anneal = power - p  # the law's annealing term at every step (>= 0 while the LR only decreases)
    gain = anneal - anneal[:, -1:]
    return p + gain - soft_cap_gain(gain, ANNEAL_MAX_GAIN * level)


@dataclass(frozen=True)
class _Anchors:
    """Grid steps in [first, end] where the (costly) MPL is evaluated exactly; other steps in that range
    are interpolated along ``path``, steps outside it are evaluated exactly.

    They depend on the schedule and the observed range only, never on the queries. The path runs evenly
    in log S1 (the power law's own clock) plus the annealing area S2 and the LR decrease, so cool-downs
    and step drops get anchors close on both sides; the last observed step and the budget are anchors."""

    first: int
    end: int
    steps: np.ndarray  # (<= MAX_ANCHORS,) sorted grid indices
    path: np.ndarray  # path coordinate of every grid index in [first, end]

    @classmethod
    def build(cls, f: ScheduleFeatures, first: int, last: int, budget: int, end: int) -> "_Anchors":
        end = max(end, first + 1)
        i = np.arange(first, end + 1)
        path = _path(f, i)
        picks = np.clip(np.searchsorted(path, np.linspace(0.0, path[-1], MAX_ANCHORS - 4)), 0, len(i) - 1)
        steps = np.union1d(i[picks], np.clip([first, last, budget, end], first, end)).astype(int)
        return cls(first, end, steps, path)

    def mpl_at(self, x: np.ndarray, f: ScheduleFeatures, idx: np.ndarray) -> np.ndarray:
        """MPL samples (S, 7) at grid steps ``idx``; the LR decrements are merged into blocks over the
        whole grid, so a step's value does not depend on the other steps either."""
        inside = (idx >= self.first) & (idx <= self.end)
        outside = np.unique(idx[~inside])
        at = np.concatenate([self.steps, outside]).astype(int)
        pa = mpl_predict_samples(x, f, at, max_blocks=64, blocks_upto=f.n_steps)
        out = np.empty((len(x), len(idx)))
        if inside.any():
            pa_in = self.path[self.steps - self.first]
            pq = self.path[idx[inside] - self.first]
            j = np.clip(np.searchsorted(pa_in, pq, side="right") - 1, 0, len(self.steps) - 2)
            gap = pa_in[j + 1] - pa_in[j]
            w = np.clip((pq - pa_in[j]) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)
            out[:, inside] = pa[:, j] * (1.0 - w) + pa[:, j + 1] * w
        if (~inside).any():
            out[:, ~inside] = pa[:, len(self.steps) + np.searchsorted(outside, idx[~inside])]
        return out


def _path(f: ScheduleFeatures, i: np.ndarray) -> np.ndarray:
    """Non-decreasing coordinate along the schedule over grid indices ``i`` (see ``_Anchors``), 0 at i[0]."""
    ls1 = np.log(np.maximum(f.s1[i], 1e-12))
    path = (ls1 - ls1[0]) / max(float(ls1[-1] - ls1[0]), 1e-12)
    s2 = np.maximum.accumulate(f.s2[i] - f.s2[i[0]])
    if s2[-1] > 0:
        path = path + s2 / s2[-1]
    dl = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(f.lr[i])))])
    if dl[-1] > 0:
        path = path + 0.5 * dl / dl[-1]
    return np.maximum.accumulate(path)


HOLDOUT_FRACTION = 0.75  # the holdout fit sees steps <= this share of the observed span


def _at_level(prior: Prior, level: float) -> Prior:
    """A loss-drop prior measured at PRIOR_LOSS, for a run whose loss sits at ``level``."""
    return Prior(prior.center * level / PRIOR_LOSS, prior.sd_log)


def _holdout_growth(f: ScheduleFeatures, steps: np.ndarray, loss: np.ndarray, prior: Prior | None = None) -> float:
    """Relative error per unit log-horizon of a Tissue fit on the first part of the observed curve.

    Scored on the rest of the observed curve, it measures how well the law extrapolates this run
    (mainly: whether the annealing strength is identified yet); 0 when the curve is too short to split.
    """
    keep = steps <= HOLDOUT_FRACTION * float(steps[-1])
    out = ~keep & (steps > 0)
    if keep.sum() < MIN_POINTS or out.sum() < 3:
        return 0.0
    prior = _at_level(TISSUE_PRIOR, float(np.median(loss[-5:]))) if prior is None else prior
    law = fit_tissue([Observed(steps[keep], loss[keep], f)], prior)
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

