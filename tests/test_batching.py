"""MicroBatcher: an idle engine starts a lone query at once; a busy one gathers the queue into a batch."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from curvecast.batching import MicroBatcher
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo


class SizedEngine:
    """Records the size of every engine call; the first call waits for ``gate``."""

    name = "analytic"

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        self.sizes.append(len(queries))
        self.started.set()
        if len(self.sizes) == 1:
            self.gate.wait(10)
        x = np.array([5.0])
        return [EngineForecast(Marginals.from_gaussian(x, np.ones(1), np.ones(1)), self.name) for _ in queries]


def _query() -> ForecastQuery:
    x = np.arange(1.0, 5.0)
    return ForecastQuery(curve=Curve(x, 1.0 / x), run=RunInfo(), x_query=np.array([5.0]))


def test_idle_engine_opens_no_window_and_busy_engine_batches_the_queue():
    engine = SizedEngine()

    async def go():
        # a 30 s window would time the test out if a lone query on an idle engine had to wait for it
        b = MicroBatcher(lambda: engine, ThreadPoolExecutor(2), max_batch=8, max_delay_s=30.0,
                         max_concurrent_batches=1)
        first = asyncio.ensure_future(b.submit(_query()))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 10)
        later = [asyncio.ensure_future(b.submit(_query())) for _ in range(8)]  # queue while the engine is busy
        while b.depth < 8:  # all eight are queued behind the busy engine (state, not time)
            await asyncio.sleep(0)
        engine.gate.set()
        out = await asyncio.wait_for(asyncio.gather(first, *later), timeout=10)
        await b.close()
        return out

    out = asyncio.run(go())
    assert len(out) == 9 and all(isinstance(r, EngineForecast) for r in out)
    assert engine.sizes == [1, 8]  # the lone query went alone and at once; the queue became one full batch
