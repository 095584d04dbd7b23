"""Turn bench results into ``report.md``, PNG plots and ``results.json`` (every figure in the report).

Quality numbers depend only on the data, the seed and the engines; wall-clock figures live under
``speed``/``timing`` keys so two runs with the same seed differ only there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import HIGHER_IS_BETTER, INTERVALS, PIT_LEVELS

HEADLINE_METRICS = ("ll_norm", "final_rel_err_median")
WIN_METRICS = ("ll_norm", "final_rel_err_median", "crps_norm", "ece", "stt_err_median")
METRIC_TITLES = {
    "ll_norm": "LL (normalised)",
    "ll": "LL (own units)",
    "crps_norm": "CRPS/range",
    "final_rel_err_median": "final rel. err (median)",
    "final_rel_err_mean": "final rel. err (mean)",
    "final_abs_err_median": "final abs. err (median)",
    "ece": "PIT ECE",
    "stt_err_median": "steps-to-target err",
}


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _json_safe(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return _json_safe(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return float(f"{f:.6g}") if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_json_safe(results), indent=1, sort_keys=False) + "\n")


# ---- tables -----------------------------------------------------------------------------------------
BASELINE_NAMES = ("last_value", "empirical_spread", "pow3_ls", "pow3_robust", "best_of_families", "best_family")
RATIO_METRIC = "final_rel_err_median"


def baselines_of(results: dict[str, Any]) -> list[str]:
    """The baselines that ran (from the results, else by name)."""
    ran = results["engines"]["ran"]
    names = results.get("baselines", {}).get("names") or [b for b in BASELINE_NAMES if b in ran]
    return [b for b in names if b in ran]


def best_of(metrics: dict[str, dict[str, float]], candidates: list[str], metric: str) -> tuple[str | None, float | None]:
    """The candidate with the best finite ``metric`` (ties: the first listed)."""
    vals = [(e, metrics.get(e, {}).get(metric)) for e in candidates]
    vals = [(e, v) for e, v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    pick = max if HIGHER_IS_BETTER.get(metric, False) else min
    return pick(vals, key=lambda ev: ev[1])


def _ratio(v: float | None, best: float | None) -> float | None:
    if v is None or best is None or not math.isfinite(v) or not math.isfinite(best):
        return None
    return v / best if best > 0 else (1.0 if v == best else math.inf)


def macro_best_baselines(results: dict[str, Any]) -> dict[str, tuple[str | None, float | None]]:
    """Per cutoff ('0.1', ...): the baseline with the lowest macro median final error."""
    bls = baselines_of(results)
    out = {}
    for c in results["config"]["cutoffs"]:
        per = {e: results["macro"].get(e, {}).get(f"{c:g}", {}) for e in bls}
        out[f"{c:g}"] = best_of(per, bls, RATIO_METRIC)
    return out


def headline_rows(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    cutoffs = results["config"]["cutoffs"]
    best = macro_best_baselines(results)
    header = ["engine"]
    for m in HEADLINE_METRICS:
        header += [f"{METRIC_TITLES[m]} @{int(c * 100)}%" for c in cutoffs]
    header += [f"err ÷ best baseline @{int(c * 100)}%" for c in cutoffs]
    header += ["LL norm median (all)", "overconfident misses", "cover90 (all)", "ECE (all)", "failed"]
    rows = []
    bls = set(baselines_of(results))
    for eng in results["engines"]["ran"]:
        row: list[Any] = [eng if eng in bls else f"**{eng}**"]
        for m in HEADLINE_METRICS:
            row += [results["macro"].get(eng, {}).get(f"{c:g}", {}).get(m) for c in cutoffs]
        row += [_ratio(results["macro"].get(eng, {}).get(f"{c:g}", {}).get(RATIO_METRIC), best[f"{c:g}"][1]) for c in cutoffs]
        tot = results["macro"].get(eng, {}).get("all", {})
        row += [tot.get("ll_norm_median"), int(tot.get("n_overconfident", 0)), tot.get("cover90"), tot.get("ece"), f"{int(tot.get('n_failed', 0))}/{int(tot.get('n_tasks', 0))}"]
        rows.append(row)
    return header, rows


def headline_markdown(results: dict[str, Any]) -> str:
    header, rows = headline_rows(results)
    best = macro_best_baselines(results)
    note = ""
    if any(b for b, _ in best.values()):
        note = "\n\nBest baseline by macro median final error (the ÷ columns divide by it): " + ", ".join(
            f"@{int(float(c) * 100)}% {b} ({fmt(v)})" for c, (b, v) in best.items() if b) + ". Curvecast engines in bold."
    return _table(header, rows) + note


def compare_to_baselines(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per source x cutoff: the best baseline by median final error and by LL, and each engine's standing."""
    bls = baselines_of(results)
    by: dict[tuple[str, float], dict[str, dict[str, float]]] = {}
    for g in results["groups"]:
        by.setdefault((g["source"], g["cutoff"]), {})[g["engine"]] = g["metrics"]
    out = []
    for src in results["sources_run"]:
        for c in results["config"]["cutoffs"]:
            per = by.get((src, c))
            if not per:
                continue
            b_err, v_err = best_of(per, bls, RATIO_METRIC)
            b_ll, v_ll = best_of(per, bls, "ll_norm")
            engines = {}
            for e, m in per.items():
                ll = m.get("ll_norm")
                engines[e] = {
                    "err_ratio": _ratio(m.get(RATIO_METRIC), v_err),
                    "ll_minus_best": (ll - v_ll) if ll is not None and v_ll is not None and math.isfinite(ll) else None,
                    "cover90": m.get("cover90"),
                }
            out.append({"source": src, "cutoff": c, "best_baseline": b_err, "best_err": v_err, "best_ll_baseline": b_ll, "best_ll": v_ll, "engines": engines})
    return out


