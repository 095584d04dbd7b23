"""Calibration of event probabilities ("beats the incumbent", "reaches the target within the budget").

A stop recommendation is only as good as its probabilities, so the benchmark measures them with the
standard scores (expected calibration error, Brier score and its skill against the base rate,
reliability bins) and can fit a small monotone recalibration map that serving applies. The map is a
handful of numbers stored as JSON next to this module, keyed by engine and event.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, special

RECALIBRATION_PATH = Path(__file__).with_name("recalibration.json")
_EPS = 1e-6


def _clean(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(y, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length: {p.shape} vs {y.shape}")
    ok = np.isfinite(p) & np.isfinite(y)
    return p[ok], (y[ok] > 0.5).astype(np.float64)


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    p, y = _clean(p, y)
    return float(np.mean((p - y) ** 2)) if len(p) else 0.0


def brier_skill_score(p: np.ndarray, y: np.ndarray, base_rate: float | None = None) -> float:
    """1 - Brier / Brier of always forecasting the base rate; > 0 beats the base rate.

    The base rate defaults to the observed frequency (the in-sample climatology, the usual reference).
    When every outcome is the same the reference scores 0 and the skill is reported as 0.
    """
    p, y = _clean(p, y)
    if not len(p):
        return 0.0
    base = float(np.mean(y)) if base_rate is None else float(base_rate)
    ref = float(np.mean((base - y) ** 2))
    if ref <= 0:
        return 0.0
    return float(1.0 - np.mean((p - y) ** 2) / ref)


@dataclass(frozen=True)
class ReliabilityBin:
    lo: float
    hi: float
    count: int
    mean_p: float  # average forecast probability in the bin
    frequency: float  # observed event frequency in the bin


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width probability bins (the last one closed), empty bins included with count 0."""
    p, y = _clean(p, y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        mid = 0.5 * (edges[b] + edges[b + 1])
        out.append(ReliabilityBin(
            lo=float(edges[b]), hi=float(edges[b + 1]), count=n,
            mean_p=float(p[sel].mean()) if n else float(mid),
            frequency=float(y[sel].mean()) if n else 0.0,
        ))
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |forecast - frequency| over equal-width bins."""
    bins = reliability_bins(p, y, n_bins)
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return float(sum(b.count * abs(b.mean_p - b.frequency) for b in bins) / total)


@dataclass(frozen=True)
class CalibrationReport:
    n: int
    base_rate: float
    ece: float
    brier: float
    brier_skill: float
    bins: tuple[ReliabilityBin, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_report(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> CalibrationReport:
    pc, yc = _clean(p, y)
    return CalibrationReport(
        n=len(pc), base_rate=float(yc.mean()) if len(yc) else 0.0,
        ece=expected_calibration_error(pc, yc, n_bins), brier=brier_score(pc, yc),
        brier_skill=brier_skill_score(pc, yc), bins=tuple(reliability_bins(pc, yc, n_bins)),
    )


# ---- recalibration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recalibration:
    """A monotone map from a raw probability to a calibrated one.

    ``platt``: sigmoid(a * logit(p) + b). ``isotonic``: piecewise-linear through ``knots`` (p, q),
    fitted by pool-adjacent-violators. ``identity`` leaves p unchanged.
    """

    kind: str = "identity"
    a: float = 1.0
    b: float = 0.0
    knots_p: tuple[float, ...] = ()
    knots_q: tuple[float, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)

    def apply(self, p: np.ndarray | float) -> np.ndarray | float:
        scalar = np.ndim(p) == 0
        arr = np.asarray(p, dtype=np.float64)
        arr = np.clip(np.where(np.isnan(arr), 0.0, arr), 0.0, 1.0)
        if self.kind == "platt":
            with np.errstate(all="ignore"):
                out = special.expit(self.a * special.logit(np.clip(arr, _EPS, 1 - _EPS)) + self.b)
        elif self.kind == "isotonic" and len(self.knots_p):
            out = np.interp(arr, self.knots_p, self.knots_q)
        else:
            out = arr
        out = np.clip(out, 0.0, 1.0)
        return float(out) if scalar else out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "a": self.a, "b": self.b, "knots_p": list(self.knots_p),
                "knots_q": list(self.knots_q), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict) -> "Recalibration":
        return cls(kind=str(d.get("kind", "identity")), a=float(d.get("a", 1.0)), b=float(d.get("b", 0.0)),
                   knots_p=tuple(float(v) for v in d.get("knots_p", ())),
                   knots_q=tuple(float(v) for v in d.get("knots_q", ())), meta=dict(d.get("meta", {})))


IDENTITY = Recalibration()


def fit_platt(p: np.ndarray, y: np.ndarray) -> Recalibration:
    """Logistic regression of the outcome on logit(p) (two parameters, maximum likelihood)."""
    p, y = _clean(p, y)
    if len(p) < 2 or y.min() == y.max():
        return IDENTITY
    z = special.logit(np.clip(p, _EPS, 1 - _EPS))

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = theta[0] * z + theta[1]
        loss = np.sum(np.logaddexp(0.0, t) - y * t)
        r = special.expit(t) - y
        return float(loss), np.array([np.sum(r * z), np.sum(r)])

    res = optimize.minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                            bounds=[(0.0, 20.0), (-20.0, 20.0)])
    return Recalibration(kind="platt", a=float(res.x[0]), b=float(res.x[1]), meta={"n": int(len(p))})


def fit_isotonic(p: np.ndarray, y: np.ndarray, max_knots: int = 24) -> Recalibration:
    """Pool-adjacent-violators fit, thinned to at most ``max_knots`` knots for storage."""
    p, y = _clean(p, y)
    if len(p) < 2:
        return IDENTITY
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    # blocks of (sum_y, count, p_lo, p_hi)
    sums, counts, plo, phi = [], [], [], []
    for pi, yi in zip(ps, ys):
        sums.append(yi); counts.append(1.0); plo.append(pi); phi.append(pi)
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            s, c, h = sums.pop(), counts.pop(), phi.pop()
            plo.pop()
            sums[-1] += s; counts[-1] += c; phi[-1] = h
    kp, kq = [], []
    for s, c, lo, hi in zip(sums, counts, plo, phi):
        v = s / c
        kp.extend([lo, hi]); kq.extend([v, v])
    kp_a, kq_a = np.asarray(kp), np.asarray(kq)
    if len(kp_a) > max_knots:
        sel = np.unique(np.linspace(0, len(kp_a) - 1, max_knots).round().astype(int))
        kp_a, kq_a = kp_a[sel], kq_a[sel]
    # anchor the ends so every p in [0, 1] maps somewhere sensible
    kp_a = np.concatenate(([0.0], kp_a, [1.0]))
    kq_a = np.concatenate(([kq_a[0]], kq_a, [kq_a[-1]]))
    kp_a, uniq = np.unique(kp_a, return_index=True)
    kq_a = np.maximum.accumulate(kq_a[uniq])
    return Recalibration(kind="isotonic", knots_p=tuple(map(float, kp_a)), knots_q=tuple(map(float, kq_a)),
                         meta={"n": int(len(p))})


def load_recalibrations(path: Path = RECALIBRATION_PATH) -> dict[str, dict[str, Recalibration]]:
    """``{engine: {event: Recalibration}}`` from the JSON fitted by the sweeps benchmark; {} if absent.

    Served forecasts ask for these maps on every call, so the parsed file is cached per modification time,
    and the modification time itself is looked up at most every ``_RECHECK_S`` seconds.
    """
    key = str(path)
    now = time.monotonic()
    seen = _mtime_seen.get(key)
    if seen is None or now - seen[0] > _RECHECK_S:
        try:
            seen = (now, path.stat().st_mtime_ns)
        except FileNotFoundError:
            seen = (now, None)
        _mtime_seen[key] = seen
    return {} if seen[1] is None else _parsed_recalibrations(key, seen[1])


_RECHECK_S = 1.0
_mtime_seen: dict[str, tuple[float, int | None]] = {}  # path -> (when checked, mtime or None if absent)


@functools.lru_cache(maxsize=8)
def _parsed_recalibrations(path: str, mtime_ns: int) -> dict[str, dict[str, Recalibration]]:
    raw = json.loads(Path(path).read_text())
    return {eng: {ev: Recalibration.from_dict(d) for ev, d in events.items()}
            for eng, events in raw.get("engines", {}).items()}


def recalibration_for(engine: str, event: str, path: Path = RECALIBRATION_PATH) -> Recalibration:
    """The stored map for ``engine`` and ``event``: "beat_incumbent" (result = best checkpoint),
    "beat_incumbent_last" (result = value at the budget) or "target_within_budget"; identity if none."""
    return load_recalibrations(path).get(engine, {}).get(event, IDENTITY)


def save_recalibrations(maps: dict[str, dict[str, Recalibration]], path: Path = RECALIBRATION_PATH,
                        note: str = "") -> None:
    payload = {"note": note, "engines": {eng: {ev: r.to_dict() for ev, r in evs.items()}
                                         for eng, evs in maps.items()}}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    _mtime_seen.pop(str(path), None)  # this process sees its own write at once
