"""Scaling-law extrapolation benchmark for ``curvecast.scaling`` (fit on smaller models, predict the largest).

Sections (each skipped when its data is absent; data from ../shared/data or $CURVECAST_DATA):
1. Chinchilla Approach 3 reproduction on synthetic data shaped like Besiroglu et al. (2024): isoFLOP
   design, losses from their fitted law (E=1.8172, A=477.8, B=2143.4, alpha=0.3473, beta=0.3672) with
   Laplace noise of their residual size. The real SVG-extracted data is not in ../shared/data; this
   checks that the fitter recovers published-scale parameters within its bootstrap intervals.
2. Porian et al. 2024 (formll/resolving-scaling-law-discrepancies, MIT): per setting, fit on all but
   the two largest model sizes, ARE on the two largest.
3. Gadre et al. 2024 (mlfoundations/scaling, MIT): per dataset, predict every model >= 1.4B from
   (a) the paper's five runs (4 sizes at M=20, the smallest at M=320) and (b) all smaller models.
   Published (notebook): 0.71% (1.4B, M=640) and 0.73% (6.9B, M=20).
4. Gemstones (McLeish et al. 2025, MIT): intermediate checkpoints; fit on models < 1.5B, ARE on the
   three ~2B models' checkpoints after 70% of training (Hitchhiker's Guide metric), for several
   early-checkpoint cut-offs.

Every section also fits two baselines of the Chinchilla form L = E + A/N^alpha + B/D^beta on the same
points, side by side with Curvecast (issue 16):
- ``approach3``: Hoffmann et al.'s Approach 3 as reproduced by Besiroglu et al.: Huber (delta 1e-3) on
  log loss through log-sum-exp, the standard grid of starts (alpha, beta in {0, 0.5, .., 2}, e in
  {-1, -0.5, .., 1}, a, b in {0, 5, .., 25}: 4,500 points), L-BFGS-B with the analytic gradient and tight
  tolerances from the grid's best ``--a3-starts`` points (0: from all 4,500; section 1 reports both);
- ``curve_fit``: plain least squares on the raw loss (scipy.optimize.curve_fit, the Hitchhiker's Guide
  fit: log-scale A, B, E, alpha, beta >= 0, started from the Datablations values).

ARE = mean |L_hat - L| / L. Usage: PYTHONPATH=service python bench/scaling.py [--out r.json] [--bootstrap 50] [--a3-starts 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from curvecast.blas import single_threaded_blas  # noqa: E402
from curvecast.scaling import ScalingPoint, fit_scaling_law  # noqa: E402
from scipy import optimize  # noqa: E402

BESIROGLU = {"E": 1.8172, "A": 477.8, "B": 2143.4, "alpha": 0.3473, "beta": 0.3672}
A3_DELTA = 1e-3
A3_STARTS = 64  # grid points refined by L-BFGS-B (0: all 4,500)
DATABLATIONS_P0 = (6.2554, 7.3050, 0.6255, 0.3527, 0.3527)  # a, b, e, alpha, beta (Hitchhiker's Guide start)
BASELINE_METHODS = ("approach3", "curve_fit")
EXTRAPOLATE_AT = (7e10, 1.4e12)  # Chinchilla's size, for the synthetic section's extrapolation error


def approach3_grid() -> np.ndarray:
    """The standard Approach 3 start grid as rows (a, b, e, alpha, beta)."""
    ab = np.arange(0.0, 25.1, 5.0)
    e = np.arange(-1.0, 1.01, 0.5)
    ex = np.arange(0.0, 2.01, 0.5)
    return np.array(np.meshgrid(ab, ab, e, ex, ex, indexing="ij")).reshape(5, -1).T


def _a3_terms(p: np.ndarray, ln: np.ndarray, ld: np.ndarray) -> np.ndarray:
    """(..., 3, n) log terms a - alpha log N, b - beta log D, e for parameter rows p (..., 5)."""
    p = np.asarray(p)[..., None]
    return np.stack([p[..., 0, :] - p[..., 3, :] * ln, p[..., 1, :] - p[..., 4, :] * ld, np.broadcast_to(p[..., 2, :], np.broadcast_shapes(p[..., 2, :].shape, ln.shape))], axis=-2)


def logsumexp(t: np.ndarray, axis: int) -> np.ndarray:
    m = t.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.exp(t - m).sum(axis=axis))


def softmax(t: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(t - t.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def approach3_objective(p: np.ndarray, ln: np.ndarray, ld: np.ndarray, ll: np.ndarray, delta: float = A3_DELTA) -> tuple[float, np.ndarray]:
    """Sum of Huber(log L_hat - log L) and its analytic gradient in (a, b, e, alpha, beta)."""
    t = _a3_terms(p, ln, ld)
    r = logsumexp(t, axis=0) - ll
    g = np.clip(r, -delta, delta)  # Huber derivative
    w = softmax(t, axis=0) * g
    grad = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * ln).sum(), -(w[1] * ld).sum()])
    return float(_huber(r, delta).sum()), grad


def approach3_fit(n: np.ndarray, d: np.ndarray, loss: np.ndarray, starts: int = A3_STARTS, delta: float = A3_DELTA) -> dict:
    """Approach 3: Huber on log loss, the standard grid, L-BFGS-B from its best ``starts`` points (0: all)."""
    ln, ld, ll = np.log(n), np.log(d), np.log(loss)
    grid = approach3_grid()
    if starts and starts < len(grid):
        screen = np.concatenate([_huber(logsumexp(_a3_terms(chunk, ln, ld), axis=-2) - ll, delta).sum(axis=-1) for chunk in np.array_split(grid, 10)])
        grid = grid[np.argsort(screen, kind="stable")[:starts]]
    best = None
    for p0 in grid:
        with single_threaded_blas():  # multi-threaded BLAS makes each tiny L-BFGS-B step ~10x slower
            res = optimize.minimize(approach3_objective, p0, args=(ln, ld, ll, delta), jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    a, b, e, alpha, beta = best.x
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha), "beta": float(beta), "objective": float(best.fun), "starts": int(len(grid))}


def _raw_law(nd: np.ndarray, a: float, b: float, e: float, alpha: float, beta: float) -> np.ndarray:
    return np.exp(e) + np.exp(a) / nd[0] ** alpha + np.exp(b) / nd[1] ** beta


def curve_fit_raw(n: np.ndarray, d: np.ndarray, loss: np.ndarray, p0: tuple[float, ...] = DATABLATIONS_P0) -> dict:
    """Plain least squares on the raw loss (scipy.optimize.curve_fit), log-scale A, B, E, exponents >= 0."""
    lo = [-np.inf, -np.inf, -np.inf, 0.0, 0.0]
    try:
        with single_threaded_blas(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)  # no covariance needed: point fit only
            p, _ = optimize.curve_fit(_raw_law, np.vstack([n, d]), loss, p0=p0, bounds=(lo, [np.inf] * 5), maxfev=20_000)
    except (RuntimeError, ValueError) as e:  # no convergence: reported as a failed fit
        return {"E": float("nan"), "A": float("nan"), "B": float("nan"), "alpha": float("nan"), "beta": float("nan"), "error": str(e)[:120]}
    a, b, e, alpha, beta = (float(v) for v in p)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": alpha, "beta": beta}


def law_predict(params: dict, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
    n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def baseline_are(params: dict, pts: list) -> float:
    if not pts:
        return float("nan")
    y = np.array([p.loss for p in pts])
    pred = law_predict(params, np.array([p.n_params for p in pts]), np.array([p.tokens for p in pts]))
    return float(np.mean(np.abs(pred - y) / y))


def drop_early(pts: list, fraction: float) -> list:
    """Each run's checkpoints from ``fraction`` of its final tokens on (as fit_scaling_law selects them)."""
    if fraction <= 0:
        return list(pts)
    final: dict[str, float] = {}
    for p in pts:
        if p.run_id:
            final[p.run_id] = max(final.get(p.run_id, 0.0), p.tokens)
    counts: dict[str, int] = {}
    for p in pts:
        if p.run_id:
            counts[p.run_id] = counts.get(p.run_id, 0) + 1
    return [p for p in pts if not p.run_id or counts[p.run_id] <= 1 or p.tokens >= fraction * final[p.run_id]]


