"""Forecast admission prices work in cost units (query points, levels, curve length) with per-unit costs
measured from the start-up warm-up, so an idle server refuses at once what it could not answer in time.

Runs the real analytic engine through a data plane warmed up the way the server is (app.py's warm-up
query through ``DataPlane.forecast``); the engine is wrapped to count the curves it was asked for."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ServerProcess
from curvecast.admission import DEFAULT_SIZE, FINISH, CurveSize, shape_of
from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals
from curvecast.domain.errors import Overloaded
from curvecast.domain.validation import Limits, Violations, build_query_x
from curvecast.engines.analytic.engine import AnalyticEngine
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry
from curvecast.server.app import _warmup_query_for
from curvecast_client import Client, CurvecastError


class Counting:
    """Delegates to an engine and counts the curves it was asked to compute."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.curves = inner, inner.name, 0

    def info(self) -> EngineInfo:
        return self.inner.info()

    def forecast(self, queries):
        self.curves += len(queries)
        return self.inner.forecast(queries)


def default_query(seed: int, n_query: int = 0) -> ForecastQuery:
    rng = np.random.default_rng(seed)
    x = np.linspace(10, 3000, 40)
    curve = Curve(x, 2.0 + 4.0 * x**-0.4 + rng.normal(0, 0.01, len(x)))
    xq = np.linspace(3001, 10_000, n_query) if n_query else build_query_x(Violations(), [], curve, 10_000.0, Limits())
    return ForecastQuery(curve=curve, run=RunInfo(total_steps=10_000.0), x_query=xq, target=2.2, incumbent=2.15,
                         engine="analytic")


def warmed_dataplane() -> tuple[DataPlane, Counting]:
    engine = Counting(AnalyticEngine())
    reg = EngineRegistry()
    reg.put(engine)
    dp = DataPlane(reg, ThreadPoolExecutor(2), DataPlaneSettings(default_engine="analytic"))
    return dp, engine


def test_idle_warmed_up_server_refuses_a_batch_that_cannot_make_its_deadline_without_computing_it():
    async def go():
        dp, engine = warmed_dataplane()
        await dp.forecast(_warmup_query_for("analytic"))  # what app.py does before serving
        warm_curves = engine.curves
        assert dp.inflight == 0 and dp.expected_wait_s() == 0.0  # idle
        batch = [default_query(i) for i in range(1000)]
        t0 = time.process_time()
        with pytest.raises(Overloaded) as err:
            await dp.forecast_many(batch, deadline=time.monotonic() + 2.0)
        cpu = time.process_time() - t0
        # the servicer's precheck, on the raw request's counts, refuses it before validation as well
        lower = [CurveSize.lower_bound(0, 0, 37, 5)] * 1000
        with pytest.raises(Overloaded):
            dp.precheck(lower, time.monotonic() + 2.0)
        computed_for_refused = engine.curves - warm_curves
        small = await dp.forecast_many(batch[:5], deadline=time.monotonic() + 2.0)  # fits: answered
        await dp.close()
        return err.value, cpu, computed_for_refused, small, dp

    refusal, cpu, computed, small, dp = asyncio.run(go())
    assert computed == 0  # refused up front: no curve of it reached the engine
    assert "deadline" in str(refusal) and refusal.retry_after_s > 0
    assert cpu < 0.5  # pricing 1,000 curves, not forecasting them (that burns seconds)
    assert all(not isinstance(r, BaseException) for r in small)
    # the refusal rested on measured costs: 1,000 default curves cost well over the 2 s allowed
    per_curve = sum(dp.admission.seconds_per_unit(st) for st in ("analytic", FINISH))
    assert 1000 * per_curve > 2.0


def test_many_query_points_are_priced_higher_than_few():
    many, few = CurveSize(10_000 + 37, 5, 40), CurveSize(50 + 37, 5, 40)
    assert shape_of("analytic").units(many) > 40 * shape_of("analytic").units(few)
    assert shape_of(FINISH).units(CurveSize(10_000 + 37, 99, 40)) > 10 * shape_of(FINISH).units(many)
    assert shape_of("analytic").units(DEFAULT_SIZE) == pytest.approx(1.0)

    async def go():
        dp, engine = warmed_dataplane()
        await dp.forecast(_warmup_query_for("analytic"))
        before = engine.curves
        with pytest.raises(Overloaded):  # one curve, 10,000 query points: ~0.7 s of fitting here
            await dp.forecast(default_query(1, n_query=10_000), deadline=time.monotonic() + 0.2)
        refused_computed = engine.curves - before
        answered = await dp.forecast(default_query(1), deadline=time.monotonic() + 0.2)  # 50 points: ~10 ms
        await dp.close()
        return refused_computed, answered

    refused_computed, answered = asyncio.run(go())
    assert refused_computed == 0 and len(answered.predictions.x) == 50


