"""LearnedEngine: batched curve extrapolation with the exported PFN through onnxruntime.

Per query: normalise the observed prefix (``normalization``; curves of tiny or huge magnitude are
first rescaled by a power of two, ``..magnitude``), summarise long curves into a bounded context
(block medians over the whole curve, the newest points verbatim: ``summarise_context``), run the model at a fixed set of anchor positions (they depend on the curve and its plan,
never on the queried x, so an x's answer does not depend on the other x asked), turn the bar distribution
(half-normal tails) into the shared quantile grid and map it back to the caller's units, clipped to
the metric's limits (declared, or implied: a loss that was never negative stays >= 0). Queries sorted by context length are split into padded groups by a small
cost model (``plan_groups``), and each group's quantiles are computed in one numpy pass; a failure
while preparing one query, or while running one group, is returned for those queries only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import special

from ...domain.curve import ForecastQuery, Goal, XKind
from ...domain.plausibility import direction
from ...domain.distribution import LEVELS, Marginals, count_le_rows
from ...domain.errors import EngineUnavailable
from ...domain.plausibility import limits
from ..base import EngineForecast, EngineInfo
from ..magnitude import Rescaled, rescale
from . import normalization as nz
from .runtime import OnnxRuntime

MAX_CONTEXT = 96  # the model was trained on 1..99 context points
TAIL_KEEP = 32  # newest points always kept verbatim when a long curve is reduced
MAX_BATCH = 64
ANCHORS = 30  # the model runs at this many fixed positions after the context and interpolates between them
ANCHOR_CANDIDATES = 256  # fixed candidate positions the anchors are picked from; anchors >= this: run exactly
ANCHOR_EXTENSION = 4.0  # anchors reach 4x the budget (the service's decision grid does); beyond: run exactly
PRIOR_HORIZON = 1.05  # the training prior's curves end at the budget: positions t beyond this are extrapolation
SUMMARY_ROWS = 2048  # query rows turned into quantiles per numpy pass (about 50 MB of float64 temporaries)
CARD_NAME = "model-card.json"
HALF_NORMAL_MEDIAN = 0.6744897501960817
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class ModelLoadError(EngineUnavailable):
    """The model file or its card is missing, unreadable or does not match the recorded sha256."""


# ---- bar distribution (numpy) ---------------------------------------------------------------------
def _tail_scales(borders: np.ndarray) -> tuple[float, float]:
    return float((borders[1] - borders[0]) / HALF_NORMAL_MEDIAN), float((borders[-1] - borders[-2]) / HALF_NORMAL_MEDIAN)


def bar_log_density(log_probs: np.ndarray, borders: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log p(z) for log_probs (..., K) and values z (...); outer buckets are half-normal tails."""
    k = len(borders) - 1
    idx = np.clip(np.searchsorted(borders, z, side="right") - 1, 0, k - 1)
    lp = np.take_along_axis(log_probs, idx[..., None], axis=-1)[..., 0].astype(np.float64)
    widths = np.diff(borders)
    s_lo, s_hi = _tail_scales(borders)
    c = 0.5 * math.log(2.0 / math.pi)
    d_lo = np.maximum(borders[1] - z, 0.0) / s_lo
    d_hi = np.maximum(z - borders[-2], 0.0) / s_hi
    lo = log_probs[..., 0] + c - math.log(s_lo) - 0.5 * d_lo**2
    hi = log_probs[..., -1] + c - math.log(s_hi) - 0.5 * d_hi**2
    return np.where(idx == 0, lo, np.where(idx == k - 1, hi, lp - np.log(widths[idx])))


