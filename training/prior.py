"""Curve prior for training the learned engine (vectorised numpy).

PRIOR_VERSION "curvecast-prior-1" is a mixture of two components:

1. ``sample_lcpfn``: LC-PFN's own prior, reproduced from automl/lcpfn (domhan_prior.py, curves.py):
   unnormalised U(0,1)-weighted sum of pow3, ilog2 and Janoschek ("peaked" parameter priors) at
   x = 1..100, rejected unless increasing end-to-start and inside [0, 1], plus iid Gaussian noise with
   std exp(N(-4, 1)). Used both for training and (with a fresh seed) for the benchmark.
2. ``sample_schedule_curves``: curves that follow the learning-rate schedule, from the law
   ``L(t) = L0 + A (S1(t) + s0)^-alpha - C S2(t)`` (Tissue et al. 2024) on schedules drawn from
   constant / cosine / linear / WSD / step with optional warm-up, with slow starts, divergence,
   heteroscedastic noise (shrinking with the LR) and spikes, irregular spacing and a budget that may
   lie beyond the last point. Two thirds are losses (minimise, lower bound 0 or inferred), one third
   accuracies in [0, 1] (maximise, bounded). The schedule is given to the model as features for a
   share of the curves and hidden (features of a constant schedule, "unknown" flag) for the rest.

Model-space values come from ``curvecast.engines.learned.normalization`` applied to the prefix that
is the context at the chosen cutoff, exactly as the serving engine does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curvecast.engines.learned import normalization as nz

PRIOR_VERSION = "curvecast-prior-1.1"
SEQ_LEN = 100

KIND_BOUNDED = 0  # maximise, bounds [0, 1] (identity transform)
KIND_LOSS = 1  # minimise, lower bound 0
KIND_LOSS_INFERRED = 2  # minimise, lower bound inferred from the prefix

PRIOR_PARAMS = {
    "lcpfn_fraction": 0.5,
    "lcpfn": "pow3+ilog2+janoschek peaked, x=1..100, noise std exp(N(-4,1))",
    "schedule_known_prob": 0.6,
    "accuracy_fraction_of_schedule_curves": 1 / 3,
    "loss_inferred_bound_prob": 0.2,
    "divergence_prob": 0.05,
    "slow_start_prob": 0.15,
    "spike_prob": 0.25,
    "late_start_prob": 0.4,
    "annealing_gain_fraction": "log-uniform(0.05, 0.6) of the reducible loss left at the end",
    "loss_noise_rel_std": "exp(N(-5.5, 1.5)) x (0.3 + 0.7 lr)",
    "tau_range": [nz.TAU_MIN, nz.TAU_MAX],
}


@dataclass(frozen=True)
class RawCurves:
    """Curves in their natural units: features (B, N, F), values (B, N) and the transform kind (B,)."""

    feats: np.ndarray
    y: np.ndarray
    kind: np.ndarray


# ---- component 1: LC-PFN ------------------------------------------------------------------------
def sample_lcpfn_clean(rng: np.random.Generator, n: int, seq_len: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free LC-PFN curves (n, seq_len) and their noise std (n,)."""
    x = np.arange(1, seq_len + 1, dtype=np.float64)
    out: list[np.ndarray] = []
    have = 0
    with np.errstate(all="ignore"):
        while have < n:
            m = max(2 * (n - have), 64) * 3
            w = rng.uniform(0.0, 1.0, size=(m, 3))
            a = rng.uniform(-0.6, 0.6, size=(m, 1))
            c = rng.uniform(0.0, 1.25, size=(m, 1))
            alpha = rng.lognormal(0.0, 2.0, size=(m, 1))
            pow3 = c - a * x ** (-alpha)
            c2 = rng.uniform(0.0, 1.0, size=(m, 1))
            a2 = rng.uniform(-0.5, 0.5, size=(m, 1))
            ilog2 = c2 - a2 / np.log(x + 1.0)
            a3 = rng.uniform(0.0, 1.0, size=(m, 1))
            beta = rng.uniform(0.0, 2.0, size=(m, 1))
            k = rng.lognormal(-2.0, 1.0, size=(m, 1))
            delta = rng.lognormal(0.0, 0.5, size=(m, 1))
            jan = a3 - (a3 - beta) * np.exp(-k * x**delta)
            y = w[:, :1] * pow3 + w[:, 1:2] * ilog2 + w[:, 2:] * jan
            ok = (y[:, -1] > y[:, 0]) & np.all((y >= 0) & (y <= 1), axis=1) & ~np.isnan(y).any(axis=1)
            out.append(y[ok])
            have += int(ok.sum())
    y = np.concatenate(out)[:n]
    sigma = np.exp(rng.normal(-4.0, 1.0, size=n))
    return y, sigma