def fit_baselines(pts: list, starts: int = A3_STARTS) -> dict[str, dict]:
    """Both baselines on the same points; each result carries its fit seconds."""
    n = np.array([p.n_params for p in pts])
    d = np.array([p.tokens for p in pts])
    y = np.array([p.loss for p in pts])
    out = {}
    for name, fn in (("approach3", lambda: approach3_fit(n, d, y, starts)), ("curve_fit", lambda: curve_fit_raw(n, d, y))):
        t0 = time.perf_counter()
        out[name] = fn()
        out[name]["seconds"] = time.perf_counter() - t0
    return out


def data_dir() -> Path:
    env = os.environ.get("CURVECAST_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def are(fit, pts) -> tuple[float, float]:
    """ARE and the fraction of points inside the 95% bootstrap band."""
    if not pts:
        return float("nan"), float("nan")
    n = np.array([p.n_params for p in pts])
    d = np.array([p.tokens for p in pts])
    y = np.array([p.loss for p in pts])
    mean, lo, hi = fit.predict(n, d)
    return float(np.mean(np.abs(mean - y) / y)), float(np.mean((y >= lo) & (y <= hi)))


def besiroglu_points(seed: int = 0) -> list:
    """An isoFLOP design with losses from Besiroglu et al.'s law and Laplace noise of their residual size."""
    rng = np.random.default_rng(seed)
    t = BESIROGLU
    pts = []
    for C in np.logspace(18, 22.5, 9):
        for N in np.logspace(7.6, 10.4, 30):
            D = C / (6 * N)
            if 1e8 <= D <= 1e12:
                L = (t["E"] + t["A"] / N ** t["alpha"] + t["B"] / D ** t["beta"]) * np.exp(rng.laplace(0, 0.015))
                pts.append(ScalingPoint(N, D, float(L)))
    return pts


def _extrapolation_err(params: dict) -> float:
    """Relative error of a fitted law at Chinchilla's size against the true law."""
    n, d = EXTRAPOLATE_AT
    truth = float(law_predict(BESIROGLU, n, d))
    return abs(float(law_predict(params, n, d)) - truth) / truth


def synthetic(boot: int, starts: int = A3_STARTS) -> dict:
    pts = besiroglu_points()
    t = BESIROGLU
    t0 = time.perf_counter()
    fit = fit_scaling_law(pts, bootstrap=boot)
    secs = time.perf_counter() - t0
    covered = {k: bool(fit.intervals[k][0] <= v <= fit.intervals[k][1]) for k, v in t.items()}
    base = fit_baselines(pts, starts)
    t0 = time.perf_counter()
    base["approach3_full_grid"] = approach3_fit(np.array([p.n_params for p in pts]), np.array([p.tokens for p in pts]), np.array([p.loss for p in pts]), starts=0)
    base["approach3_full_grid"]["seconds"] = time.perf_counter() - t0
    extrap = {"curvecast": _extrapolation_err(fit.params)} | {k: _extrapolation_err(v) for k, v in base.items()}
    return {"n_points": len(pts), "truth": t, "fit": fit.params, "intervals": fit.intervals, "covered": covered,
            "residual_rmse": fit.residual_rmse, "seconds": secs, "baselines": base, "extrapolation_rel_err": extrap}


def porian_splits():
    """Each Porian setting with at least 6 sizes: (setting, points of the smaller sizes, points of the two
    largest), the split both scaling benchmarks score."""
    import pandas as pd

    path = data_dir() / "porian" / "isoflop_N_D_loss.csv"
    if not path.exists():
        return
    df = pd.read_csv(path)
    keys = ["source_file", "config_idx", "dataset", "hparams", "warmup", "decay", "param_count", "loss_type"]
    for key, g in df.groupby(keys):
        g = g[(g.loss > 0) & (g.N > 0) & (g.D_tokens > 0)]
        sizes = np.sort(g.N.unique())
        if len(sizes) < 6:
            continue
        mk = lambda r: ScalingPoint(float(r.N), float(r.D_tokens), float(r.loss), flops=float(r.flops))  # noqa: E731
        held = g.N.isin(sizes[-2:])
        yield "/".join(map(str, key)), [mk(r) for r in g[~held].itertuples()], [mk(r) for r in g[held].itertuples()]


def porian(boot: int, starts: int = A3_STARTS) -> list[dict]:
    rows = []
    for setting, train, test in porian_splits():
        row = {"setting": setting, "n_train": len(train), "n_test": len(test)}
        for form in ("chinchilla", "gadre", "kaplan"):
            fit = fit_scaling_law(train, form=form, bootstrap=boot)
            row[f"{form}_are_pct"], row[f"{form}_cover95"] = (100 * are(fit, test)[0], are(fit, test)[1])
        for name, params in fit_baselines(train, starts).items():
            row[f"{name}_are_pct"] = 100 * baseline_are(params, test)
            row[f"{name}_seconds"] = params["seconds"]
        rows.append(row)
    return rows


def gadre_datasets() -> list:
    """(dataset, its rows) of the Gadre et al. / mlfoundations final losses; [] when the file is absent."""
    import pandas as pd

    path = data_dir() / "mlfoundations_scaling" / "final_losses_N_D.csv"
    return list(pd.read_csv(path).groupby("dataset")) if path.exists() else []


def gadre_point(r) -> ScalingPoint:
    """One row of ``gadre_datasets`` as a scaling point (C4 validation loss)."""
    return ScalingPoint(float(r.params), float(r.tokens), float(r.loss_c4_val), run_id=str(r.name))


def gadre(boot: int, starts: int = A3_STARTS) -> list[dict]:
    rows = []
    for ds, g in gadre_datasets():
        small = g[g.params < 1.4e9]
        sizes = np.sort(small.params.unique())
        five = small[((small.chinchilla_multiplier == 1.0) & small.params.isin(sizes[:4]))
                     | ((small.params == sizes[0]) & (small.chinchilla_multiplier == 16.0))]
        test = g[g.params >= 1.4e9]
        for proto, train in (("paper_5_runs", five), ("all_smaller", small)):
            if len(train) < 5:
                continue
            pts = [gadre_point(r) for r in train.itertuples()]
            fits = {form: fit_scaling_law(pts, form=form, bootstrap=boot) for form in ("gadre", "chinchilla")}
            base = fit_baselines(pts, starts)
            for r in test.itertuples():
                target = f"{r.params / 1e9:.1f}B M={20 * r.chinchilla_multiplier:g}"
                for form, fit in fits.items():
                    mean, lo, hi = fit.predict(r.params, r.tokens)
                    rows.append({"dataset": ds, "protocol": proto, "form": form, "target": target,
                                 "are_pct": float(100 * abs(mean[0] - r.loss_c4_val) / r.loss_c4_val),
                                 "in_band95": bool(lo[0] <= r.loss_c4_val <= hi[0])})
                for name, params in base.items():
                    pred = float(law_predict(params, r.params, r.tokens))
                    rows.append({"dataset": ds, "protocol": proto, "form": name, "target": target,
                                 "are_pct": float(100 * abs(pred - r.loss_c4_val) / r.loss_c4_val), "in_band95": None})
    return rows


def gemstones(boot: int, starts: int = A3_STARTS) -> list[dict]:
    import pandas as pd

    rows = []
    for name in ("fineweb_edu", "fineweb_dclm"):
        path = data_dir() / "gemstones" / f"{name}_losses_combined.jsonl"
        if not path.exists():
            continue
        df = pd.read_json(path, lines=True)
        df = df[(df.final_loss > 0) & np.isfinite(df.final_loss)]
        train_df = df[df.params_active_precise < 1.5e9]
        test_df = df[df.params_active_precise >= 1.5e9]
        test_df = test_df[test_df.tokens >= 0.7 * test_df.groupby("run_name").tokens.transform("max")]
        mk = lambda r: ScalingPoint(float(r.params_active_precise), float(r.tokens), float(r.final_loss), run_id=r.run_name)  # noqa: E731
        train = [mk(r) for r in train_df.itertuples()]
        test = [mk(r) for r in test_df.itertuples()]
        finals = [p for p in train if p.tokens >= train_df.tokens.max() - 1]
        for label, pts, drop in (("final checkpoints only", finals, 0.0), ("all checkpoints", train, 0.0),
                                 ("checkpoints, drop <10%", train, 0.1), ("checkpoints, drop <25%", train, 0.25),
                                 ("checkpoints, drop <50%", train, 0.5)):
            for form in ("chinchilla", "gadre"):
                t0 = time.perf_counter()
                fit = fit_scaling_law(pts, form=form, bootstrap=boot, drop_early_fraction=drop)
                e, cov = are(fit, test)
                rows.append({"data": name, "train": label, "form": form, "n_train": fit.n_points, "runs": fit.n_runs,
                             "are_pct": 100 * e, "cover95": cov, "seconds": time.perf_counter() - t0,
                             "alpha": fit.params["alpha"], "beta": fit.params["beta"]})
            kept = drop_early(pts, drop)
            for method, params in fit_baselines(kept, starts).items():
                rows.append({"data": name, "train": label, "form": method, "n_train": len(kept), "runs": len({p.run_id for p in kept}),
                             "are_pct": 100 * baseline_are(params, test), "cover95": None, "seconds": params["seconds"],
                             "alpha": params["alpha"], "beta": params["beta"]})
    return rows


def _ratio(mine: float, best: float) -> float:
    return mine / best if best > 0 else float("nan")


def comparison(out: dict) -> list[dict]:
    """Curvecast against the best baseline on every source: mean ARE (%) of each method, and the ratio."""
    rows: list[dict] = []
    syn = out.get("synthetic_besiroglu")
    if syn:
        ex = syn["extrapolation_rel_err"]
        rows.append({"source": "synthetic (Besiroglu law)", "subset": f"error at N={EXTRAPOLATE_AT[0]:.0e}, D={EXTRAPOLATE_AT[1]:.1e}",
                     "curvecast_chinchilla": 100 * ex["curvecast"], "curvecast_gadre": None,
                     "approach3": 100 * ex["approach3"], "curve_fit": 100 * ex["curve_fit"]})
    if out.get("porian"):
        por = out["porian"]
        rows.append({"source": "porian", "subset": f"{len(por)} settings, two largest sizes",
                     **{k: float(np.mean([r[f"{m}_are_pct"] for r in por])) for k, m in (("curvecast_chinchilla", "chinchilla"), ("curvecast_gadre", "gadre"), ("approach3", "approach3"), ("curve_fit", "curve_fit"))}})
    for proto in ("paper_5_runs", "all_smaller"):
        sel = [r for r in out.get("gadre", []) if r["protocol"] == proto]
        if sel:
            mean = {f: float(np.mean([r["are_pct"] for r in sel if r["form"] == f])) for f in ("chinchilla", "gadre", "approach3", "curve_fit")}
            rows.append({"source": "gadre", "subset": f"{proto}, models >= 1.4B", "curvecast_chinchilla": mean["chinchilla"], "curvecast_gadre": mean["gadre"], "approach3": mean["approach3"], "curve_fit": mean["curve_fit"]})
    for data in ("fineweb_edu", "fineweb_dclm"):
        for label in dict.fromkeys(r["train"] for r in out.get("gemstones", []) if r["data"] == data):
            sel = {r["form"]: r["are_pct"] for r in out["gemstones"] if r["data"] == data and r["train"] == label}
            rows.append({"source": f"gemstones {data}", "subset": label, "curvecast_chinchilla": sel.get("chinchilla"), "curvecast_gadre": sel.get("gadre"), "approach3": sel.get("approach3"), "curve_fit": sel.get("curve_fit")})
    for r in rows:
        base = {m: r[m] for m in BASELINE_METHODS if r.get(m) is not None and np.isfinite(r[m])}
        r["best_baseline"] = min(base, key=base.get) if base else None
        best = base[r["best_baseline"]] if base else float("nan")
        r["chinchilla_ratio"] = _ratio(r["curvecast_chinchilla"], best) if r.get("curvecast_chinchilla") is not None else float("nan")
        r["gadre_ratio"] = _ratio(r["curvecast_gadre"], best) if r.get("curvecast_gadre") is not None else float("nan")
    return rows


def _f(v, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def comparison_markdown(rows: list[dict]) -> str:
    lines = ["| source | subset | Curvecast chinchilla | Curvecast gadre | Approach 3 | curve_fit (raw LS) | best baseline | Curvecast chinchilla ÷ best | Curvecast gadre ÷ best |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['subset']} | {_f(r['curvecast_chinchilla'])} | {_f(r['curvecast_gadre'])} | {_f(r['approach3'])} | {_f(r['curve_fit'])} | {r['best_baseline'] or '–'} | {_f(r['chinchilla_ratio'], 3)} | {_f(r['gadre_ratio'], 3)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--bootstrap", type=int, default=50)
    ap.add_argument("--a3-starts", type=int, default=A3_STARTS, help="Approach 3: L-BFGS-B from the grid's best N points (0: all 4,500)")
    args = ap.parse_args()
    out: dict = {"command": "python bench/scaling.py " + " ".join(sys.argv[1:]), "a3_starts": args.a3_starts}
    syn = synthetic(args.bootstrap, args.a3_starts)
    out["synthetic_besiroglu"] = syn
    out["porian"] = porian(args.bootstrap, args.a3_starts)
    out["gadre"] = gadre(args.bootstrap, args.a3_starts)
    out["gemstones"] = gemstones(args.bootstrap, args.a3_starts)
    out["comparison"] = comparison(out)
    print("## 0. Curvecast against the scaling-law baselines\n")
    print(f"Mean ARE % (synthetic: relative error % of the extrapolation) of Curvecast's fits and of two baselines of the Chinchilla form on the same points: "
          f"Approach 3 (Huber delta {A3_DELTA:g} on log loss, the standard 4,500-point start grid, L-BFGS-B from its best {args.a3_starts or 'all'} points) and "
          "a plain least-squares fit on the raw loss (scipy.optimize.curve_fit from the Datablations start). Ratio < 1: Curvecast is better.\n")
    print(comparison_markdown(out["comparison"]))
    print("\n## 1. Chinchilla Approach 3 on Besiroglu-like synthetic data\n")
    print(f"{syn['n_points']} points, fit in {syn['seconds']:.1f} s (bootstrap {args.bootstrap}), residual RMSE {syn['residual_rmse']:.4f}\n")
    base = syn["baselines"]
    print(f"| param | truth | Curvecast fit | 95% bootstrap interval | covered | Approach 3 (best {base['approach3']['starts']} starts) | Approach 3 (all {base['approach3_full_grid']['starts']} starts) | curve_fit (raw LS) |")
    print("|---|---|---|---|---|---|---|---|")
    for k, v in syn["truth"].items():
        lo, hi = syn["intervals"][k]
        print(f"| {k} | {v:g} | {syn['fit'][k]:.4g} | {lo:.4g} - {hi:.4g} | {syn['covered'][k]} | {base['approach3'][k]:.4g} | {base['approach3_full_grid'][k]:.4g} | {base['curve_fit'][k]:.4g} |")
    ex = syn["extrapolation_rel_err"]
    print(f"| error at N={EXTRAPOLATE_AT[0]:.0e}, D={EXTRAPOLATE_AT[1]:.1e} (%) | | {100 * ex['curvecast']:.3f} | | | {100 * ex['approach3']:.3f} | {100 * ex['approach3_full_grid']:.3f} | {100 * ex['curve_fit']:.3f} |")
    print(f"| fit seconds | | {syn['seconds']:.1f} (with bootstrap) | | | {base['approach3']['seconds']:.1f} | {base['approach3_full_grid']['seconds']:.1f} | {base['curve_fit']['seconds']:.2f} |")
    por = out["porian"]
    if por:
        print("\n## 2. Porian et al.: fit on smaller models, ARE % on the two largest sizes\n")
        print("| setting | train/test pts | chinchilla | gadre | kaplan L(C) | Approach 3 | curve_fit |")
        print("|---|---|---|---|---|---|---|")
        for r in por:
            print(f"| {r['setting']} | {r['n_train']}/{r['n_test']} | {r['chinchilla_are_pct']:.2f} | {r['gadre_are_pct']:.2f} | {r['kaplan_are_pct']:.2f} | {r['approach3_are_pct']:.2f} | {r['curve_fit_are_pct']:.2f} |")
        for f in ("chinchilla", "gadre", "kaplan"):
            vals = [r[f"{f}_are_pct"] for r in por]
            cov = [r[f"{f}_cover95"] for r in por]
            print(f"| **mean {f}** | | ARE {np.mean(vals):.2f}% (median {np.median(vals):.2f}%), band coverage {np.mean(cov):.2f} | | | | |")
        for f in BASELINE_METHODS:
            vals = [r[f"{f}_are_pct"] for r in por]
            print(f"| **mean {f}** (baseline) | | ARE {np.mean(vals):.2f}% (median {np.median(vals):.2f}%) | | | | |")
    gad = out["gadre"]
    if gad:
        print("\n## 3. Gadre et al. (C4 val loss): predict the >= 1.4B models\n")
        print("| dataset | protocol | form | target | ARE % | in 95% band |")
        print("|---|---|---|---|---|---|")
        for r in gad:
            band = "–" if r["in_band95"] is None else r["in_band95"]
            print(f"| {r['dataset']} | {r['protocol']} | {r['form']} | {r['target']} | {r['are_pct']:.2f} | {band} |")
    gem = out["gemstones"]
    if gem:
        print("\n## 4. Gemstones: fit on < 1.5B, ARE % on the ~2B models' last 30% of checkpoints\n")
        print("| data | training points | form | n pts | runs | ARE % | band coverage | alpha | beta | s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in gem:
            cov = "–" if r["cover95"] is None else f"{r['cover95']:.2f}"
            print(f"| {r['data']} | {r['train']} | {r['form']} | {r['n_train']} | {r['runs']} | {r['are_pct']:.2f} | {cov} | {r['alpha']:.3f} | {r['beta']:.3f} | {r['seconds']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=float))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
