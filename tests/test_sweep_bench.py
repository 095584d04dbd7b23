"""The sweeps benchmark with sweep context (issue 13): the policy sees the order's earlier runs as far
as they were trained, calibration scores P with context, and the ruler check compares with vs without."""

from __future__ import annotations

import numpy as np
import pytest

from bench import sweep_ruler as R
from bench import sweeps as S
from curvecast.domain.curve import Goal, XKind
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo
from curvecast.sweep import SweepParams

MECH = SweepParams(prior_siblings=2.0, agreement_power=1.0, shape_bandwidth=None, ratio_ridge=None)


def _task(n_runs=10, n_points=20, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, n_points + 1)
    runs = [S._make_run(str(i), x, 0.5 + (1.0 + 0.1 * i) * x**-0.7 + 1e-4 * rng.standard_normal(n_points), XKind.STEP, 3)
            for i in range(n_runs)]
    # the metric's ideal bound is the curves' common floor: every run moves alike on the log gap
    return S.SweepTask("synthetic", f"t{seed}", Goal.MINIMIZE, XKind.STEP, float(n_points), tuple(runs), lower_bound=0.5)


class Flat:
    """An engine that only knows the last value (no trend): siblings carry what it misses."""

    name = "flat"

    def info(self):
        return EngineInfo("flat", "0", "numpy")

    def forecast(self, queries):
        return [EngineForecast(Marginals.from_gaussian(q.x_query, np.full(len(q.x_query), q.curve.y[-1]),
                                                       np.full(len(q.x_query), 0.05)), "flat") for q in queries]


class Spy(S.CurvecastPolicy):
    def run(self, task, run, incumbent):
        self.seen.append([(s.run_id, len(s.curve.x), s.finished) for s in self.siblings])
        return super().run(task, run, incumbent)


def test_policy_with_sweep_sees_earlier_runs_as_far_as_they_went():
    task = _task()
    spy = Spy(S.ForecastCache(Flat()), S.PolicyKnobs(min_prob_beat_incumbent=0.2), name="spy", sweep=SweepParams())
    spy.seen = []
    orders = S.orders_for(task, 2, 5, seed=0)
    traces = S.simulate(task, spy, orders)
    first = spy.seen[:5]
    assert first[0] == []  # a new order starts without siblings
    idx = orders[0]
    for j in range(1, 5):
        assert [s[0] for s in first[j]] == [task.runs[int(i)].run_id for i in idx[:j]]
    assert spy.seen[5] == []
    # a stopped run is a sibling as far as it was trained, and not finished
    stopped = [s for seen in first for s in seen if s[1] < 20]
    assert traces[0].stopped_early == 0 or stopped
    assert all(not f for _, n, f in stopped)


def test_with_sweep_without_siblings_is_the_cached_forecast():
    task = _task()
    cache = S.ForecastCache(Flat())
    fc = cache.get(task, task.runs[0], 5)
    final, grid = S.with_sweep(fc, [], SweepParams(), task.budget)
    assert final is fc.final and grid is fc.grid
    sibs = [S.sibling_of(task, r, r.n_points) for r in task.runs[1:]]
    final, grid = S.with_sweep(fc, sibs, MECH, task.budget)
    truth = float(task.runs[0].y[-1])
    assert abs(float(final.quantile(0.5)[0]) - truth) < 0.5 * abs(float(fc.final.quantile(0.5)[0]) - truth)


def test_calibration_samples_include_the_context_probabilities():
    task = _task(n_runs=12)
    sample = S.calibration_samples(task, S.ForecastCache(Flat()), 8, seed=0)
    assert len(sample.p_beat_sweep) == len(sample.p_beat) > 0
    assert len(sample.y_beat_sweep) == len(sample.p_beat_sweep)
    assert sample.p_beat_sweep != sample.p_beat


def test_ruler_cases_leave_the_query_run_out_and_siblings_help_a_flat_engine():
    task = _task(n_runs=12)
    cases = R.cases_for(task, Flat(), 6, seed=0)
    assert cases and all(len(c.query.sweep.siblings) == len(task.runs) - 1 for c in cases)
    for c in cases:
        own = c.query.curve.y
        assert not any(np.array_equal(s.curve.y[: len(own)], own) for s in c.query.sweep.siblings)
    without, with_ = R.score(cases, None), R.score(cases, MECH)
    assert with_["median_error"] < 0.5 * without["median_error"]
    assert with_["n"] == without["n"] == len(cases)


def test_ruler_tune_picks_the_lowest_worst_ratio(monkeypatch):
    task = _task(n_runs=12)
    cases = R.cases_for(task, Flat(), 4, seed=0)
    monkeypatch.setattr(R, "GRID", {"max_weight": (0.05, 0.9)})
    params, history = R.tune(cases, lambda s: None)
    assert len(history) == 2 and params.max_weight == 0.9
    assert history[1]["mean"] < history[0]["mean"] < 1.0