def sample_lcpfn(rng: np.random.Generator, n: int, seq_len: int = SEQ_LEN) -> np.ndarray:
    """Noisy LC-PFN prior curves (n, seq_len); values may leave [0, 1] through the noise."""
    y, sigma = sample_lcpfn_clean(rng, n, seq_len)
    return y + sigma[:, None] * rng.normal(size=y.shape)


def lcpfn_features(n: int, seq_len: int = SEQ_LEN) -> np.ndarray:
    t = np.arange(1, seq_len + 1, dtype=np.float64) / seq_len
    return np.broadcast_to(nz.features_at(t, None), (n, seq_len, nz.N_FEATURES)).copy()


# ---- component 2: schedule-aware curves --------------------------------------------------------
def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))


def sample_schedules(rng: np.random.Generator, n: int, grid: int = nz.SCHEDULE_GRID) -> np.ndarray:
    """LR (n, grid) at cell centres over the budget: constant/cosine/linear/WSD/step, optional warm-up."""
    u = (np.arange(grid) + 0.5) / grid
    shape = rng.integers(0, 5, size=(n, 1))
    warm = np.where(rng.uniform(size=(n, 1)) < 0.4, 0.0, rng.uniform(0.005, 0.1, size=(n, 1)))
    final = np.where(rng.uniform(size=(n, 1)) < 0.5, 0.0, _log_uniform(rng, 0.01, 0.3, (n, 1)))
    frac = np.clip((u - warm) / np.maximum(1.0 - warm, 1e-6), 0.0, 1.0)
    cosine = final + (1.0 - final) * 0.5 * (1.0 + np.cos(np.pi * frac))
    linear = 1.0 + (final - 1.0) * frac
    start = np.maximum(rng.uniform(0.5, 0.95, size=(n, 1)), warm)
    wsd = 1.0 + (final - 1.0) * np.clip((u - start) / np.maximum(1.0 - start, 1e-6), 0.0, 1.0)
    interval = rng.uniform(0.15, 0.5, size=(n, 1))
    gamma = rng.uniform(0.1, 0.5, size=(n, 1))
    step = gamma ** np.floor(np.maximum(u - warm, 0.0) / interval)
    lr = np.select([shape == 0, shape == 1, shape == 2, shape == 3], [np.ones_like(cosine), cosine, linear, wsd], step)
    lr = lr * np.where(warm > 0, np.clip(u / np.maximum(warm, 1e-9), 0.0, 1.0), 1.0)
    return np.maximum(lr, 1e-4)


def sample_positions(rng: np.random.Generator, n: int, seq_len: int = SEQ_LEN) -> np.ndarray:
    """Sorted positions t (n, seq_len) in (0, t_end]: uniform, jittered, random or geometric spacing."""
    t_end = np.where(rng.uniform(size=(n, 1)) < 0.7, 1.0, rng.uniform(0.3, 1.0, size=(n, 1)))
    i = np.arange(1, seq_len + 1) / seq_len
    uniform = i[None, :] * np.ones((n, 1))
    jitter = np.sort(np.clip(i + rng.uniform(-0.5, 0.5, size=(n, seq_len)) / seq_len, 1e-4, 1.0), axis=1)
    random = np.sort(rng.uniform(1e-3, 1.0, size=(n, seq_len)), axis=1)
    lo = 10.0 ** -rng.uniform(1.0, 3.0, size=(n, 1))
    geometric = lo ** (1.0 - (i[None, :] - i[0]) / (1.0 - i[0]))
    kind = rng.integers(0, 4, size=(n, 1))
    t = np.select([kind == 0, kind == 1, kind == 2], [uniform, jitter, random], geometric)
    # late start: the caller logs (or sends) only from t_start on, e.g. after warm-up
    late = rng.uniform(size=(n, 1)) < PRIOR_PARAMS["late_start_prob"]
    t_start = np.where(late, rng.uniform(0.02, 0.4, size=(n, 1)) * t_end, 0.0)
    return t_start + t * (t_end - t_start)


