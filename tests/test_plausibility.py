"""Issue 12, item 3: the plausibility review every engine's answer passes before decisions."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from curvecast.dataplane import DataPlane
from curvecast.domain.curve import Curve, ForecastQuery, Goal, RunInfo
from curvecast.domain.distribution import LEVELS, Marginals
from curvecast.domain.plausibility import goal_contradiction, limits, review
from curvecast.engines.analytic import AnalyticEngine
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.engines.registry import EngineRegistry


def _loss_curve(n: int = 40, level: float = 2.7) -> Curve:
    x = np.arange(1.0, n + 1) * 100.0
    y = level + 3.0 * (x / 100.0) ** -0.8 + np.random.default_rng(0).normal(0, 0.005, n)
    return Curve(x=x, y=y, lower_bound=0.0)


def _query(curve: Curve, xq) -> ForecastQuery:
    return ForecastQuery(curve=curve, run=RunInfo(total_steps=float(np.max(xq))), x_query=np.asarray(xq, float))


def _rows(xq, quantile_rows) -> Marginals:
    """Marginals from a few (level, value) pairs per row, linear in between."""
    xs = np.asarray(xq, float)
    lv = np.array([0.001, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999])
    vals = np.stack([np.interp(LEVELS, lv, r) for r in quantile_rows])
    return Marginals.from_quantile_values(xs, vals)


# ---- limits ----------------------------------------------------------------------------------------
def test_limits_come_from_declared_bounds_or_the_values():
    x = np.arange(1.0, 11.0)
    assert limits(Curve(x, 3.0 - 0.1 * x)).lower == 0.0  # a loss that was never negative
    assert limits(Curve(x, 1.0 - 0.3 * x)).lower is None  # ... unless values are negative
    acc = limits(Curve(x, 0.5 + 0.03 * x, goal=Goal.MAXIMIZE))
    assert (acc.lower, acc.upper) == (0.0, 1.0) and "accuracy" in acc.why
    pct = limits(Curve(x, 50 + 3 * x, goal=Goal.MAXIMIZE, metric="top1_acc"))
    assert (pct.lower, pct.upper) == (0.0, 100.0)
    assert limits(Curve(x, 50 + 3 * x, goal=Goal.MAXIMIZE, metric="reward")).upper is None
    declared = limits(Curve(x, 0.5 + 0.03 * x, goal=Goal.MAXIMIZE, lower_bound=0.2, upper_bound=0.95))
    assert (declared.lower, declared.upper) == (0.2, 0.95)


def test_quantiles_respect_inferred_limits():
    x = np.arange(1.0, 31.0)
    acc = Curve(x, 0.95 - 0.5 * np.exp(-x / 5.0), goal=Goal.MAXIMIZE, metric="val_accuracy")
    xq = [40.0, 80.0]
    m = _rows(xq, [[0.90, 0.93, 0.95, 0.96, 0.97, 0.99, 1.08]] * 2)  # an accuracy above 100%
    out = review(_query(acc, xq), m)
    assert out.marginals.values.max() <= 1.0 and out.marginals.mean.max() <= 1.0
    np.testing.assert_array_equal(out.marginals.quantile(0.5), m.quantile(0.5))
    assert not out.warnings  # clipping a tail at a true limit needs no warning
    loss = _loss_curve()
    low = _rows([5000.0], [[-0.5, 2.75, 2.78, 2.8, 2.82, 2.85, 3.0]])
    assert review(_query(loss, [5000.0]), low).marginals.values.min() >= 0.0


# ---- degenerate answers ------------------------------------------------------------------------------
def test_a_lower_tail_collapsed_onto_the_floor_is_replaced():
    """The issue's WSD answer: median fine, q05 = 0 and q25 = 0.2 for a loss at 2.7."""
    curve = _loss_curve()
    xq = [4500.0, 6000.0]
    m = _rows(xq, [[2.70, 2.72, 2.75, 2.77, 2.79, 2.82, 2.9], [0.0, 0.0, 0.2, 2.6, 2.68, 2.75, 2.9]])
    out = review(_query(curve, xq), m)
    assert len(out.warnings) == 1 and "collapsed" in out.warnings[0] and "x=6000" in out.warnings[0]
    np.testing.assert_array_equal(out.marginals.values[0], m.values[0])  # the sane row is left alone
    fixed = out.marginals.at(1)
    assert fixed.quantile(0.05)[0] > 2.0 and fixed.quantile(0.25)[0] > 2.4
    assert fixed.quantile(0.5)[0] == pytest.approx(2.6, abs=0.02)  # the engine's median was plausible
    assert abs(fixed.mean[0] - 2.6) < 0.05  # the mean follows (it was 1.9 before)
    assert fixed.cdf(2.0)[0] < 0.05  # P(reach 2.0) no longer 0.3


def test_a_median_far_from_a_stable_curve_is_replaced():
    curve = _loss_curve(level=2.7)  # the last third moves by about 1%
    last = float(np.median(curve.y[-3:]))
    m = _rows([4400.0, 8000.0], [[2.70, 2.71, 2.715, 2.72, 2.725, 2.73, 2.8], [0.5, 1.0, 1.2, 1.3, 1.4, 1.5, 2.0]])
    out = review(_query(curve, [4400.0, 8000.0]), m)
    assert any("median far outside" in w for w in out.warnings)
    med = out.marginals.quantile(0.5)
    assert med[0] == m.quantile(0.5)[0] and abs(med[1] - last) < 0.05 * last
    assert np.all(np.diff(out.marginals.values, axis=1) >= 0)