def bar_quantiles(probs: np.ndarray, borders: np.ndarray, levels: np.ndarray = LEVELS) -> np.ndarray:
    """Quantiles (m, L) of bar distributions probs (m, K): linear inside buckets, half-normal tails."""
    m, k = probs.shape
    if m == 0:
        return np.empty((0, len(levels)))
    cdf = np.empty((m, k + 1))
    cdf[:, 0] = 0.0
    np.cumsum(probs, axis=1, out=cdf[:, 1:])
    cdf[:, -1] = 1.0
    j = np.clip(count_le_rows(cdf[:, 1:-1], np.broadcast_to(levels, (m, len(levels)))), 0, k - 1)  # bucket per level
    c_j = np.take_along_axis(cdf, j, axis=1)
    p_j = np.maximum(np.take_along_axis(probs, j, axis=1), 1e-30)
    out = borders[j] + np.clip((levels[None, :] - c_j) / p_j, 0.0, 1.0) * np.diff(borders)[j]
    s_lo, s_hi = _tail_scales(borders)
    lev = np.broadcast_to(levels[None, :], j.shape)
    lo = j == 0  # levels in the outer buckets: half-normal quantiles (rare, so computed only there)
    if lo.any():
        p0 = np.broadcast_to(np.maximum(probs[:, :1], 1e-30), j.shape)[lo]
        out[lo] = borders[1] - s_lo * special.ndtri(np.clip(1.0 - lev[lo] / (2.0 * p0), 0.5, 1.0 - 1e-12))
    hi = j == k - 1
    if hi.any():
        pk = np.broadcast_to(np.maximum(probs[:, -1:], 1e-30), j.shape)[hi]
        below = np.broadcast_to(cdf[:, -2:-1], j.shape)[hi]
        out[hi] = borders[-2] + s_hi * special.ndtri(np.clip(0.5 * (1.0 + (lev[hi] - below) / pk), 0.5, 1.0 - 1e-12))
    return out


def bar_mean(probs: np.ndarray, borders: np.ndarray) -> np.ndarray:
    centers = 0.5 * (borders[1:] + borders[:-1])
    s_lo, s_hi = _tail_scales(borders)
    centers[0] = borders[1] - s_lo * _SQRT_2_OVER_PI
    centers[-1] = borders[-2] + s_hi * _SQRT_2_OVER_PI
    # a row-wise sum, not a matrix-vector product: BLAS may round a row differently with the row count
    return (probs * centers).sum(axis=-1)


# ---- query preparation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    ctx_x: np.ndarray  # (n, F)
    ctx_z: np.ndarray  # (n,)
    qry_x: np.ndarray  # (k, F): the positions the model is run at (the anchors and any asked x outside them)
    transform: nz.ValueTransform
    warnings: tuple[str, ...]
    fill: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (lo, hi, w) per asked x, see expand
    prior_limit_x: float = math.inf  # asked x beyond this (caller units) lie outside the training prior


def choose_anchors(feats: np.ndarray, k: int = ANCHORS) -> np.ndarray | None:
    """Indices of at most ``k`` query rows to run the model at, or None to run it at all of them.

    Query tokens attend only to the context, so the forecast is a smooth function of the position
    features and can be interpolated between anchors. The anchors include the first and last asked
    position and split a path into equal lengths: sqrt of t from the first position (the forecast
    widens fastest just after the context) plus half the change of LR and S2, so warm-up ends, decays
    and step drops get anchors close on both sides.
    """
    t = feats[:, 0]
    if len(t) <= k:
        return None
    order = np.argsort(t, kind="stable")
    dt = t[order] - t[order[0]]
    path = np.sqrt(dt / max(dt[-1], 1e-300))
    path[1:] += 0.5 * np.cumsum(np.abs(np.diff(feats[order][:, [1, 3]], axis=0)).sum(axis=1))
    if path[-1] <= 0.0:  # one position asked many times
        return order[:1]
    picks = np.searchsorted(path, np.linspace(0.0, path[-1], k))
    return order[np.unique(np.clip(picks, 0, len(t) - 1))]


def anchor_positions(t_start: float, t_end: float, grid, k: int = ANCHORS) -> np.ndarray:
    """At most ``k`` sorted model positions in [t_start, t_end] (the last context position up to
    ANCHOR_EXTENSION x the budget), picked by ``choose_anchors`` from a fixed candidate grid that is
    denser just after the context; the budget (t = 1) is always one. They depend only on the context's
    end and the schedule, never on the queried positions."""
    cand = t_start + (t_end - t_start) * np.linspace(0.0, 1.0, ANCHOR_CANDIDATES) ** 2
    if t_start < 1.0 < t_end:
        cand = np.union1d(cand, [1.0])
    rows = choose_anchors(nz.features_at(cand, grid), max(k - 1, 2))
    picked = cand if rows is None else cand[rows]
    return np.union1d(picked, [1.0] if t_start <= 1.0 <= t_end else [])


