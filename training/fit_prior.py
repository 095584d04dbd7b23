"""Fit prior 2.0's hyperparameters so that real dev curves look like draws from it.

    PYTHONPATH=service:. python -m training.fit_prior --data ../shared/data \
        --out training/prior2_fitted.json --report training/runs/fit_prior/report.json

Simulation-based moment matching, no hand tuning: for each *tune* source (taskset valid losses,
multi-power-law LLM losses with their LR, modded-nanogpt per-step train losses) prior curves are drawn
with the source's lengths, the ``curve_stats`` statistics are computed identically on both, and the
discrepancy between the *pooled* distributions (every source weighted equally, because the prior must
cover the population of sources, not each one) ``D = sum_stat sum_q w_q ((Q_prior(q) - Q_real(q)) /
scale)^2`` over the quantiles q = 0.1, 0.25, 0.5, 0.75, 0.9 (overfitting as a rate) is minimised by
coordinate search over a grid per hyperparameter (common random numbers, two sweeps). The per-source
D of the report uses medians and quartiles. *Held-out* sources (Gemstones, modded-nanogpt validation curves, ScAn-Bench VLM validation
losses) are never used by the search; the report gives D and the statistics table on both splits for
prior 1.1, prior 2.0 with its defaults and prior 2.0 fitted. The data folder is read, never copied.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from training import prior as P1
from training import prior2 as P2
from training.curve_stats import STATS, Curve, stats_table, summarise

TUNE = ("taskset", "multipowerlaw", "nanogpt_train")
HELDOUT = ("gemstones", "nanogpt_val", "scanbench_vlm")
MAX_POINTS = 2000  # longer curves are thinned (a real run logged less often)
GRIDS: dict[str, list[float]] = {
    "noise_log_mu": list(np.linspace(-7.0, -0.5, 14)),
    "noise_log_sd": [0.4, 0.8, 1.2, 1.6, 2.2],
    "ar_phi_logit_mu": list(np.linspace(-3.0, 3.0, 9)),
    "tail_df_log_mu": list(np.log([2.5, 3.0, 4.0, 6.0, 10.0, 20.0, 50.0])),
    "kappa_mu": [0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
    "overfit_prob": [0.0, 0.05, 0.1, 0.2, 0.3, 0.5],
    "cooldown_gain_log_mu": list(np.log([0.03, 0.06, 0.1, 0.2, 0.35, 0.6, 0.9])),
    "floor_log10_hi": [0.3, 0.6, 1.0, 1.5, 2.5],
}


# ---- real curves ---------------------------------------------------------------------------------
def _thin(x: np.ndarray, y: np.ndarray, lr: np.ndarray | None):
    if len(x) <= MAX_POINTS:
        return x, y, lr
    k = int(np.ceil(len(x) / MAX_POINTS))
    return x[::k], y[::k], (lr[::k] if lr is not None else None)


def _group_curves(df, key, xcol: str, ycol: str, source: str, lrcol: str | None = None,
                  limit: int = 300, seed: int = 0) -> list[Curve]:
    groups = list(df.groupby(key, sort=True))
    rng = np.random.default_rng(seed)
    if len(groups) > limit:
        groups = [groups[i] for i in sorted(rng.choice(len(groups), limit, replace=False))]
    out = []
    for _, g in groups:
        g = g.sort_values(xcol).drop_duplicates(xcol)
        x = g[xcol].to_numpy(np.float64)
        y = g[ycol].to_numpy(np.float64)
        lr = g[lrcol].to_numpy(np.float64) if lrcol and lrcol in g and g[lrcol].notna().all() else None
        x, y, lr = _thin(x, y, lr)
        if len(x) >= 3:
            out.append(Curve(x, y, lr, source))
    return out


def load_source(data: Path, name: str, limit: int = 300) -> list[Curve]:
    """Loss curves of one dev source (minimised, x > 0)."""
    import pandas as pd

    if name == "taskset":
        df = pd.read_parquet(data / "taskset/taskset_curves.parquet")
        df = df.assign(x=df["step_idx"] + 1.0)
        return _group_curves(df, ["task", "config_id"], "x", "valid_loss", name, limit=limit)
    if name == "multipowerlaw":
        df = pd.read_csv(data / "multipowerlaw/all_curves.csv")
        return _group_curves(df, ["model_size_M", "schedule"], "step", "loss", name, "lr", limit=limit)
    if name == "nanogpt_train":
        df = pd.read_csv(data / "modded_nanogpt/train_curves.csv.gz")
        df = df[df["step"] > 0]
        return _group_curves(df, "run_id", "step", "train_loss", name, "lr", limit=limit)
    if name == "nanogpt_val":
        df = pd.read_csv(data / "modded_nanogpt/val_curves.csv.gz")
        df = df[df["step"] > 0]
        return _group_curves(df, "run_id", "step", "val_loss", name, limit=limit)
    if name == "gemstones":
        df = pd.read_json(data / "gemstones/fineweb_edu_losses_combined.jsonl", lines=True)
        return _group_curves(df, "run_name", "step", "final_loss", name, limit=limit)
    if name == "scanbench_vlm":
        df = pd.read_csv(data / "scan_bench/vlm/data.csv.gz")
        return _group_curves(df, "config_id", "epoch", "val_loss", name, "current_lr_value", limit=limit)
    raise ValueError(f"unknown source {name!r}")


# ---- prior draws with a source's lengths ---------------------------------------------------------
def _length_bins(lengths: np.ndarray, n_bins: int = 6) -> list[tuple[int, int]]:
    """(length, count) pairs: the source's lengths grouped into log bins (median length per bin)."""
    edges = np.quantile(np.log(lengths), np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, np.log(lengths), side="right") - 1, 0, n_bins - 1)
    return [(int(np.median(lengths[which == b])), int((which == b).sum())) for b in range(n_bins) if (which == b).any()]


