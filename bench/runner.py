"""Run engines over tasks through the Engine protocol and score every answer.

Queries go to each engine in batches (engines are batch-first); an exception for one query, a failed
batch or an unscorable answer marks only the affected tasks as failed, with the reason kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from curvecast.domain.distribution import Marginals
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


def run_engine(label: str, engine: Engine, tasks: Sequence[Task], example_keys: set[str], batch_size: int = 32) -> EngineRun:
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
                    sc = score_task(task, res.marginals, label)
                except Exception as e:  # noqa: BLE001
                    sc = TaskScore(task.key, task.source, task.cutoff, label, error=f"scoring failed: {type(e).__name__}: {e}"[:160])
                run.scores.append(sc)
                if task.key in example_keys and sc.error is None:
                    run.examples[task.key] = res.marginals
            if run.scores[-1].error is not None:
                err = run.scores[-1].error or ""
                run.errors[err] = run.errors.get(err, 0) + 1
    run.wall_s = time.perf_counter() - t0
    return run