def _fill_weights(t: np.ndarray, anchor_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``lo``, ``hi`` and weight ``w`` so that value(t) = (1 - w) * out[lo] + w * out[hi]."""
    order = np.argsort(anchor_t, kind="stable")
    ta = anchor_t[order]
    if len(ta) == 1:
        zero = np.zeros(len(t), np.int64)
        return order[zero], order[zero], np.zeros(len(t))
    j = np.clip(np.searchsorted(ta, t, side="right") - 1, 0, len(ta) - 2)
    gap = ta[j + 1] - ta[j]
    w = np.clip((t - ta[j]) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)
    return order[j], order[j + 1], w


def expand(p: Prepared, zq: np.ndarray, zm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model-space quantiles and means at every asked x from those at the anchors. Each row is a
    convex combination of two monotone quantile rows, so it stays monotone."""
    if p.fill is None:
        return zq, zm
    lo, hi, w = p.fill
    return zq[lo] * (1.0 - w)[:, None] + zq[hi] * w[:, None], zm[lo] * (1.0 - w) + zm[hi] * w


def reduce_context(n: int, max_points: int = MAX_CONTEXT, tail: int = TAIL_KEEP) -> np.ndarray:
    """Indices of at most ``max_points`` points: the newest ``tail`` verbatim, the rest evenly spread
    (the training prior's long-context rule, ``training/prior2.py``; serving summarises instead)."""
    if n <= max_points:
        return np.arange(n)
    head = np.unique(np.round(np.linspace(0, n - tail - 1, max_points - tail)).astype(np.int64))
    return np.concatenate([head, np.arange(n - tail, n)])


def summarise_context(x: np.ndarray, y: np.ndarray, max_points: int = MAX_CONTEXT,
                      tail: int = TAIL_KEEP) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` context points that keep a long curve's information: the newest ``tail``
    verbatim (their noise is what the model reads the near future from) and the rest as
    ``max_points - tail`` blocks of consecutive points, each its median x and median value.

    Picking single points of a 10^4-point per-step log (the old rule) hands the model per-step noise
    as if it were the curve's shape; a block median averages it out and ignores spikes, and on a
    monotone noiseless curve it lies on the curve (the median value sits at the median x; exactly for
    odd block sizes, between the two middle points for even ones)."""
    n = len(x)
    if n <= max_points:
        return x, y
    head, blocks = n - tail, max_points - tail
    size, extra = divmod(head, blocks)  # the first ``extra`` blocks hold one point more
    cut = extra * (size + 1)

    def medians(v: np.ndarray) -> np.ndarray:  # two reshapes: vectorised, ~1 ms for 10^5 points
        return np.concatenate([np.median(v[:cut].reshape(extra, size + 1), axis=1),
                               np.median(v[cut:head].reshape(blocks - extra, size), axis=1)])

    return np.concatenate([medians(x), x[head:]]), np.concatenate([medians(y), y[head:]])


def _schedule_grid(q: ForecastQuery, budget: float):
    """Per-curve (lr, S1, S2) grid over [0, budget], from the run's schedule or the curve's LR."""
    sched = q.run.schedule
    steps_per_x = 1.0
    if q.curve.x_kind is XKind.TOKENS and q.run.tokens_per_step:
        steps_per_x = 1.0 / q.run.tokens_per_step
    cells = (np.arange(nz.SCHEDULE_GRID) + 0.5) / nz.SCHEDULE_GRID * budget
    if sched is not None:  # the plan is in the curve's x units (steps, tokens, epochs, samples)
        lr = sched.lr_at(cells)
    elif q.curve.lr is not None and len(q.curve.lr) == len(q.curve.x) and np.ptp(q.curve.lr) > 0:
        lr = np.interp(cells, q.curve.x, q.curve.lr)  # held at the last known LR ahead
    else:
        return None
    if not np.all(np.isfinite(lr)) or np.max(lr) <= 0:
        return None
    lr = np.maximum(lr, 1e-4 * np.max(lr))
    tau = nz.tau_for_steps(budget * steps_per_x)
    lr_e, s1, s2 = nz.schedule_features(lr[None, :], tau)
    return lr_e[0], s1[0], s2[0]


def prepare(q: ForecastQuery, log_positions_for_samples: bool = False, anchors: int = ANCHORS) -> Prepared:
    """Model inputs for one query; ``log_positions_for_samples`` uses log1p(x)/log1p(budget) positions
    for sample-wise curves (XKind.SAMPLES) instead of x/budget (off by default: the ruler decides).
    The model runs at ``anchors`` fixed positions (``anchor_positions``) and at any asked position
    outside their range; ``anchors >= ANCHOR_CANDIDATES`` runs it at every asked position instead.
    Without a budget (none in the run or its schedule) the farthest asked x stands for it."""
    c = q.curve
    if len(c.x) == 0:
        raise ValueError("the curve has no observed points")
    warnings: list[str] = []
    budget = q.run.total_steps
    if budget is None and q.run.schedule is not None and q.run.schedule.total_steps > 0:
        budget = q.run.schedule.total_steps
    if budget is None:
        budget = float(max(np.max(q.x_query) if len(q.x_query) else 0.0, c.last_x))
    budget = max(float(budget), float(c.last_x), 1e-12)
    x, y = summarise_context(np.asarray(c.x, np.float64), np.asarray(c.y, np.float64))
    grid = _schedule_grid(q, budget)
    log_pos = log_positions_for_samples and c.x_kind is XKind.SAMPLES
    if log_pos:
        grid = None
    t_ctx = nz.positions(x, budget, log_pos)
    t_qry = nz.positions(np.asarray(q.x_query, np.float64), budget, log_pos)
    # no warning here: the data plane asks for its own decision grid up to 4x the budget, so only it
    # knows which x the caller asked for (it warns about those beyond this limit)
    prior_limit_x = float(np.expm1(PRIOR_HORIZON * np.log1p(budget)) if log_pos else PRIOR_HORIZON * budget)
    minimize = direction(c) is Goal.MINIMIZE  # a curve moving against its stated goal is read the way it moves
    transform = nz.value_transform(np.asarray(c.y, np.float64), minimize, c.lower_bound, c.upper_bound)
    z = np.clip(transform.forward(y), nz.Z_MIN, nz.Z_MAX)
    if c.diverged:
        warnings.append("the run diverged; the forecast assumes it continues from its last finite value")
    fill = None
    if anchors >= ANCHOR_CANDIDATES:  # exact: every asked position is run
        qry_x = nz.features_at(t_qry, grid)
    else:
        t_end = float(nz.positions(np.array([ANCHOR_EXTENSION * budget]), budget, log_pos)[0])
        t_anchor = anchor_positions(float(t_ctx[-1]), t_end, grid, anchors)
        inside = (t_qry >= t_anchor[0]) & (t_qry <= t_anchor[-1])
        extra = np.unique(t_qry[~inside])  # before the context's end or far beyond the budget: run exactly
        lo, hi, w = _fill_weights(t_qry, t_anchor)
        own = len(t_anchor) + np.searchsorted(extra, t_qry)
        lo, hi, w = np.where(inside, lo, own), np.where(inside, hi, own), np.where(inside, w, 0.0)
        fill = (lo, hi, w)
        qry_x = nz.features_at(np.concatenate([t_anchor, extra]), grid)
    return Prepared(nz.features_at(t_ctx, grid), z, qry_x, transform, tuple(warnings), fill, prior_limit_x)


# ---- batching -------------------------------------------------------------------------------------
RUN_OVERHEAD_TOKENS = 12.0  # fixed cost of one onnxruntime call per intra-op thread, in token-equivalents
ATTENTION_TOKENS = 300.0  # context length at which attention doubles a token's cost


def group_cost(b, n_ctx, n_qry, overhead: float = RUN_OVERHEAD_TOKENS):
    """Modelled cost of one padded call: every row pays for the longest context and query list."""
    return overhead + b * (n_ctx + np.maximum(n_qry, 1)) * (1.0 + n_ctx / ATTENTION_TOKENS)


def plan_groups(sizes: Sequence[tuple[int, int]], max_batch: int,
                overhead: float = RUN_OVERHEAD_TOKENS) -> list[tuple[int, int]]:
    """Split items sorted by context length into contiguous groups ``[start, stop)`` of at most
    ``max_batch`` that minimise the modelled padded cost (an exact dynamic programme over split points).

    One group padded to the longest context wastes up to half its FLOPs on a mixed batch; many tiny
    groups pay the per-call overhead instead, so the split is chosen by ``group_cost``.
    """
    n = len(sizes)
    max_batch = max(1, int(max_batch))
    qry = np.array([m for _, m in sizes], dtype=np.float64)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for stop in range(1, n + 1):
        lo = max(stop - max_batch, 0)
        starts = np.arange(lo, stop)
        n_qry = np.maximum.accumulate(qry[lo:stop][::-1])[::-1]  # longest query list in [start, stop)
        cost = best[lo:stop] + group_cost(stop - starts, float(sizes[stop - 1][0]), n_qry, overhead)
        k = int(np.argmin(cost))
        best[stop], cut[stop] = cost[k], lo + k
    groups = []
    stop = n
    while stop > 0:
        groups.append((int(cut[stop]), stop))
        stop = int(cut[stop])
    return groups[::-1]


# ---- the engine -----------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (the model card records it; a mismatch refuses the model)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class LearnedEngine:
    name = "learned"

    def __init__(self, runtime: OnnxRuntime, card: dict, max_batch: int = MAX_BATCH,
                 log_positions_for_samples: bool = False, anchors: int = ANCHORS):
        self.runtime = runtime
        self.card = card
        self.max_batch = max_batch
        self.log_positions_for_samples = log_positions_for_samples
        self.anchors = anchors  # most query positions the model is run at per curve (see choose_anchors)
        self.borders = runtime.borders

    @classmethod
    def load(
        cls, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None, warmup: bool = True
    ) -> "LearnedEngine":
        """Load an ONNX file after checking it against the sha256 in ``model-card.json`` beside it.

        ``path`` is the model file, its card, or their folder. A file listed under the card's
        ``variants`` (the int8 copy written by ``training.quantize``) is checked against its own entry.
        """
        path = Path(path)
        if path.is_dir():
            path = path / CARD_NAME
        if path.name == CARD_NAME:
            card_path = path
            card = cls._read_card(card_path)
            path = path.parent / str(card.get("file", ""))
        else:
            card_path = path.parent / CARD_NAME
            card = cls._read_card(card_path)
        card = cls._card_for(card, path.name, card_path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        size = path.stat().st_size
        if "size_bytes" in card and size != card["size_bytes"]:
            raise ModelLoadError(f"model file {path} has {size} bytes, card says {card['size_bytes']} (truncated?)")
        digest = sha256_of(path)
        if digest != card.get("sha256"):
            raise ModelLoadError(f"model file {path} sha256 {digest} does not match the card's {card.get('sha256')}")
        try:
            runtime = OnnxRuntime(path, providers=providers, threads=threads)
            if warmup:
                runtime.warmup()
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files
            raise ModelLoadError(f"onnxruntime could not load {path}: {exc}") from exc
        return cls(runtime, card)

    @staticmethod
    def _card_for(card: dict, file_name: str, card_path: Path) -> dict:
        """The card as it applies to ``file_name``: the card itself, or one of its variants merged in."""
        if card.get("file") == file_name:
            return card
        variant = card.get("variants", {}).get(file_name)
        if not isinstance(variant, dict):
            raise ModelLoadError(f"model card {card_path} describes {card.get('file')!r}, not {file_name!r}")
        merged = {k: v for k, v in card.items() if k != "variants"}
        merged.update(variant)
        merged.update(file=file_name, name=Path(file_name).stem, variant_of=card.get("sha256"))
        return merged

    @staticmethod
    def _read_card(card_path: Path) -> dict:
        try:
            return json.loads(card_path.read_text())
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model card {card_path} is missing") from exc
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model card {card_path} is unreadable: {exc}") from exc

    @property
    def provider(self) -> str:
        return self.runtime.provider

    def info(self) -> EngineInfo:
        version = f"{self.card.get('name', 'pfn')}@{str(self.card.get('sha256', ''))[:12]}"
        return EngineInfo(self.name, version, self.provider, True, f"threads={self.runtime.threads}")

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        results: list[EngineForecast | Exception | None] = [None] * len(queries)
        prepared: dict[int, Prepared] = {}
        scaled: dict[int, Rescaled] = {}
        for i, q in enumerate(queries):
            try:
                with np.errstate(all="ignore"):
                    scaled[i] = rescale(q)  # tiny or huge magnitudes are normalised like ordinary ones
                prepared[i] = prepare(scaled[i].query, self.log_positions_for_samples, self.anchors)
            except Exception as exc:  # noqa: BLE001 - reported for this query only
                results[i] = exc
        order = sorted(prepared, key=lambda i: (len(prepared[i].ctx_z), len(prepared[i].qry_x)))
        sizes = [(len(prepared[i].ctx_z), len(prepared[i].qry_x)) for i in order]
        for start, stop in plan_groups(sizes, self.max_batch, RUN_OVERHEAD_TOKENS * max(1, self.runtime.threads)):
            group = order[start:stop]
            try:
                summaries = self._bar_summaries(self._run_group([prepared[i] for i in group]))
            except Exception as exc:  # noqa: BLE001
                for i in group:
                    results[i] = exc
                continue
            for i, (zq, zm) in zip(group, summaries):
                try:
                    with np.errstate(all="ignore"):
                        results[i] = scaled[i].restore(self._finish(scaled[i].query, prepared[i], zq, zm))
                except Exception as exc:  # noqa: BLE001
                    results[i] = exc
        return [r if r is not None else RuntimeError("no result") for r in results]

    def _run_group(self, items: list[Prepared]) -> list[np.ndarray]:
        b = len(items)
        n = max(len(p.ctx_z) for p in items)
        m = max(max(len(p.qry_x) for p in items), 1)
        f = items[0].ctx_x.shape[1]
        cx = np.zeros((b, n, f), np.float32)
        cy = np.zeros((b, n), np.float32)
        mask = np.zeros((b, n), np.float32)
        qx = np.zeros((b, m, f), np.float32)
        for r, p in enumerate(items):
            k = len(p.ctx_z)
            cx[r, :k], cy[r, :k], mask[r, :k] = p.ctx_x, p.ctx_z, 1.0
            qx[r, : len(p.qry_x)] = p.qry_x
        log_probs = self.runtime.run(cx, cy, mask, qx)
        return [log_probs[r, : len(p.qry_x)] for r, p in enumerate(items)]

    def _bar_summaries(self, outs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Model-space quantiles (m, L) and means (m,) per query, computed for the whole group at once."""
        sizes = [len(lp) for lp in outs]
        log_probs = np.concatenate(outs, axis=0) if outs else np.empty((0, len(self.borders) - 1), np.float32)
        zq = np.empty((len(log_probs), len(LEVELS)))
        zm = np.empty(len(log_probs))
        with np.errstate(all="ignore"):
            for s in range(0, len(log_probs), SUMMARY_ROWS):  # bounded float64 temporaries
                probs = np.exp(log_probs[s : s + SUMMARY_ROWS]).astype(np.float64)  # float32 exp: ~10x faster
                probs /= probs.sum(axis=1, keepdims=True)
                zq[s : s + SUMMARY_ROWS] = bar_quantiles(probs, self.borders)
                zm[s : s + SUMMARY_ROWS] = bar_mean(probs, self.borders)
        cuts = np.cumsum(sizes)[:-1]
        return list(zip(np.split(zq, cuts), np.split(zm, cuts)))

    def _finish(self, q: ForecastQuery, p: Prepared, zq: np.ndarray, zm: np.ndarray) -> EngineForecast:
        t = p.transform
        zq, zm = expand(p, zq, zm)
        marg = Marginals.from_quantile_values(np.asarray(q.x_query, np.float64), zq, zm)
        lim = limits(q.curve)  # a floor is a limit: declared, or inferred (a loss never negative stays >= 0)
        marg = marg.affine(1.0 / t.b, -t.a / t.b).clip(lim.lower, lim.upper)
        if not (np.all(np.isfinite(marg.values)) and np.all(np.isfinite(marg.mean))):
            raise FloatingPointError("non-finite forecast")
        details = {"context_points": float(len(p.ctx_z)), "observed_points": float(len(q.curve.x)),
                   "norm_a": t.a, "norm_b": t.b, "prior_limit_x": p.prior_limit_x}
        return EngineForecast(marg, self.name, p.warnings, details)
