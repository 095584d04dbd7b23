"""Curve prior 2.0 (``curvecast-prior-2.0``): curves drawn from what real training does.

Prior 1.1 draws smooth law curves with iid Gaussian noise at 100 points. Real curves (see
docs/prior.md and /work/shared/notes) have autocorrelated, heavy-tailed noise whose scale shrinks with
the loss, warm-up transients, plateaus, LR-step drops and cooldowns, validation losses that turn up,
accuracies that collapse, runs that diverge, and anything from 3 to 10^5 logged points, which serving
reduces to at most ``MAX_CONTEXT`` context points (``engine.reduce_context``). Prior 2.0 draws:

* a native curve of ``L`` points, ``L`` log-uniform in [3, 1e5], at uniform, late-starting or geometric
  (sample-wise) spacing; an observed prefix of ``n_obs`` points; the context is exactly the points
  ``reduce_context(n_obs)`` keeps, the value transform uses the first ``REF_POINTS`` points and the
  context's range (the serving rule, exact whenever ``n_obs <= MAX_CONTEXT``); queries are drawn from the
  points after the prefix;
* a clean loss from the LR-annealing law ``L0 + A (S1' + s0)^-alpha - C S2`` (Tissue et al. 2024) on a
  drawn schedule (constant/cosine/linear/WSD/step, warm-up), where ``S1'`` is S1 with optional plateaus
  (progress stalls), ``C`` removes ``cooldown_gain`` of the reducible loss left at the end under a full
  anneal (fitted to real cooldowns by ``training.fit_prior``), plus a warm-up transient, an overfitting
  rise for validation losses and divergence;
* noise: multiplicative (log-space) AR(1) per native step with Student-t innovations, relative scale
  ``sig * (L(t)/L(0))^(kappa - 1)`` (kappa = 1: noise proportional to the loss), times the LR factor;
  between two sampled native points ``gap`` steps apart the AR correlation is ``phi^gap`` (exact for
  subsampled long curves);
* accuracies from the loss, with optional collapse to chance; logit-space noise keeps them inside
  (0, 1), and losses stay above their floor: bounds are limits, never values the prior piles onto.

The LC-PFN component of prior 1 stays in the mixture (``lcpfn_fraction``) so the model keeps LC-PFN's
benchmark. ``Prior2Params`` holds every hyperparameter; ``training.fit_prior`` fits the noise, shape,
overfitting and cooldown ones to real dev curves and writes them as JSON (``load_params``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from curvecast.engines.learned import normalization as nz
from curvecast.engines.learned.engine import MAX_CONTEXT, reduce_context
from training import prior as P1

PRIOR_VERSION = "curvecast-prior-2.0"
LONG_CTX = MAX_CONTEXT  # batches of long curves: every curve's context is reduced to this many points


@dataclass(frozen=True)
class Prior2Params:
    """Every hyperparameter of prior 2.0 (defaults: the published/inspected ranges in docs/prior.md)."""

    lcpfn_fraction: float = 0.35
    accuracy_fraction: float = 0.25
    loss_inferred_bound_prob: float = 0.2
    schedule_known_prob: float = 0.6
    min_len: int = 3
    max_len: int = 100_000
    long_batch_prob: float = 0.3  # share of batches whose curves have more points than MAX_CONTEXT
    geometric_spacing_prob: float = 0.15  # sample-wise curves (LCDB anchors 16*2^(k/2))
    late_start_prob: float = 0.3
    # shape
    alpha_log_range: tuple[float, float] = (np.log(0.1), np.log(1.5))
    floor_log10_hi: float = 2.5  # L0 / L(0) = 10^-U(0.05, floor_log10_hi): how far losses can fall
    cooldown_gain_log_mu: float = np.log(0.25)  # fraction of the end's reducible loss a full anneal removes
    cooldown_gain_log_sd: float = 0.6
    warmup_transient_prob: float = 0.3
    plateau_prob: float = 0.15
    overfit_prob: float = 0.15  # validation losses that turn up (U-shape)
    divergence_prob: float = 0.04
    collapse_prob: float = 0.05  # accuracy collapse to chance
    # noise
    noise_log_mu: float = -4.5  # log relative noise std (per point)
    noise_log_sd: float = 1.2
    ar_phi_logit_mu: float = 0.0  # phi = sigmoid(N(mu, 1.5)) per native step
    tail_df_log_mu: float = np.log(5.0)  # Student-t degrees of freedom, log-normal(mu, 0.7), >= 2.2
    kappa_mu: float = 1.0  # noise ~ L^kappa; kappa ~ N(mu, 0.3)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else float(v) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


def load_params(path: str | Path | None) -> Prior2Params:
    """Defaults overridden by a JSON file of fitted values (written by ``training.fit_prior``)."""
    if path is None:
        return Prior2Params()
    return params_from_dict(json.loads(Path(path).read_text()))


def params_from_dict(data: dict) -> Prior2Params:
    """Defaults overridden by the known keys of ``data`` (or of its ``params`` entry); others ignored."""
    data = data.get("params", data)
    names = {f.name for f in fields(Prior2Params)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return replace(Prior2Params(), **kw)


@dataclass(frozen=True)
class CurveSet:
    """Curves at sampled native indices: features (B, K, F), values (B, K), native index (B, K), kind (B,),
    length (B,) and the true normalised LR (B, K) even where the features hide the schedule."""

    feats: np.ndarray
    y: np.ndarray
    idx: np.ndarray
    kind: np.ndarray
    length: np.ndarray
    lr: np.ndarray


# ---- positions -----------------------------------------------------------------------------------
def _log_uniform_int(rng: np.random.Generator, lo: float, hi: np.ndarray | float, size: int) -> np.ndarray:
    hi = np.maximum(np.asarray(hi, dtype=np.float64), lo)
    return np.floor(np.exp(rng.uniform(np.log(lo), np.log(hi + 1.0), size=size))).astype(np.int64)


def native_positions(rng: np.random.Generator, idx: np.ndarray, length: np.ndarray, p: Prior2Params) -> np.ndarray:
    """t (B, K) of native points ``idx`` (0-based) of curves with ``length`` points; t_end <= 1."""
    n = len(length)
    L = length[:, None].astype(np.float64)
    t_end = np.where(rng.uniform(size=(n, 1)) < 0.7, 1.0, rng.uniform(0.3, 1.0, size=(n, 1)))
    uniform = (idx + 1.0) / L
    lo = 10.0 ** -rng.uniform(1.0, 4.0, size=(n, 1))
    geometric = lo ** ((L - 1.0 - idx) / np.maximum(L - 1.0, 1.0))
    geo = rng.uniform(size=(n, 1)) < p.geometric_spacing_prob
    t = np.where(geo, geometric, uniform)
    late = rng.uniform(size=(n, 1)) < p.late_start_prob
    t_start = np.where(late & ~geo, rng.uniform(0.02, 0.4, size=(n, 1)), 0.0)
    return (t_start + t * (1.0 - t_start)) * t_end


# ---- clean curves --------------------------------------------------------------------------------
def _plateau_warp(rng: np.random.Generator, s1: np.ndarray, p: Prior2Params) -> np.ndarray:
    """S1 with one progress stall (plateau) on a share of curves: S1 stops growing in a window."""
    n = len(s1)
    on = rng.uniform(size=(n, 1)) < p.plateau_prob
    a = rng.uniform(0.02, 0.6, size=(n, 1))
    w = rng.uniform(0.02, 0.25, size=(n, 1))
    stalled = np.clip(s1 - a, 0.0, w) * 0.97
    return np.where(on, s1 - stalled, s1)


def clean_losses(rng: np.random.Generator, feats: np.ndarray, p: Prior2Params) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free losses (B, K) relative to L(0) ~ 1 at the points' features, and a divergence mask."""
    n = feats.shape[0]
    t, s1, s2 = feats[..., 0], feats[..., 2], feats[..., 3]
    l0 = 10.0 ** -rng.uniform(0.05, max(p.floor_log10_hi, 0.06), size=(n, 1))
    alpha = np.exp(rng.uniform(*p.alpha_log_range, size=(n, 1)))
    s0 = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), size=(n, 1)))
    amp = (1.0 - l0) * s0**alpha
    s1w = _plateau_warp(rng, s1, p)
    base = l0 + amp * (s1w + s0) ** (-alpha)
    end_gap = amp * (1.0 + s0) ** (-alpha)
    gain = np.exp(rng.normal(p.cooldown_gain_log_mu, p.cooldown_gain_log_sd, size=(n, 1)))
    loss = base - np.minimum(gain, 0.95) * end_gap * np.clip(s2, 0.0, 1.0)
    # warm-up transient: a fast extra decay over the first 0.2-3% of training
    tr = rng.uniform(size=(n, 1)) < p.warmup_transient_prob
    width = np.exp(rng.uniform(np.log(0.002), np.log(0.03), size=(n, 1)))
    loss = loss + np.where(tr, rng.uniform(0.2, 2.0, size=(n, 1)) * np.exp(-t / width), 0.0)
    # overfitting: validation loss turns up after t_turn, by up to a share of the gain so far
    of = rng.uniform(size=(n, 1)) < p.overfit_prob
    t_turn = rng.uniform(0.1, 0.8, size=(n, 1))
    rise = np.exp(rng.uniform(np.log(0.02), np.log(1.0), size=(n, 1))) * (1.0 - l0)
    q = rng.uniform(1.0, 2.0, size=(n, 1))
    loss = loss + np.where(of, rise * (np.maximum(t - t_turn, 0.0) / np.maximum(1.0 - t_turn, 1e-3)) ** q, 0.0)
    # divergence: exponential blow-up after t_div (clipped in model space)
    div = rng.uniform(size=(n, 1)) < p.divergence_prob
    t_div = rng.uniform(0.1, 1.2, size=(n, 1))
    with np.errstate(over="ignore"):
        grow = np.expm1(np.minimum(np.maximum(t - t_div, 0.0) / rng.uniform(0.02, 0.2, size=(n, 1)), 50.0))
    loss = np.where(div, loss * (1.0 + np.minimum(0.1 * grow, 1e3)), loss)
    return loss, div[:, 0]


