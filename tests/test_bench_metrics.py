"""Scores behave as defined: calibration, normalisation, steps-to-target, aggregation."""

from __future__ import annotations

import numpy as np

from bench.data import CurveRecord
from bench.metrics import PIT_LEVELS, aggregate, pit_ece, score_task, steps_to_target
from bench.tasks import make_tasks
from curvecast.domain.curve import Goal
from curvecast.domain.distribution import Marginals


def _noisy_task(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, 101.0)
    mean = scale * (2.0 + 1.0 / np.sqrt(x))
    y = mean + scale * 0.05 * rng.standard_normal(len(x))
    rec = CurveRecord(f"r{seed}", "s", x, y, budget=100.0)
    (task,) = make_tasks([rec], (0.4,))
    return task, mean[len(task.x_obs) :], scale * 0.05


def test_calibrated_forecast_scores_better_than_overconfident():
    cal, over = [], []
    for seed in range(20):
        task, mean, sd = _noisy_task(seed)
        cal.append(score_task(task, Marginals.from_gaussian(task.x_true, mean, np.full(len(mean), sd)), "cal"))
        over.append(score_task(task, Marginals.from_gaussian(task.x_true, mean, np.full(len(mean), sd / 5)), "over"))
    a, b = aggregate(cal), aggregate(over)
    assert abs(a["cover90"] - 0.9) < 0.05 and abs(a["cover50"] - 0.5) < 0.07
    assert a["ece"] < 0.05 < b["ece"]
    assert b["cover90"] < 0.5
    assert a["ll"] > b["ll"] and a["crps"] < b["crps"]


def test_normalised_scores_are_scale_free():
    t1, m1, s1 = _noisy_task(7, scale=1.0)
    t2, m2, s2 = _noisy_task(7, scale=1000.0)
    a = score_task(t1, Marginals.from_gaussian(t1.x_true, m1, np.full(len(m1), s1)), "e")
    b = score_task(t2, Marginals.from_gaussian(t2.x_true, m2, np.full(len(m2), s2)), "e")
    assert abs(a.ll_norm - b.ll_norm) < 1e-6 and abs(a.ll - b.ll) > 1.0
    assert abs(a.crps_norm - b.crps_norm) < 1e-9 and abs(a.final_rel_err - b.final_rel_err) < 1e-9


def test_pit_ece_zero_for_uniform_and_large_for_biased():
    u = (np.arange(10000) + 0.5) / 10000
    assert pit_ece(u) < 0.01
    assert pit_ece(u * 0.5) > 0.2
    assert len(PIT_LEVELS) == 19


def test_steps_to_target_and_failure_on_wrong_length():
    x = np.arange(1.0, 21.0)
    y = 1.0 - 0.04 * x  # linear decrease: value 0.5 is first reached at x = 12.5 -> first x >= 13
    rec = CurveRecord("lin", "s", x, y, goal=Goal.MINIMIZE, budget=20.0)
    (task,) = make_tasks([rec], (0.4,))
    assert task.target is not None and task.target_x_true is not None
    exact = Marginals.from_gaussian(task.x_true, task.y_true, np.full(len(task.x_true), 1e-6))
    assert steps_to_target(exact, task) == task.target_x_true
    assert score_task(task, exact, "e").stt_err == 0.0
    late = Marginals.from_gaussian(task.x_true, task.y_true + 0.1, np.full(len(task.x_true), 1e-6))
    assert score_task(task, late, "e").stt_err > 0.0
    bad = Marginals.from_gaussian(task.x_true[:-1], task.y_true[:-1], np.full(len(task.x_true) - 1, 0.1))
    s = score_task(task, bad, "e")
    assert s.error is not None and aggregate([s])["n_failed"] == 1.0


def test_event_stats_brier_skill():
    from bench.metrics import event_stats

    outcomes = [True, False, True, True]
    perfect = event_stats([(1.0 if o else 0.0, o) for o in outcomes])
    assert perfect["brier"] == 0.0 and perfect["bss"] == 1.0 and perfect["ece"] == 0.0
    base = event_stats([(0.75, o) for o in outcomes])
    assert abs(base["bss"]) < 1e-12 and base["base_rate"] == 0.75
    wrong = event_stats([(0.0 if o else 1.0, o) for o in outcomes])
    assert wrong["bss"] < 0 and wrong["ece"] == 1.0


def test_peer_thresholds_exclude_own_curve():
    from bench.tasks import peer_thresholds

    recs = [CurveRecord(f"r{i}", "s", np.arange(1.0, 6.0), np.linspace(3.0, 1.0 + i, 5), meta={"group": "g"}) for i in range(4)]
    recs.append(CurveRecord("lonely", "s", np.arange(1.0, 6.0), np.linspace(3.0, 1.0, 5), meta={"group": "h"}))
    th = peer_thresholds(recs)
    assert "lonely" not in th
    assert th["r0"][0] == 3.0  # median of the others' finals 2, 3, 4
    assert th["r3"][0] == 2.0  # median of 1, 2, 3: its own final (4) does not count
    assert th["r0"][1] == np.quantile([2.0, 3.0, 4.0], 0.25)


def _task_with_truth(final_true: float, last_obs: float):
    x = np.arange(1.0, 11.0)
    y = np.concatenate([[3.0, 2.6, 2.3, 2.1, last_obs], np.linspace(last_obs, final_true, 6)[1:]])
    rec = CurveRecord("r", "s", x, y, budget=10.0)
    (task,) = make_tasks([rec], (0.5,))
    return task


def test_sanity_flags_name_each_absurd_answer_and_only_those():
    task = _task_with_truth(2.0, 2.05)
    truth = task.final_true
    sane = Marginals.from_gaussian(task.x_true, np.full(len(task.x_true), truth), np.full(len(task.x_true), 0.05))
    assert score_task(task, sane, "e").sanity == ()
    below = Marginals.from_gaussian(task.x_true, np.full(len(task.x_true), truth), np.full(len(task.x_true), 2.0))
    assert "below_floor" in score_task(task, below, "e").sanity  # a loss quantile under 0
    jump = Marginals.from_gaussian(task.x_true, np.full(len(task.x_true), 0.4 * truth), np.full(len(task.x_true), 0.2))
    assert "absurd_median" in score_task(task, jump, "e").sanity
    far = Marginals.from_gaussian(task.x_true, np.full(len(task.x_true), truth + 0.5), np.full(len(task.x_true), 0.05))
    flags = score_task(task, far, "e").sanity
    assert "far_miss" in flags and "absurd_median" not in flags
    agg = aggregate([score_task(task, m, "e") for m in (sane, below, jump, far)])
    assert agg["n_insane"] == 3 and agg["n_far_miss"] == 2 and agg["n_below_floor"] == 1
