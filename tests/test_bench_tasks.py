"""Tasks never expose the points they are scored on."""

from __future__ import annotations

import dataclasses

import numpy as np

from bench.data import CurveRecord, synthetic_curves
from bench.tasks import CUTOFFS, make_tasks


def test_no_task_sees_its_held_out_points():
    recs = synthetic_curves(9, seed=0)
    tasks = make_tasks(recs)
    assert len(tasks) > 0
    by_id = {r.run_id: r for r in recs}
    for t in tasks:
        rec = by_id[t.run_id]
        q = t.query
        cut_x = t.cutoff * rec.budget
        assert np.all(q.curve.x <= cut_x + 1e-9)
        assert np.all(t.x_true > cut_x)
        assert len(np.intersect1d(q.curve.x, t.x_true)) == 0
        np.testing.assert_array_equal(q.x_query, t.x_true)
        n = len(q.curve.x)
        np.testing.assert_array_equal(q.curve.y, rec.y[:n])
        np.testing.assert_array_equal(t.y_true, rec.y[n:])
        if q.curve.lr is not None:
            assert len(q.curve.lr) == n
        assert q.target is None  # the steps-to-target target comes from the truth: never sent


def test_queries_do_not_depend_on_held_out_values():
    rec = synthetic_curves(3, seed=5)[0]
    poisoned_y = rec.y.copy()
    poisoned_y[len(rec.y) // 2 :] += 1000.0
    poisoned = dataclasses.replace(rec, y=poisoned_y)
    for a, b in zip(make_tasks([rec], (0.1, 0.2, 0.4)), make_tasks([poisoned], (0.1, 0.2, 0.4))):
        np.testing.assert_array_equal(a.query.curve.x, b.query.curve.x)
        np.testing.assert_array_equal(a.query.curve.y, b.query.curve.y)
        np.testing.assert_array_equal(a.query.x_query, b.query.x_query)
        assert a.query.run == b.query.run


def test_cutoffs_and_skips():
    rec = CurveRecord("r", "s", np.arange(1.0, 11.0), np.linspace(2.0, 1.0, 10), budget=10.0)
    tasks = make_tasks([rec])
    # 10% of 10 observes 1 point (< 2): skipped; 20/40/80% observe 2/4/8 points
    assert [t.cutoff for t in tasks] == [c for c in CUTOFFS if c >= 0.2]
    assert [len(t.query.curve.x) for t in tasks] == [2, 4, 8]
    assert all(t.query.run.total_steps == 10.0 for t in tasks)
    # a curve that ends before the cutoff has nothing to predict
    short = CurveRecord("s", "s", np.arange(1.0, 4.0), np.array([3.0, 2.0, 1.0]), budget=100.0)
    assert make_tasks([short]) == []


def test_target_is_better_than_prefix_and_reached_by_truth():
    for t in make_tasks(synthetic_curves(9, seed=0)):
        if t.target is None:
            continue
        sign = t.query.curve.goal.sign
        assert sign * t.target < np.min(sign * t.y_obs)
        if t.target_x_true is not None:
            i = int(np.searchsorted(t.x_true, t.target_x_true))
            assert sign * t.y_true[i] <= sign * t.target + 1e-12
            assert np.all(sign * t.y_true[:i] > sign * t.target)


def test_a_raw_log_is_scored_on_its_final_truth_and_a_bounded_held_out_sample():
    """Raw per-step logs: the final value is the mean of the last losses, not the noisy last one, and
    thousands of held-out steps are scored on MAX_HELD_OUT evenly spaced ones (the last always kept)."""
    from bench.tasks import MAX_HELD_OUT

    x = np.arange(1.0, 5001.0)
    y = 3.0 + x**-0.3 + np.random.default_rng(0).normal(0, 0.1, len(x))
    rec = CurveRecord("raw", "s", x, y, meta={"final_truth": float(np.mean(y[-100:]))})
    (task,) = make_tasks([rec], (0.4,))
    assert len(task.x_true) == MAX_HELD_OUT and task.x_true[-1] == 5000.0
    assert np.all(np.diff(task.x_true) > 0) and task.x_true[0] > 2000.0
    assert task.final_true == rec.final == float(np.mean(y[-100:]))
    assert task.final_true != task.y_true[-1]
