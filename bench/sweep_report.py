"""Sweeps benchmark report: per-source summaries, plots and the Markdown of docs/bench/sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

METHOD_ORDER = ("none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patience",
                "lcpfn_rule", "curvecast_safe", "curvecast", "curvecast_default", "curvecast_aggressive", "curvecast_raw",
                "curvecast_sweep", "curvecast_default_sweep", "curvecast_aggressive_sweep")
COLORS = dict(zip(METHOD_ORDER, ("black", "tab:blue", "tab:cyan", "tab:green", "tab:red", "tab:olive", "tab:purple",
                                 "tab:brown", "gold", "tab:pink", "tab:orange", "magenta", "tab:gray",
                                 "darkviolet", "darkorange", "crimson")))
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patience", "lcpfn_rule")
# issue 13's targets: (method, min gmean saving, max excess regret, max best-killed) on each source
TARGETS = (("curvecast", 3.3, 0.005, 0.05), ("curvecast_default", 3.3, 0.005, 0.05),
           ("curvecast_aggressive", 5.0, 0.02, None), ("curvecast_sweep", 3.3, 0.005, 0.05),
           ("curvecast_default_sweep", 3.3, 0.005, 0.05), ("curvecast_aggressive_sweep", 5.0, 0.02, None))
AHEAD_OF = ("curvecast", "curvecast_default", "curvecast_sweep", "curvecast_default_sweep")  # checked vs PRUNERS
ECE_TARGET = 0.03
MATCH_TOL = 0.005  # "matched regret": a pruner's excess regret within this of Curvecast's


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _fmt_speed(s: float | None) -> str:
    return "n/r" if s is None else f"{s:.2f}x"


def summarize(results: dict[str, dict]) -> dict[str, dict]:
    """Per source and method: geometric-mean speedup over tasks (n/r tasks counted at 0.5x, as in
    tuning, and reported separately), tasks matched, mean regrets and compute."""
    out: dict[str, dict] = {}
    for src in sorted({r["source"] for r in results.values()}):
        rows = [r for r in results.values() if r["source"] == src]
        per: dict[str, dict] = {}
        for m in METHOD_ORDER:
            ms = [r["methods"][m] for r in rows if m in r["methods"]]
            if not ms:
                continue
            sp = [s["speedup"] for s in ms]
            matched = [s for s in sp if s is not None]
            cr = [s["compute_ratio"] for s in ms]
            per[m] = {
                "tasks": len(ms), "matched": len(matched),
                "gmean_compute_ratio": float(math.exp(np.mean([math.log(c if c is not None else 0.5) for c in cr]))),
                "ratio_matched": int(sum(c is not None for c in cr)),
                "gmean_speedup": float(math.exp(np.mean([math.log(s if s is not None else 0.5) for s in sp]))),
                "gmean_speedup_matched": float(math.exp(np.mean(np.log(matched)))) if matched else None,
                "median_speedup_matched": float(np.median(matched)) if matched else None,
                "final_regret": float(np.mean([s["final_regret"] for s in ms])),
                "compute": float(np.mean([s["compute"] for s in ms])),
                "regret_at_25": float(np.mean([s["regret_at_25"] for s in ms])),
                "regret_at_50": float(np.mean([s["regret_at_50"] for s in ms])),
                "tasks_2x": int(sum(1 for s in matched if s >= 2.0)),
                "gmean_saving": float(math.exp(np.mean([math.log(max(s.get("saving", 1.0), 1e-9)) for s in ms]))),
                "excess_regret": float(np.mean([s.get("excess_regret", 0.0) for s in ms])),
                "best_killed": float(np.mean([s.get("best_killed", 0.0) for s in ms])),
            }
        out[src] = per
    return out


# ---- report -------------------------------------------------------------------------------------------
def write_plots(payload: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    sources = sorted({r["source"] for r in results.values()})
    if sources:
        fig, axes = plt.subplots(2, len(sources), figsize=(5 * len(sources), 8), squeeze=False)
        for j, src in enumerate(sources):
            rows = [r for r in results.values() if r["source"] == src]
            ax = axes[0, j]
            xs = np.linspace(0, 1, 41)
            for m in METHOD_ORDER:
                curves = [r["methods"][m]["curve"] for r in rows if m in r["methods"]]
                if curves:
                    ax.plot(xs * 100, np.mean(curves, axis=0), label=m, color=COLORS[m],
                            lw=2 if m in ("curvecast", "curvecast_aggressive", "lcpfn_rule", "none") else 1)
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_xlabel("compute, % of no stopping")
            ax.set_ylabel("mean normalised regret")
            ax.set_title(f"{src}: regret vs compute ({len(rows)} tasks)")
            ax.legend(fontsize=7)
            ax = axes[1, j]
            names = [r["task"][-28:] for r in rows]
            shown = [m for m in METHOD_ORDER[1:] if all(m in r["methods"] for r in rows)]
            w = 0.8 / max(len(shown), 1)
            for k, m in enumerate(shown):
                sp = [r["methods"][m]["speedup"] or 0.0 for r in rows]
                ax.bar(np.arange(len(rows)) + k * w, sp, width=w, label=m, color=COLORS[m])
            ax.axhline(1.0, color="k", lw=0.5)
            ax.set_xticks(np.arange(len(rows)) + 0.4)
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
            ax.set_ylabel("anytime speedup (0 = never matched)")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "sweeps_regret.png", dpi=110)
        plt.close(fig)
    events = [ev for ev in ("beat_incumbent", "beat_incumbent_last", "target_within_budget") if ev in payload["calibration"]]
    fig, axes = plt.subplots(1, len(events), figsize=(5 * len(events), 4.5), squeeze=False)
    for ax, ev in zip(axes[0], events):
        c = payload["calibration"][ev]
        for kind, style in (("raw", "o-"), ("recalibrated", "s--")):
            bins = [b for b in c[kind]["bins"] if b["count"] > 0]
            ax.plot([b["mean_p"] for b in bins], [b["frequency"] for b in bins], style,
                    label=f"{kind}: ECE {c[kind]['ece']:.3f}, BSS {c[kind]['brier_skill']:.2f}")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_title(f"{ev} (report tasks, n={c['raw']['n']})")
        ax.set_xlabel("forecast probability")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweeps_calibration.png", dpi=110)
    plt.close(fig)


def render_markdown(p: dict) -> str:
    L = ["# Sweeps benchmark: stopping rules in model selection", ""]
    cfg = p["config"]
    L.append(f"Engine `{p['engine']}`; {cfg['runs']} configurations x {cfg['orders']} orders per task, pool {cfg['pool']} "
             f"runs per task{' (quick mode)' if cfg['quick'] else ''}; {p['forecasts']['calls']} forecasts in "
             f"{p['forecasts']['seconds']:.0f}s ({p['forecasts']['failures']} failed); total {p['seconds']:.0f}s.")
    L.append(f"Tuning tasks (thresholds, recalibration; not in the tables): {', '.join(p['tune_tasks']) or 'none'}.")
    L.append(f"Curvecast policy knobs: `{json.dumps(p['knobs'])}`.")
    L.append("")
    L.append("Anytime speedup (LC-PFN style) = compute at which no stopping's mean regret curve reaches its final "
             "value / compute at which the method's mean regret curve reaches it (within "
             f"{p['regret_tol']:g} of the regret scale); `n/r` = never reached. Compute ratio = no stopping's total "
             "compute / the method's, counted only when the method's final mean regret matches (same tolerance). "
             "Regret is normalised by the task's median-run-minus-best gap; regret @25%/@50% is the mean "
             "normalised regret after 25%/50% of no stopping's compute (equal compute). See `bench/sweeps.py`.")
    L.append("")
    L.extend(render_trade_off(p))
    L.append("## Per source (report tasks)")
    L.append("")
    L.append("| source | method | anytime speedup: matched | gmean (n/r=0.5x) | gmean of matched | tasks >= 2x | compute ratio: matched | gmean (n/r=0.5x) | final regret | regret @25% | regret @50% | compute (full runs) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for src, per in p["summary"].items():
        for m, s in per.items():
            gm = "-" if s["gmean_speedup_matched"] is None else f"{s['gmean_speedup_matched']:.2f}x"
            L.append(f"| {src} | {m} | {s['matched']}/{s['tasks']} | {s['gmean_speedup']:.2f}x | {gm} | {s['tasks_2x']} | "
                     f"{s['ratio_matched']}/{s['tasks']} | {s['gmean_compute_ratio']:.2f}x | "
                     f"{s['final_regret']:.4f} | {s['regret_at_25']:.4f} | {s['regret_at_50']:.4f} | {s['compute']:.2f} |")
    L.append("")
    L.append("## Per task: anytime speedup / compute ratio (final normalised regret)")
    L.append("")
    shown = [m for m in METHOD_ORDER if any(m in r["methods"] for r in p["results"].values())]
    L.append("| task | " + " | ".join(shown) + " |")
    L.append("|---|" + "---|" * len(shown))
    for key, r in p["results"].items():
        cells = []
        for m in shown:
            s = r["methods"].get(m)
            cells.append("-" if s is None else f"{_fmt_speed(s['speedup'])} / {_fmt_speed(s['compute_ratio'])} ({s['final_regret']:.3f})")
        L.append(f"| {key} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("![regret vs compute](sweeps_regret.png)")
    L.append("")
    L.append("## Calibration (report tasks)")
    L.append("")
    L.append("`beat_incumbent`: P(the run's result beats the incumbent) when the result is its best checkpoint "
             "(the protocol's meaning, what the policy acts on here); `beat_incumbent_last`: the same when the "
             "result is its value at the budget (`keep_best_checkpoint=false`), against the best last value of "
             "1-19 other runs. Both only for runs that do not already lead under that meaning. `*_sweep`: the "
             "same probabilities forecast with sweep context (the incumbent's runs, whole, as siblings), under the "
             "map the server applies today (fitted without context) and, `*_own_map`, under a map fitted on the "
             "tuning tasks' probabilities with context.")
    L.append("")
    L.append("| event | n | base rate | ECE raw | BSS raw | ECE recalibrated | BSS recalibrated | map |")
    L.append("|---|---|---|---|---|---|---|---|")
    for ev, c in p["calibration"].items():
        L.append(f"| {ev} | {c['raw']['n']} | {c['raw']['base_rate']:.3f} | {c['raw']['ece']:.3f} | {c['raw']['brier_skill']:.3f} | "
                 f"{c['recalibrated']['ece']:.3f} | {c['recalibrated']['brier_skill']:.3f} | {c['map']['kind']} |")
    L.append("")
    L.append("| source | event | n | base rate | ECE raw | BSS raw | ECE recal | BSS recal |")
    L.append("|---|---|---|---|---|---|---|---|")
    for src, evs in p["calibration_per_source"].items():
        for ev, c in evs.items():
            L.append(f"| {src} | {ev} | {c['n']} | {c['base_rate']:.3f} | {c['ece_raw']:.3f} | {c['bss_raw']:.3f} | {c['ece_recal']:.3f} | {c['bss_recal']:.3f} |")
    L.append("")
    L.append("![reliability](sweeps_calibration.png)")
    L.append("")
    L.append("Data: TaskSet (Metz et al. 2020, Apache-2.0), LCDB 1.0 (Mohr et al., MIT), ScAn-Bench VLM (automl, MIT). "
             "Notes: " + "; ".join(p["notes"]))
    return "\n".join(L) + "\n"


def rerender(json_path: Path, out: Path, merge: Path | None = None) -> None:
    """Rewrite the Markdown and plots of an earlier run from its JSON (no simulation). ``merge``: a run
    on the same tasks and orders (e.g. with ``--methods``); its methods (and presets) replace or join
    the first's and the summary is recomputed."""
    payload = json.loads(Path(json_path).read_text())
    if merge is not None:
        extra = json.loads(Path(merge).read_text())
        for key, r in extra["results"].items():
            if key in payload["results"]:
                mine = payload["results"][key]["methods"]
                for m, v in r["methods"].items():
                    if m != "none":
                        mine[m] = v  # the later run's knobs win (e.g. re-chosen presets)
        payload["summary"] = summarize(payload["results"])
        for k in ("presets", "knobs"):
            if k in extra:
                payload[k] = extra[k]
        payload.setdefault("notes", []).append(f"methods merged from {Path(merge).name}")
    out.mkdir(parents=True, exist_ok=True)
    if merge is not None or Path(json_path).resolve() != (out / "sweeps.json").resolve():
        (out / "sweeps.json").write_text(json.dumps(payload, indent=1) + "\n")
    write_plots(payload, out)
    (out / "README.md").write_text(render_markdown(payload))


