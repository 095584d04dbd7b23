"""A result cache for slow benchmark baselines (sqlite in an ignored folder, never on the serving path).

An entry is keyed by the engine's name, a digest of the source files that compute its answers (so
any change to them invalidates it), the query's content (prefix, queried x, budget, bounds, goal, x kind: a new
data version is a new key) and the engine's ``cache_token(query)`` when it has one (what else its
answer depends on, e.g. the sibling curves of ``empirical_spread``). Each entry keeps the seconds the
engine took to compute it, so the report states a baseline's cost even when its answers come from here.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curvecast.domain.curve import ForecastQuery
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import Engine, EngineForecast, EngineInfo

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE_DIR = BENCH_DIR.parent / "docs" / "bench" / "tmp" / "baseline_cache"  # git-ignored
CODE_FILES = ("baselines.py", "families.py", "empirical.py")  # what an engine's answers may depend on (not this file)
# per engine, when fewer: the pow3 baselines do not read empirical.py, so a change there keeps their answers
ENGINE_CODE_FILES: dict[str, tuple[str, ...]] = {"pow3_robust": ("baselines.py", "families.py"),
                                                  "best_of_families": ("baselines.py", "families.py")}
DB_TIMEOUT_S = 60.0  # several benches may share the cache: wait for another writer's short commit


def code_digest(files: Sequence[str] = CODE_FILES) -> str:
    h = hashlib.sha1()
    for name in files:
        h.update((BENCH_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def query_digest(q: ForecastQuery) -> str:
    h = hashlib.sha1()
    for a in (q.curve.x, q.curve.y, q.x_query):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    meta = (q.horizon, q.curve.lower_bound, q.curve.upper_bound, q.curve.goal.value, q.curve.x_kind.value)
    h.update(repr(meta).encode())
    return h.hexdigest()


def _pack(m: Marginals) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, values=m.values, mean=m.mean)
    return zlib.compress(buf.getvalue(), 6)


def _unpack(blob: bytes, x: np.ndarray) -> Marginals:
    with np.load(io.BytesIO(zlib.decompress(blob))) as z:
        return Marginals(np.asarray(x, dtype=np.float64), z["values"], z["mean"])


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    compute_s: float = 0.0  # engine seconds behind every answer served (stored seconds for hits)

    def as_dict(self) -> dict[str, float]:
        n = self.hits + self.misses
        return {"hits": float(self.hits), "misses": float(self.misses), "compute_s": self.compute_s, "compute_ms_per_task": 1e3 * self.compute_s / n if n else float("nan")}


class CachedEngine:
    """Wraps an engine: answers seen before (same code, same query) come from sqlite."""

    def __init__(self, inner: Engine, cache_dir: Path = DEFAULT_CACHE_DIR):
        self.inner = inner
        self.name = inner.name
        self.version = code_digest(ENGINE_CODE_FILES.get(inner.name, CODE_FILES))
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"{inner.name}.sqlite"
        self._db = sqlite3.connect(self.path, timeout=DB_TIMEOUT_S)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, marginals BLOB, warnings TEXT, details TEXT, seconds REAL)")
        self.stats = CacheStats()

    def info(self) -> EngineInfo:
        i = self.inner.info()
        return EngineInfo(i.name, i.version, i.provider, i.available, (i.detail + "; " if i.detail else "") + f"answers cached in {self.path.name} (code {self.version})", i.concurrent_batches)

    def prepare(self, *args: Any, **kwargs: Any) -> None:
        prep = getattr(self.inner, "prepare", None)
        if prep is not None:
            prep(*args, **kwargs)

    def key(self, q: ForecastQuery) -> str:
        token = getattr(self.inner, "cache_token", None)
        extra = token(q) if token is not None else ""
        return hashlib.sha1(f"{self.name}|{self.version}|{query_digest(q)}|{extra}".encode()).hexdigest()

    def _lookup(self, key: str, q: ForecastQuery) -> tuple[EngineForecast, float] | None:
        try:
            row = self._db.execute("SELECT marginals, warnings, details, seconds FROM answers WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:  # an unreadable cache is a miss, never a failed task
            return None
        if row is None:
            return None
        try:
            m = _unpack(row[0], q.x_query)
        except (ValueError, OSError, zlib.error):  # stored under another quantile grid: recompute
            return None
        return EngineForecast(m, self.name, tuple(json.loads(row[1])), json.loads(row[2])), float(row[3])

    def _store(self, key: str, f: EngineForecast, seconds: float) -> None:
        """One short transaction per answer, so concurrent benches sharing the file never wait long."""
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)", (key, _pack(f.marginals), json.dumps(list(f.warnings)), json.dumps(f.details), seconds))
        except sqlite3.Error:  # an unwritable cache only costs the next run a recomputation
            pass

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        out: list[EngineForecast | Exception] = []
        for q in queries:
            key = self.key(q)
            hit = self._lookup(key, q)
            if hit is not None:
                self.stats.hits += 1
                self.stats.compute_s += hit[1]
                out.append(hit[0])
                continue
            t0 = time.perf_counter()
            (res,) = self.inner.forecast([q])
            dt = time.perf_counter() - t0
            self.stats.misses += 1
            self.stats.compute_s += dt
            if not isinstance(res, Exception):
                self._store(key, res, dt)
            out.append(res)
        return out
