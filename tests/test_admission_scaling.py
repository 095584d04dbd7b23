"""Scaling-law fits are admitted like forecasts (one at a time, refused up front when they would outlast
their deadline) and stopped cooperatively: a cancelled token stops the worker at its next objective
evaluation, whether the deadline passed, the caller left or the server drains.

Tests wait for events (the token's first check, the worker's release of its slot, the process exit),
never for a sleep to be long enough; "stopped at once" is shown by counting the worker's steps after
the cancel, not by timing them."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ServerProcess
from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.errors import DeadlineExceeded, Overloaded
from curvecast.engines.registry import EngineRegistry
from curvecast.scaling import ScalingPoint, fit_scaling_law
from curvecast.scaling.cancel import CALLER_GONE, SHUTDOWN, Cancelled, CancelToken
from curvecast_client import AsyncClient, Client, CurvecastError

# 5,000 points x 2,000 replicates (the points x replicates limit): tens of seconds of fitting
LONG = dict(n=5_000, bootstrap=2_000)


def points(n: int, seed: int = 0) -> list[ScalingPoint]:
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(7, 10, n)
    D = N * 10 ** rng.uniform(0.5, 2.5, n)
    L = (1.8 + 480 / N**0.35 + 2100 / D**0.37) * np.exp(rng.normal(0, 0.01, n))
    return [ScalingPoint(float(a), float(b), float(c), run_id=f"r{i // 5}") for i, (a, b, c) in enumerate(zip(N, D, L))]


def run_in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


# ---- the fit itself ----------------------------------------------------------------------------------
def test_cancelled_token_stops_the_fit_at_its_next_evaluation():
    token = CancelToken()
    worker, out = run_in_thread(lambda: fit_scaling_law(points(LONG["n"]), bootstrap=LONG["bootstrap"], cancel=token))
    assert token.started.wait(30)  # the fit is computing
    while token.checks < 50:  # well into it (past the start grid), still far from done
        time.sleep(0.001)
    token.cancel(CALLER_GONE, "test")
    at_cancel = token.checks
    worker.join(60)
    assert not worker.is_alive()
    assert isinstance(out.get("error"), Cancelled) and out["error"].reason == CALLER_GONE
    assert token.checks - at_cancel <= 1  # it stopped at the very next check: no more work


def test_deadline_passing_during_the_fit_stops_it():
    token = CancelToken(deadline=time.monotonic() + 0.3)
    worker, out = run_in_thread(lambda: fit_scaling_law(points(LONG["n"]), bootstrap=LONG["bootstrap"], cancel=token))
    worker.join(60)  # the fit alone would take tens of seconds
    assert not worker.is_alive()
    assert isinstance(out.get("error"), DeadlineExceeded)


def test_a_token_that_is_never_cancelled_changes_nothing():
    pts = points(300)
    plain = fit_scaling_law(pts, bootstrap=5)
    watched = fit_scaling_law(pts, bootstrap=5, cancel=CancelToken(deadline=time.monotonic() + 600))
    assert plain.params == watched.params and plain.intervals == watched.intervals


# ---- the data plane ------------------------------------------------------------------------------------
def dataplane(**settings) -> DataPlane:
    return DataPlane(EngineRegistry(), ThreadPoolExecutor(1), scaling_executor=ThreadPoolExecutor(2),
                     settings=DataPlaneSettings(**settings))


async def started_fit(dp: DataPlane, deadline: float | None = None) -> tuple[asyncio.Task, CancelToken]:
    task = asyncio.ensure_future(dp.fit_scaling_law(points(LONG["n"]), "chinchilla", LONG["bootstrap"], deadline))
    loop = asyncio.get_running_loop()
    while not dp.running_fits:  # admitted
        await asyncio.sleep(0)
    (token,) = dp.running_fits
    assert await loop.run_in_executor(None, token.started.wait, 30)  # and computing
    return task, token


def test_cancelled_caller_stops_the_worker_and_frees_the_slot():
    async def go():
        dp = dataplane()
        task, token = await started_fit(dp)
        task.cancel()  # what grpc.aio does to the handler when the client cancels or its deadline passes
        with pytest.raises(asyncio.CancelledError):
            await task
        at_cancel = token.checks
        idle = await asyncio.get_running_loop().run_in_executor(None, dp.fit_admission.wait_idle, 60)
        after = token.checks - at_cancel
        small = await dp.fit_scaling_law(points(60), "chinchilla", 5)  # the slot is free again
        await dp.close()
        return idle, token.reason, after, small

    idle, reason, after, small = asyncio.run(go())
    assert idle and reason == CALLER_GONE
    assert after <= 1
    assert small.n_runs == 12  # answered: 60 points in 12 runs


def test_busy_fit_slot_refuses_with_a_retry_hint():
    async def go():
        dp = dataplane(max_concurrent_fits=1)
        task, _ = await started_fit(dp)
        with pytest.raises(Overloaded) as err:
            await dp.fit_scaling_law(points(60), "chinchilla", 5)
        with pytest.raises(Overloaded):  # the servicer's check before decoding a request says the same
            dp.precheck_fit(60, 5, "chinchilla")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(None, dp.fit_admission.wait_idle, 60)
        await dp.close()
        return err.value

    refusal = asyncio.run(go())
    assert "busy" in str(refusal) and refusal.retry_after_s > 0


def test_the_one_data_plane_call_admits_before_decoding_and_passes_the_options():
    from curvecast.scaling.fit import ScalingInput

    decoded: list[int] = []

    def decode(pts, **opts):
        def run() -> ScalingInput:
            decoded.append(len(pts))
            return ScalingInput(points=pts, bootstrap=0, **opts)
        return run

    async def go():
        dp = dataplane(max_concurrent_fits=1)
        task, _ = await started_fit(dp)
        with pytest.raises(Overloaded) as busy:  # refused from the counts: the request is never decoded
            await dp.fit_scaling_request(60, 5, "chinchilla", decode(points(60)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(None, dp.fit_admission.wait_idle, 60)
        with pytest.raises(Overloaded) as late:  # hopeless for its deadline: not decoded either
            await dp.fit_scaling_request(100_000, 100, "chinchilla", decode([]), time.monotonic() + 1.0)
        pts = points(60)
        pts[0] = ScalingPoint(pts[0].n_params, pts[0].tokens, pts[0].loss, pts[0].run_id, weight=0.0)
        inp, fit = await dp.fit_scaling_request(60, None, "chinchilla",
                                                decode(pts, drop_early_fraction=0.0, huber_delta=1.0, isoflop=True))
        await dp.close()
        return busy.value, late.value, inp, fit

    busy, late, inp, fit = asyncio.run(go())
    assert "busy" in str(busy) and "deadline" in str(late) and decoded == [60]
    assert fit.huber_delta == 1.0 and fit.drop_early_fraction == 0.0 and fit.dropped == {"zero_weight": 1}
    assert fit.isoflop is not None and inp.points[0].weight == 0.0


def test_fit_that_cannot_make_its_deadline_is_refused_before_it_starts():
    async def go():
        dp = dataplane()
        many = points(100_000)
        with pytest.raises(Overloaded) as err:  # 100,000 points x 100 replicates: far more than 1 s here
            await dp.fit_scaling_law(many, "chinchilla", 100, time.monotonic() + 1.0)
        ran = dp.fit_admission.running, dp.running_fits
        await dp.close()
        return err.value, ran

    refusal, ran = asyncio.run(go())
    assert "deadline" in str(refusal) and ran == (0, ())  # refused up front: no fit was started for it


def test_closing_the_data_plane_stops_running_fits():
    async def go():
        dp = dataplane()
        task, token = await started_fit(dp)
        await dp.close()  # the server drains: after its grace period app.py closes the data plane
        with pytest.raises(Cancelled) as err:
            await task
        idle = await asyncio.get_running_loop().run_in_executor(None, dp.fit_admission.wait_idle, 60)
        with pytest.raises(Cancelled):  # nothing new starts while closing
            await dp.fit_scaling_law(points(60), "chinchilla", 5)
        return err.value.reason, idle

    assert asyncio.run(go()) == (SHUTDOWN, True)


# ---- the real server ------------------------------------------------------------------------------------
def _wire(pts: list[ScalingPoint]) -> list[dict]:
    return [dict(n_params=p.n_params, tokens=p.tokens, loss=p.loss, run_id=p.run_id) for p in pts]


def test_sigterm_stops_a_running_fit_after_the_grace_period():
    # one worker process: with several sharing the port the probe may land on another worker's free slot
    server = ServerProcess("--grace-s", "1", "--workers", "1").wait_ready()
    try:
        outcome: dict = {}

        async def call() -> None:
            async with AsyncClient(server.address, retries=0, timeout=300) as c:
                try:
                    outcome["fit"] = await c.fit_scaling_law(_wire(points(LONG["n"])), bootstrap=LONG["bootstrap"],
                                                             timeout=300)
                except CurvecastError as exc:
                    outcome["error"] = exc

        worker, _ = run_in_thread(lambda: asyncio.run(call()))
        # wait until the fit holds the slot (state, not time): a probe that cannot make its 1 s deadline
        # is refused up front ("deadline") while the slot is free, and as "busy" once the fit runs
        busy = False
        probe = _wire(points(LONG["n"]))
        with Client(server.address, retries=0) as c:
            while not busy and not outcome:
                with pytest.raises(CurvecastError) as err:
                    c.fit_scaling_law(probe, bootstrap=LONG["bootstrap"], timeout=1.0)
                assert err.value.code == "RESOURCE_EXHAUSTED", err.value
                busy = "busy" in err.value.message
        assert busy, outcome  # the long fit was admitted and is running
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert server.proc.wait(60) == 0
        exited_in = time.monotonic() - signalled
        worker.join(30)
        assert "fit" not in outcome and outcome["error"].code in ("UNAVAILABLE", "CANCELLED")
        # the fit needs tens of seconds; the process left after its 1 s grace, not after the fit
        assert exited_in < 20, exited_in
    finally:
        server.stop()