def target_checks(p: dict) -> list[str]:
    """One line per target of issue 13: met / NOT met, with the numbers."""
    out = []
    summ = p["summary"]
    for m, min_sav, max_ex, max_kill in TARGETS:
        for src, per in summ.items():
            s = per.get(m)
            if s is None:
                continue
            ok = s["gmean_saving"] >= min_sav and s["excess_regret"] <= max_ex and (
                max_kill is None or s["best_killed"] <= max_kill)
            kill = "" if max_kill is None else f", best killed {100 * s['best_killed']:.1f}% (<= {100 * max_kill:g}%)"
            out.append(f"- {m} on {src}: saving {s['gmean_saving']:.2f}x (>= {min_sav:g}x), excess regret "
                       f"{s['excess_regret']:+.4f} (<= {max_ex:g}){kill}: {'met' if ok else '**NOT met**'}")
    for name, src in ((n, s) for n in AHEAD_OF for s in summ):
        per = summ[src]
        cc = per.get(name)
        if cc is None:
            continue
        behind = [m for m in PRUNERS if m in per and per[m]["excess_regret"] <= cc["excess_regret"] + MATCH_TOL
                  and per[m]["gmean_saving"] >= cc["gmean_saving"]]
        out.append(f"- {name} ahead of every pruner and the LC-PFN rule at matched regret on {src}: "
                   + ("met" if not behind else "**NOT met** (as good or better: " + ", ".join(
                       f"{m} {per[m]['gmean_saving']:.2f}x {per[m]['excess_regret']:+.4f}" for m in behind) + ")"))
    c = p["calibration"].get("beat_incumbent")
    if c is not None:
        e = c["recalibrated"]["ece"]
        out.append(f"- ECE of recalibrated P(beat incumbent), best-checkpoint meaning: {e:.3f} (<= {ECE_TARGET:g}): "
                   + ("met" if e <= ECE_TARGET else "**NOT met**"))
    return out