class ColdEngine:
    """Its first call pays a one-time cost (lazy initialisation); later calls are fast."""

    name = "analytic"

    def __init__(self) -> None:
        self.calls = 0

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.3)  # the one-time cost being simulated, not a wait for an event
        out = []
        for q in queries:
            x = np.asarray(q.x_query, dtype=np.float64)
            out.append(EngineForecast(Marginals.from_gaussian(x, np.ones(len(x)), np.full(len(x), 0.1)), self.name))
        return out


@pytest.mark.parametrize("retime", [True, False])
def test_warm_up_teaches_admission_the_warm_cost_not_the_one_time_cost(retime):
    async def go():
        engine = ColdEngine()
        reg = EngineRegistry()
        reg.put(engine)
        dp = DataPlane(reg, ThreadPoolExecutor(1), DataPlaneSettings(retime_first_batch=retime))
        result = await dp.forecast(_warmup_query_for("analytic"))
        await dp.close()
        return dp.admission.seconds_per_unit("analytic"), engine.calls, result

    per_unit, calls, result = asyncio.run(go())
    assert len(result.predictions.x) == 4
    if retime:  # computed twice, the warm second call timed
        assert calls == 2 and per_unit < 0.1
    else:
        assert calls == 1 and per_unit > 0.2


class GateEngine:
    """Its calls wait for ``gate``; counts the curves it computed."""

    name = "analytic"

    def __init__(self) -> None:
        self.gate, self.started, self.seen = threading.Event(), threading.Event(), 0

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        self.seen += len(queries)
        self.started.set()
        self.gate.wait(10)
        return [EngineForecast(Marginals.from_gaussian(np.asarray(q.x_query, float), np.ones(len(q.x_query)),
                                                       np.full(len(q.x_query), 0.1)), self.name) for q in queries]


def test_a_caller_that_leaves_stops_counting_in_the_backlog_at_once():
    async def go():
        engine = GateEngine()
        reg = EngineRegistry()
        reg.put(engine)
        dp = DataPlane(reg, ThreadPoolExecutor(2), DataPlaneSettings(retime_first_batch=False), max_batch=1,
                       max_concurrent_batches=1)
        dp.admission.observe("analytic", units=1, seconds=0.05)
        first = asyncio.ensure_future(dp.forecast(default_query(0)))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 10)
        queued = asyncio.ensure_future(dp.forecast_many([default_query(i) for i in range(20)]))
        while dp.queue_depth < 20:  # all 20 wait behind the busy engine (state, not time)
            await asyncio.sleep(0)
        busy = dp.expected_wait_s()
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        left = dp.expected_wait_s()  # still in the engine's queue, but nobody waits for them
        engine.gate.set()
        await first
        await dp.close()
        return busy, left, engine.seen

    busy, left, seen = asyncio.run(go())
    assert busy > 20 * 0.05 * 0.9 and left < 2 * 0.05  # only the curve inside the engine still counts
    assert seen == 1  # and the cancelled ones were never computed


# ---- the real server ------------------------------------------------------------------------------
def _metric(server: ServerProcess, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    return next((float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.split(" ")[0] == name), 0.0)


def test_server_refuses_a_doomed_batch_at_once_and_still_answers(server):
    rng = np.random.default_rng(0)
    x = np.linspace(10, 3000, 40)
    runs = [dict(x=x.tolist(), y=(2.0 + 4.0 * x**-0.4 + rng.normal(0, 0.01, 40)).tolist(), total_steps=10_000,
                 engine="analytic") for _ in range(1000)]
    name = 'curvecast_curves_forecast_total{engine="analytic"}'
    before = _metric(server, name)
    with Client(server.address, retries=0) as c:
        with pytest.raises(CurvecastError) as err:
            c.forecast_batch(runs, timeout=2.0)
        assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.retry_after_s
        assert "deadline" in err.value.message
        assert _metric(server, name) == before  # not one curve of it was computed
        answered = c.forecast_batch(runs[:3], timeout=30)
    assert len(answered) == 3 and all(not isinstance(r, Exception) for r in answered)
