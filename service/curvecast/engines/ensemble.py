"""The ensemble: how the engines' forecasts for one curve are combined into one answer.

A fixed mixture (0.75 analytic / 0.25 learned until issue 17) is the best-calibrated answer on some
sources and over-covers on others, because which engine to trust depends on the curve: how much of its
budget has been seen, whether it is a loss or an accuracy, whether x counts steps/tokens or
epochs/samples, and whether the engines agree. A *stacking model* (``StackingModel``) maps those four
features, plus whether the curve has only a few points (a learned model reading 2 points is guessing),
to a cell, and each cell holds the mixture weights and a spread factor (each engine's
quantiles are scaled about its own median by it before mixing, so a mixture that over-covers can be
narrowed). The cells are fitted on the dev ruler's tune split by ``python -m bench.stacking``
(leave-one-source-out validated; ``service/curvecast/models/ensemble-stacking.json`` holds the result,
its sha256 and its provenance). A cell with too few tuning curves backs off to a coarser one (drop
x kind, then agreement, then curve kind, then the point count, then the cutoff), ending at one global
cell.

Domain logic only: the data plane calls ``combine``; nothing here knows about the wire.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..domain.curve import ForecastQuery, XKind
from ..domain.distribution import LEVELS, Marginals
from ..domain.plausibility import accuracy_like
from .base import EngineForecast

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_STACKING = MODELS_DIR / "ensemble-stacking.json"
WILD = "*"
log = logging.getLogger(__name__)
FEW_POINTS = 8  # fewer observed points than this: "few"
_I05, _I50, _I95 = (int(np.argmin(np.abs(LEVELS - p))) for p in (0.05, 0.5, 0.95))


@dataclass(frozen=True)
class CellKey:
    """The features a stacking cell is chosen by (``WILD`` where a coarser cell ignores one)."""

    cutoff: str  # index of the observed-fraction bin, as text ("0", "1", ...)
    kind: str  # "loss" or "accuracy"
    x_kind: str  # "steps" (steps, tokens) or "epochs" (epochs, training-set size)
    points: str  # "few" (< FEW_POINTS observed points) or "many"
    agreement: str  # "agree" or "disagree"

    def text(self) -> str:
        return "|".join((self.cutoff, self.kind, self.x_kind, self.points, self.agreement))

    def backoff(self) -> list["CellKey"]:
        """This cell, then ever coarser ones, ending with the global cell."""
        c, k, x, p, a = self.cutoff, self.kind, self.x_kind, self.points, self.agreement
        return [CellKey(c, k, x, p, a), CellKey(c, k, WILD, p, a), CellKey(c, k, WILD, p, WILD),
                CellKey(c, WILD, WILD, p, WILD), CellKey(c, WILD, WILD, WILD, WILD), GLOBAL]


GLOBAL = CellKey(WILD, WILD, WILD, WILD, WILD)


@dataclass(frozen=True)
class Cell:
    """Mixture weights per engine (summing to 1) and the spread factor applied to every engine."""

    weights: tuple[tuple[str, float], ...]
    spread: float = 1.0
    n_tasks: int = 0  # tuning tasks behind the choice (provenance)


@dataclass(frozen=True)
class StackingModel:
    engines: tuple[str, ...]
    cutoff_edges: tuple[float, ...]  # observed fraction (last x / budget) bin edges, inner ones only
    disagreement_edge: float  # |median difference| / mean 90% half-width at the budget above this: disagree
    cells: Mapping[str, Cell]
    learned_sha256: str = ""  # the learned model the cells were fitted with ("" = any)
    provenance: Mapping[str, object] = field(default_factory=dict)
    sha256: str = ""

    def cell(self, key: CellKey) -> tuple[Cell, str]:
        """The finest fitted cell for ``key`` (backing off to coarser ones) and the key it was found under."""
        for k in key.backoff():
            found = self.cells.get(k.text())
            if found is not None:
                return found, k.text()
        raise KeyError("the stacking model has no global cell")

    def key(self, query: ForecastQuery, parts: Mapping[str, Marginals], at: int) -> CellKey:
        """The cell features of one curve; ``at`` is the row of the value at the budget in ``parts``."""
        frac = query.curve.last_x / max(query.horizon, 1e-300)
        cutoff = str(int(np.searchsorted(np.asarray(self.cutoff_edges), frac, side="right")))
        kind = "accuracy" if accuracy_like(query.curve) else "loss"
        x_kind = "epochs" if query.curve.x_kind in (XKind.EPOCH, XKind.SAMPLES) else "steps"
        points = "few" if len(query.curve.x) < FEW_POINTS else "many"
        d = disagreement([parts[n].at(np.array([at])) for n in self.engines if n in parts])
        return CellKey(cutoff, kind, x_kind, points, "disagree" if d > self.disagreement_edge else "agree")

    # ---- file ---------------------------------------------------------------------------------
    def payload(self) -> dict:
        return {"engines": list(self.engines), "cutoff_edges": list(self.cutoff_edges),
                "disagreement_edge": self.disagreement_edge, "learned_sha256": self.learned_sha256,
                "cells": {k: {"weights": dict(c.weights), "spread": c.spread, "n_tasks": c.n_tasks}
                          for k, c in sorted(self.cells.items())}}

    def to_json(self) -> str:
        body = self.payload()
        return json.dumps({"format": "curvecast-stacking-1", "sha256": payload_sha256(body), **body,
                           "provenance": dict(self.provenance)}, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "StackingModel":
        """Parse and verify a stacking file: the sha256 over its payload must match (else ValueError)."""
        d = json.loads(text)
        fields = ("engines", "cutoff_edges", "disagreement_edge", "learned_sha256", "cells")
        missing = [k for k in fields if k not in d]
        if missing:
            raise ValueError(f"stacking file lacks {', '.join(missing)}")
        body = {k: d[k] for k in fields}
        digest = payload_sha256(body)
        if digest != d.get("sha256"):
            raise ValueError(f"stacking file sha256 {digest} does not match the recorded {d.get('sha256')}")
        cells = {k: Cell(tuple((n, float(w)) for n, w in c["weights"].items()), float(c["spread"]), int(c["n_tasks"]))
                 for k, c in body["cells"].items()}
        if GLOBAL.text() not in cells:
            raise ValueError("stacking file has no global cell")
        return cls(tuple(body["engines"]), tuple(float(e) for e in body["cutoff_edges"]),
                   float(body["disagreement_edge"]), cells, str(body["learned_sha256"]),
                   d.get("provenance", {}), digest)


def payload_sha256(body: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@lru_cache(maxsize=4)
def load_stacking(path: str = str(DEFAULT_STACKING)) -> StackingModel | None:
    """The stacking model in ``path``, or None when there is none (the fixed mixture answers then).
    A file that is unreadable, malformed or fails its sha256 check is never served: it is logged as an
    error and the fixed mixture answers, like a learned model that fails its check."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return StackingModel.from_json(p.read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("stacking model %s refused, the ensemble uses the fixed mixture: %s", p, exc)
        return None


