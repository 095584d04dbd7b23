"""Sweep context (issue 13): the wire fields, their validation, admission cost, the sibling model and the
data plane step. Without siblings the answer is bit for bit what it was."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast.admission import CurveSize
from curvecast.dataplane import DataPlane, DataPlaneSettings
from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo, SiblingRun, StopPolicy, SweepContext
from curvecast.domain.distribution import Marginals
from curvecast.domain.errors import InvalidRequest
from curvecast.domain.validation import Limits
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry
from curvecast.server import converters
from curvecast.sweep import SweepParams, apply_sweep

BUDGET = 50.0
XS = np.arange(1.0, 51.0)
# the mechanics, without the tuned constants' caution (few siblings weigh little with the defaults)
MECH = SweepParams(prior_siblings=2.0, agreement_power=1.0, shape_bandwidth=None, ratio_ridge=None)


def _loss(a: float, x: np.ndarray) -> np.ndarray:
    return 0.5 + a * x**-0.7  # every run of the sweep: the same shape, its own level


def _request(n_siblings: int = 4, **sib_kw) -> pb.ForecastRequest:
    req = pb.ForecastRequest(curve=pb.Curve(x=XS[:10], values=_loss(1.0, XS[:10]), lower_bound=0.0),
                             run=pb.RunInfo(total_steps=BUDGET))
    req.sweep.sweep_id = "study-1"
    for i in range(n_siblings):
        s = req.sweep.siblings.add(run_id=f"t{i}", finished=True, **sib_kw)
        s.curve.x.extend(XS)
        s.curve.values.extend(_loss(1.0 + 0.05 * i, XS))
        s.curve.lower_bound = 0.0
    return req


def _violations(req: pb.ForecastRequest, limits: Limits = Limits()) -> dict[str, str]:
    try:
        converters.forecast_query(req, limits, StopPolicy())
    except InvalidRequest as exc:
        return {v.field: v.description for v in exc.violations}
    return {}


# ---- wire and validation ---------------------------------------------------------------------------
def test_wire_context_becomes_domain_siblings():
    req = _request(3)
    req.sweep.siblings[1].budget = 100.0
    req.sweep.siblings[2].hyperparameters["lr"] = 0.01
    q = converters.forecast_query(req, Limits(), StopPolicy())
    assert q.sweep.sweep_id == "study-1"
    assert [s.run_id for s in q.sweep.siblings] == ["t0", "t1", "t2"]
    assert [s.budget for s in q.sweep.siblings] == [BUDGET, 100.0, BUDGET]  # unset: the run's total_steps
    assert q.sweep.siblings[2].hyperparameters == {"lr": 0.01}
    assert q.sweep.siblings[0].finished and q.sweep.siblings[0].curve.lower_bound == 0.0


def test_request_without_context_has_none():
    req = _request(0)
    req.ClearField("sweep")
    assert converters.forecast_query(req, Limits(), StopPolicy()).sweep is None


def test_bad_sibling_fields_are_named():
    req = _request(4)
    req.sweep.siblings[1].curve.values[3] = float("nan")  # NaN in the middle, not trailing
    req.sweep.siblings[2].curve.goal = pb.GOAL_MAXIMIZE
    req.sweep.siblings[3].budget = -1.0
    req.sweep.siblings[0].hyperparameters["wd"] = float("inf")
    bad = _violations(req)
    assert set(bad) == {"sweep.siblings[1].curve.values[3]", "sweep.siblings[2].curve.goal",
                        "sweep.siblings[3].budget", "sweep.siblings[0].hyperparameters"}
    assert "MINIMIZE" in bad["sweep.siblings[2].curve.goal"]


def test_sibling_budget_needed_without_run_budget():
    req = _request(1)
    req.run.ClearField("total_steps")
    assert "sweep.siblings[0].budget" in _violations(req)


def test_sibling_count_and_point_limits():
    assert set(_violations(_request(4), replace(Limits(), max_sweep_siblings=3))) == {"sweep.siblings"}
    bad = _violations(_request(4), replace(Limits(), max_sweep_points=150))
    assert "200 curve points" in bad["sweep.siblings"]
    assert _violations(_request(3), replace(Limits(), max_sweep_siblings=3, max_sweep_points=150)) == {}


def test_sibling_points_count_in_admission():
    q = converters.forecast_query(_request(4), Limits(), StopPolicy())
    assert CurveSize.of_query(q, 0).n_points == 10 + 4 * 50
    assert CurveSize.of_query(replace(q, sweep=None), 0).n_points == 10


# ---- the model -------------------------------------------------------------------------------------
def _query(siblings, n_obs: int = 10, a: float = 1.0) -> ForecastQuery:
    ctx = None if siblings is None else SweepContext("s", tuple(siblings))
    return ForecastQuery(Curve(XS[:n_obs], _loss(a, XS[:n_obs]), lower_bound=0.0), RunInfo(total_steps=BUDGET),
                         np.array([5.0, 10.0, 20.0, 50.0]), sweep=ctx)


def _sibs(levels, reach: int = 50):
    return [SiblingRun(f"s{i}", Curve(XS[:reach], _loss(a, XS[:reach]), lower_bound=0.0), BUDGET, reach == 50)
            for i, a in enumerate(levels)]


def _engine(q: ForecastQuery) -> Marginals:  # an engine that is too pessimistic at the budget
    return Marginals.from_gaussian(q.x_query, np.full(len(q.x_query), 0.8), np.full(len(q.x_query), 0.05))


def test_siblings_pull_the_forecast_towards_what_they_did():
    sibs = _sibs([0.9, 0.95, 1.0, 1.05, 1.1, 1.15])
    q = _query(sibs)
    eng = _engine(q)
    out = apply_sweep(q, eng, MECH)
    truth = float(_loss(1.0, np.array([BUDGET]))[0])
    before = abs(float(eng.quantile(0.5)[-1]) - truth)
    after = abs(float(out.marginals.quantile(0.5)[-1]) - truth)
    assert after < 0.5 * before
    assert out.details["sweep_siblings"] == 6 and 0 < out.details["sweep_weight_at_budget"] <= 0.9
    np.testing.assert_array_equal(out.marginals.values[:2], eng.values[:2])  # x <= last observed: unchanged


def test_more_and_agreeing_siblings_weigh_more():
    q_few, q_many = _query(_sibs([1.0, 1.02, 0.98])), _query(_sibs(np.linspace(0.98, 1.02, 12)))
    q_spread = _query(_sibs([0.3, 3.0, 0.5, 2.0, 1.0, 0.7, 1.5, 0.4, 2.5, 0.6, 1.2, 0.9]))
    w = {k: apply_sweep(q, _engine(q), MECH).details["sweep_weight_at_budget"]
         for k, q in {"few": q_few, "many": q_many, "spread": q_spread}.items()}
    assert w["many"] > w["few"] and w["many"] > w["spread"]


def test_without_siblings_the_same_object_comes_back():
    for q in (_query(None), _query([])):
        eng = _engine(q)
        out = apply_sweep(q, eng)
        assert out.marginals is eng and out.warnings == ()


def test_too_few_covering_siblings_keep_the_engine_and_say_so():
    q = _query(_sibs([1.0, 1.1]))
    eng = _engine(q)
    out = apply_sweep(q, eng)
    assert out.marginals is eng
    assert "sweep context not used" in out.warnings[0] and "2 of 2" in out.warnings[0]


def test_siblings_short_of_an_x_do_not_speak_for_it():
    q = _query(_sibs([0.9, 1.0, 1.1, 1.2], reach=25))  # running siblings, at 50% of the budget
    eng = _engine(q)
    out = apply_sweep(q, eng, MECH)
    np.testing.assert_array_equal(out.marginals.values[-1], eng.values[-1])  # the budget: nobody reached it
    assert not np.array_equal(out.marginals.values[2], eng.values[2])  # x = 20: all four reached it


def test_maximize_with_upper_bound_keeps_quantiles_ordered():
    acc = lambda a, x: 0.95 - a * x**-0.5  # noqa: E731
    sibs = [SiblingRun(f"s{i}", Curve(XS, acc(a, XS), goal=Goal.MAXIMIZE, upper_bound=1.0), BUDGET, True)
            for i, a in enumerate([0.4, 0.45, 0.5, 0.55])]
    q = ForecastQuery(Curve(XS[:10], acc(0.5, XS[:10]), goal=Goal.MAXIMIZE, upper_bound=1.0),
                      RunInfo(total_steps=BUDGET), np.array([20.0, 50.0]), sweep=SweepContext("s", tuple(sibs)))
    eng = Marginals.from_gaussian(q.x_query, np.full(2, 0.7), np.full(2, 0.05))
    m = apply_sweep(q, eng, MECH).marginals
    assert np.all(np.diff(m.values, axis=1) >= 0) and np.all(m.values <= 1.0)
    assert abs(float(m.quantile(0.5)[-1]) - acc(0.5, 50.0)) < abs(0.7 - acc(0.5, 50.0))


# ---- the data plane --------------------------------------------------------------------------------
class _Engine:
    name = "analytic"

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        return [EngineForecast(Marginals.from_gaussian(q.x_query, 0.5 + 1.0 / q.x_query, np.full(len(q.x_query), 0.02)),
                               self.name) for q in queries]


def _answer(q: ForecastQuery):
    reg = EngineRegistry()
    reg.put(_Engine())

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(1), replace(DataPlaneSettings(), retime_first_batch=False))
        try:
            return await dp.forecast(q)
        finally:
            await dp.close()

    return asyncio.run(go())


def test_dataplane_answer_without_siblings_is_bit_for_bit_the_same():
    base = _answer(_query(None))
    for q in (_query([]), replace(_query(None), sweep=SweepContext("empty"))):
        got = _answer(q)
        assert got.predictions.values.tobytes() == base.predictions.values.tobytes()
        assert got.final.values.tobytes() == base.final.values.tobytes()
        assert got.recommendation == base.recommendation and got.warnings == base.warnings


def test_dataplane_applies_the_siblings_before_decisions():
    # the engine says 0.52 at the budget, 30 siblings that the run resembles say about 0.57
    base = _answer(replace(_query(None), incumbent=0.54))
    got = _answer(replace(_query(_sibs(np.linspace(0.95, 1.05, 30))), incumbent=0.54))
    assert not np.array_equal(got.final.values, base.final.values)
    assert got.recommendation.p_beat_incumbent < base.recommendation.p_beat_incumbent


# ---- the real server -------------------------------------------------------------------------------
def test_real_server_answers_with_siblings_and_names_a_bad_one(server):
    from curvecast_client import Client, CurvecastError
    from curvecast_client._types import Sibling

    sibs = [Sibling(f"t{i}", tuple(XS), tuple(_loss(1.0 + 0.05 * i, XS))) for i in range(6)]
    x, y = XS[:10].tolist(), _loss(1.0, XS[:10]).tolist()
    with Client(server.address) as c:
        plain = c.forecast(x, y, total_steps=BUDGET, lower_bound=0.0, incumbent=0.55)
        again = c.forecast(x, y, total_steps=BUDGET, lower_bound=0.0, incumbent=0.55, sweep_id="empty", siblings=[])
        swept = c.forecast(x, y, total_steps=BUDGET, lower_bound=0.0, incumbent=0.55, siblings=sibs)
        bad = sibs[:2] + [Sibling("t9", (1.0, 2.0), (0.9, float("nan")))]
        bad_mid = [Sibling("t9", (1.0, 2.0, 3.0), (0.9, float("nan"), 0.8))]
        with pytest.raises(CurvecastError) as exc:
            c.forecast(x, y, total_steps=BUDGET, lower_bound=0.0, siblings=bad_mid)
        trailing = c.forecast(x, y, total_steps=BUDGET, lower_bound=0.0, siblings=bad)  # diverged sibling: fine
    assert [p.quantiles for p in again.predictions] == [p.quantiles for p in plain.predictions]
    truth = float(_loss(1.0, np.array([BUDGET]))[0])
    assert swept.final.quantiles != plain.final.quantiles  # the siblings were used ...
    assert abs(swept.final.quantiles[0.5] - truth) < 0.01  # ... and agree with the (near exact) engine
    assert exc.value.code == "INVALID_ARGUMENT"
    assert [v.field for v in exc.value.violations] == ["sweep.siblings[0].curve.values[1]"]
    assert trailing.final.quantiles


def test_the_server_publishes_its_sweep_limits_and_refuses_beyond_them(server):
    from curvecast_client import Client, CurvecastError
    from curvecast_client._types import Sibling

    from curvecast.domain.validation import Limits

    limits = Limits()
    with Client(server.address) as c:
        info = c.model_info()
        assert info.sweep_limits == {"max_siblings": limits.max_sweep_siblings, "max_points": limits.max_sweep_points}
        too_many = [Sibling(f"t{i}", (1.0, 2.0), (1.0, 0.9)) for i in range(limits.max_sweep_siblings + 1)]
        with pytest.raises(CurvecastError) as exc:
            c.forecast(XS[:10].tolist(), _loss(1.0, XS[:10]).tolist(), total_steps=BUDGET, siblings=too_many)
    assert exc.value.code == "INVALID_ARGUMENT"
    assert [v.field for v in exc.value.violations] == ["sweep.siblings"]