def sample_schedule_curves(rng: np.random.Generator, n: int, seq_len: int = SEQ_LEN) -> RawCurves:
    """Loss/accuracy curves following their LR schedule (see the module docstring)."""
    lr = sample_schedules(rng, n)
    tau = _log_uniform(rng, nz.TAU_MIN, nz.TAU_MAX, n)
    lr_e, s1_e, s2_e = nz.schedule_features(lr, tau)
    t = sample_positions(rng, n, seq_len)
    feats = np.empty((n, seq_len, nz.N_FEATURES))
    for j in range(n):  # interpolation per curve (cheap: n x seq_len)
        feats[j] = nz.features_at(t[j], (lr_e[j], s1_e[j], s2_e[j]))
    lrn, s1, s2 = feats[..., 1], feats[..., 2], feats[..., 3]

    with np.errstate(all="ignore"):
        l0 = 10.0 ** -rng.uniform(0.05, 2.5, size=(n, 1))
        alpha = _log_uniform(rng, 0.1, 1.5, (n, 1))
        s0 = _log_uniform(rng, 1e-3, 0.1, (n, 1))
        amp = (1.0 - l0) * s0**alpha
        base = l0 + amp * (s1 + s0) ** (-alpha)
        end_gap = amp * (1.0 + s0) ** (-alpha)  # reducible loss left at S1 = 1
        c = _log_uniform(rng, 0.05, 0.6, (n, 1)) * end_gap
        loss = base - c * s2
        # slow start: the curve sits at its initial value until a soft onset
        slow = rng.uniform(size=(n, 1)) < PRIOR_PARAMS["slow_start_prob"]
        onset = rng.uniform(0.0, 0.3, size=(n, 1))
        width = rng.uniform(0.01, 0.05, size=(n, 1))
        ramp = 1.0 / (1.0 + np.exp(-(t - onset) / width))
        loss = np.where(slow, 1.0 + (loss - 1.0) * ramp, loss)
        # divergence: exponential blow-up after t_div
        div = rng.uniform(size=(n, 1)) < PRIOR_PARAMS["divergence_prob"]
        t_div = rng.uniform(0.1, 1.2, size=(n, 1))
        grow = _log_uniform(rng, 0.05, 1.0, (n, 1)) * np.expm1(np.maximum(t - t_div, 0.0) / rng.uniform(0.02, 0.2, size=(n, 1)))
        loss = np.where(div, loss + np.minimum(grow, 5.0), loss)

        # heteroscedastic noise shrinking with the LR, plus occasional spikes
        sig_rel = np.exp(rng.normal(-5.5, 1.5, size=(n, 1)))
        noisy_loss = loss * (1.0 + sig_rel * (0.3 + 0.7 * lrn) * rng.normal(size=loss.shape))
        spiky = rng.uniform(size=(n, 1)) < PRIOR_PARAMS["spike_prob"]
        spike_at = rng.uniform(size=loss.shape) < rng.uniform(0.005, 0.05, size=(n, 1))
        spikes = loss * np.exp(rng.normal(-2.5, 1.0, size=loss.shape))
        noisy_loss = noisy_loss + np.where(spiky & spike_at, spikes, 0.0)
        noisy_loss = np.maximum(noisy_loss, 0.0)

        # accuracies: chance level a0 rising towards hi as the loss falls
        is_acc = rng.uniform(size=(n, 1)) < PRIOR_PARAMS["accuracy_fraction_of_schedule_curves"]
        hi = rng.uniform(0.5, 1.0, size=(n, 1))
        a0 = rng.uniform(0.0, 0.6, size=(n, 1)) * hi
        acc = a0 + (hi - a0) * (1.0 - loss)
        n_eval = _log_uniform(rng, 100.0, 1e5, (n, 1))
        acc_c = np.clip(acc, 0.0, 1.0)
        acc_sd = np.sqrt(acc_c * (1.0 - acc_c) / n_eval) + 0.2 * sig_rel * (0.3 + 0.7 * lrn)
        noisy_acc = acc + acc_sd * rng.normal(size=acc.shape) - np.where(spiky & spike_at, spikes * (hi - a0), 0.0)
        noisy_acc = np.clip(noisy_acc, 0.0, 1.0)

    scale = _log_uniform(rng, 0.01, 100.0, (n, 1))  # losses on any scale
    y = np.where(is_acc, noisy_acc, noisy_loss * scale)
    kind = np.where(
        is_acc[:, 0],
        KIND_BOUNDED,
        np.where(rng.uniform(size=n) < PRIOR_PARAMS["loss_inferred_bound_prob"], KIND_LOSS_INFERRED, KIND_LOSS),
    )
    hidden = rng.uniform(size=n) >= PRIOR_PARAMS["schedule_known_prob"]
    feats[hidden] = nz.features_at(t[hidden], None)
    return RawCurves(feats, y, kind.astype(np.int64))


