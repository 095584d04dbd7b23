"""The data plane's plan: one engine call per curve covers the asked x, the budget and the decision grid;
and what it tells admission (admission.py) about the work it holds."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from curvecast.admission import DEFAULT_SIZE, FINISH, CurveSize, ForecastAdmission, Work, shape_of
from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, RunInfo
from curvecast.domain.distribution import Marginals
from curvecast.domain.errors import Overloaded
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
    """One call; the first batch is not re-timed, so ``asked`` holds exactly what the caller needed."""
    engine = RecordingEngine()
    reg = EngineRegistry()
    reg.put(engine)

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(1), replace(settings, retime_first_batch=False))
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


def _admission(limit: int = 4096, max_batch: int = 64, **kw) -> ForecastAdmission:
    return ForecastAdmission(limit, max_batch, **kw)


DEFAULT_ANALYTIC = Work(DEFAULT_SIZE, ("analytic",))


def test_retry_hint_follows_the_queue_and_is_jittered_within_bounds():
    adm = _admission(retry_after_s=0.05, retry_after_max_s=2.0)
    idle = [adm.retry_hint_s() for _ in range(200)]
    assert 0.025 <= min(idle) and max(idle) <= 0.075 and len(set(idle)) > 100  # jittered around the floor
    adm.observe("analytic", units=10, seconds=1.0, overlap=2.0)  # two overlapping batches: 50 ms per unit
    adm.admit([DEFAULT_ANALYTIC] * 20)  # 20 default curves queued: about 1 s of work
    assert adm.pending_s() == pytest.approx(1.0)
    busy = [adm.retry_hint_s() for _ in range(200)]
    assert 0.5 <= min(busy) and max(busy) <= 1.5 and np.mean(busy) > 3 * np.mean(idle)
    adm.admit([DEFAULT_ANALYTIC] * 4000)
    assert max(adm.retry_hint_s() for _ in range(50)) <= 1.5 * 2.0


def test_batch_slack_never_exceeds_the_work_ahead():
    """Found in a CI run on a loaded machine: one default curve left in the engine made every new 1-curve
    call with a 5 s deadline look like 6 s of work (a full batch of 64 priced as slack), so integrations
    were refused for good. The slack is now capped by the work actually ahead."""
    adm = _admission(max_batch=64)
    adm.observe("analytic", units=1, seconds=0.09)  # a slow, loaded machine: 90 ms per default curve
    held = adm.admit([DEFAULT_ANALYTIC])  # one curve still computing
    deadline = time.monotonic() + 5.0
    ticket = adm.admit([DEFAULT_ANALYTIC], deadline)  # 0.09 s ahead + 0.09 s own: admitted, not "6 s"
    adm.release(ticket)
    adm.admit([DEFAULT_ANALYTIC] * 60)  # 60 curves ahead (5.4 s): a 5 s deadline is rightly refused
    with pytest.raises(Overloaded, match="later than its deadline"):
        adm.admit([DEFAULT_ANALYTIC], time.monotonic() + 5.0)
    adm.release(held)


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
    """Random calls (sizes, engines, measured rates, backlog, deadline): whenever the precheck on the raw
    lower bounds refuses, admission of the validated curves refuses too."""
    rng = np.random.default_rng(0)
    checked = refused = 0
    for _ in range(400):
        adm = _admission(limit=200, max_batch=int(rng.integers(1, 64)))
        engines = ["analytic", "learned", "stub"][: int(rng.integers(1, 4))]
        for st in [*engines, FINISH]:
            if rng.random() < 0.8:
                adm.observe(st, units=10, seconds=float(rng.uniform(0.001, 0.2)))
        if rng.random() < 0.5:
            adm.admit([DEFAULT_ANALYTIC] * int(rng.integers(1, 150)))
        n = int(rng.integers(1, 80))
        raw = [(int(rng.choice([0, 1, 40, 2000])), int(rng.choice([0, 3, 99]))) for _ in range(n)]
        grid = 37
        lower = [CurveSize.lower_bound(nq, nl, grid, 5) for nq, nl in raw]
        valid = [Work(CurveSize((nq or int(rng.choice([1, 50]))) + grid, nl or 5, int(rng.integers(2, 10_000))),
                      tuple(str(e) for e in rng.choice(engines, size=int(rng.integers(1, len(engines) + 1)),
                                                       replace=False)))
                 for nq, nl in raw]
        deadline = time.monotonic() + float(rng.uniform(0.01, 5.0))
        try:
            adm.precheck(lower, deadline, engines)
        except Overloaded:
            refused += 1
            with pytest.raises(Overloaded):
                adm.admit(valid, deadline)
        checked += 1
    assert 50 < refused < checked  # both outcomes were exercised


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
        dp.admission.observe("analytic", units=1, seconds=0.01)
        call = asyncio.ensure_future(dp.forecast_many([_default_query(), _default_query()]))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 10)
        call.cancel()  # the caller gives up while its curves are inside the engine
        with pytest.raises(asyncio.CancelledError):
            await call
        left = dp.inflight, dp.pending_curves, dp.expected_wait_s()
        engine.gate.set()
        for _ in range(1000):  # until the engine has answered (state, not time)
            await asyncio.sleep(0.01)
            if dp.pending_curves == 0:
                break
        done = dp.pending_curves, dp.expected_wait_s()
        await dp.close()
        return left, done

    (inflight, pending, wait), done = asyncio.run(go())
    assert inflight == 0 and pending == 2  # admission still sees the engine's work
    assert wait > 0.01  # and prices it: two curves of about a unit each at 10 ms per unit
    assert done == (0, 0.0)


def test_a_crowd_of_refused_callers_is_spread_over_the_time_to_serve_it():
    adm = _admission(limit=64, retry_after_max_s=30.0)
    adm.observe("analytic", units=32, seconds=0.32)  # 10 ms per unit
    adm.admit([DEFAULT_ANALYTIC] * 64)
    hints = []
    for _ in range(50):  # 50 refused 32-curve calls within the window
        with pytest.raises(Overloaded) as err:
            adm.precheck([DEFAULT_SIZE] * 32, None, ["analytic"])
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

    adm = asyncio.run(go()).admission
    assert adm.seconds_per_unit(FINISH) > 0.0  # decisions and response building were timed
    work = Work(CurveSize.of_query(_default_query(), 37), ("analytic",))
    adm.admit([work] * 10)
    per_curve = sum(shape_of(st).units(work.size) * adm.seconds_per_unit(st) for st in ("analytic", FINISH))
    assert adm.pending_s() == pytest.approx(10 * per_curve)


@pytest.mark.parametrize("keep_best", [True, False])
def test_recalibration_map_follows_what_result_means(monkeypatch, keep_best):
    """P(beat incumbent) is recalibrated with the map fitted for the same meaning of "result": the best
    checkpoint, or the value at the budget (keep_best_checkpoint=false)."""
    import curvecast.dataplane as dataplane_module
    from curvecast.decisions.calibration import recalibration_for as real

    asked: list[str] = []
    monkeypatch.setattr(dataplane_module, "recalibration_for", lambda engine, event: asked.append(event) or real(engine, event))
    q = _default_query()
    q = replace(q, incumbent=2.01, policy=replace(q.policy, keep_best_checkpoint=keep_best))
    _run(q)
    assert ("beat_incumbent" if keep_best else "beat_incumbent_last") in asked
    assert ("beat_incumbent_last" if keep_best else "beat_incumbent") not in asked
