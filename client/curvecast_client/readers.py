"""Read training curves from where they are logged: CSV/JSON, TensorBoard event files, MLflow.

Every reader returns :class:`Curve` objects (plain lists, no numpy). The TensorBoard and MLflow readers
import their library only when called, so ``import curvecast_client`` stays light; install them with the
``readers`` extra (``pip install "./client[readers]"`` from a clone).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


class ReaderError(ValueError):
    """The curve could not be read: a missing file, tag, run or metric, or a malformed table."""


@dataclass(frozen=True)
class Curve:
    """One run's logged metric: ``x`` strictly increasing, ``y`` the values, ``lr`` per point if logged."""

    name: str
    x: list[float]
    y: list[float]
    lr: list[float] | None = None
    metric: str = ""
    meta: dict[str, str] = field(default_factory=dict)


def _dedup(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Sort by x; a step logged twice (a restarted run) keeps its last value."""
    last: dict[float, float] = {}
    for x, y in points:
        last[float(x)] = float(y)
    xs = sorted(last)
    return xs, [last[x] for x in xs]


# --- CSV / JSON ----------------------------------------------------------------------------------------

X_COLUMNS = ("step", "x", "epoch", "samples", "tokens")
Y_COLUMNS = ("value", "y", "loss", "accuracy", "metric")


def csv_rows(text: str) -> list[dict[str, str]]:
    """Rows of a CSV table with lower-cased, stripped header names; blank rows dropped."""
    reader = csv.DictReader(io.StringIO(text.strip()))
    if reader.fieldnames is None:
        raise ReaderError("empty CSV input")
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    rows = [row for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    if not rows:
        raise ReaderError(f"the CSV has a header ({', '.join(reader.fieldnames)}) but no data rows")
    return rows


def csv_column(rows: list[dict[str, str]], names: Sequence[str], required: bool = True) -> list[float] | None:
    """The first of ``names`` present in the table, as floats (None if absent and not required)."""
    for name in names:
        if name in rows[0]:
            try:
                return [float(r[name]) for r in rows]
            except (TypeError, ValueError) as exc:
                raise ReaderError(f"column '{name}' has a value that is not a number: {exc}") from None
    if required:
        raise ReaderError(f"missing column: one of {', '.join(names)} (the header has {', '.join(rows[0])})")
    return None


def parse_curve_text(text: str, name: str = "curve") -> Curve:
    """A curve from CSV (``step,value[,lr]``) or JSON (``{"x": [...], "y": [...]}``, or a list of pairs)."""
    stripped = text.strip()
    if not stripped:
        raise ReaderError("no curve given: pass a CSV/JSON file or pipe one on stdin")
    if stripped[0] in "[{":
        try:
            data = json.loads(stripped)
            if isinstance(data, list):
                return Curve(name, [float(p[0]) for p in data], [float(p[1]) for p in data])
            x = data.get("x", data.get("step", data.get("steps")))
            y = data.get("y", data.get("value", data.get("values")))
            if x is None or y is None:
                raise ReaderError('JSON curve needs keys "x" and "y" (or "step" and "value")')
            lr = data.get("lr")
            return Curve(name, [float(v) for v in x], [float(v) for v in y],
                         [float(v) for v in lr] if lr is not None else None)
        except json.JSONDecodeError as exc:
            raise ReaderError(f"not valid JSON: {exc}") from None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            if isinstance(exc, ReaderError):
                raise
            raise ReaderError(f"JSON curve is not a list of [x, y] pairs or an object of x/y lists: {exc}") from None
    rows = csv_rows(stripped)
    x = csv_column(rows, X_COLUMNS)
    x_col = next(c for c in X_COLUMNS if c in rows[0])
    y_names: Sequence[str] = Y_COLUMNS
    others = [c for c in rows[0] if c not in (x_col, "lr") and c]
    if not any(c in rows[0] for c in Y_COLUMNS) and len(others) == 1:
        y_names = others  # e.g. step,val_loss: the one other column is the metric
    y = csv_column(rows, y_names)
    lr = csv_column(rows, ("lr",), required=False)
    assert x is not None and y is not None
    metric = next((c for c in y_names if c in rows[0]), "")
    return Curve(name, x, y, lr, metric if metric not in ("value", "y") else "")


def read_curve_file(path: str | os.PathLike[str]) -> Curve:
    """One CSV or JSON file, named after its stem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReaderError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        return parse_curve_text(text, p.stem)
    except ReaderError as exc:
        raise ReaderError(f"{p}: {exc}") from None


def csv_folder_runs(folder: str | os.PathLike[str]) -> list[Curve]:
    """Every ``*.csv`` / ``*.json`` file of a folder (not recursive), one run each, sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise ReaderError(f"{p} is not a folder")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".csv", ".json") and f.is_file())
    if not files:
        raise ReaderError(f"no .csv or .json files in {p}")
    return [read_curve_file(f) for f in files]


# --- TensorBoard ---------------------------------------------------------------------------------------


def _event_dirs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    dirs = sorted({f.parent for f in root.rglob("*tfevents*") if f.is_file()})
    if not dirs:
        raise ReaderError(f"no TensorBoard event files (*tfevents*) under {root}")
    return dirs


def _accumulator(path: Path):
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise ReaderError('reading TensorBoard files needs the tensorboard package: pip install "./client[readers]" '
                          "(or pip install tensorboard)") from None
    # Keep every event (no sampling) and no purge on restarts: _dedup lets the later write of a step win.
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={event_accumulator.SCALARS: 0,
                                                                       event_accumulator.TENSORS: 0},
                                             purge_orphaned_data=False)
    acc.Reload()
    return acc


def _acc_tags(acc) -> list[str]:
    tags = acc.Tags()
    return sorted(set(tags.get("scalars", [])) | set(tags.get("tensors", [])))


def _acc_points(acc, tag: str) -> list[tuple[float, float]] | None:
    tags = acc.Tags()
    if tag in tags.get("scalars", []):
        return [(e.step, e.value) for e in acc.Scalars(tag)]
    if tag in tags.get("tensors", []):  # TF2's tf.summary.scalar writes rank-0 tensors
        from tensorboard.util import tensor_util

        out = []
        for e in acc.Tensors(tag):
            arr = tensor_util.make_ndarray(e.tensor_proto)
            if arr.size != 1:
                return None
            out.append((e.step, float(arr.reshape(-1)[0])))
        return out
    return None


def tensorboard_tags(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Run name (folder relative to ``path``) -> the scalar tags logged there."""
    root = Path(path)
    if not root.exists():
        raise ReaderError(f"{root} does not exist")
    return {_run_name(root, d): _acc_tags(_accumulator(d)) for d in _event_dirs(root)}


def _run_name(root: Path, d: Path) -> str:
    if root.is_file():
        return root.parent.name
    rel = d.relative_to(root).as_posix()
    return root.name if rel == "." else rel


def tensorboard_runs(path: str | os.PathLike[str], tag: str) -> list[Curve]:
    """Every run under ``path`` (each folder holding event files) that logged scalar ``tag``.

    A run's event files are read together (a resumed run's later file wins for a repeated step)."""
    root = Path(path)
    if not root.exists():
        raise ReaderError(f"{root} does not exist")
    runs, seen_tags = [], set()
    for d in _event_dirs(root):
        acc = _accumulator(d)
        points = _acc_points(acc, tag)
        seen_tags.update(_acc_tags(acc))
        if points:
            x, y = _dedup(points)
            runs.append(Curve(_run_name(root, d), x, y, None, tag, {"source": str(d)}))
    if not runs:
        known = ", ".join(sorted(seen_tags)) or "none"
        raise ReaderError(f"no run under {root} logged the scalar tag '{tag}' (tags found: {known})")
    return runs


def read_tensorboard(path: str | os.PathLike[str], tag: str, run: str | None = None) -> Curve:
    """One run's ``tag`` from a TensorBoard log folder (or one event file).

    With several runs under ``path``, name the one to read with ``run`` (its folder relative to ``path``)."""
    runs = tensorboard_runs(path, tag)
    if run is not None:
        match = [c for c in runs if c.name == run]
        if not match:
            raise ReaderError(f"no run '{run}' with tag '{tag}' under {path} (runs: {', '.join(c.name for c in runs)})")
        return match[0]
    if len(runs) > 1:
        raise ReaderError(f"{len(runs)} runs under {path} logged '{tag}' ({', '.join(c.name for c in runs)}): "
                          "name one (--run), point at its folder, or use `curvecast report`")
    return runs[0]


# --- MLflow --------------------------------------------------------------------------------------------


def _mlflow_client(tracking_uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ReaderError('reading MLflow runs needs mlflow (or mlflow-skinny): pip install "./client[readers]"') from None
    return MlflowClient(tracking_uri=tracking_uri)


def _history(client, run, key: str) -> Curve | None:
    hist = client.get_metric_history(run.info.run_id, key)
    if not hist:
        return None
    x, y = _dedup([(m.step, m.value) for m in sorted(hist, key=lambda m: (m.step, m.timestamp))])
    name = run.info.run_name or run.info.run_id
    return Curve(name, x, y, None, key, {"run_id": run.info.run_id})


def _experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp = client.get_experiment(experiment)
        except Exception:  # noqa: BLE001 - MLflow raises its own exception for an unknown id
            exp = None
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ReaderError(f"no MLflow experiment named '{experiment}' (experiments: {names})")
    return exp.experiment_id


def mlflow_runs(tracking_uri: str, experiment: str, key: str) -> list[Curve]:
    """Every run of an MLflow experiment (name or id) that logged metric ``key``, oldest first."""
    client = _mlflow_client(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    runs = client.search_runs([exp_id], order_by=["attributes.start_time ASC"], max_results=10_000)
    curves = [c for c in (_history(client, r, key) for r in runs) if c is not None]
    if not curves:
        raise ReaderError(f"no run of experiment '{experiment}' logged metric '{key}'")
    return curves


def read_mlflow(tracking_uri: str, key: str, run_id: str | None = None, experiment: str | None = None,
                run_name: str | None = None) -> Curve:
    """One run's metric history: by ``run_id``, or by ``experiment`` (+ ``run_name``; else its latest run)."""
    client = _mlflow_client(tracking_uri)
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - MlflowException for an unknown id
            raise ReaderError(f"no MLflow run '{run_id}' at {tracking_uri}: {exc}") from None
    elif experiment:
        exp_id = _experiment_id(client, experiment)
        flt = f"attributes.run_name = '{run_name}'" if run_name else ""
        found = client.search_runs([exp_id], filter_string=flt, order_by=["attributes.start_time DESC"],
                                   max_results=1)
        if not found:
            raise ReaderError(f"no run{' named ' + repr(run_name) if run_name else ''} in experiment '{experiment}'")
        run = found[0]
    else:
        raise ReaderError("name the MLflow run: a run id, or an experiment (and optionally a run name)")
    curve = _history(client, run, key)
    if curve is None:
        logged = ", ".join(sorted(run.data.metrics)) or "none"
        raise ReaderError(f"run {run.info.run_id} has no metric '{key}' (metrics: {logged})")
    return curve