def sample_mixture(rng: np.random.Generator, n: int, lcpfn_fraction: float | None = None) -> RawCurves:
    frac = PRIOR_PARAMS["lcpfn_fraction"] if lcpfn_fraction is None else lcpfn_fraction
    n_lc = int(rng.binomial(n, frac))
    parts = []
    if n_lc:
        parts.append(RawCurves(lcpfn_features(n_lc), sample_lcpfn(rng, n_lc), np.full(n_lc, KIND_BOUNDED)))
    if n - n_lc:
        parts.append(sample_schedule_curves(rng, n - n_lc))
    return RawCurves(
        np.concatenate([p.feats for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.kind for p in parts]),
    )


# ---- model space --------------------------------------------------------------------------------
def to_model_space(raw: RawCurves, cutoff: int) -> np.ndarray:
    """Model-space values (B, N) using each curve's first ``cutoff`` points as the observed prefix."""
    y = raw.y
    a = np.zeros(len(y))
    b = np.ones(len(y))
    prefix = y[:, :cutoff]
    for kind in (KIND_LOSS, KIND_LOSS_INFERRED):
        sel = raw.kind == kind
        if not sel.any():
            continue
        p = prefix[sel]
        if kind == KIND_LOSS:
            lower = np.zeros(len(p))
        else:
            ref = p[:, : nz.REF_POINTS].mean(axis=1)
            lower = p.min(axis=1) - nz._spread(p, ref)
        a[sel], b[sel] = nz.loss_transform_params(p, lower)
    z = a[:, None] + b[:, None] * y
    return np.clip(z, nz.Z_MIN, nz.Z_MAX)


def make_batch(rng: np.random.Generator, batch: int, cutoff: int, lcpfn_fraction: float | None = None):
    """(ctx_x, ctx_y, qry_x, qry_y) float32 arrays for one training step with a shared cutoff."""
    raw = sample_mixture(rng, batch, lcpfn_fraction)
    z = to_model_space(raw, cutoff)
    f = raw.feats.astype(np.float32)
    z = z.astype(np.float32)
    return f[:, :cutoff], z[:, :cutoff], f[:, cutoff:], z[:, cutoff:]


def bucket_borders(rng: np.random.Generator, n_buckets: int, n_batches: int = 200, batch: int = 64) -> np.ndarray:
    """Equal-mass bucket borders (n_buckets + 1,) from the model-space targets of prior batches."""
    vals = []
    for _ in range(n_batches):
        k = int(rng.integers(1, SEQ_LEN))
        _, _, _, qy = make_batch(rng, batch, k)
        vals.append(qy.ravel())
    v = np.concatenate(vals).astype(np.float64)
    borders = np.quantile(v, np.linspace(0.0, 1.0, n_buckets + 1))
    borders[0], borders[-1] = nz.Z_MIN, nz.Z_MAX
    # strictly increasing even where the prior has point masses (clipping)
    min_w = 1e-5
    for i in range(1, len(borders)):
        borders[i] = max(borders[i], borders[i - 1] + min_w)
    return borders
