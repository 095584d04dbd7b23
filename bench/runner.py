"""Run engines over tasks through the Engine protocol and score every answer.

Queries go to each engine in batches (engines are batch-first); an exception for one query, a failed
batch or an unscorable answer marks only the affected tasks as failed, with the reason kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from curvecast.domain.curve import ForecastQuery
from curvecast.domain.distribution import Marginals
from curvecast.domain.plausibility import review
from curvecast.engines.base import Engine, EngineForecast

from .metrics import TaskScore, score_task
from .tasks import Task


@dataclass
class EngineRun:
    label: str
    scores: list[TaskScore] = field(default_factory=list)
    examples: dict[str, Marginals] = field(default_factory=dict)  # task key -> marginals, for plots
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # error message (truncated) -> count


Post = Callable[[ForecastQuery, Marginals], Marginals]


def served(query: ForecastQuery, m: Marginals) -> Marginals:
    """What the server makes of an engine's marginals before answering: declared bounds, then the
    plausibility review (the data plane's last step), so in-process scores are the served answer's."""
    with np.errstate(all="ignore"):
        return review(query, m.clip(query.curve.lower_bound, query.curve.upper_bound)).marginals


def run_engine(label: str, engine: Engine, tasks: Sequence[Task], example_keys: set[str], batch_size: int = 32, post: Post | None = None) -> EngineRun:
    """Every task through ``engine`` in batches; ``post`` maps each answer before scoring (``served``)."""
    run = EngineRun(label)
    t0 = time.perf_counter()
    for start in range(0, len(tasks), batch_size):
        batch = tasks[start : start + batch_size]
        try:
            results: list[EngineForecast | Exception] = list(engine.forecast([t.query for t in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} queries")
        except Exception as e:  # noqa: BLE001 - a whole failed batch fails its tasks, not the bench
            results = [e] * len(batch)
        for task, res in zip(batch, results):
            if isinstance(res, Exception):
                msg = f"{type(res).__name__}: {res}"[:160]
                run.scores.append(TaskScore(task.key, task.source, task.cutoff, label, error=msg))
            else:
                try:
                    marginals = res.marginals if post is None else post(task.query, res.marginals)
                    sc = score_task(task, marginals, label)
                except Exception as e:  # noqa: BLE001
                    sc = TaskScore(task.key, task.source, task.cutoff, label, error=f"scoring failed: {type(e).__name__}: {e}"[:160])
                run.scores.append(sc)
                if task.key in example_keys and sc.error is None:
                    run.examples[task.key] = marginals
            if run.scores[-1].error is not None:
                err = run.scores[-1].error or ""
                run.errors[err] = run.errors.get(err, 0) + 1
    run.wall_s = time.perf_counter() - t0
    return run


def reproducibility(engine: Engine, tasks: Sequence[Task], post: Post | None = None) -> dict[str, float]:
    """Same request twice, and the same request with every other query x left out: the answers must be
    identical at every common x, bit for bit (issue 12)."""
    if not tasks:
        return {"n": 0, "repeat_mismatch": 0, "subset_mismatch": 0, "max_abs_diff": 0.0}

    def answer(queries: list[ForecastQuery]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for q, r in zip(queries, engine.forecast(queries)):
            if isinstance(r, Exception):
                out.append(None)
            else:
                out.append((r.marginals if post is None else post(q, r.marginals)).values)
        return out

    queries = [t.query for t in tasks]
    subsets = [np.unique(np.r_[np.arange(0, len(q.x_query), 2), len(q.x_query) - 1]) for q in queries]
    first, second = answer(queries), answer(queries)
    partial = answer([replace(q, x_query=q.x_query[idx]) for q, idx in zip(queries, subsets)])
    repeat = subset = 0
    worst = 0.0
    for a, b, c, idx in zip(first, second, partial, subsets):
        if a is None or b is None or c is None:
            repeat += int((a is None) != (b is None))
            continue
        if not np.array_equal(a, b):
            repeat += 1
            worst = max(worst, float(np.max(np.abs(a - b))))
        if not np.array_equal(a[idx], c):
            subset += 1
            worst = max(worst, float(np.max(np.abs(a[idx] - c))))
    return {"n": len(tasks), "repeat_mismatch": repeat, "subset_mismatch": subset, "max_abs_diff": worst}