def render_trade_off(p: dict) -> list[str]:
    """The headline: compute saving vs excess regret and best-killed rate, per source and method."""
    L = ["## Trade-off (report tasks)", "",
         "Saving = no stopping's mean total compute / the method's (geometric mean over tasks, whatever the "
         "regret); excess regret = the method's final mean normalised regret minus no stopping's (mean over "
         "tasks); best killed = share of orders whose best run was stopped before it showed its best value. "
         f"\"Ahead at matched regret\": no pruner with excess regret within {MATCH_TOL:g} of Curvecast's saves as much.", ""]
    if p.get("presets"):
        L.append("Presets (`curvecast.decisions.presets`): " + "; ".join(
            f"`{k}` P<{v['min_prob_beat_incumbent']:g}, compute_weight {v['compute_weight']:g}, "
            f"min_fraction_observed {v['min_fraction_observed']:g}, min_points {v['min_points']}"
            for k, v in p["presets"].items()) + ". `curvecast` is the balanced preset.")
        L.append("")
    sources = list(p["summary"])
    shown = [m for m in METHOD_ORDER if any(m in per for per in p["summary"].values())]
    L.append("| method | " + " | ".join(f"{s}: saving / excess regret / best killed" for s in sources) + " |")
    L.append("|---|" + "---|" * len(sources))
    for m in shown:
        cells = []
        for src in sources:
            s = p["summary"][src].get(m)
            cells.append("-" if s is None else
                         f"{s['gmean_saving']:.2f}x / {s['excess_regret']:+.4f} / {100 * s['best_killed']:.1f}%")
        L.append(f"| {m} | " + " | ".join(cells) + " |")
    L.append("")
    hist = [h for h in p.get("tuning_history", []) if "per_source" in h]
    if hist:
        L.append("Preset search on the tuning tasks (`--tune`; cells: saving / excess regret / best killed). Each "
                 "preset = the candidate with the largest gmean saving within its limits: safe <= +0.001 excess "
                 "regret and <= 2% best killed on every source; balanced <= +0.005 and <= 5%, aggressive <= +0.02 "
                 "and <= 25%, both on the mean over sources:")
        L.append("")
        srcs = list(hist[0]["per_source"])
        L.append("| P< | compute_weight | min_fraction_observed | min_points | " + " | ".join(srcs) + " | chosen as |")
        L.append("|---|---|---|---|" + "---|" * len(srcs) + "---|")
        for h in hist:
            k = h["knobs"]
            names = [n for n, v in (p.get("presets") or {}).items() if v == k]
            cells = [f"{h['per_source'][src]['saving']:.2f}x / {h['per_source'][src]['excess_regret']:+.4f} / "
                     f"{100 * h['per_source'][src]['best_killed']:.0f}%" for src in srcs]
            L.append(f"| {k['min_prob_beat_incumbent']:g} | {k['compute_weight']:g} | {k['min_fraction_observed']:g} | "
                     f"{k['min_points']} | " + " | ".join(cells) + f" | {', '.join(names)} |")
        L.append("")
    L.append("Targets (issue 13):")
    L.append("")
    L.extend(target_checks(p))
    L.append("")
    return L
