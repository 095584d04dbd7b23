"""The bench's curve table: one row per observation, so anyone can point the bench at their own curves.

Required columns: ``run_id``, ``x``, ``value``. Optional per-row column: ``lr`` (learning rate at x;
when a run has it on every row it is also used as the run's planned explicit LR schedule). Optional
per-run columns (the first row of a run wins): ``source``, ``metric``, ``goal`` (minimize|maximize),
``x_kind`` (step|epoch|samples|tokens), ``budget`` (planned last x; default the last x), ``n_params``,
``tokens_per_step``, ``lower_bound``, ``upper_bound``. Any other column is kept in ``meta``.
Rows are sorted by x; duplicate x keep the last row; a run is cut at its first non-finite value and
``meta["diverged_at"]`` records where. Reads ``.csv``, ``.csv.gz``, ``.parquet`` and ``.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from curvecast.domain.curve import Goal, XKind

from .record import CurveRecord

REQUIRED = ("run_id", "x", "value")
RUN_COLUMNS = ("source", "metric", "goal", "x_kind", "budget", "n_params", "tokens_per_step", "lower_bound", "upper_bound")
ROW_COLUMNS = ("lr",)


def read_frame(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".parquet"):
        return pd.read_parquet(p)
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        return pd.read_json(p, lines=True)
    return pd.read_csv(p)


def _opt_float(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _opt_str(v: object) -> str | None:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return None
    text = str(v).strip()
    return text or None


def records_from_frame(df: pd.DataFrame, default_source: str = "curves", min_points: int = 2) -> list[CurveRecord]:
    """Turn a curve table into records; runs with fewer than ``min_points`` finite points are dropped."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"curve table lacks required columns {missing}; see bench/README.md")
    extra = [c for c in df.columns if c not in REQUIRED + RUN_COLUMNS + ROW_COLUMNS]
    out: list[CurveRecord] = []
    for run_id, g in df.groupby("run_id", sort=True):
        g = g.sort_values("x", kind="stable").drop_duplicates("x", keep="last")
        x = g["x"].to_numpy(dtype=np.float64)
        y = g["value"].to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        meta: dict[str, object] = {c: g[c].iloc[0] for c in extra}
        if bad.any():
            first = int(np.argmax(bad))
            meta["diverged_at"] = float(x[first]) if np.isfinite(x[first]) else None
            x, y = x[:first], y[:first]
            g = g.iloc[:first]
        if len(x) < min_points:
            continue
        first = g.iloc[0]
        run_val = {c: first[c] for c in RUN_COLUMNS if c in g.columns}.get

        lr = None
        if "lr" in g.columns:
            lr_vals = g["lr"].to_numpy(dtype=np.float64)
            if np.all(np.isfinite(lr_vals)):
                lr = lr_vals
        goal = (_opt_str(run_val("goal")) or "minimize").lower()
        x_kind = (_opt_str(run_val("x_kind")) or "step").lower()
        out.append(
            CurveRecord(
                run_id=str(run_id),
                source=_opt_str(run_val("source")) or default_source,
                x=x,
                y=y,
                goal=Goal(goal),
                x_kind=XKind(x_kind),
                budget=_opt_float(run_val("budget")) or float(x[-1]),
                metric=_opt_str(run_val("metric")) or "",
                lr=lr,
                n_params=_opt_float(run_val("n_params")),
                tokens_per_step=_opt_float(run_val("tokens_per_step")),
                lower_bound=_opt_float(run_val("lower_bound")),
                upper_bound=_opt_float(run_val("upper_bound")),
                meta=meta,
            )
        )
    return out


def load_table(path: str | Path, default_source: str | None = None) -> list[CurveRecord]:
    """Load a user's curve table (CSV/parquet/JSONL) in the bench format."""
    p = Path(path)
    return records_from_frame(read_frame(p), default_source=default_source or p.name.split(".")[0])


def records_to_frame(records: Iterable[CurveRecord]) -> pd.DataFrame:
    """The inverse of ``records_from_frame`` (parametric schedules are written as per-row ``lr``)."""
    frames = []
    for r in records:
        lr = r.lr
        if lr is None and r.schedule is not None:
            lr = r.schedule.lr_at(r.x)
        frames.append(
            pd.DataFrame(
                {
                    "run_id": r.run_id,
                    "x": r.x,
                    "value": r.y,
                    "lr": lr if lr is not None else np.nan,
                    "source": r.source,
                    "metric": r.metric,
                    "goal": r.goal.value,
                    "x_kind": r.x_kind.value,
                    "budget": r.budget,
                    "n_params": r.n_params if r.n_params is not None else np.nan,
                    "tokens_per_step": r.tokens_per_step if r.tokens_per_step is not None else np.nan,
                    "lower_bound": r.lower_bound if r.lower_bound is not None else np.nan,
                    "upper_bound": r.upper_bound if r.upper_bound is not None else np.nan,
                }
            )
        )
    cols = list(REQUIRED + ROW_COLUMNS + RUN_COLUMNS)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def save_table(records: Iterable[CurveRecord], path: str | Path) -> None:
    p = Path(path)
    df = records_to_frame(records)
    if p.name.lower().endswith(".parquet"):
        df.to_parquet(p, index=False)
    else:
        df.to_csv(p, index=False)