def prior2_draws(p: P2.Prior2Params, lengths: np.ndarray, seed: int) -> list[Curve]:
    """Loss curves from prior 2.0 with (about) the given lengths, every native point kept."""
    rng = np.random.default_rng(seed)
    q = replace(p, accuracy_fraction=0.0)
    out = []
    for L, n in _length_bins(lengths):
        cs = P2.full_curves(rng, n, max(L, 3), q)
        for j in range(n):
            out.append(Curve(cs.feats[j, :, 0], cs.y[j], cs.lr[j], "prior2"))
    return out


def prior1_draws(n: int, seed: int) -> list[Curve]:
    """Loss curves of prior 1.1's schedule component (100 points; LR only where the model sees it)."""
    rng = np.random.default_rng(seed)
    raw = P1.sample_schedule_curves(rng, max(n * 2, 8))
    out = []
    for j in np.flatnonzero(raw.kind != P1.KIND_BOUNDED)[:n]:
        known = raw.feats[j, 0, 4] > 0
        out.append(Curve(raw.feats[j, :, 0], raw.y[j], raw.feats[j, :, 1] if known else None, "prior1"))
    return out


# ---- discrepancy and search ----------------------------------------------------------------------
def pooled_scales(real: dict[str, list[Curve]]) -> dict[str, float]:
    """One scale per statistic: the IQR / 1.35 of all real curves pooled (a rate's scale is 0.05), so
    every source is compared in the same units and no tight source dominates."""
    pooled = summarise(stats_table([c for cs in real.values() for c in cs]))
    out = {}
    for k in STATS:
        iqr = pooled[k]["q75"] - pooled[k]["q25"] if pooled[k]["n"] else 1.0
        out[k] = 0.05 if k == "overfit" else max(iqr / 1.35, 1e-3, 0.05 * abs(pooled[k]["median"]))
    return out


def discrepancy(prior_sum: dict, real_sum: dict, scales: dict[str, float]) -> float:
    """Sum over statistics of squared, scaled differences: median + half weight on each quartile
    (the rate alone for ``overfit``)."""
    d = 0.0
    for k in STATS:
        if real_sum[k]["n"] < 3 or prior_sum[k]["n"] < 3:
            continue
        terms = [("median", 1.0)] if k == "overfit" else [("median", 1.0), ("q25", 0.5), ("q75", 0.5)]
        d += sum(w * ((prior_sum[k][q] - real_sum[k][q]) / scales[k]) ** 2 for q, w in terms)
    return float(d)


POOL_Q = (0.1, 0.25, 0.5, 0.75, 0.9)
POOL_W = (0.5, 0.75, 1.0, 0.75, 0.5)


