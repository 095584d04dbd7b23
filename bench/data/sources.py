"""Loaders that turn the real datasets in the shared data folder into ``CurveRecord``s.

Each loader reads one upstream format, keeps only complete, finite curves with enough points,
and samples at most ``cap`` of them with its own seeded generator (same seed -> same curves).
Licences and citations of every source are in the data folder's README and in bench/README.md.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from curvecast.domain.curve import Goal, LrSchedule, ScheduleShape, XKind

from .record import CurveRecord

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``$CURVECAST_DATA`` or ``../shared/data`` relative to the repo root."""
    env = os.environ.get("CURVECAST_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


@dataclass
class SourceLoad:
    """What one loader produced, plus human-readable notes on what it dropped or why it skipped."""

    name: str
    records: list[CurveRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


SPLITS = ("all", "tune", "report")


def in_split(source: str, key: object, split: str) -> bool:
    """Stable half/half split of a source's curves (by a hash of the key), so engines can be tuned on
    ``tune`` and reported on ``report`` without ever touching the same curves."""
    if split == "all":
        return True
    h = zlib.crc32(f"{source}:{key}".encode()) % 2
    return (h == 0) == (split == "tune")


def _sample(keys: list, cap: int, rng: np.random.Generator) -> list:
    keys = sorted(keys)
    if len(keys) <= cap:
        return keys
    idx = np.sort(rng.choice(len(keys), size=cap, replace=False))
    return [keys[i] for i in idx]


# ---- per-epoch / per-step curves --------------------------------------------------------------------
def load_taskset(data: Path, cap: int, seed: int, split: str = "all") -> SourceLoad:
    """TaskSet valid_loss, 51 evenly spaced points; x = evaluation index 1..51 (0 is never used)."""
    out = SourceLoad("taskset")
    df = pd.read_parquet(data / "taskset" / "taskset_curves.parquet", columns=["task", "config_id", "step_idx", "valid_loss"])
    df = df.sort_values(["task", "config_id", "step_idx"])
    y = df["valid_loss"].to_numpy()
    keys = df[["task", "config_id"]].to_numpy()
    n_per = df.groupby(["task", "config_id"], sort=True).size()
    total = len(n_per)
    ok: list[tuple[str, int]] = []
    start = 0
    for (task, cid), n in n_per.items():
        seg = y[start : start + n]
        start += n
        # Diverged runs (NaN, or blow-ups to 1e34) are a divergence-detection problem, not extrapolation.
        if n >= 10 and np.all(np.isfinite(seg)) and seg.max() <= 10.0 * max(seg[0], 1e-9):
            ok.append((str(task), int(cid)))
    del keys
    out.notes.append(f"{total - len(ok)} of {total} curves dropped as diverged (NaN or >10x initial loss)")
    ok = [k for k in ok if in_split("taskset", k, split)]
    chosen = set(_sample(ok, cap, _rng("taskset", seed)))
    for (task, cid), g in df.groupby(["task", "config_id"], sort=True):
        if (str(task), int(cid)) not in chosen:
            continue
        x = g["step_idx"].to_numpy(dtype=np.float64) + 1.0
        out.records.append(
            CurveRecord(f"taskset/{task}/{cid}", "taskset", x, g["valid_loss"].to_numpy(dtype=np.float64), Goal.MINIMIZE, XKind.STEP, float(x[-1]), "valid_loss", lower_bound=0.0, meta={"task": str(task), "group": str(task)})
        )
    return out


LCDB_LEARNERS_PER_DATASET = 8


def load_lcdb(data: Path, cap: int, seed: int, split: str = "all", min_anchors: int = 8, metric: str = "accuracy") -> SourceLoad:
    """LCDB validation accuracy (or log-loss: ``metric="logloss"``) vs training-set size, averaged over
    seeds at each anchor. Log-loss is the case of a validation loss that can turn up with more data.

    An anchor is kept when at least half of the curve's most-covered anchor's seed pairs report it, so
    the mean is not dominated by the few seeds that reached the largest sizes.
    """
    name = "lcdb" if metric == "accuracy" else f"lcdb_{metric}"
    out = SourceLoad(name)
    df = pd.read_parquet(data / "lcdb" / f"database-{metric}.parquet", columns=["openmlid", "learner", "size_train", "score_valid"])
    df = df[np.isfinite(df["score_valid"].to_numpy())]
    anchors = df[["openmlid", "learner", "size_train"]].drop_duplicates().groupby(["openmlid", "learner"]).size()
    ok = [(int(a), str(b)) for (a, b), n in anchors.items() if n >= min_anchors]
    out.notes.append(f"{len(ok)} of {len(anchors)} (dataset, learner) curves have >= {min_anchors} anchors")
    # Sample whole datasets (up to 8 learners each) so "beats the other learners on this dataset" events
    # have peers; oversample because the seed-coverage filter below drops some curves.
    rng = _rng(name, seed)
    by_ds: dict[int, list[tuple[int, str]]] = {}
    for k in ok:
        by_ds.setdefault(k[0], []).append(k)
    chosen: list[tuple[int, str]] = []
    datasets = sorted(d for d in by_ds if in_split("lcdb", d, split))  # the same split for every metric  # split by dataset: no shared datasets
    for ds in (datasets[i] for i in rng.permutation(len(datasets))):
        chosen += _sample(by_ds[ds], LCDB_LEARNERS_PER_DATASET, rng)
        if len(chosen) >= 2 * cap:
            break
    sel = df.merge(pd.DataFrame(chosen, columns=["openmlid", "learner"]), on=["openmlid", "learner"])
    agg = sel.groupby(["openmlid", "learner", "size_train"]).score_valid.agg(["mean", "size"]).reset_index()
    for (oid, learner), g in agg.groupby(["openmlid", "learner"], sort=True):
        g = g[g["size"] >= 0.5 * g["size"].max()]
        if len(g) < min_anchors:
            continue
        x = g["size_train"].to_numpy(dtype=np.float64)
        y = g["mean"].to_numpy(dtype=np.float64)
        if metric == "accuracy":
            goal, lo, hi = Goal.MAXIMIZE, 0.0, 1.0
        else:
            goal, lo, hi = Goal.MINIMIZE, 0.0, None
        out.records.append(
            CurveRecord(f"{name}/{oid}/{learner}", name, x, y, goal, XKind.SAMPLES, float(x[-1]), metric, lower_bound=lo, upper_bound=hi, meta={"openmlid": int(oid), "learner": str(learner), "group": str(oid)})
        )
        if len(out.records) >= cap:
            break
    return out


def load_scan_vlm(data: Path, cap: int, seed: int, split: str = "all", min_points: int = 4) -> SourceLoad:
    """ScAn-Bench VLM: val loss per epoch of complete, non-diverged runs; cosine LR in epoch units."""
    out = SourceLoad("scan_vlm")
    df = pd.read_csv(data / "scan_bench" / "vlm" / "data.csv.gz", usecols=["config_id", "epoch", "lr", "warmup_steps", "total_global_steps", "total_epochs", "epoch_diverged", "val_loss", "mparams"])
    g = df.groupby("config_id").agg(n=("epoch", "size"), last=("epoch", "max"), total=("total_epochs", "first"), div=("epoch_diverged", "any"), fin=("val_loss", lambda v: bool(np.all(np.isfinite(v)))))
    ok_mask = (g["last"] == g["total"]) & ~g["div"] & g["fin"] & (g["n"] >= min_points)
    ok = [int(c) for c in g.index[ok_mask]]
    out.notes.append(f"{len(ok)} of {len(g)} runs complete, non-diverged, >= {min_points} epochs")
    ok = [k for k in ok if in_split("scan_vlm", k, split)]
    for cid in _sample(ok, cap, _rng("scan_vlm", seed)):
        r = df[df.config_id == cid].sort_values("epoch")
        total = float(r["total_epochs"].iloc[0])
        steps_per_epoch = float(r["total_global_steps"].iloc[0]) / total
        sched = LrSchedule(ScheduleShape.COSINE, peak_lr=float(r["lr"].iloc[0]), final_lr=0.0, warmup_steps=float(r["warmup_steps"].iloc[0]) / steps_per_epoch, total_steps=total)
        x = r["epoch"].to_numpy(dtype=np.float64)
        out.records.append(
            CurveRecord(f"scan_vlm/{cid}", "scan_vlm", x, r["val_loss"].to_numpy(dtype=np.float64), Goal.MINIMIZE, XKind.EPOCH, total, "val_loss", lr=sched.lr_at(x), schedule=sched, n_params=float(r["mparams"].iloc[0]) * 1e6, lower_bound=0.0)
        )
    return out


def load_scan_llm(data: Path, cap: int, seed: int, split: str = "all", min_points: int = 4) -> SourceLoad:
    """ScAn-Bench LLM: validation loss vs tokens of complete WSD runs (warmup 5%, cooldown fraction per run)."""
    out = SourceLoad("scan_llm")
    cols = ["config_id", "n_params", "n_tokens", "lr", "lr_end", "warmup_steps", "cooldown_steps", "tokens_so_far", "step_fraction", "valid_loss"]
    df = pd.read_csv(data / "scan_bench" / "llm" / "configs_intermediate_summary.csv.gz", usecols=cols)
    g = df.groupby("config_id").agg(n=("step_fraction", "size"), last=("step_fraction", "max"))
    ok = [int(c) for c in g.index[(g["last"] >= 0.999) & (g["n"] >= min_points)]]
    out.notes.append(f"{len(ok)} of {len(g)} configs complete with >= {min_points} evaluations")
    ok = [k for k in ok if in_split("scan_llm", k, split)]
    for cid in _sample(ok, cap, _rng("scan_llm", seed)):
        r = df[df.config_id == cid].sort_values("tokens_so_far").drop_duplicates("tokens_so_far")
        if not (np.all(np.isfinite(r["valid_loss"].to_numpy())) and np.all(np.isfinite(r["tokens_so_far"].to_numpy()))):
            out.notes.append(f"config {cid} dropped: missing tokens or loss")
            continue
        budget = float(r["n_tokens"].iloc[0])
        cool = float(r["cooldown_steps"].iloc[0])
        sched = LrSchedule(ScheduleShape.WSD, peak_lr=float(r["lr"].iloc[0]), final_lr=float(r["lr_end"].iloc[0]), warmup_steps=float(r["warmup_steps"].iloc[0]) * budget, total_steps=budget, decay_start=(1.0 - cool) * budget)
        x = r["tokens_so_far"].to_numpy(dtype=np.float64)
        out.records.append(
            CurveRecord(f"scan_llm/{cid}", "scan_llm", x, r["valid_loss"].to_numpy(dtype=np.float64), Goal.MINIMIZE, XKind.TOKENS, budget, "valid_loss", lr=sched.lr_at(x), schedule=sched, n_params=float(r["n_params"].iloc[0]), lower_bound=0.0)
        )
    return out


def load_nanogpt(data: Path, cap: int, seed: int, split: str = "all", min_points: int = 5) -> SourceLoad:
    """modded-nanogpt FineWeb val loss vs step; budget = the run's total_steps; LR schedule not parsed."""
    out = SourceLoad("nanogpt")
    df = pd.read_csv(data / "modded_nanogpt" / "val_curves.csv.gz", usecols=["run_id", "track", "step", "total_steps", "val_loss"])
    df = df.sort_values(["run_id", "step"])
    g = df.groupby("run_id").agg(n=("step", "size"), last=("step", "max"), total=("total_steps", "first"), fin=("val_loss", lambda v: bool(np.all(np.isfinite(v)))))
    ok = [str(r) for r in g.index[(g["last"] == g["total"]) & g["fin"] & (g["n"] >= min_points)]]
    out.notes.append(f"{len(ok)} of {len(g)} runs complete (last step = total_steps) with >= {min_points} points; LR unknown to engines")
    ok = [k for k in ok if in_split("nanogpt", k, split)]
    for rid in _sample(ok, cap, _rng("nanogpt", seed)):
        r = df[df.run_id == rid].drop_duplicates("step", keep="last")
        x = r["step"].to_numpy(dtype=np.float64)
        out.records.append(
            CurveRecord(f"nanogpt/{rid}", "nanogpt", x, r["val_loss"].to_numpy(dtype=np.float64), Goal.MINIMIZE, XKind.STEP, float(r["total_steps"].iloc[0]), "val_loss", lower_bound=0.0, meta={"track": str(r["track"].iloc[0]), "group": str(r["track"].iloc[0])})
        )
    return out


def without_goal(load: SourceLoad) -> SourceLoad:
    """The same accuracy curves as a caller who forgot ``goal=maximize`` sends them (goal left at its
    default, minimize): the forecast should not depend on it, the decisions read it as sent."""
    out = SourceLoad("lcdb_nogoal", notes=load.notes + ["accuracy sent with the default goal (minimize)"], skipped=load.skipped)
    out.records = [replace(r, run_id=r.run_id.replace("lcdb/", "lcdb_nogoal/", 1), source="lcdb_nogoal", goal=Goal.MINIMIZE)
                   for r in load.records]
    return out


RAW_BLOCK = 100  # steps per block mean in the nanogpt_train_blocks source (what users smooth to)


def load_nanogpt_train(data: Path, cap: int, seed: int, split: str = "all", block: int = 0) -> SourceLoad:
    """modded-nanogpt per-step *train* loss, as a training loop logs it (raw, from step 0 or 1).

    ``block`` > 0 gives the same runs as block means of ``block`` steps (``nanogpt_train_blocks``), the
    smoothing a caller would otherwise do by hand. Both are scored against the same final value, the
    mean of the run's last ``RAW_BLOCK`` per-step losses (``meta.final_truth``), so raw vs block-mean
    input compares like with like.
    """
    out = SourceLoad("nanogpt_train_blocks" if block else "nanogpt_train")
    df = pd.read_csv(data / "modded_nanogpt" / "train_curves.csv.gz", usecols=["run_id", "step", "total_steps", "train_loss"])
    df = df[np.isfinite(df["train_loss"].to_numpy())].sort_values(["run_id", "step"]).drop_duplicates(["run_id", "step"], keep="last")
    keys = sorted(str(k) for k, n in df.groupby("run_id").size().items() if n >= 4 * RAW_BLOCK)
    keys = [k for k in keys if in_split("nanogpt_train", k, split)]
    out.notes.append(f"{len(keys)} runs with >= {4 * RAW_BLOCK} per-step points" + (f"; block means of {block} steps" if block else "; raw per-step"))
    for rid in _sample(keys, cap, _rng("nanogpt_train", seed)):
        r = df[df.run_id == rid]
        x = r["step"].to_numpy(dtype=np.float64)
        y = r["train_loss"].to_numpy(dtype=np.float64)
        total = float(r["total_steps"].iloc[0]) if np.isfinite(r["total_steps"].iloc[0]) else float(x[-1])
        budget = max(total, float(x[-1]))
        final_truth = float(np.mean(y[-RAW_BLOCK:]))
        if block:
            n_blocks = len(x) // block
            cut = len(x) - n_blocks * block  # the first partial block is dropped, the tail stays aligned
            x = x[cut:].reshape(n_blocks, block).mean(axis=1)
            y = y[cut:].reshape(n_blocks, block).mean(axis=1)
        out.records.append(
            CurveRecord(f"{out.name}/{rid}", out.name, x, y, Goal.MINIMIZE, XKind.STEP, budget, "train_loss", lower_bound=0.0, meta={"group": "track_1_short", "final_truth": final_truth, "run": rid})
        )
    return out


def load_multipowerlaw(data: Path, cap: int, seed: int, split: str = "all") -> SourceLoad:
    """Multi-Power-Law: train loss every 128 steps with the LR at each step (given as the planned schedule)."""
    out = SourceLoad("multipowerlaw")
    df = pd.read_csv(data / "multipowerlaw" / "all_curves.csv")
    keys = [(int(a), str(b)) for a, b in df[["model_size_M", "schedule"]].drop_duplicates().itertuples(index=False)]
    keys = [k for k in keys if in_split("multipowerlaw", k, split)]
    for size, sched_name in _sample(keys, cap, _rng("multipowerlaw", seed)):
        r = df[(df.model_size_M == size) & (df.schedule == sched_name)].sort_values("step").drop_duplicates("step")
        x = r["step"].to_numpy(dtype=np.float64)
        lr = r["lr"].to_numpy(dtype=np.float64)
        sched = LrSchedule(ScheduleShape.EXPLICIT, peak_lr=float(lr.max()), final_lr=float(lr[-1]), total_steps=float(x[-1]), steps=x, values=lr)
        out.records.append(
            CurveRecord(f"multipowerlaw/{size}M/{sched_name}", "multipowerlaw", x, r["loss"].to_numpy(dtype=np.float64), Goal.MINIMIZE, XKind.STEP, float(x[-1]), "train_loss", lr=lr, schedule=sched, n_params=size * 1e6, lower_bound=0.0, meta={"schedule": sched_name, "group": f"{size}M"})
        )
    return out


def load_gemstones(data: Path, cap: int, seed: int, split: str = "all") -> SourceLoad:
    """Gemstones: val loss vs tokens for each model, on FineWeb-Edu and DCLM."""
    out = SourceLoad("gemstones")
    frames = []
    for ds in ("edu", "dclm"):
        f = pd.read_json(data / "gemstones" / f"fineweb_{ds}_losses_combined.jsonl", lines=True)
        f["dataset"] = ds
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    keys = [(str(d), str(n)) for d, n in df[["dataset", "run_name"]].drop_duplicates().itertuples(index=False)]
    keys = [k for k in keys if in_split("gemstones", k, split)]
    for ds, name in _sample(keys, cap, _rng("gemstones", seed)):
        r = df[(df.dataset == ds) & (df.run_name == name)].sort_values("tokens").drop_duplicates("tokens")
        if not np.all(np.isfinite(r["final_loss"].to_numpy())):
            continue
        x = r["tokens"].to_numpy(dtype=np.float64)
        tps = float(np.median(r["tokens"].to_numpy() / np.maximum(r["step"].to_numpy(), 1)))
        out.records.append(
            CurveRecord(f"gemstones/{ds}/{name}", "gemstones", x, r["final_loss"].to_numpy(dtype=np.float64), Goal.MINIMIZE, XKind.TOKENS, float(x[-1]), "val_loss", n_params=float(r["params_active_precise"].iloc[0]), tokens_per_step=tps, lower_bound=0.0, meta={"group": ds})
        )
    return out


LOADERS: dict[str, tuple[str, Callable[..., SourceLoad]]] = {
    "taskset": ("taskset/taskset_curves.parquet", load_taskset),
    "lcdb": ("lcdb/database-accuracy.parquet", load_lcdb),
    "scan_vlm": ("scan_bench/vlm/data.csv.gz", load_scan_vlm),
    "scan_llm": ("scan_bench/llm/configs_intermediate_summary.csv.gz", load_scan_llm),
    "nanogpt": ("modded_nanogpt/val_curves.csv.gz", load_nanogpt),
    "nanogpt_train": ("modded_nanogpt/train_curves.csv.gz", load_nanogpt_train),
    "nanogpt_train_blocks": ("modded_nanogpt/train_curves.csv.gz", lambda *a, **k: load_nanogpt_train(*a, **k, block=RAW_BLOCK)),
    "lcdb_logloss": ("lcdb/database-logloss.parquet", lambda *a, **k: load_lcdb(*a, **k, metric="logloss")),
    "lcdb_nogoal": ("lcdb/database-accuracy.parquet", lambda *a, **k: without_goal(load_lcdb(*a, **k))),
    "multipowerlaw": ("multipowerlaw/all_curves.csv", load_multipowerlaw),
    "gemstones": ("gemstones/fineweb_edu_losses_combined.jsonl", load_gemstones),
}


def load_source(name: str, data: Path | None, cap: int, seed: int, split: str = "all") -> SourceLoad:
    """Load one real source, or say clearly why it was skipped (data folder or file absent)."""
    if data is None:
        return SourceLoad(name, skipped="no data folder")
    rel, loader = LOADERS[name]
    if not (data / rel).exists():
        return SourceLoad(name, skipped=f"{data / rel} not found")
    try:
        return loader(data, cap, seed, split)
    except Exception as e:  # noqa: BLE001 - one unreadable source must not stop the bench
        return SourceLoad(name, skipped=f"loader failed: {type(e).__name__}: {e}")