# ---- maths ------------------------------------------------------------------------------------------
def disagreement(parts: Sequence[Marginals]) -> float:
    """Largest gap between two engines' medians (one row each) over their mean 90% half-width."""
    if len(parts) < 2:
        return 0.0
    med = np.array([p.values[0, _I50] for p in parts])
    half = np.array([0.5 * (p.values[0, _I95] - p.values[0, _I05]) for p in parts])
    return float(np.ptp(med) / max(float(np.mean(half)), 1e-300))


def widen(m: Marginals, spread: float) -> Marginals:
    """Quantiles scaled about each row's median by ``spread`` (1: unchanged)."""
    if spread == 1.0:
        return m
    med = m.values[:, _I50:_I50 + 1]
    return Marginals(m.x, med + spread * (m.values - med), med[:, 0] + spread * (m.mean - med[:, 0]))


@dataclass(frozen=True)
class Combined:
    marginals: Marginals
    weights: tuple[tuple[str, float], ...]  # per engine that answered, summing to 1
    cell: str = ""  # the stacking cell used ("" for a fixed mixture)


def combine(query: ForecastQuery, parts: Sequence[tuple[EngineForecast, float]], at: int,
            model: StackingModel | None = None) -> Combined:
    """One answer from the engines that answered: the stacking model's cell when it covers exactly
    these engines, else the given fixed weights. ``at`` is the row of the value at the budget."""
    if len(parts) == 1:
        return Combined(parts[0][0].marginals, ((parts[0][0].engine, 1.0),))
    names = tuple(p.engine for p, _ in parts)
    if model is not None and sorted(names) == sorted(model.engines):
        by = {p.engine: p.marginals for p, _ in parts}
        cell, text = model.cell(model.key(query, by, at))
        w = dict(cell.weights)
        weights = [(n, float(w.get(n, 0.0))) for n in names]
        used = [(widen(by[n], cell.spread), wn) for n, wn in weights if wn > 0]
        total = sum(wn for _, wn in used)
        if not used or not math.isfinite(total) or total <= 0:
            raise ValueError(f"stacking cell {text} has no positive weight")
        marg = used[0][0] if len(used) == 1 else Marginals.mixture([m for m, _ in used], [wn for _, wn in used])
        return Combined(marg, tuple((n, wn / total) for n, wn in weights), text)
    total = sum(w for _, w in parts)
    marg = Marginals.mixture([p.marginals for p, _ in parts], [w for _, w in parts])
    return Combined(marg, tuple((p.engine, w / total) for p, w in parts))