def vs_baselines_markdown(results: dict[str, Any]) -> str:
    """Curvecast's engines against the best baseline at every source and cutoff."""
    comp = results.get("vs_baselines") or compare_to_baselines(results)
    bls = baselines_of(results)
    mine = [e for e in results["engines"]["ran"] if e not in bls]
    bar = results.get("baselines", {}).get("calibration_bar", "empirical_spread")
    if not comp or not bls:
        return "Not evaluated: needs at least one baseline in the run."
    header = ["source", "cutoff", "best baseline (final err)", "its final err"] + [f"{e} err ÷ best" for e in mine]
    header += [f"{e} cover90" for e in mine] + ([f"{bar} cover90"] if bar in bls else [])
    rows = []
    for r in comp:
        row: list[Any] = [r["source"], f"{int(r['cutoff'] * 100)}%", r["best_baseline"] or "–", r["best_err"]]
        row += [r["engines"].get(e, {}).get("err_ratio") for e in mine]
        row += [r["engines"].get(e, {}).get("cover90") for e in mine]
        if bar in bls:
            row.append(r["engines"].get(bar, {}).get("cover90"))
        rows.append(row)
    return _table(header, rows)


def default_engine_markdown(results: dict[str, Any]) -> str:
    """The server's default engine per source: median final error ÷ the best baseline's, and cover90
    next to the calibration bar's, at every cutoff."""
    eng = results.get("baselines", {}).get("default_engine", "analytic")
    bar = results.get("baselines", {}).get("calibration_bar", "empirical_spread")
    comp = results.get("vs_baselines") or compare_to_baselines(results)
    if eng not in results["engines"]["ran"] or not comp:
        return ""
    cutoffs = results["config"]["cutoffs"]
    by = {(r["source"], r["cutoff"]): r for r in comp}
    header = ["source"] + [f"{eng} err ÷ best @{int(c * 100)}% (best)" for c in cutoffs] + [f"cover90 {eng} / {bar} @{int(c * 100)}%" for c in cutoffs]
    rows = []
    for src in results["sources_run"]:
        row: list[Any] = [src]
        for c in cutoffs:
            r = by.get((src, c))
            row.append("–" if r is None else f"{fmt(r['engines'].get(eng, {}).get('err_ratio'))} ({r['best_baseline']})")
        for c in cutoffs:
            r = by.get((src, c))
            row.append("–" if r is None else f"{fmt(r['engines'].get(eng, {}).get('cover90'), 2)} / {fmt(r['engines'].get(bar, {}).get('cover90'), 2)}")
        rows.append(row)
    return f"Default engine (`{eng}`) per source: median final error ÷ the best baseline's there (which one in brackets; < 1 = Curvecast better), and 90% coverage next to `{bar}`'s:\n\n" + _table(header, rows)


