"""The shared core of the integrations: asks the real server, fails open, never imports heavy libraries."""

from __future__ import annotations

import math
import pickle
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, free_port

from curvecast_client import Client
from curvecast_client.integrations import Advisor
from curvecast_client.integrations._advisor import RunTracker, prepare_curve

DIVERGING = [1.0, 0.8, 0.6, 5.0, 6.0, 7.0]
HEALTHY = [1.0, 0.5, 0.34, 0.26, 0.21, 0.18]


class BlackHole:
    """A port that accepts TCP connections and never answers: a service that is too slow."""

    def __enter__(self) -> str:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_base_sdk_and_integrations_package_import_no_heavy_library():
    code = ("import sys, curvecast_client, curvecast_client.integrations; "
            "print(','.join(m for m in ('optuna', 'ray', 'torch', 'lightning', 'keras', 'transformers', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'client'}", "PATH": ""}, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_prepare_curve_sorts_dedupes_and_cuts_at_first_non_finite():
    xs, ys = prepare_curve([3, 1, 2, 2, 4, 5], [0.3, 0.1, 0.9, 0.2, math.inf, 0.5], max_points=100)
    assert xs == [1.0, 2.0, 3.0, 4.0]
    assert ys[:3] == [0.1, 0.2, 0.3] and math.isnan(ys[3])


def test_prepare_curve_thins_long_histories_keeping_both_ends():
    xs, ys = prepare_curve(range(1, 10_001), [1.0 / i for i in range(1, 10_001)], max_points=50)
    assert len(xs) == 50 and xs[0] == 1.0 and xs[-1] == 10_000.0
    assert all(b > a for a, b in zip(xs, xs[1:]))
    assert all(y == pytest.approx(1.0 / x) for x, y in zip(xs, ys))


def test_diverging_run_is_told_to_stop(server):
    advice = Advisor(server.address, timeout=5).advise(range(1, 7), DIVERGING, total_steps=20)
    assert advice.answered and advice.stop
    assert advice.recommendation.action == "stop_diverged"
    assert "diverged" in advice.reason


def test_healthy_run_continues_and_stop_on_filters_actions(server):
    advisor = Advisor(server.address, timeout=5)
    assert not advisor.advise(range(1, 7), HEALTHY, total_steps=50).stop
    only_target = Advisor(Client(server.address), timeout=5, stop_on={"target_reached"})
    advice = only_target.advise(range(1, 7), DIVERGING, total_steps=20)
    assert advice.recommendation.action == "stop_diverged" and not advice.stop


def test_budget_before_the_last_point_is_raised_to_it_and_bad_input_fails_open(server):
    advisor = Advisor(server.address, timeout=5)
    assert advisor.advise(range(1, 7), DIVERGING, total_steps=3).answered  # the service would reject 3 < 6
    nothing = advisor.advise([1, 2], [math.nan, 1.0])
    assert not nothing.answered and nothing.error == "no finite history to send"
    broken = advisor.advise([1, 2, 3], [1.0, None, 0.5])
    assert not broken.answered and "TypeError" in broken.error


def test_unreachable_service_fails_open_then_cools_down():
    advisor = Advisor(f"127.0.0.1:{free_port()}", timeout=0.5, cooldown_s=60)
    first = advisor.advise(range(1, 7), DIVERGING)
    assert not first.answered and not first.stop and "UNAVAILABLE" in first.error
    t0 = time.perf_counter()
    second = advisor.advise(range(1, 7), DIVERGING)
    assert not second.answered and "failed recently" in second.error
    assert time.perf_counter() - t0 < 0.05  # skipped, not asked


def test_slow_service_misses_the_deadline_and_fails_open():
    with BlackHole() as address:
        advisor = Advisor(address, timeout=0.3)
        t0 = time.perf_counter()
        advice = advisor.advise(range(1, 7), DIVERGING)
        elapsed = time.perf_counter() - t0
    assert not advice.answered and not advice.stop
    assert "DEADLINE_EXCEEDED" in advice.error
    assert elapsed < 2.0


def test_advisor_pickles_without_its_channel_and_works_after(server):
    advisor = Advisor(server.address, timeout=5)
    assert advisor.advise(range(1, 7), DIVERGING).stop  # channel now open
    clone = pickle.loads(pickle.dumps(advisor))
    assert clone.target == server.address
    assert clone.advise(range(1, 7), DIVERGING).stop


def test_run_tracker_replaces_repeated_steps_and_logs_the_stop_once(server, caplog):
    tracker = RunTracker(Advisor(server.address, timeout=5), goal="min", total_steps=20, target=None,
                         incumbent=None, metric="loss")
    for x, y in zip(range(1, 7), DIVERGING):
        tracker.record(x, y)
    tracker.record(6, 8.0)  # a second evaluation at the same step replaces the first
    assert tracker.x == [1, 2, 3, 4, 5, 6] and tracker.y[-1] == 8.0
    with caplog.at_level("INFO", logger="curvecast_client.integrations"):
        assert tracker.decide() and tracker.decide()
    assert tracker.stopped_by is not None and tracker.stopped_by.action == "stop_diverged"
    assert sum("stopping training" in r.getMessage() for r in caplog.records) == 1


def test_presets_reach_the_service_as_policy_fields(server):
    """A preset travels as its StopPolicy fields; the recommendation's threshold is the preset's bar."""
    from curvecast_client.integrations.presets import PRESETS

    for name in ("safe", "aggressive"):
        advisor = Advisor(server.address, timeout=5, preset=name)
        assert advisor.policy == PRESETS[name]
        advice = advisor.advise(range(1, 7), HEALTHY, total_steps=60, incumbent=0.01)
        assert advice.answered
        frac_left = (60 - 6) / 60
        expected = max(PRESETS[name]["min_prob_beat_incumbent"], PRESETS[name]["compute_weight"] * frac_left)
        assert advice.recommendation.threshold == pytest.approx(expected)
    over = Advisor(server.address, preset="safe", policy={"min_points": 4}, keep_best_checkpoint=False)
    assert over.policy["min_points"] == 4 and over.policy["keep_best_checkpoint"] is False
    assert over.policy["min_prob_beat_incumbent"] == PRESETS["safe"]["min_prob_beat_incumbent"]
    with pytest.raises(ValueError, match="unknown preset"):
        Advisor(server.address, preset="reckless")
