"""Dynamic micro-batching: concurrent requests for one engine are grouped into one engine call.

Like Triton's dynamic batcher: the first waiting query opens a window of at most ``max_delay_s``;
the batch closes early when ``max_batch`` queries are waiting. An idle engine opens no window: a lone
query starts at once (no added latency at low load), and under load batches form while the engine is
busy. Engine work runs in an executor so the event loop only ever routes messages. At most ``max_concurrent_batches`` batches are in the executor at
once: further queries wait in the queue (bounded by the data plane's admission limit), where a cancelled
caller costs nothing and where they form larger batches under load. Queries whose deadline has passed
when their batch starts running are not computed, and a failure inside one query only fails that one:
an engine that raises for a whole batch is retried one query at a time to find the culprit, and a
result list of the wrong length fails the batch cleanly instead of leaving callers waiting forever.

Each query carries its cost in admission's units (``units``): the batcher reports the units still queued
or computing (``backlog_units``) and, per batch, the engine seconds and units it took, timed in the
worker around the engine call alone. With ``retime_first`` a first batch of one query (the warm-up at
start-up) is computed twice and the second timing reported: the first call pays one-time costs (the
analytic engine's warm-up curve: 29 ms, then 7.5 ms), and an estimate 4x too high would make an idle
server refuse work it can do.
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
    units: float = 1.0  # admission's cost units
    queued: bool = True  # its units still count as queued


BatchObserver = Callable[[str, int, float], None]  # (engine name, batch size, seconds) -> None
# (engine, curves, units, seconds, overlap): overlap is how many of its batches overlapped this one on
# average (>= 1): two batches that share two cores (or one GIL) each take longer, so the throughput cost
# of a unit is seconds / units / overlap
BatchTiming = Callable[[str, int, float, float, float], None]


class MicroBatcher:
    def __init__(self, engine_getter: Callable[[], Engine], executor: Executor, *, max_batch: int = 64,
                 max_delay_s: float = 0.002, observer: BatchTiming | None = None,
                 max_concurrent_batches: int = 2, retime_first: bool = False) -> None:
        self._engine_getter = engine_getter
        self._executor = executor
        self._max_batch = max(1, max_batch)
        self._max_delay_s = max(0.0, max_delay_s)
        self._observer = observer
        self._max_concurrent = max(1, max_concurrent_batches)
        self._slots: asyncio.Semaphore | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running_batches = 0  # dispatched and not yet answered
        self._running_curves = 0
        self._queued_units = 0.0
        self._running_units = 0.0
        self._retime_first = retime_first

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def running(self) -> int:
        """Curves in dispatched batches not yet answered, including those whose callers have gone:
        the engine still spends the time on them."""
        return self._running_curves

    @property
    def backlog_units(self) -> float:
        """Cost units queued or computing, including those of callers that have gone (see ``running``)."""
        return self._queued_units + self._running_units

    async def submit(self, query: ForecastQuery, deadline: float | None = None, units: float = 1.0) -> EngineForecast:
        self._ensure_worker()
        assert self._queue is not None
        fut: asyncio.Future[EngineForecast] = asyncio.get_running_loop().create_future()
        item = _Pending(query, deadline, fut, units)
        self._queued_units += units
        fut.add_done_callback(lambda _: self._unqueue(item))  # a caller that leaves stops counting at once
        self._queue.put_nowait(item)  # unbounded queue (admission bounds it): never blocks
        return await fut

    async def submit_many(self, queries: list[ForecastQuery], deadline: float | None = None,
                          units: list[float] | None = None) -> list[EngineForecast | BaseException]:
        """Queue several queries at once (ForecastBatch) so they share engine calls."""
        costs = units if units is not None else [1.0] * len(queries)
        tasks = [asyncio.ensure_future(self.submit(q, deadline, u)) for q, u in zip(queries, costs)]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    def _take(self, item: _Pending) -> _Pending:
        self._unqueue(item)
        return item

    def _unqueue(self, item: _Pending) -> None:
        if item.queued:
            item.queued = False
            self._queued_units = max(self._queued_units - item.units, 0.0)

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue()
            self._slots = self._slots or asyncio.Semaphore(self._max_concurrent)
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # wait for a free engine slot; meanwhile queries queue up
            first = self._take(await self._queue.get())
            if first.future.done():  # cancelled while queued: do not open a window for it
                self._slots.release()
                continue
            batch = [first]
            window_end = loop.time() + (self._max_delay_s if self._running_batches else 0.0)
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._take(self._queue.get_nowait()))
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = window_end - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._take(await asyncio.wait_for(self._queue.get(), remaining)))
                except asyncio.TimeoutError:
                    break
            self._running_batches += 1
            self._running_curves += len(batch)
            self._running_units += sum(p.units for p in batch)
            loop.create_task(self._dispatch(batch))

    async def _dispatch(self, batch: list[_Pending]) -> None:
        try:
            await self._dispatch_batch(batch)
        finally:
            assert self._slots is not None
            self._running_batches -= 1
            self._running_curves -= len(batch)
            self._running_units = max(self._running_units - sum(p.units for p in batch), 0.0)
            self._slots.release()

    async def _dispatch_batch(self, batch: list[_Pending]) -> None:
        live = self._live(batch, time.monotonic())
        if not live:
            return
        try:
            engine = self._engine_getter()
        except Exception as exc:  # noqa: BLE001 - e.g. the engine was unloaded: fail these queries, not the worker
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        loop = asyncio.get_running_loop()
        overlap_at_start = self._running_batches
        retime, self._retime_first = self._retime_first and len(live) == 1, False
        results, seconds = await loop.run_in_executor(self._executor, _run_live, engine, live, retime)
        failed = [k for k, r in enumerate(results) if isinstance(r, _BatchFailure)]
        if len(failed) > 1:
            # the engine raised for the whole batch: retry one query at a time so only the culprit fails
            for k in failed:
                one, took = await loop.run_in_executor(self._executor, _run_live, engine, [live[k]])
                results[k] = one[0]
                seconds += took
        done = [p for p, r in zip(live, results) if not isinstance(r, DeadlineExceeded)]
        if self._observer is not None and done:
            overlap = max(1.0, 0.5 * (overlap_at_start + self._running_batches))
            self._observer(engine.name, len(done), sum(p.units for p in done), seconds, overlap)
        for item, result in zip(live, results):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result.error if isinstance(result, _BatchFailure) else result)
            else:
                item.future.set_result(result)

    @staticmethod
    def _live(batch: list[_Pending], now: float) -> list[_Pending]:
        live: list[_Pending] = []
        for item in batch:
            if item.future.done():  # caller cancelled while queued
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(DeadlineExceeded("deadline passed while queued; not computed"))
                continue
            live.append(item)
        return live


class _BatchFailure(Exception):
    """The engine raised for a whole batch (not a per-query result)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _run_live(engine: Engine, items: list[_Pending],
              retime: bool = False) -> tuple[list[EngineForecast | BaseException], float]:
    """Runs in the executor thread: re-checks deadlines at the moment work starts, then calls the engine.
    Returns the results and the engine's seconds (of a second, warm call when ``retime``)."""
    now = time.monotonic()
    todo = [i for i, p in enumerate(items) if p.deadline is None or p.deadline > now]
    out: list[EngineForecast | BaseException] = [
        DeadlineExceeded("deadline passed before the engine started; not computed")] * len(items)
    if not todo:
        return out, 0.0
    queries = [items[i].query for i in todo]
    started = time.perf_counter()
    try:
        results = list(engine.forecast(queries))
    except Exception as exc:  # noqa: BLE001 - reported per query by the caller
        results, retime = [_BatchFailure(exc)] * len(todo), False
    seconds = time.perf_counter() - started
    if retime:
        started = time.perf_counter()
        try:
            engine.forecast(queries)  # only timed: the answer is the first call's
            seconds = time.perf_counter() - started
        except Exception:  # noqa: BLE001 - keep the first call's timing
            pass
    if len(results) != len(todo):
        bad = RuntimeError(f"engine '{engine.name}' returned {len(results)} results for {len(todo)} queries")
        results = [bad] * len(todo)
    for i, r in zip(todo, results):
        out[i] = r
    return out, seconds