def source_table(results: dict[str, Any], source: str) -> str:
    header = ["cutoff", "engine", "tasks", "failed", "LL", "LL norm", "LL − best BL", "CRPS/range", "final abs err", "final rel err med", "err ÷ best BL", "final rel err mean", "cov50", "cov80", "cov90", "ECE", "STT err (n)"]
    comp = {r["cutoff"]: r for r in (results.get("vs_baselines") or compare_to_baselines(results)) if r["source"] == source}
    order = {e: i for i, e in enumerate(results["engines"]["ran"])}
    groups = sorted((g for g in results["groups"] if g["source"] == source), key=lambda g: (g["cutoff"], order.get(g["engine"], 99)))
    bls = set(baselines_of(results))
    rows = []
    for g in groups:
        a = g["metrics"]
        stand = comp.get(g["cutoff"], {}).get("engines", {}).get(g["engine"], {})
        stt = f"{fmt(a.get('stt_err_median'))} ({int(a.get('stt_n', 0))})" if a.get("stt_n") else "–"
        name = g["engine"] if g["engine"] in bls else f"**{g['engine']}**"
        rows.append([f"{int(g['cutoff'] * 100)}%", name, int(a["n_tasks"]), int(a["n_failed"]), a.get("ll"), a.get("ll_norm"), stand.get("ll_minus_best"), a.get("crps_norm"), a.get("final_abs_err_median"), a.get("final_rel_err_median"), stand.get("err_ratio"), a.get("final_rel_err_mean"), a.get("cover50"), a.get("cover80"), a.get("cover90"), a.get("ece"), stt])
    return _table(header, rows)


def compute_wins(results: dict[str, Any]) -> dict[str, Any]:
    """For each source and metric: which engine is best at how many cutoffs (ties go to both)."""
    by: dict[tuple[str, float, str], dict[str, float]] = {}
    for g in results["groups"]:
        by.setdefault((g["source"], g["cutoff"], g["engine"]), g["metrics"])
    sources = results["sources_run"]
    engines = results["engines"]["ran"]
    wins: dict[str, Any] = {"per_source": {}, "tally": {e: 0 for e in engines}}
    for s in sources:
        wins["per_source"][s] = {}
        for m in WIN_METRICS:
            counts = {e: 0 for e in engines}
            n_cut = 0
            for c in results["config"]["cutoffs"]:
                vals = {e: by.get((s, c, e), {}).get(m) for e in engines}
                vals = {e: v for e, v in vals.items() if v is not None and math.isfinite(v)}
                if len(vals) < 2:
                    continue
                n_cut += 1
                best = max(vals.values()) if HIGHER_IS_BETTER[m] else min(vals.values())
                for e, v in vals.items():
                    if v == best:
                        counts[e] += 1
                        wins["tally"][e] += 1
            wins["per_source"][s][m] = {"n_cutoffs": n_cut, "counts": counts}
    return wins


def wins_markdown(results: dict[str, Any]) -> str:
    wins = results["wins"]
    header = ["source"] + [METRIC_TITLES[m] for m in WIN_METRICS]
    rows = []
    for s, per in wins["per_source"].items():
        row: list[Any] = [s]
        for m in WIN_METRICS:
            w = per[m]
            if not w["n_cutoffs"]:
                row.append("–")
                continue
            top = max(w["counts"].values())
            leaders = [e for e, n in w["counts"].items() if n == top]
            row.append(f"{'/'.join(leaders)} {top}/{w['n_cutoffs']}")
        rows.append(row)
    tally = ", ".join(f"{e}: {n}" for e, n in sorted(wins["tally"].items(), key=lambda kv: -kv[1]))
    return _table(header, rows) + f"\n\nTotal (source x cutoff x metric) wins: {tally}."


def speed_markdown(results: dict[str, Any]) -> str:
    sp = results.get("speed", {})
    mach = results["machine"]
    if not sp.get("engines"):
        return "Speed not measured in this run (`--no-speed`)."
    keys = sorted({k for v in sp["engines"].values() for k in v if k.endswith("_throughput_per_s") and k.startswith("batch")}, key=lambda k: int(k[5:].split("_")[0]))
    header = ["engine", "p50 ms/curve", "p99 ms/curve", "single curves/s"] + [f"batch {k[5:].split('_')[0]} curves/s" for k in keys]
    rows = [[e, v.get("latency_p50_ms"), v.get("latency_p99_ms"), v.get("single_throughput_per_s")] + [v.get(k) for k in keys] for e, v in sp["engines"].items()]
    where = "In-process" if results["config"]["mode"] == "inprocess" else "Curvecast engines through the server (one sequential SDK client; baselines in-process)"
    text = f"{where}, `os.cpu_count()` = {mach['cpu_count']} ({mach['processor']}, Python {mach['python']}); latency over {int(sp.get('n_single', 0))} single-curve calls, throughput best of 2 batched calls (the slow baselines `pow3_robust` and `best_of_families`: 10 single calls and one batch of 16, timed without their cache).\n\n"
    return text + _table(header, rows)


