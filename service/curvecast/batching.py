"""Dynamic micro-batching: concurrent requests for one engine are grouped into one engine call.

Like Triton's dynamic batcher: the first waiting query opens a window of at most ``max_delay_s``;
the batch closes early when ``max_batch`` queries are waiting. Engine work runs in an executor so the
event loop only ever routes messages. Queries whose deadline has passed by the time their batch is
formed are not computed (their callers have gone), and a failure inside one query only fails that one.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

from .domain.curve import ForecastQuery
from .domain.errors import DeadlineExceeded
from .engines.base import Engine, EngineForecast


@dataclass
class _Pending:
    query: ForecastQuery
    deadline: float | None  # time.monotonic() seconds
    future: asyncio.Future[EngineForecast]


BatchObserver = Callable[[str, int, float], None]  # (engine name, batch size, seconds) -> None


class MicroBatcher:
    def __init__(self, engine_getter: Callable[[], Engine], executor: Executor, *, max_batch: int = 64,
                 max_delay_s: float = 0.002, observer: BatchObserver | None = None) -> None:
        self._engine_getter = engine_getter
        self._executor = executor
        self._max_batch = max(1, max_batch)
        self._max_delay_s = max(0.0, max_delay_s)
        self._observer = observer
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running_batches = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, query: ForecastQuery, deadline: float | None = None) -> EngineForecast:
        self._ensure_worker()
        assert self._queue is not None
        fut: asyncio.Future[EngineForecast] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(query, deadline, fut))
        return await fut

    async def submit_many(self, queries: list[ForecastQuery],
                          deadline: float | None = None) -> list[EngineForecast | BaseException]:
        """Queue several queries at once (ForecastBatch) so they share engine calls."""
        tasks = [asyncio.ensure_future(self.submit(q, deadline)) for q in queries]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            window_end = loop.time() + self._max_delay_s
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = window_end - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            loop.create_task(self._dispatch(batch))

    async def _dispatch(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live: list[_Pending] = []
        for item in batch:
            if item.future.done():  # caller cancelled while queued
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(DeadlineExceeded("deadline passed while queued; not computed"))
                continue
            live.append(item)
        if not live:
            return
        engine = self._engine_getter()
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, engine.forecast, [p.query for p in live])
        except Exception as exc:  # the engine failed as a whole: every query in the batch gets the error
            results = [exc] * len(live)
        if self._observer is not None:
            self._observer(engine.name, len(live), time.perf_counter() - started)
        for item, result in zip(live, results):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