# ---- noise ---------------------------------------------------------------------------------------
def ar_student_noise(rng: np.random.Generator, idx: np.ndarray, phi: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Unit-variance AR(1) noise (B, K) at native indices ``idx`` (any order, repeats allowed).

    Along sorted indices the correlation between points ``d`` steps apart is ``phi^d``; innovations
    are Student-t with ``df`` degrees of freedom scaled to unit variance (heavy tails)."""
    order = np.argsort(idx, axis=1, kind="stable")
    sidx = np.take_along_axis(idx, order, axis=1).astype(np.float64)
    gap = np.diff(sidx, axis=1, prepend=sidx[:, :1])
    df = df[:, None]
    innov = rng.standard_t(np.broadcast_to(df, idx.shape)) * np.sqrt((df - 2.0) / df)
    rho = phi[:, None] ** gap
    e = np.empty(idx.shape)
    e[:, 0] = innov[:, 0]
    scale = np.sqrt(np.maximum(1.0 - rho**2, 0.0))
    for k in range(1, idx.shape[1]):
        e[:, k] = rho[:, k] * e[:, k - 1] + scale[:, k] * innov[:, k]
    out = np.empty_like(e)
    np.put_along_axis(out, order, e, axis=1)
    return out


def draw_noise_params(rng: np.random.Generator, n: int, p: Prior2Params) -> dict[str, np.ndarray]:
    """Per-curve relative noise std, AR coefficient, tail df and loss exponent kappa."""
    return {
        "sig": np.exp(rng.normal(p.noise_log_mu, p.noise_log_sd, size=n)),
        "phi": 1.0 / (1.0 + np.exp(-rng.normal(p.ar_phi_logit_mu, 1.5, size=n))),
        "df": np.maximum(np.exp(rng.normal(p.tail_df_log_mu, 0.7, size=n)), 2.2),
        "kappa": rng.normal(p.kappa_mu, 0.3, size=n),
    }


def noisy_losses(rng, loss: np.ndarray, idx: np.ndarray, lrn: np.ndarray, noise: dict) -> np.ndarray:
    """Multiplicative noise: log y = log L + sig (L/L_first)^(kappa-1) (0.3 + 0.7 lr) e, always > 0."""
    e = ar_student_noise(rng, idx, noise["phi"], noise["df"])
    first = np.take_along_axis(loss, np.argmin(idx, axis=1)[:, None], axis=1)
    ratio = np.clip(loss / np.maximum(first, 1e-12), 1e-3, 1e3)
    rel = noise["sig"][:, None] * ratio ** (noise["kappa"][:, None] - 1.0) * (0.3 + 0.7 * np.clip(lrn, 0, 1))
    return loss * np.exp(np.minimum(rel, 1.0) * e)


def accuracies(rng, loss: np.ndarray, t: np.ndarray, idx, lrn, noise: dict, p: Prior2Params) -> np.ndarray:
    """Accuracy rising from chance a0 towards hi as the loss falls; optional collapse; inside (0, 1)."""
    n = loss.shape[0]
    hi = rng.uniform(0.5, 0.995, size=(n, 1))
    a0 = rng.uniform(0.0, 0.6, size=(n, 1)) * hi
    acc = a0 + (hi - a0) * (1.0 - np.minimum(loss, 1.2))
    col = rng.uniform(size=(n, 1)) < p.collapse_prob
    t_c = rng.uniform(0.1, 1.0, size=(n, 1))
    acc = np.where(col & (t > t_c), a0, acc)
    acc = np.clip(acc, 1e-4, 1.0 - 1e-4)
    e = ar_student_noise(rng, idx, noise["phi"], noise["df"])
    logit = np.log(acc / (1.0 - acc)) + 3.0 * noise["sig"][:, None] * (0.3 + 0.7 * np.clip(lrn, 0, 1)) * e
    return 1.0 / (1.0 + np.exp(-logit))


# ---- whole curves at chosen native indices -------------------------------------------------------
def sample_curves(rng: np.random.Generator, idx: np.ndarray, length: np.ndarray, p: Prior2Params) -> CurveSet:
    """Prior-2.0 schedule-aware curves evaluated at native indices ``idx`` (B, K) of ``length`` (B,)."""
    n = len(length)
    lr = P1.sample_schedules(rng, n)
    tau = np.exp(rng.uniform(np.log(nz.TAU_MIN), np.log(nz.TAU_MAX), size=n))
    lr_e, s1_e, s2_e = nz.schedule_features(lr, tau)
    t = native_positions(rng, idx, length, p)
    feats = np.empty(idx.shape + (nz.N_FEATURES,))
    for j in range(n):
        feats[j] = nz.features_at(t[j], (lr_e[j], s1_e[j], s2_e[j]))
    loss, _ = clean_losses(rng, feats, p)
    noise = draw_noise_params(rng, n, p)
    lrn = feats[..., 1]
    is_acc = rng.uniform(size=n) < p.accuracy_fraction
    with np.errstate(all="ignore"):
        y_loss = noisy_losses(rng, loss, idx, lrn, noise) * np.exp(rng.uniform(np.log(0.01), np.log(100.0), size=(n, 1)))
        y_acc = accuracies(rng, loss, t, idx, lrn, noise, p)
    y = np.where(is_acc[:, None], y_acc, y_loss)
    y = np.where(np.isfinite(y), y, 1e30)
    inferred = rng.uniform(size=n) < p.loss_inferred_bound_prob
    kind = np.where(is_acc, P1.KIND_BOUNDED, np.where(inferred, P1.KIND_LOSS_INFERRED, P1.KIND_LOSS))
    hidden = rng.uniform(size=n) >= p.schedule_known_prob
    lrn = lrn.copy()
    for j in np.flatnonzero(hidden):
        feats[j] = nz.features_at(t[j], None)
    return CurveSet(feats, y, idx, kind.astype(np.int64), length, lrn.copy())


def full_curves(rng: np.random.Generator, n: int, length: int, p: Prior2Params) -> CurveSet:
    """``n`` curves with every one of their ``length`` native points (for statistics and tests)."""
    idx = np.broadcast_to(np.arange(int(length)), (n, int(length))).copy()
    return sample_curves(rng, idx, np.full(n, int(length)), p)


# ---- training batches (the serving context rule) -------------------------------------------------
def _context_rows(n_obs: np.ndarray, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Native indices (B, n_ctx) that ``reduce_context`` keeps for each prefix, padded, and a mask."""
    rows = np.zeros((len(n_obs), n_ctx), np.int64)
    mask = np.zeros((len(n_obs), n_ctx), np.float32)
    for j, m in enumerate(n_obs):
        keep = reduce_context(int(m))
        rows[j, : len(keep)] = keep
        rows[j, len(keep):] = keep[-1]
        mask[j, : len(keep)] = 1.0
    return rows, mask


def _model_space(y: np.ndarray, kind: np.ndarray, ref_y: np.ndarray, ref_ok: np.ndarray,
                 ctx_y: np.ndarray, ctx_mask: np.ndarray) -> np.ndarray:
    """z = a + b y with the serving transform: ref = mean of the first REF_POINTS observed values,
    spread from the context's range (the whole prefix whenever it is not reduced)."""
    a, b = np.zeros(len(y)), np.ones(len(y))
    loss = kind != P1.KIND_BOUNDED
    if loss.any():
        ref = (ref_y * ref_ok).sum(1) / ref_ok.sum(1)
        big = np.where(ctx_mask > 0, ctx_y, -np.inf).max(1)
        small = np.where(ctx_mask > 0, ctx_y, np.inf).min(1)
        spread = np.maximum(np.maximum(big - small, 0.1 * np.abs(ref)), 1e-8)
        lower = np.where(kind == P1.KIND_LOSS_INFERRED, small - spread, 0.0)
        scale = np.maximum(ref - lower, spread * 1e-3)
        scale = np.maximum(np.minimum(scale, spread * 1e4), 1e-12)
        a = np.where(loss, ref / scale, a)
        b = np.where(loss, -1.0 / scale, b)
    return np.clip(a[:, None] + b[:, None] * y, nz.Z_MIN, nz.Z_MAX)


def draw_lengths(rng: np.random.Generator, batch: int, n_ctx: int, long: bool, p: Prior2Params):
    """(length, n_obs) per curve: n_obs = n_ctx for short batches, log-uniform past MAX_CONTEXT for long."""
    if long:
        length = _log_uniform_int(rng, MAX_CONTEXT + 2, p.max_len, batch)
        frac = rng.uniform(0.05, 0.95, size=batch)
        n_obs = np.clip(np.round(frac * length), MAX_CONTEXT + 1, length - 1).astype(np.int64)
        return length, n_obs
    n_obs = np.full(batch, n_ctx, np.int64)
    frac = rng.uniform(0.05, 0.95, size=batch)
    length = np.maximum(np.round(n_ctx / frac), max(n_ctx + 1, p.min_len)).astype(np.int64)
    return np.minimum(length, p.max_len), n_obs


def make_batch(rng: np.random.Generator, batch: int, p: Prior2Params, n_qry: int | None = None):
    """(ctx_x, ctx_y, ctx_mask, qry_x, qry_y) float32 for one step: one context size per batch.

    Short batches: every curve has n_ctx = n_obs in 1..MAX_CONTEXT observed points (like prior 1);
    long batches: 97..1e5 observed points reduced to MAX_CONTEXT by the serving rule. LC-PFN curves
    (x = 1..100) make up ``lcpfn_fraction`` of each batch and use the same cutoff (<= 96)."""
    long = rng.uniform() < p.long_batch_prob
    n_ctx = LONG_CTX if long else int(rng.integers(1, MAX_CONTEXT + 1))
    m = n_qry if n_qry is not None else max(P1.SEQ_LEN - n_ctx, 24)
    n_lc = int(rng.binomial(batch, p.lcpfn_fraction))
    n_s = batch - n_lc
    parts = []
    if n_s:
        length, n_obs = draw_lengths(rng, n_s, n_ctx, long, p)
        ctx_rows, mask = _context_rows(n_obs, n_ctx)
        ref_rows = np.minimum(np.arange(nz.REF_POINTS)[None, :], n_obs[:, None] - 1)
        ref_ok = (np.arange(nz.REF_POINTS)[None, :] < n_obs[:, None]).astype(np.float64)
        q_rows = n_obs[:, None] + np.floor(rng.uniform(size=(n_s, m)) * (length - n_obs)[:, None]).astype(np.int64)
        idx = np.concatenate([ref_rows, ctx_rows, q_rows], axis=1)
        cs = sample_curves(rng, idx, length, p)
        r, c = nz.REF_POINTS, nz.REF_POINTS + n_ctx
        z = _model_space(cs.y, cs.kind, cs.y[:, :r], ref_ok, cs.y[:, r:c], mask)
        parts.append((cs.feats[:, r:c], z[:, r:c], mask, cs.feats[:, c:], z[:, c:]))
    if n_lc:
        cut = min(n_ctx, P1.SEQ_LEN - 1)
        y = P1.sample_lcpfn(rng, n_lc)
        f = P1.lcpfn_features(n_lc)
        q = cut + np.floor(rng.uniform(size=(n_lc, m)) * (P1.SEQ_LEN - cut)).astype(np.int64)
        qf = np.take_along_axis(f, q[..., None], axis=1)
        qy = np.take_along_axis(y, q, axis=1)
        cf, cy = f[:, :cut], y[:, :cut]
        pad = n_ctx - cut
        if pad:
            cf = np.concatenate([cf, np.repeat(cf[:, -1:], pad, 1)], 1)
            cy = np.concatenate([cy, np.repeat(cy[:, -1:], pad, 1)], 1)
        mk = np.concatenate([np.ones((n_lc, cut)), np.zeros((n_lc, pad))], 1)
        parts.append((cf, cy, mk, qf, qy))
    return tuple(np.concatenate([pt[i] for pt in parts]).astype(np.float32) for i in range(5))


def bucket_borders(rng: np.random.Generator, n_buckets: int, p: Prior2Params, n_batches: int = 200, batch: int = 64):
    """Equal-mass bucket borders from prior-2.0 query targets (as prior 1's ``bucket_borders``)."""
    v = np.concatenate([make_batch(rng, batch, p)[4].ravel() for _ in range(n_batches)]).astype(np.float64)
    borders = np.quantile(v, np.linspace(0.0, 1.0, n_buckets + 1))
    borders[0], borders[-1] = nz.Z_MIN, nz.Z_MAX
    for i in range(1, len(borders)):
        borders[i] = max(borders[i], borders[i - 1] + 1e-5)
    return borders
