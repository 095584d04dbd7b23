"""The analytic engine: fitted curve laws, combined by out-of-sample skill, as predictive marginals.

Per query it either fits the learning-rate-schedule laws (when the run's LR schedule or per-step LR
is known and looks like an LLM-style run) or the Domhan families, then draws parameter samples
(Laplace, keeping only draws the observed points do not rule out) plus observation noise and a
horizon-dependent model-error term, adds room for a planned LR cool-down and a small heavy-tailed
"the law is wrong" component (spread.py), and returns quantiles. Very short curves get the last value
with its latest trend. A numerical failure never fails the call: it falls back to a widening
distribution around the last value and says so in ``warnings``.

Answers are deterministic: the generator is seeded from the curve's content and each x is evaluated
from the same parameter draws with noise shared across x (``randomness``), so the same request gives
the same bits and the value at an x does not depend on the other x asked. Curves of tiny or huge
magnitude are fitted rescaled (``..magnitude``).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing as mp
from dataclasses import replace
from typing import Sequence

import numpy as np
from scipy import stats

from ...blas import single_threaded_blas
from ...domain.curve import ForecastQuery, Goal, XKind
from ...domain.plausibility import direction
from ...domain.errors import InvalidRequest
from ..base import EngineForecast, EngineInfo
from ..magnitude import rescale
from .families import BY_NAME, basis_steps_to_target, vapor_steps_to_target
from .fit import FamilyFit, Problem, fit_all, make_problem
from .output import fallback, target_details, to_marginals
from .prep import MIN_FIT_POINTS, prepare
from .randomness import curve_rng, normal_scores
from .turn import detect_turn, turn_warning, with_turn
from .spread import (
    curve_scale,
    floor_sd,
    log_horizon,
    recent_slope,
    with_planned_anneal,
    with_wide_component_sorted,
)

VERSION = "0.4.0"
N_SAMPLES = 1000
# overfitting is a training-time effect: a learning curve in training-set size that dips (LCDB) is not
# a run that keeps getting worse, and continuing it over a log-spaced x would collapse it
TURN_X_KINDS = (XKind.STEP, XKind.EPOCH)
SHORT_WARNING = "curve too short to say much"


class AnalyticEngine:
    """Engine protocol implementation; ``workers > 0`` fans queries out to a spawn process pool."""

    name = "analytic"

    def __init__(self, workers: int = 0, families: tuple[str, ...] | None = None, seed: int = 0):
        self.workers = int(workers)
        self.families = families
        self.seed = seed
        self._pool: cf.ProcessPoolExecutor | None = None
        if self.workers > 0:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))

    def info(self) -> EngineInfo:
        detail = f"workers={self.workers}" if self.workers else "in-process"
        # one batch at a time: in threads a second batch only contends for the GIL, and with worker
        # processes one batch already fans out to all of them
        return EngineInfo(name=self.name, version=VERSION, provider="numpy", available=True, detail=detail,
                          concurrent_batches=1)

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        if self._pool is not None and len(queries) > 1:
            chunks = _chunks(list(queries), self.workers)
            futures = [self._pool.submit(_forecast_many, chunk, self.families, self.seed) for chunk in chunks]
            out: list[EngineForecast | Exception] = []
            for fut, chunk in zip(futures, chunks):
                try:
                    out.extend(fut.result())
                except Exception as exc:  # a dead worker must not fail the batch: redo here
                    out.extend(_forecast_many(chunk, self.families, self.seed))
                    _ = exc
            return out
        return _forecast_many(list(queries), self.families, self.seed)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def _chunks(items: list, k: int) -> list[list]:
    k = max(1, min(k, len(items)))
    return [items[i * len(items) // k : (i + 1) * len(items) // k] for i in range(k)]


def _forecast_many(queries: list[ForecastQuery], families, seed: int) -> list[EngineForecast | Exception]:
    return [forecast_one(q, families, seed) for q in queries]


def forecast_one(q: ForecastQuery, families: tuple[str, ...] | None = None, seed: int = 0) -> EngineForecast | Exception:
    """Forecast one query; only an unanswerable request comes back as an exception.

    ``seed`` is mixed with the curve's content: the answer depends on the request, never on when,
    where or next to what it was computed."""
    n = len(q.curve.x)
    if n == 0:
        return InvalidRequest.single("curve.values", "the analytic engine needs at least one observed point")
    with np.errstate(all="ignore"), single_threaded_blas():
        scaled = rescale(q)  # tiny or huge magnitudes are fitted as ordinary numbers
        return scaled.restore(_forecast_scaled(scaled.query, families, seed))


def _forecast_scaled(q: ForecastQuery, families: tuple[str, ...] | None, seed: int) -> EngineForecast:
    try:
        if len(q.curve.x) < MIN_FIT_POINTS:
            return fallback(q, [SHORT_WARNING])
        fit_goal = direction(q.curve)
        if fit_goal is not q.curve.goal:
            return _against_the_goal(q, fit_goal, families, seed)
        from .lr_engine import lr_forecast, wants_lr_law  # local: keeps the worker import light

        notes: list[str] = []
        if wants_lr_law(q):
            try:
                res = lr_forecast(q, seed, notes)
            except Exception as exc:  # the curve families can still answer
                res = None
                notes.append(f"learning-rate-law fit failed ({type(exc).__name__}); used curve families instead")
            if res is not None:
                return res
        out = _families_forecast(q, families, seed)
        if notes:
            out = EngineForecast(out.marginals, out.engine, tuple(notes) + out.warnings, out.details)
        return out
    except Exception as exc:  # numerical trouble of any kind: answer, but say so
        return fallback(q, [f"analytic fit failed ({type(exc).__name__}: {exc}); showing last value with widening spread"])


def _against_the_goal(q: ForecastQuery, other: Goal, families: tuple[str, ...] | None, seed: int) -> EngineForecast:
    """A curve that steadily moves the wrong way under its stated goal (``plausibility.direction``) is
    fitted the way it moves. Target details are left out: "reaching" a target means the opposite there."""
    res = _forecast_scaled(replace(q, curve=replace(q.curve, goal=other), target=None), families, seed)
    note = f"fitted as goal={other.value}: the curve moves that way throughout"
    return EngineForecast(res.marginals, res.engine, res.warnings + (note,),
                          {k: v for k, v in res.details.items() if not k.startswith("target_")})


# ---- the Domhan-family ensemble -----------------------------------------------------------------------
def family_weights(fits: list[FamilyFit], noise: float, n_points: int, n_heldout: int) -> np.ndarray:
    """Weights from out-of-sample error on held-out suffixes; in-sample AIC when no holdout exists.

    ``w ~ (rmse + noise)^-p``: a Gaussian likelihood ratio of the held-out points would use p = their
    count, but suffix errors are strongly correlated, so p grows with the count only up to 4.
    """
    if all(f.holdout_rmse is not None for f in fits):
        s = np.array([f.holdout_rmse for f in fits], dtype=np.float64)
        power = float(np.clip(n_heldout / 2.0, 1.0, 4.0))
        w = (s + max(noise, 1e-12 * (1.0 + float(np.max(s))))) ** -power
    else:
        mse = np.array([max(f.in_sample_rmse, 1e-300) ** 2 for f in fits])
        k = np.array([len(f.params) for f in fits], dtype=np.float64)
        aic = n_points * np.log(mse / mse.min()) + 2.0 * k
        w = np.exp(-0.5 * (aic - aic.min()))
    w = np.where(np.isfinite(w), w, 0.0)
    if w.sum() <= 0:
        w = np.ones(len(fits))
    w = w / w.sum()
    w = np.where(w < 1e-3, 0.0, w)
    return w / w.sum()


def _param_samples(fit: FamilyFit, k: int, rng: np.random.Generator) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (fit.cov + fit.cov.T))
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    draws = fit.params[None] + rng.standard_normal((k, len(fit.params))) @ root.T
    draws[0] = fit.params
    if fit.name not in ("vapor", "flat"):
        draws[:, 1] = np.maximum(draws[:, 1], 0.0)
    return draws


def _plausible(fit: FamilyFit, draws: np.ndarray, pb: Problem, rng: np.random.Generator, inv_var: np.ndarray | None = None) -> np.ndarray:
    """Keep the parameter draws the observed curve does not rule out; redraw the rest from the kept ones.

    The Laplace approximation breaks down when a family's parameters are poorly identified (short,
    noisy or non-monotone curves): its Gaussian then proposes laws that miss the observed points by far
    and extrapolate anywhere. A draw is kept when its weighted sum of squares exceeds the optimum's by
    less than the 99% chi-square quantile for the parameter count (the likelihood-ratio region).
    """
    if len(draws) <= 1:
        return draws
    with np.errstate(all="ignore"):
        pred = fit.predict(draws, pb.u, pb.sign)
    w = 1.0 / np.maximum(pb.noise_sd**2, 1e-300) if inv_var is None else inv_var
    r = np.subtract(pred, pb.z[None], out=pred)
    np.square(r, out=r)
    r[~np.isfinite(r)] = np.inf
    ssr = r @ w
    n, p = len(pb.z), len(fit.params)
    s2 = max(float(ssr[0]) / max(n - p, 1), 1.0)  # misfit beyond the noise inflates the region
    keep = ssr <= ssr[0] + s2 * _chi2_99(p)
    keep[0] = True
    if keep.all():
        return draws
    ok = np.flatnonzero(keep)
    out = draws.copy()
    bad = np.flatnonzero(~keep)
    out[bad] = draws[ok[rng.integers(0, len(ok), len(bad))]]
    return out


@functools.lru_cache(maxsize=None)
def _chi2_99(p: int) -> float:
    return float(stats.chi2.ppf(0.99, p))


def _families_forecast(q: ForecastQuery, families, seed: int) -> EngineForecast:
    curve = q.curve
    prep = prepare(curve)
    if len(prep.z) < MIN_FIT_POINTS:
        return fallback(q, [SHORT_WARNING])
    pb = make_problem(prep)
    fits, notes = fit_all(pb, families)
    if not fits:
        return fallback(q, notes + ["no curve family could be fitted; showing last value with widening spread"])
    noise_fit = float(np.sqrt(np.mean(prep.noise_sd**2)))
    weights = family_weights(fits, noise_fit, len(prep.z), int((1.0 - pb.masks[1:]).sum()))
    rng = curve_rng(curve, seed)
    uq = prep.to_u(q.x_query)
    z_hi = float(np.max(prep.z)) + max(prep.z_range, 1e-12)
    env_lo, env_hi = pb.c_lo, z_hi
    # without held-out suffixes there is no measured error growth: assume a generous one
    default_growth = 0.3 * max(prep.z_range, prep.raw_noise)
    scale = curve_scale(prep.z, prep.raw_noise, spread=prep.z_range)
    floor = floor_sd(recent_slope(prep.u, prep.z, prep.raw_noise), uq)
    counts = np.floor(weights * N_SAMPLES).astype(int)
    counts[int(np.argmax(weights))] += N_SAMPLES - counts.sum()
    target_parts = []
    z_target = None if q.target is None else curve.goal.sign * q.target
    lh = log_horizon(uq)
    base_var = prep.raw_noise**2
    floor2 = floor**2
    inv_var = 1.0 / np.maximum(pb.noise_sd**2, 1e-300)
    z_all = np.empty((int(counts[counts > 0].sum()), len(uq)))
    # one noise score per sample path, shared by every x: no draw depends on the queried x
    scores = normal_scores(rng, len(z_all))
    row = 0
    for fit, k in zip(fits, counts):
        if k <= 0:
            continue
        draws = _plausible(fit, _param_samples(fit, int(k), rng), pb, rng, inv_var)
        pred = z_all[row : row + int(k)]
        pred[...] = fit.predict(draws, uq, prep.sign)
        e = scores[row : row + int(k), None]
        row += int(k)
        finite = np.isfinite(pred)
        if not finite.all():  # row 0 is the fitted law itself (draws[0] == params)
            np.copyto(pred, np.broadcast_to(pred[0:1], pred.shape).copy(), where=~finite)
        growth = fit.growth if fit.holdout_rmse is not None else default_growth
        extra = np.sqrt(base_var + (growth * lh) ** 2 + floor2)
        # clip the law, not the noise: clipped samples piled on one value make a zero-width tail
        np.maximum(pred, env_lo, out=pred)
        np.minimum(pred, env_hi, out=pred)
        pred += e * extra
        if z_target is not None:
            target_parts.append(_target_u(fit, draws, z_target, prep.sign))
    z_samples = with_planned_anneal(q, z_all, rng)
    warnings = list(notes)
    turn = None
    if curve.x_kind in TURN_X_KINDS:  # on the fit points: long curves are binned (bounded cost)
        turn = detect_turn(prep.u * prep.t_last + prep.t_shift, prep.z)
    if turn is not None:  # overfitting: the monotone families alone would forecast a recovery
        z_samples = with_turn(turn, z_samples, q.x_query, rng)
        warnings.append(turn_warning(turn, prep.sign))
    z_samples, z_sorted = with_wide_component_sorted(z_samples, np.sort(z_samples, axis=0), prep.z_last, scale, uq)
    details: dict[str, float] = {f"weight_{f.name}": float(w) for f, w in zip(fits, weights)}
    details.update(noise_sd=float(prep.raw_noise), fit_points=float(len(prep.z)), skipped_warmup=float(prep.skipped_warmup))
    if turn is not None:
        details.update(turn_x=turn.x_min, turn_slope=prep.sign * turn.slope)
    if target_parts:
        target_details(details, np.concatenate(target_parts) * prep.t_last + prep.t_shift, q)
    marg = to_marginals(q, z_samples, warnings, z_sorted)
    return EngineForecast(marginals=marg, engine="analytic", warnings=tuple(warnings), details=details)


def _target_u(fit: FamilyFit, draws: np.ndarray, z_target: float, sign: float) -> np.ndarray:
    if fit.name == "flat":
        return np.where(draws[:, 0] <= z_target, 0.0, np.inf)
    if fit.name == "vapor":
        return vapor_steps_to_target(draws, z_target, sign)
    return basis_steps_to_target(BY_NAME[fit.name], draws, z_target)