def pooled_quantiles(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """POOL_Q quantiles (the mean for ``overfit``) of each statistic over sources weighted equally."""
    out = {}
    for k in STATS:
        vals, wts = [], []
        for t in tables:
            v = t[k][np.isfinite(t[k])]
            if len(v):
                vals.append(v)
                wts.append(np.full(len(v), 1.0 / len(v)))
        if not vals:
            out[k] = np.full(len(POOL_Q), np.nan)
            continue
        v, w = np.concatenate(vals), np.concatenate(wts)
        if k == "overfit":
            out[k] = np.full(len(POOL_Q), float(np.average(v, weights=w)))
            continue
        order = np.argsort(v)
        cdf = (np.cumsum(w[order]) - 0.5 * w[order]) / w.sum()
        out[k] = np.interp(POOL_Q, cdf, v[order])
    return out


def pooled_discrepancy(prior_q: dict[str, np.ndarray], real_q: dict[str, np.ndarray], scales: dict[str, float]) -> float:
    d = 0.0
    for k in STATS:
        if np.isnan(real_q[k]).any() or np.isnan(prior_q[k]).any():
            continue
        w = np.array([1.0]) if k == "overfit" else np.array(POOL_W)
        diff = (prior_q[k][: len(w)] - real_q[k][: len(w)]) / scales[k]
        d += float(np.sum(w * diff**2))
    return d


def total_discrepancy(draw: Callable[[str, np.ndarray], list[Curve]], real: dict[str, list[Curve]],
                      scales: dict[str, float], real_q: dict[str, np.ndarray] | None = None) -> float:
    """Pooled D of the prior drawn with each source's lengths against the pooled real curves."""
    if real_q is None:
        real_q = pooled_quantiles([stats_table(cs) for cs in real.values()])
    prior_tables = [stats_table(draw(s, np.array([len(c.x) for c in cs]))) for s, cs in real.items()]
    return pooled_discrepancy(pooled_quantiles(prior_tables), real_q, scales)


def fit(real: dict[str, list[Curve]], start: P2.Prior2Params, names: tuple[str, ...] = tuple(GRIDS),
        grids: dict[str, list[float]] = GRIDS, sweeps: int = 2, seed: int = 0,
        log: Callable[[dict], None] = lambda m: None) -> tuple[P2.Prior2Params, float]:
    """Coordinate search: each hyperparameter in turn set to its grid value with the lowest D."""
    p = start
    scales = pooled_scales(real)
    real_q = pooled_quantiles([stats_table(cs) for cs in real.values()])

    def d_of(q: P2.Prior2Params) -> float:
        return total_discrepancy(lambda s, lens: prior2_draws(q, lens, seed), real, scales, real_q)

    best = d_of(p)
    for sweep in range(sweeps):
        for name in names:
            scores = [(d_of(replace(p, **{name: float(v)})), float(v)) for v in grids[name]]
            d, v = min(scores)
            if d < best:
                p, best = replace(p, **{name: v}), d
            log({"sweep": sweep, "param": name, "value": getattr(p, name), "D": round(best, 4)})
    return p, best


# ---- report --------------------------------------------------------------------------------------
def table_rows(real: dict[str, list[Curve]], variants: dict[str, Callable[[str, np.ndarray], list[Curve]]],
               scales: dict[str, float]):
    """Per source and statistic: the real median and each prior variant's median; D per variant."""
    rows, d = {}, {v: 0.0 for v in variants}
    d_pooled = {v: total_discrepancy(draw, real, scales) for v, draw in variants.items()}
    for s, cs in real.items():
        rs = summarise(stats_table(cs))
        lens = np.array([len(c.x) for c in cs])
        rows[s] = {"n_curves": len(cs), "real": rs}
        for v, draw in variants.items():
            ps = summarise(stats_table(draw(s, lens)))
            rows[s][v] = ps
            d[v] += discrepancy(ps, rs, scales)
    return rows, {"per_source": d, "pooled": d_pooled}


def markdown(rows: dict, variants: list[str]) -> str:
    head = "| source | statistic | real | " + " | ".join(variants) + " |"
    lines = [head, "|" + "---|" * (3 + len(variants))]
    for s, r in rows.items():
        for k in STATS:
            if r["real"][k]["n"] == 0:
                continue
            vals = " | ".join(f"{r[v][k]['median']:.3g}" for v in variants)
            lines.append(f"| {s} ({r['n_curves']}) | {k} | {r['real'][k]['median']:.3g} | {vals} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="training/prior2_fitted.json")
    ap.add_argument("--report", default="training/runs/fit_prior/report.json")
    ap.add_argument("--per-source", type=int, default=150, help="real curves per source (random subset)")
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"no dev data at {data} (set --data); nothing fitted")
    t0 = time.time()
    tune = {s: load_source(data, s, args.per_source) for s in TUNE}
    held = {s: load_source(data, s, args.per_source) for s in HELDOUT}
    start = P2.Prior2Params()
    fitted, d = fit(tune, start, sweeps=args.sweeps, seed=args.seed, log=lambda m: print(json.dumps(m), flush=True))
    variants = {
        "prior1.1": lambda s, lens: prior1_draws(len(lens), args.seed + 1),
        "prior2.0-default": lambda s, lens: prior2_draws(start, lens, args.seed + 1),
        "prior2.0-fitted": lambda s, lens: prior2_draws(fitted, lens, args.seed + 1),
    }
    report = {}
    scales = pooled_scales(tune)  # the held-out split is scored in the tune split's units
    for split, real in (("tune", tune), ("heldout", held)):
        rows, dd = table_rows(real, variants, scales)
        report[split] = {"rows": rows, "D": dd, "markdown": markdown(rows, list(variants))}
        print(f"\n## {split}: D = {json.dumps(dd)}\n" + report[split]["markdown"])
    changed = {k: getattr(fitted, k) for k in GRIDS}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"prior": P2.PRIOR_VERSION, "fitted_on": list(TUNE), "D_tune": d,
                                          "params": changed}, indent=2) + "\n")
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps({"fitted": changed, "elapsed_s": time.time() - t0, **report}, indent=1))
    print(json.dumps({"fitted": changed, "elapsed_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
