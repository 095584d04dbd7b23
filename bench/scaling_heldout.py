"""Held-out evaluation of Curvecast's scaling-law predictive intervals (issue 14).

Per source, fit on the smaller model sizes and predict the largest one or two, held out:
- porian: per setting (15), hold out the two largest sizes (as bench/scaling.py section 2);
- gadre (mlfoundations/scaling): per dataset, fit on all models < 1.4B, predict every model >= 1.4B;
- gemstones: fit on models < 1.5B (checkpoints, drop-early ``--drop``), predict the ~2B models' last 30%;
- scan_llm (ScAn-Bench LLM): fit on the final evaluation of the 16M-1B configurations (the best loss per
  (N, D): their hyperparameters are random), predict the five large runs (1.0-1.7B).

Reported per source: coverage of the 95% predictive interval (``ScalingFit.predictive``) and of the
bootstrap band (``predict``), the median predictive width (upper/lower - 1, %), and the ARE (mean
|L_hat - L| / L, %) of Curvecast's chinchilla fit, Approach 3 and plain least squares (bench/scaling.py's
baselines, same points after the same checkpoint selection). Also Gemstones ARE for several drop-early
fractions (the measurement behind DEFAULT_DROP_EARLY).

Usage: nice -n 10 .venv/bin/python bench/scaling_heldout.py --out docs/bench/scaling_heldout.json > docs/bench/scaling_heldout.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT))

from bench.scaling import baseline_are, data_dir, drop_early, fit_baselines, gadre_datasets, gadre_point, porian_splits  # noqa: E402
from curvecast.scaling import ScalingPoint, fit_scaling_law  # noqa: E402
from curvecast.scaling.fit import DEFAULT_DROP_EARLY  # noqa: E402


def evaluate(source: str, subset: str, train: list, test: list, boot: int, starts: int, drop: float = 0.0,
             form: str = "chinchilla") -> dict:
    """Fit Curvecast and both baselines on ``train``; score them on ``test``."""
    t0 = time.perf_counter()
    fit = fit_scaling_law(train, form=form, bootstrap=boot, drop_early_fraction=drop)
    secs = time.perf_counter() - t0
    n = np.array([p.n_params for p in test])
    d = np.array([p.tokens for p in test])
    y = np.array([p.loss for p in test])
    mean, plo, phi = fit.predictive(n, d)
    _, blo, bhi = fit.predict(n, d)
    base = fit_baselines(drop_early(train, drop), starts)
    cal = fit.calibration
    return {"source": source, "subset": subset, "n_train": fit.n_points, "n_test": len(test),
            "curvecast_are_pct": float(100 * np.mean(np.abs(mean - y) / y)),
            "approach3_are_pct": 100 * baseline_are(base["approach3"], test),
            "curve_fit_are_pct": 100 * baseline_are(base["curve_fit"], test),
            "predictive_covered": int(np.sum((y >= plo) & (y <= phi))),
            "bootstrap_covered": int(np.sum((y >= blo) & (y <= bhi))),
            "predictive_width_pct": [float(v) for v in 100 * (phi / plo - 1)],
            "kappa": cal.kappa if cal else None, "folds": cal.folds if cal else 0,
            "warnings": list(fit.warnings), "seconds": secs}


def porian(boot: int, starts: int) -> list[dict]:
    return [evaluate("porian", setting, train, test, boot, starts) for setting, train, test in porian_splits()]


def gadre(boot: int, starts: int) -> list[dict]:
    return [evaluate("gadre", f"{ds}, all < 1.4B -> >= 1.4B", [gadre_point(r) for r in g[g.params < 1.4e9].itertuples()],
                     [gadre_point(r) for r in g[g.params >= 1.4e9].itertuples()], boot, starts)
            for ds, g in gadre_datasets()]


def gemstones_points(name: str) -> tuple[list, list]:
    import pandas as pd

    path = data_dir() / "gemstones" / f"{name}_losses_combined.jsonl"
    if not path.exists():
        return [], []
    df = pd.read_json(path, lines=True)
    df = df[(df.final_loss > 0) & np.isfinite(df.final_loss)]
    test_df = df[df.params_active_precise >= 1.5e9]
    test_df = test_df[test_df.tokens >= 0.7 * test_df.groupby("run_name").tokens.transform("max")]
    mk = lambda r: ScalingPoint(float(r.params_active_precise), float(r.tokens), float(r.final_loss), run_id=r.run_name)  # noqa: E731
    return [mk(r) for r in df[df.params_active_precise < 1.5e9].itertuples()], [mk(r) for r in test_df.itertuples()]


def gemstones(boot: int, starts: int, drops: tuple[float, ...]) -> list[dict]:
    rows = []
    for name in ("fineweb_edu", "fineweb_dclm"):
        train, test = gemstones_points(name)
        if not train:
            continue
        for drop in drops:
            rows.append(evaluate("gemstones", f"{name}, drop < {drop:g}", train, test, boot, starts, drop) | {"drop": drop})
    return rows


def scan_llm(boot: int, starts: int) -> list[dict]:
    import pandas as pd

    base = data_dir() / "scan_bench" / "llm"
    if not (base / "large_runs_final_runs.csv.gz").exists():
        return []
    df = pd.read_csv(base / "configs_intermediate_summary.csv.gz", usecols=["config_id", "n_params", "n_tokens", "valid_loss", "step_fraction"])
    df = df[(df.step_fraction >= 0.999) & (df.valid_loss > 0) & np.isfinite(df.valid_loss)]
    best = df.groupby(["n_params", "n_tokens"], as_index=False).valid_loss.min()
    large = pd.read_csv(base / "large_runs_final_runs.csv.gz", usecols=["config_id", "n_params", "n_tokens", "valid_loss"])
    train = [ScalingPoint(float(r.n_params), float(r.n_tokens), float(r.valid_loss)) for r in best.itertuples()]
    test = [ScalingPoint(float(r.n_params), float(r.n_tokens), float(r.valid_loss)) for r in large.itertuples()]
    return [evaluate("scan_llm", "best per (N, D) of 16M-1B -> 5 large runs", train, test, boot, starts)]


def summary(rows: list[dict]) -> list[dict]:
    """Per source: pooled coverage, median width, mean ARE of the three fits."""
    out = []
    for src in dict.fromkeys(r["source"] for r in rows):
        sel = [r for r in rows if r["source"] == src and (src != "gemstones" or r.get("drop") == DEFAULT_DROP_EARLY)]
        n = sum(r["n_test"] for r in sel)
        widths = [w for r in sel for w in r["predictive_width_pct"]]
        out.append({"source": src, "n_test": n, "fits": len(sel),
                    "predictive_cover": sum(r["predictive_covered"] for r in sel) / n,
                    "bootstrap_cover": sum(r["bootstrap_covered"] for r in sel) / n,
                    "median_width_pct": float(np.median(widths)),
                    **{k: float(np.mean([r[f"{k}_are_pct"] for r in sel])) for k in ("curvecast", "approach3", "curve_fit")}})
    return out


def markdown(out: dict) -> str:
    lines = [f"# Scaling laws: held-out prediction of the largest models\n\nCommand: `{out['command']}`\n",
             "Fit on the smaller sizes, predict the largest one or two held out (see bench/scaling_heldout.py). "
             "Coverage: share of held-out targets inside the 95% interval; width: median upper/lower - 1. "
             f"Gemstones rows at the default drop-early fraction {DEFAULT_DROP_EARLY:g}.\n",
             "| source | fits | held-out targets | 95% predictive coverage | bootstrap-band coverage | median predictive width % | Curvecast ARE % | Approach 3 ARE % | least squares ARE % | ARE <= both |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in out["summary"]:
        ok = s["curvecast"] <= min(s["approach3"], s["curve_fit"]) + 1e-9
        lines.append(f"| {s['source']} | {s['fits']} | {s['n_test']} | {s['predictive_cover']:.2f} | {s['bootstrap_cover']:.2f} | "
                     f"{s['median_width_pct']:.1f} | {s['curvecast']:.2f} | {s['approach3']:.2f} | {s['curve_fit']:.2f} | {'met' if ok else 'NOT met'} |")
    tot = sum(s["n_test"] for s in out["summary"])
    pooled = sum(s["predictive_cover"] * s["n_test"] for s in out["summary"]) / max(tot, 1)
    per_src = float(np.mean([s["predictive_cover"] for s in out["summary"]])) if out["summary"] else float("nan")
    lines.append(f"\nPredictive coverage pooled over all {tot} held-out targets: {pooled:.2f}; mean over sources: {per_src:.2f} (target >= 0.80).\n")
    lines.append("## Every fit\n")
    lines.append("| source | subset | train/test | cover (pred / boot) | median width % | kappa | folds | Curvecast | Approach 3 | least squares | s |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        lines.append(f"| {r['source']} | {r['subset']} | {r['n_train']}/{r['n_test']} | {r['predictive_covered']}/{r['bootstrap_covered']} of {r['n_test']} | "
                     f"{np.median(r['predictive_width_pct']):.1f} | {r['kappa']:.3f} | {r['folds']} | {r['curvecast_are_pct']:.2f} | "
                     f"{r['approach3_are_pct']:.2f} | {r['curve_fit_are_pct']:.2f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--bootstrap", type=int, default=30)
    ap.add_argument("--a3-starts", type=int, default=64)
    ap.add_argument("--sources", default="porian,gadre,gemstones,scan_llm")
    ap.add_argument("--drops", default="0,0.1,0.25,0.5", help="Gemstones drop-early fractions to compare")
    ap.add_argument("--estimators", default=None, metavar="DELTA:P,...",
                    help="ablation: the estimators Curvecast chooses among (Huber delta : size-weight power; the "
                    "first is the default), instead of curvecast.scaling.fit.ESTIMATORS")
    ap.add_argument("--misspec-kappa", type=float, default=None,
                    help="ablation: the kappa above which other estimators are tried (fit.MISSPEC_KAPPA)")
    args = ap.parse_args()
    from curvecast.scaling import fit as fit_module

    if args.estimators:
        fit_module.ESTIMATORS = tuple(tuple(float(v) for v in e.split(":")) for e in args.estimators.split(","))
    if args.misspec_kappa is not None:
        fit_module.MISSPEC_KAPPA = args.misspec_kappa
    src = args.sources.split(",")
    drops = tuple(sorted({float(x) for x in args.drops.split(",")} | {DEFAULT_DROP_EARLY}))
    rows: list[dict] = []
    for name, fn in (("porian", lambda: porian(args.bootstrap, args.a3_starts)), ("gadre", lambda: gadre(args.bootstrap, args.a3_starts)),
                     ("gemstones", lambda: gemstones(args.bootstrap, args.a3_starts, drops)), ("scan_llm", lambda: scan_llm(args.bootstrap, args.a3_starts))):
        if name in src:
            rows.extend(fn())
            print(f"[{name} done]", file=sys.stderr, flush=True)
    out = {"command": "nice -n 10 .venv/bin/python bench/scaling_heldout.py " + " ".join(sys.argv[1:]), "rows": rows, "summary": summary(rows)}
    print(markdown(out))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
