"""A small synthetic source generated in code, so the quick mode and CI run without the data folder.

Three shapes that real sources also have: power-law loss curves (minimize), saturating accuracy curves
in [0, 1] (maximize) and WSD-schedule loss curves whose cooldown drop follows the known LR schedule.
"""

from __future__ import annotations

import numpy as np

from curvecast.domain.curve import Goal, LrSchedule, ScheduleShape, XKind

from .record import CurveRecord


def _pow_loss(rng: np.random.Generator, i: int) -> CurveRecord:
    n = int(rng.integers(30, 80))
    x = np.arange(1, n + 1, dtype=np.float64)
    c, a, alpha = rng.uniform(1.5, 3.0), rng.uniform(1.0, 4.0), rng.uniform(0.3, 1.2)
    clean = c + a * x ** (-alpha)
    y = clean + rng.normal(0, 0.01 + 0.02 * rng.random(), n) * np.sqrt(clean - c + 0.05)
    return CurveRecord(f"synthetic/pow_loss_{i}", "synthetic", x, y, Goal.MINIMIZE, XKind.STEP, float(n), "loss", lower_bound=0.0, meta={"group": "loss"})


def _accuracy(rng: np.random.Generator, i: int) -> CurveRecord:
    n = int(rng.integers(20, 60))
    x = np.arange(1, n + 1, dtype=np.float64)
    top, y0, k, d = rng.uniform(0.7, 0.97), rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.3), rng.uniform(0.6, 1.2)
    clean = top - (top - y0) * np.exp(-k * x**d)
    y = np.clip(clean + rng.normal(0, rng.uniform(0.003, 0.02), n), 0.0, 1.0)
    return CurveRecord(f"synthetic/accuracy_{i}", "synthetic", x, y, Goal.MAXIMIZE, XKind.EPOCH, float(n), "accuracy", lower_bound=0.0, upper_bound=1.0, meta={"group": "accuracy"})


def _wsd_loss(rng: np.random.Generator, i: int) -> CurveRecord:
    total = float(rng.integers(40, 100)) * 100.0
    x = np.arange(100.0, total + 1.0, 100.0)
    sched = LrSchedule(ScheduleShape.WSD, peak_lr=3e-4, final_lr=3e-5, warmup_steps=0.05 * total, total_steps=total, decay_start=0.8 * total)
    grid = np.arange(0.0, total + 1.0, 10.0)
    lr = sched.lr_at(grid)
    s1 = np.interp(x, grid, np.cumsum(lr) * 10.0) / 3e-4
    l0, a, alpha, cdrop = rng.uniform(2.0, 3.0), rng.uniform(3.0, 6.0), rng.uniform(0.3, 0.6), rng.uniform(0.1, 0.3)
    drop = cdrop * (1.0 - sched.lr_at(x) / 3e-4)
    y = l0 + a * s1 ** (-alpha) - drop + rng.normal(0, 0.01, len(x))
    return CurveRecord(
        f"synthetic/wsd_loss_{i}", "synthetic", x, y, Goal.MINIMIZE, XKind.STEP, total, "loss",
        lr=sched.lr_at(x), schedule=sched, lower_bound=0.0, meta={"group": "loss"},
    )


def synthetic_curves(n: int = 9, seed: int = 0) -> list[CurveRecord]:
    """``n`` curves cycling through the three shapes; the same seed gives the same curves."""
    rng = np.random.default_rng(seed)
    makers = (_pow_loss, _accuracy, _wsd_loss)
    return [makers[i % 3](rng, i) for i in range(n)]


def lcpfn_prior_curves(n: int = 100, seed: int = 0, length: int = 100) -> list[CurveRecord]:
    """Curves from LC-PFN's default prior (Adriaensen et al. 2023), written independently of training/:

    a weighted (weights ~ U(0, 1), unnormalised) sum of pow3 = c - a x^-alpha, ilog2 = c - a / log(x + 1)
    and Janoschek = a - (a - beta) exp(-k x^delta) at x = 1..100; clean curves that do not end above
    their start, or leave [0, 1], are rejected; then iid Gaussian noise with sd = exp(N(-4, 1)).
    Lets the ruler score every engine on LC-PFN's own task (its paper's Table 1 protocol).
    """
    rng = np.random.default_rng([seed, 1023])
    x = np.arange(1, length + 1, dtype=np.float64)
    out: list[CurveRecord] = []
    while len(out) < n:
        m = 4 * (n - len(out)) + 16
        c1, a1, al = rng.uniform(0, 1.25, m), rng.uniform(-0.6, 0.6, m), rng.lognormal(0.0, 2.0, m)
        c2, a2 = rng.uniform(0, 1, m), rng.uniform(-0.5, 0.5, m)
        ja, jb, jk, jd = rng.uniform(0, 1, m), rng.uniform(0, 2, m), rng.lognormal(-2.0, 1.0, m), rng.lognormal(0.0, 0.5, m)
        w = rng.uniform(0, 1, (m, 3))
        with np.errstate(all="ignore"):
            pow3 = c1[:, None] - a1[:, None] * x[None, :] ** (-al[:, None])
            ilog2 = c2[:, None] - a2[:, None] / np.log(x[None, :] + 1.0)
            jan = ja[:, None] - (ja - jb)[:, None] * np.exp(-jk[:, None] * x[None, :] ** jd[:, None])
            clean = w[:, :1] * pow3 + w[:, 1:2] * ilog2 + w[:, 2:] * jan
        ok = np.all(np.isfinite(clean), axis=1) & (clean[:, -1] > clean[:, 0]) & np.all((clean >= 0) & (clean <= 1), axis=1)
        for row in clean[ok]:
            if len(out) >= n:
                break
            sd = float(np.exp(rng.normal(-4.0, 1.0)))
            y = row + rng.normal(0.0, sd, length)
            i = len(out)
            out.append(CurveRecord(f"lcpfn_prior/{i}", "lcpfn_prior", x.copy(), y, Goal.MAXIMIZE, XKind.EPOCH, float(length), "accuracy", meta={"group": "prior"}))
    return out
