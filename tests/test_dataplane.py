"""The data plane's plan: one engine call per curve covers the asked x, the budget and the decision grid."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals
from curvecast.domain.validation import Limits, Violations, build_query_x
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry


class RecordingEngine:
    name = "analytic"

    def __init__(self) -> None:
        self.asked: list[np.ndarray] = []

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        out = []
        for q in queries:
            x = np.asarray(q.x_query, dtype=np.float64)
            self.asked.append(x)
            out.append(EngineForecast(Marginals.from_gaussian(x, 1.0 + 1.0 / x, np.full(len(x), 0.01)), self.name))
        return out


def _run(query: ForecastQuery, settings: DataPlaneSettings = DataPlaneSettings()):
    engine = RecordingEngine()
    reg = EngineRegistry()
    reg.put(engine)

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(1), settings)
        try:
            return await dp.forecast(query)
        finally:
            await dp.close()

    return asyncio.run(go()), engine.asked


def _default_query(total: float = 1000.0) -> ForecastQuery:
    x = np.arange(10.0, 210.0, 10.0)
    curve = Curve(x, 2.0 + 5.0 / x)
    xq = build_query_x(Violations(), [], curve, total, Limits())
    return ForecastQuery(curve=curve, run=RunInfo(total_steps=total), x_query=xq, target=2.001)


def test_default_query_shares_the_decision_grid_inside_the_budget():
    q = _default_query()
    st = DataPlaneSettings()
    result, asked = _run(q, st)
    (x,) = asked
    assert np.all(np.diff(x) > 0)
    # every asked x is evaluated exactly once, and the inside decision points are among them
    assert len(x) == len(q.x_query) + st.decision_grid_beyond
    np.testing.assert_array_equal(result.predictions.x, q.x_query)
    assert result.final.x[0] == 1000.0
    assert x[-1] == 1000.0 * st.decision_extension


def test_explicit_query_points_are_kept_verbatim_beside_the_grid():
    q = _default_query()
    odd = np.array([333.3333333, 512.0, 999.9999])
    q = ForecastQuery(curve=q.curve, run=q.run, x_query=odd, target=q.target)
    result, (x,) = _run(q)
    np.testing.assert_array_equal(result.predictions.x, odd)
    assert set(odd) <= set(x.tolist())
    assert result.compute_to_target is not None and len(result.compute_to_target.grid_x) == 37


def test_retry_hint_follows_the_queue_and_is_jittered_within_bounds():
    st = DataPlaneSettings(retry_after_s=0.05, retry_after_max_s=2.0)
    dp = DataPlane(EngineRegistry(), ThreadPoolExecutor(1), st)
    idle = [dp.retry_hint_s() for _ in range(200)]
    assert 0.025 <= min(idle) and max(idle) <= 0.075 and len(set(idle)) > 100  # jittered around the floor
    dp._observe("analytic", 10, 1.0, overlap=2.0)  # two overlapping batches: 50 ms of throughput per curve
    dp._inflight = 20  # 20 curves queued: about 1 s of work
    assert dp.expected_wait_s({"analytic"}) == pytest.approx(1.0)
    busy = [dp.retry_hint_s({"analytic"}) for _ in range(200)]
    assert 0.5 <= min(busy) and max(busy) <= 1.5 and np.mean(busy) > 3 * np.mean(idle)
    dp._inflight = 10_000
    assert max(dp.retry_hint_s({"analytic"}) for _ in range(50)) <= 1.5 * st.retry_after_max_s


def test_engine_hint_caps_concurrent_batches():
    class OneAtATime(RecordingEngine):
        def info(self) -> EngineInfo:
            return EngineInfo(self.name, "test", "test", concurrent_batches=1)

    reg = EngineRegistry()
    reg.put(OneAtATime())
    dp = DataPlane(reg, ThreadPoolExecutor(2), max_concurrent_batches=4)
    assert dp._batcher("analytic")._max_concurrent == 1
    reg2 = EngineRegistry()
    reg2.put(RecordingEngine())
    assert DataPlane(reg2, ThreadPoolExecutor(2), max_concurrent_batches=4)._batcher("analytic")._max_concurrent == 4


def test_precheck_refuses_only_what_admission_would_refuse():
    from curvecast.domain.errors import Overloaded
    import time as _time

    dp = DataPlane(EngineRegistry(), ThreadPoolExecutor(1), DataPlaneSettings(max_inflight_curves=100), max_batch=10)
    dp.precheck(100)  # empty server: anything that fits the limit passes
    dp._inflight = 90
    with pytest.raises(Overloaded):
        dp.precheck(20)
    dp.precheck(10)
    dp._observe("analytic", 10, 0.1)  # 10 ms per curve: 90 queued + 1 + a batch of 10 = 1.01 s
    dp._observe("learned", 10, 1.0)
    dp.precheck(1, _time.monotonic() + 1.2)  # the cheapest engine would make it
    with pytest.raises(Overloaded):
        dp.precheck(1, _time.monotonic() + 0.5)


def test_curves_still_in_the_engine_count_after_their_caller_left():
    import threading

    class Gate(RecordingEngine):
        def __init__(self) -> None:
            super().__init__()
            self.gate, self.started = threading.Event(), threading.Event()

        def forecast(self, queries):
            self.started.set()
            self.gate.wait(10)
            return super().forecast(queries)

    engine = Gate()
    reg = EngineRegistry()
    reg.put(engine)

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(2))
        call = asyncio.ensure_future(dp.forecast_many([_default_query(), _default_query()]))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 10)
        call.cancel()  # the caller gives up while its curves are inside the engine
        await asyncio.sleep(0.05)
        left = dp.inflight, dp.pending_curves
        engine.gate.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if dp.pending_curves == 0:
                break
        done = dp.pending_curves
        await dp.close()
        return left, done

    (inflight, pending), done = asyncio.run(go())
    assert inflight == 0 and pending == 2  # admission still sees the engine's work
    assert done == 0


def test_a_crowd_of_refused_callers_is_spread_over_the_time_to_serve_it():
    from curvecast.domain.errors import Overloaded

    dp = DataPlane(EngineRegistry(), ThreadPoolExecutor(1), DataPlaneSettings(max_inflight_curves=64,
                                                                            retry_after_max_s=30.0))
    dp._observe("analytic", 32, 0.32)  # 10 ms per curve
    dp._inflight = 64
    hints = []
    for _ in range(50):  # 50 refused 32-curve calls within the window
        with pytest.raises(Overloaded) as err:
            dp.precheck(32)
        hints.append(err.value.retry_after_s)
    assert np.mean(hints[-10:]) > 5 * np.mean(hints[:3])  # later refusals are told to wait longer
    assert max(hints) <= 1.5 * 30.0


def test_finishing_cost_joins_the_admission_estimate():
    engine = RecordingEngine()
    reg = EngineRegistry()
    reg.put(engine)

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(1))
        await dp.forecast_many([_default_query() for _ in range(4)])
        await dp.close()
        return dp

    dp = asyncio.run(go())
    assert dp._finish_s > 0.0  # decisions and response building were timed
    dp._inflight = 10
    engine_only = 10 * dp._curve_s["analytic"]
    assert dp.expected_wait_s({"analytic"}) == pytest.approx(engine_only + 10 * dp._finish_s)