def cost_markdown(results: dict[str, Any]) -> str:
    """What the slow baselines cost per task (measured when computed, carried by their cache)."""
    cost = results.get("timing", {}).get("baseline_cost", {})
    if not cost:
        return "Baseline cost: no cached baseline in this run."
    rows = [[e, v.get("compute_ms_per_task"), v.get("compute_s"), int(v.get("hits", 0)), int(v.get("misses", 0))] for e, v in cost.items()]
    return "Cost of the slow baselines (benchmark only; never on the serving path). Compute time is what the engine took when it computed each answer, including answers served from the cache:\n\n" + _table(["baseline", "compute ms/task", "compute s (all tasks)", "cache hits", "computed now"], rows)


TARGET_RIVALS = ("analytic", "last_value")
COVER90_BAND = (0.85, 0.95)


def targets_markdown(results: dict[str, Any]) -> str:
    """Issue 5's real-curve targets for each learned-engine variant that ran: beat the analytic engine and
    the last-value baseline on LL and final-value error at every source x cutoff; 90% coverage in [0.85, 0.95]."""
    ran = results["engines"]["ran"]
    cands = [e for e in ("learned", "ensemble") if e in ran]
    rivals = [r for r in TARGET_RIVALS if r in ran]
    if not cands or not rivals:
        return f"Not evaluated: needs the learned engine and at least one of {', '.join(TARGET_RIVALS)} in the run."
    by = {(g["source"], g["cutoff"], g["engine"]): g["metrics"] for g in results["groups"]}
    cutoffs = results["config"]["cutoffs"]
    lines = []
    for cand in cands:
        rows, met, total = [], 0, 0
        for src in results["sources_run"]:
            row: list[Any] = [src]
            for c in cutoffs:
                me = by.get((src, c, cand))
                if me is None or "ll_norm" not in me:
                    row.append("–")
                    continue
                theirs = [by.get((src, c, r), {}) for r in rivals]
                ll_ok = all(me["ll_norm"] > t.get("ll_norm", -math.inf) for t in theirs)
                err_ok = all(me["final_rel_err_median"] < t.get("final_rel_err_median", math.inf) for t in theirs)
                met += int(ll_ok) + int(err_ok)
                total += 2
                row.append(f"LL {'yes' if ll_ok else 'NO'}, err {'yes' if err_ok else 'NO'}")
            cov = results["macro"][cand].get("by_source", {}).get(src, {}).get("cover90")
            ok = cov is not None and COVER90_BAND[0] <= cov <= COVER90_BAND[1]
            met += int(ok)
            total += 1
            row.append(f"{fmt(cov)} {'yes' if ok else 'NO'}")
            rows.append(row)
        header = ["source"] + [f"@{int(c * 100)}% beats {'+'.join(rivals)}" for c in cutoffs] + ["cover90 in [0.85, 0.95]"]
        lines.append(f"**{cand}**: {met}/{total} checks met.\n\n" + _table(header, rows))
    return "\n\n".join(lines)


def events_markdown(results: dict[str, Any]) -> str:
    ev = results.get("events", {})
    rows = []
    for eng, per in ev.items():
        for name, st in per.items():
            a = st["all"]
            worst = min(((src, v.get("bss")) for src, v in st["by_source"].items() if v.get("bss") is not None and math.isfinite(v["bss"])), key=lambda kv: kv[1], default=(None, None))
            cut = " / ".join(fmt(st["by_cutoff"].get(f"{c:g}", {}).get("bss"), 2) for c in results["config"]["cutoffs"])
            rows.append([eng, name, int(a["n"]), a.get("base_rate"), a.get("brier"), a.get("bss"), a.get("ece"), cut, f"{worst[0]} {fmt(worst[1], 2)}" if worst[0] else "–"])
    if not rows:
        return "No decision events (sources need >= 3 peer runs per group)."
    return _table(["engine", "event", "n", "base rate", "Brier", "BSS", "ECE", "BSS @cutoffs", "worst source BSS"], rows)


def load_markdown(load: dict[str, Any] | None) -> str:
    """Server-under-load figures from ``python -m bench.load`` (its JSON), measured separately."""
    if not load:
        return "Not measured in this run: run `python -m bench.load` against a server and pass its JSON with `--load-results FILE`."
    rows = load.get("closed_loop")
    if isinstance(rows, list) and rows:
        meta = load.get("meta", {})
        head = f"From `{meta.get('command', 'python -m bench.load')}` on {meta.get('date', '?')} ({meta.get('cpus', '?')} CPUs; engines answering: {', '.join(meta.get('engines_answered', []) or ['?'])}).\n\n"
        table_rows = [[r.get("target"), r.get("mode"), r.get("concurrency"), r.get("curves_per_s"), r.get("p50_ms"), r.get("p99_ms"), sum((r.get("errors") or {}).values())] for r in rows if r.get("target") == "server"]
        return head + _table(["target", "mode", "concurrency", "curves/s", "p50 ms", "p99 ms", "errors"], table_rows or [[r.get("target"), r.get("mode"), r.get("concurrency"), r.get("curves_per_s"), r.get("p50_ms"), r.get("p99_ms"), sum((r.get("errors") or {}).values())] for r in rows])
    flat = [[k, v] for k, v in load.items() if not isinstance(v, (dict, list))]
    return _table(["figure", "value"], flat) if flat else "Load results given but in an unknown format."