def test_a_zero_width_band_is_widened():
    curve = _loss_curve()
    m = Marginals.from_quantile_values(np.array([6000.0]), np.full((1, len(LEVELS)), 2.75))
    out = review(_query(curve, [6000.0]), m)
    assert any("zero width" in w for w in out.warnings)
    lo, hi = out.marginals.quantile([0.05, 0.95])[0]
    assert hi - lo > 0 and out.marginals.quantile(0.5)[0] == pytest.approx(2.75)


def test_a_sane_engine_answer_passes_unchanged():
    curve = _loss_curve()
    xq = np.linspace(4100.0, 16000.0, 30)
    res = AnalyticEngine().forecast([_query(curve, xq)])[0]
    out = review(_query(curve, xq), res.marginals)
    assert out.warnings == ()
    np.testing.assert_array_equal(out.marginals.values, res.marginals.values)
    np.testing.assert_array_equal(out.marginals.mean, res.marginals.mean)


# ---- goal contradicting the curve ------------------------------------------------------------------------
def test_a_rising_accuracy_curve_with_goal_minimize_is_flagged():
    x = np.arange(1.0, 41.0)
    acc = 0.9 - 0.6 * np.exp(-x / 10.0) + np.random.default_rng(1).normal(0, 0.004, len(x))
    note = goal_contradiction(Curve(x, acc))  # goal=minimize is the default
    assert "goal=maximize" in note and "accuracy-like" in note and "first point" in note
    assert goal_contradiction(Curve(x, acc, goal=Goal.MAXIMIZE)) == ""
    assert goal_contradiction(Curve(x, 2.0 + 3.0 / x)) == ""  # a falling loss is fine
    assert goal_contradiction(Curve(x, 2.0 + 3.0 / x, goal=Goal.MAXIMIZE, metric="val_loss")).count("goal=minimize") == 1
    # an overfitting loss that falls first and then rises is not "steadily" worse
    assert goal_contradiction(Curve(x, 2.0 + 0.002 * (x - 15.0) ** 2)) == ""


# ---- wired into the data plane, before decisions -------------------------------------------------------
class _CollapsedEngine:
    """Answers every x with the issue's collapsed lower tail."""

    name = "analytic"

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, "test", "test")

    def forecast(self, queries):
        out = []
        for q in queries:
            x = np.asarray(q.x_query, float)
            row = [0.0, 0.0, 0.2, 2.6, 2.68, 2.75, 2.9]
            out.append(EngineForecast(_rows(x, [row] * len(x)), self.name))
        return out


def _serve(engine, query):
    reg = EngineRegistry()
    reg.put(engine)

    async def go():
        dp = DataPlane(reg, ThreadPoolExecutor(1))
        try:
            return await dp.forecast(query)
        finally:
            await dp.close()

    return asyncio.run(go())


def test_the_data_plane_repairs_answers_before_deciding():
    curve = _loss_curve()
    q = ForecastQuery(curve=curve, run=RunInfo(total_steps=8000.0), x_query=np.array([6000.0, 8000.0]), target=2.0)
    res = _serve(_CollapsedEngine(), q)
    assert any("collapsed" in w for w in res.warnings)
    assert res.final.quantile(0.05)[0] > 2.0
    assert res.compute_to_target is not None and res.compute_to_target.p_within_budget < 0.05


def test_the_data_plane_warns_when_the_goal_contradicts_the_curve():
    x = np.arange(1.0, 41.0) * 10.0
    acc = 0.9 - 0.6 * np.exp(-x / 100.0)
    q = ForecastQuery(curve=Curve(x, acc, metric="accuracy"), run=RunInfo(total_steps=1000.0),
                      x_query=np.array([600.0, 1000.0]))
    res = _serve(AnalyticEngine(), q)
    assert any("goal=maximize" in w for w in res.warnings)


def test_a_curve_that_never_moved_gets_a_band_that_lets_it_move():
    """A stalled run (the same value again and again, e.g. a log-loss stuck at one value) has no noise
    to size its band from; a zero-width answer would miss any change by more than its own width."""
    x = np.arange(1.0, 9.0) * 10.0
    curve = Curve(x=x, y=np.full(len(x), 2.733), lower_bound=0.0)
    xq = np.array([160.0, 800.0])
    flat = _rows(xq, [[2.733] * 7, [2.733] * 7])
    out = review(_query(curve, xq), flat)
    width = out.marginals.quantile(0.95) - out.marginals.quantile(0.05)
    lh = np.log(xq / 80.0)
    assert np.allclose(width, 0.2 * lh * 2.733, rtol=0.02)  # grows with the horizon, from the level
    assert out.marginals.quantile(0.5) == pytest.approx([2.733, 2.733])
    assert any("has not moved at all" in w for w in out.warnings)
    # a curve that moves, however little, keeps its noise-sized widening
    moving = Curve(x=x, y=2.733 + 1e-4 * np.sin(x), lower_bound=0.0)
    assert not any("has not moved" in w for w in review(_query(moving, xq), flat).warnings)


def test_a_loss_stuck_at_zero_keeps_room_to_rise():
    """A validation log-loss that fell to exactly 0 and stayed there (perfect fit so far): the band must
    not collapse onto 0, or the first tiny rise costs the forecast billions of nats."""
    x = np.arange(1.0, 21.0)
    y = np.concatenate([np.linspace(5.0, 0.5, 8), np.zeros(12)])
    curve = Curve(x=x, y=y, lower_bound=0.0)
    xq = np.array([40.0, 200.0])
    zero = _rows(xq, [[0.0] * 7, [0.0] * 7])
    out = review(_query(curve, xq), zero)
    hi = out.marginals.quantile(0.95)
    assert np.all(hi > 0.0) and hi[1] > hi[0]
    assert out.marginals.quantile(0.5) == pytest.approx([0.0, 0.0], abs=0.02)
    assert np.all(out.marginals.quantile(0.001) >= 0.0)  # the floor still holds