# ---- plots ------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fans(examples: dict[str, list[Any]], engine_examples: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """One PNG per source: rows = example curves, columns = engines; prefix, 5-95/25-75 bands, median, truth."""
    plt = _plt()
    files = []
    engines = list(engine_examples)
    for source, tasks in examples.items():
        if not tasks or not engines:
            continue
        fig, axes = plt.subplots(len(tasks), len(engines), figsize=(3.2 * len(engines), 2.6 * len(tasks)), squeeze=False)
        for i, t in enumerate(tasks):
            for j, eng in enumerate(engines):
                ax = axes[i][j]
                ax.plot(t.x_obs, t.y_obs, "k.", ms=3, label="observed")
                ax.plot(t.x_true, t.y_true, "rx", ms=3, label="truth")
                m = engine_examples[eng].get(t.key)
                if m is not None:
                    q = m.quantile([0.05, 0.25, 0.5, 0.75, 0.95])
                    ax.fill_between(m.x, q[:, 0], q[:, 4], alpha=0.2, color="C0", lw=0)
                    ax.fill_between(m.x, q[:, 1], q[:, 3], alpha=0.35, color="C0", lw=0)
                    ax.plot(m.x, q[:, 2], "C0-", lw=1)
                else:
                    ax.text(0.5, 0.5, "failed", transform=ax.transAxes, ha="center")
                ys = np.concatenate([t.y_obs[len(t.y_obs) // 3 :], t.y_true])  # early transients would squash the view
                pad = 0.15 * (ys.max() - ys.min() + 1e-12)
                ax.set_ylim(ys.min() - pad, ys.max() + pad)
                if t.query.curve.x_kind.value in ("samples", "tokens") and t.x_obs.min() > 0:
                    ax.set_xscale("log")
                if i == 0:
                    ax.set_title(eng, fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{t.run_id[-28:]}\ncut {int(t.cutoff * 100)}%", fontsize=6)
                ax.tick_params(labelsize=6)
        fig.suptitle(f"{source}: observed (black), truth (red), median and 50/90% bands", fontsize=9)
        fig.tight_layout()
        name = f"fan_{source}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def plot_reliability(results: dict[str, Any], out: Path) -> str | None:
    plt = _plt()
    rel = results.get("reliability", {})
    engines = [e for e in results["engines"]["ran"] if e in rel]
    if not engines:
        return None
    fig, axes = plt.subplots(1, len(engines), figsize=(3.2 * len(engines), 3.2), squeeze=False)
    for j, e in enumerate(engines):
        ax = axes[0][j]
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for k, (s, r) in enumerate(sorted(rel[e].items())):
            if s == "all":
                continue
            ax.plot(PIT_LEVELS, r, "-", lw=1, color=f"C{k % 10}", label=s)
        if "all" in rel[e]:
            ax.plot(PIT_LEVELS, rel[e]["all"], "k-", lw=2, label="all")
        ax.set_title(e, fontsize=9)
        ax.set_xlabel("quantile level q", fontsize=8)
        if j == 0:
            ax.set_ylabel("observed P(PIT <= q)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=90)
    plt.close(fig)
    return "reliability.png"


def plot_event_reliability(results: dict[str, Any], out: Path) -> str | None:
    plt = _plt()
    ev = results.get("events", {})
    names = sorted({n for per in ev.values() for n in per})
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for j, n in enumerate(names):
        ax = axes[0][j]
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for i, (eng, per) in enumerate(ev.items()):
            if n in per and per[n]["reliability"]:
                r = np.array(per[n]["reliability"])
                ax.plot(r[:, 0], r[:, 1], "o-", ms=3, lw=1, color=f"C{i}", label=f"{eng} (BSS {fmt(per[n]['all'].get('bss'), 2)})")
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("predicted probability", fontsize=8)
        ax.set_ylabel("observed frequency", fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "event_reliability.png", dpi=90)
    plt.close(fig)
    return "event_reliability.png"


def plot_vs_cutoff(results: dict[str, Any], out: Path, metric: str) -> str | None:
    plt = _plt()
    sources = results["sources_run"]
    if not sources:
        return None
    ncol = min(4, len(sources))
    nrow = int(math.ceil(len(sources) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for k, s in enumerate(sources):
        ax = axes[k // ncol][k % ncol]
        for i, e in enumerate(results["engines"]["ran"]):
            pts = sorted((g["cutoff"], g["metrics"].get(metric)) for g in results["groups"] if g["source"] == s and g["engine"] == e)
            pts = [(c, v) for c, v in pts if v is not None and math.isfinite(v)]
            if pts:
                ax.plot([100 * c for c, _ in pts], [v for _, v in pts], "o-", ms=3, lw=1, color=f"C{i}", label=e)
        if metric.startswith("final_rel"):
            ax.set_yscale("log")
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("cutoff % of budget", fontsize=7)
        ax.tick_params(labelsize=7)
    for k in range(len(sources), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(METRIC_TITLES.get(metric, metric) + " vs cutoff", fontsize=9)
    fig.tight_layout()
    name = f"{metric}_vs_cutoff.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


# ---- markdown ---------------------------------------------------------------------------------------
RAW_PAIRS = (("nanogpt_train", "nanogpt_train_blocks"),)  # (raw per-step source, its block-mean twin)


def sanity_markdown(results: dict[str, Any]) -> str:
    """Issue 12's sanity table: per source and cutoff, how many answers each engine got absurdly wrong."""
    cutoffs = results["config"]["cutoffs"]
    engines = results["engines"]["ran"]
    by = {(g["source"], g["cutoff"], g["engine"]): g["metrics"] for g in results["groups"]}
    header = ["source"] + [f"{e} @{'/'.join(str(int(c * 100)) for c in cutoffs)}%" for e in engines]
    rows = []
    totals = {e: {f: 0 for f in ("n_insane", "n_below_floor", "n_absurd_median", "n_far_miss", "n_tasks")} for e in engines}
    for src in results["sources_run"]:
        row: list[Any] = [src]
        for e in engines:
            cells = []
            for c in cutoffs:
                m = by.get((src, c, e))
                cells.append("–" if m is None or "n_insane" not in m else str(int(m["n_insane"])))
                for f in totals[e]:
                    totals[e][f] += int(m.get(f, 0)) if m else 0
            row.append("/".join(cells))
        rows.append(row)
    sums = _table(["engine", "answers", "absurd (any)", "below floor / above ceiling", "median off > 50% with last value within 10%", "final value missed by more than the 90% width"],
                  [[e, t["n_tasks"], t["n_insane"], t["n_below_floor"], t["n_absurd_median"], t["n_far_miss"]] for e, t in totals.items()])
    return ("Counts of answers no user should get (bench/metrics.py `sanity_flags`): a quantile below the metric's floor "
            "(declared, or 0 for a loss) or above its ceiling; a final median off by more than 50% although the last "
            "observed value is within 10% of the truth; a final value farther outside the 90% interval than the interval "
            "is wide. Cells: counts at each cutoff.\n\n" + _table(header, rows) + "\n\nTotals:\n\n" + sums)


FAMILY_BASELINES = ("pow3_ls", "pow3_robust", "best_of_families")  # "the best single family" of issue 12


def vs_families_markdown(results: dict[str, Any]) -> str:
    """Each Curvecast engine's median final error ÷ the best curve family's (pow3 by least squares or
    robust, best of five families), with its 90% coverage, per source and cutoff (issue 12's target:
    <= 1 everywhere, coverage 0.85-0.95)."""
    by = {(g["source"], g["cutoff"], g["engine"]): g["metrics"] for g in results["groups"]}
    fams = [f for f in FAMILY_BASELINES if f in results["engines"]["ran"]]
    mine = [e for e in results["engines"]["ran"] if e not in baselines_of(results)]
    if not fams or not mine:
        return "No curve-family baseline ran."
    cutoffs = results["config"]["cutoffs"]
    rows = []
    for src in results["sources_run"]:
        for e in mine:
            row: list[Any] = [src, e]
            for c in cutoffs:
                a = by.get((src, c, e), {})
                f = [by[(src, c, b)]["final_rel_err_median"] for b in fams if "final_rel_err_median" in by.get((src, c, b), {})]
                row.append("–" if "final_rel_err_median" not in a or not f else f"{fmt(a['final_rel_err_median'] / max(min(f), 1e-12), 2)} ({fmt(a.get('cover90'), 2)})")
            rows.append(row)
    return ("Median final-value error ÷ the best curve family's at that source and cutoff (< 1: better), "
            "with the engine's 90% coverage in brackets.\n\n"
            + _table(["source", "engine"] + [f"@{int(c * 100)}%" for c in cutoffs], rows))


def raw_vs_blocks_markdown(results: dict[str, Any]) -> str:
    """Raw per-step input against block means of the same runs (issue 12: within 10%, coverage no worse)."""
    by = {(g["source"], g["cutoff"], g["engine"]): g["metrics"] for g in results["groups"]}
    rows = []
    for raw, blocks in RAW_PAIRS:
        for e in results["engines"]["ran"]:
            for c in results["config"]["cutoffs"]:
                a, b = by.get((raw, c, e)), by.get((blocks, c, e))
                if not a or not b or "final_rel_err_median" not in a or "final_rel_err_median" not in b:
                    continue
                ra, rb = a["final_rel_err_median"], b["final_rel_err_median"]
                rows.append([raw, e, f"{int(c * 100)}%", ra, rb, ra / rb if rb > 0 else None, a.get("cover90"), b.get("cover90")])
    if not rows:
        return "No raw/block-mean source pair ran."
    return ("Same runs, same final value (mean of the last 100 per-step losses): the forecast from the raw per-step "
            "log against the one from its 100-step block means. Target: ratio <= 1.10, coverage no worse.\n\n"
            + _table(["raw source", "engine", "cutoff", "final rel err raw", "final rel err blocks", "raw ÷ blocks", "cover90 raw", "cover90 blocks"], rows))


def repro_markdown(results: dict[str, Any]) -> str:
    rep = results.get("reproducibility")
    if not rep:
        return "Not run."
    rows = [[e, r["n"], r["repeat_mismatch"], r["subset_mismatch"], fmt(r["max_abs_diff"], 3)] for e, r in rep.items()]
    return ("Each Curvecast engine answers a sample of tasks twice with the same request, and once with every other "
            "query x left out; answers must be identical at every common x (bit for bit).\n\n"
            + _table(["engine", "tasks", "repeat differs", "subset differs", "max |diff|"], rows))


def render_markdown(results: dict[str, Any], plots: dict[str, Any]) -> str:
    cfg = results["config"]
    parts = [f"# Curvecast ruler report\n\nGenerated {cfg['date']} by `{cfg['command']}`"]
    parts.append(
        f"- mode: **{cfg['mode']}**" + (f" (server {cfg['server']}; marginals rebuilt from {len(cfg.get('e2e_quantiles', []))} returned quantiles)" if cfg["mode"] == "e2e" else " (engines called directly through the Engine protocol)")
        + f"\n- quick: {cfg['quick']}, seed: {cfg['seed']}, split: {cfg.get('split', 'all')}, cap per source: {cfg['cap']}, cutoffs: {', '.join(f'{int(c * 100)}%' for c in cfg['cutoffs'])}"
        + f"\n- data: {cfg['data'] or 'none'}; machine: {results['machine']['cpu_count']} CPUs; quality pass wall time {fmt(results['timing']['total_s'], 1)} s"
    )
    eng_lines = [f"- `{e}`: {results['engines']['info'].get(e, '')}" for e in results["engines"]["ran"]]
    eng_lines += [f"- `{e}`: **skipped** – {why}" for e, why in results["engines"]["skipped"].items()]
    parts.append("## Engines\n\n" + "\n".join(eng_lines))
    src_rows = []
    for s, info in results["sources"].items():
        src_rows.append([s, info.get("n_curves", 0), info.get("n_tasks", 0), info.get("skipped") or "; ".join(info.get("notes", []))])
    parts.append("## Sources\n\n" + _table(["source", "curves", "tasks", "notes"], src_rows))
    parts.append(
        "## Headline (macro average over sources)\n\n"
        "LL (normalised) = mean log-likelihood of held-out points after mapping each curve to unit range, so sources "
        "can be averaged (higher is better; the LC-PFN-comparable number is the own-units LL of [0, 1] accuracy "
        "sources such as LCDB, in the per-source tables); its mean is dominated by overconfident "
        "misses, counted separately (tasks with LL norm < -10). Final rel. err = median "
        "|median forecast - truth| / |truth| of the last point. cover90 should be 0.90; ECE 0 is perfect.\n\n"
        + headline_markdown(results)
    )
    parts.append(
        "## Curvecast against the baselines (issue 16)\n\n"
        "Per source and cutoff: the baseline with the lowest median final-value error, each Curvecast engine's error "
        "divided by it (< 1: Curvecast is better), and 90% coverage next to the calibration bar (`empirical_spread`: "
        "the last value with the moves the source's other curves made from the same relative position, leaving the "
        "curve's task/dataset out). Baselines: `last_value` (random-walk spread), `empirical_spread`, `pow3_ls` "
        "(plain least squares, Gaussian noise; the old `best_family`), `pow3_robust` (soft-L1, residual bootstrap) and "
        "`best_of_families` (pow3, pow4, exp4, Janoschek = WBL4, log-power = MMF4, chosen on the prefix's last 20%).\n\n"
        + vs_baselines_markdown(results)
        + "\n\n" + default_engine_markdown(results)
        + "\n\n" + cost_markdown(results)
    )
    parts.append("## Sanity (issue 12)\n\n" + sanity_markdown(results)
                 + "\n\n### Against the best single curve family\n\n" + vs_families_markdown(results)
                 + "\n\n### Raw per-step input vs block means\n\n" + raw_vs_blocks_markdown(results)
                 + "\n\n### Reproducibility\n\n" + repro_markdown(results))
    parts.append("## Learned-engine targets on real curves (issue 5)\n\n" + targets_markdown(results))
    parts.append("## Who wins where\n\nCells: engine(s) best at the most cutoffs (count / cutoffs compared).\n\n" + wins_markdown(results))
    if plots.get("vs_cutoff"):
        parts.append("## Error vs cutoff\n\n" + "\n".join(f"![{p}]({p})" for p in plots["vs_cutoff"]))
    if plots.get("reliability"):
        parts.append("## Calibration (PIT reliability)\n\nA calibrated forecaster follows the diagonal; above it = truth too often low (for the q-quantile).\n\n" + f"![reliability]({plots['reliability']})")
    parts.append(
        "## Decision probabilities (calibration for stop/target decisions)\n\n"
        "From each engine's marginal at the last recorded x: P(final beats the incumbent) with incumbent = median final "
        "value of the other runs in the curve's group (TaskSet task, LCDB dataset, nanogpt track, Multi-Power-Law model "
        "size, Gemstones dataset, ScAn source), and P(final reaches the group's best-quartile final value). "
        "Brier skill score (BSS) is against the base rate (0 = no better than always saying the base rate); ECE over 10 bins.\n\n"
        + events_markdown(results)
        + (f"\n\n![event reliability]({plots['events']})" if plots.get("events") else "")
    )
    parts.append("## Per source\n")
    for s in results["sources_run"]:
        parts.append(f"### {s}\n\n" + source_table(results, s) + (f"\n\n![fan {s}](fan_{s}.png)" if f"fan_{s}.png" in plots.get("fans", []) else ""))
    parts.append("## Speed\n\n" + speed_markdown(results))
    parts.append("### Server under load\n\n" + load_markdown(results.get("load")))
    if results.get("scaling_markdown"):
        parts.append(results["scaling_markdown"])
    parts.append(
        "## Definitions and sources\n\nMetric definitions: bench/README.md and bench/metrics.py. Errors in an engine's answer "
        "count as failed tasks and are excluded from that engine's averages (see 'failed').\n\n"
        "Data (cite when quoting results): TaskSet (Metz et al. 2020, Apache-2.0); LCDB 1.0 (Mohr et al., MIT); "
        "ScAn-Bench VLM/LLM (automl, MIT); modded-nanogpt records (K. Jordan et al., MIT); Multi-Power Law curves "
        "(Luo et al. 2025, MIT); Gemstones (McLeish et al. 2025, MIT)."
    )
    return "\n\n".join(parts) + "\n"


def write_report(results: dict[str, Any], example_tasks: dict[str, list[Any]], engine_examples: dict[str, dict[str, Any]], out: Path, make_plots: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    results["wins"] = compute_wins(results)
    results["vs_baselines"] = compare_to_baselines(results)
    plots: dict[str, Any] = {}
    if make_plots:
        plots["fans"] = plot_fans(example_tasks, engine_examples, out)
        plots["reliability"] = plot_reliability(results, out)
        plots["events"] = plot_event_reliability(results, out)
        plots["vs_cutoff"] = [p for p in (plot_vs_cutoff(results, out, "final_rel_err_median"), plot_vs_cutoff(results, out, "ll_norm")) if p]
    results["plots"] = plots
    (out / "report.md").write_text(render_markdown(results, plots))
    cfg = results["config"]
    (out / "headline.md").write_text(
        f"Headline of the ruler ({cfg['mode']}, {cfg['date']}, `{cfg['command']}`; macro average over "
        f"{len(results['sources_run'])} sources; full report: report.md):\n\n" + headline_markdown(results) + "\n\n" + default_engine_markdown(results) + "\n"
    )
    tasks = results.pop("tasks", [])
    if tasks:  # per-task scores: a compressed table beside the figures
        import pandas as pd

        pd.DataFrame(tasks).to_csv(out / "tasks.csv.gz", index=False, float_format="%.6g")
    write_json(results, out / "results.json")
    results["tasks"] = tasks
    return out / "report.md"


__all__ = ["write_report", "headline_markdown", "compute_wins", "INTERVALS"]
