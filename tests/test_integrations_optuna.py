"""CurvecastPruner in real Optuna studies against the real server, and its fallback when the server fails."""

from __future__ import annotations

import math
import socket
import time

import pytest
from conftest import free_port

optuna = pytest.importorskip("optuna")
from optuna.pruners import MedianPruner  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from curvecast_client.integrations.optuna import CurvecastPruner  # noqa: E402

STEPS = 20


def loss_curve(step: int, final: float) -> float:
    """Loss decaying from 1.0 towards ``final``."""
    return final + (1.0 - final) * math.exp(-0.3 * step)


def make_objective(finals: list[float], maximize: bool = False, reported: dict[int, int] | None = None):
    def objective(trial: optuna.Trial) -> float:
        final = finals[trial.number]
        value = 0.0
        for step in range(STEPS):
            value = loss_curve(step, final)
            value = 1.0 - value if maximize else value
            trial.report(value, step)
            if reported is not None:
                reported[trial.number] = step
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


class CountingMedianPruner(MedianPruner):
    """A real MedianPruner that counts how often it was consulted."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.calls = 0

    def prune(self, study, trial) -> bool:
        self.calls += 1
        return super().prune(study, trial)


@pytest.fixture(autouse=True)
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_trials_that_cannot_beat_the_best_are_pruned_early(server, direction):
    # trial 2 is clearly ahead of the best so far (0.3) from its first points on; the others plateau far
    # above the best so far
    finals = [0.3, 0.7, 0.05, 0.8, 0.9]
    reported: dict[int, int] = {}
    pruner = CurvecastPruner(server.address, total_steps=STEPS - 1, timeout=5)
    study = optuna.create_study(direction=direction, pruner=pruner)
    study.optimize(make_objective(finals, maximize=direction == "maximize", reported=reported), n_trials=len(finals))
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.COMPLETE and states[2] == TrialState.COMPLETE
    for i in (1, 3, 4):
        assert states[i] == TrialState.PRUNED, (i, pruner.last_advice)
        assert reported[i] < STEPS // 2  # pruned well before the end
    assert pruner.last_advice is not None and pruner.last_advice.answered
    best = study.best_value
    assert best == study.trials[2].value


def test_budget_defaults_to_the_longest_completed_trial(server):
    pruner = CurvecastPruner(server.address, timeout=5)
    study = optuna.create_study(pruner=pruner)
    study.optimize(make_objective([0.05, 0.7]), n_trials=2)
    assert pruner._budget(study.get_trials(states=(TrialState.COMPLETE,))) == STEPS - 1
    assert study.trials[1].state == TrialState.PRUNED


def test_diverged_trial_is_pruned_without_any_incumbent(server):
    def objective(trial: optuna.Trial) -> float:
        for step, v in enumerate([1.0, 0.7, 0.5, 0.4, 3.0, 9.0, 30.0, float("nan"), 1.0]):
            trial.report(v, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return v

    pruner = CurvecastPruner(server.address, total_steps=20, timeout=5)
    study = optuna.create_study(pruner=pruner)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.PRUNED
    assert pruner.last_advice.recommendation.action == "stop_diverged"


def run_with(pruner, n_trials: int = 8):
    finals = [0.05, 0.3, 0.08, 0.6, 0.07, 0.5, 0.04, 0.9]
    study = optuna.create_study(pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(make_objective(finals), n_trials=n_trials)
    return study


def test_unreachable_service_falls_back_to_the_wrapped_pruner():
    fallback = CountingMedianPruner(n_startup_trials=2)
    pruner = CurvecastPruner(f"127.0.0.1:{free_port()}", total_steps=STEPS - 1, fallback=fallback, cooldown_s=0)
    study = run_with(pruner)
    states = [t.state for t in study.trials]
    assert fallback.calls == sum(len(t.intermediate_values) for t in study.trials)  # every decision
    assert not pruner.last_advice.answered
    plain = run_with(MedianPruner(n_startup_trials=2))
    assert states == [t.state for t in plain.trials]  # exactly what the fallback alone decides
    assert TrialState.PRUNED in states


def test_slow_service_falls_back_within_the_deadline():
    with socket.socket() as hole:  # accepts connections, never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        fallback = CountingMedianPruner(n_startup_trials=2)
        pruner = CurvecastPruner(f"127.0.0.1:{hole.getsockname()[1]}", timeout=0.2, fallback=fallback,
                                 total_steps=STEPS - 1)
        t0 = time.perf_counter()
        study = run_with(pruner, n_trials=3)
        elapsed = time.perf_counter() - t0
    assert pruner.advisor.last_failure.startswith("DEADLINE_EXCEEDED")
    assert fallback.calls == sum(len(t.intermediate_values) for t in study.trials)
    plain = run_with(MedianPruner(n_startup_trials=2), n_trials=3)
    assert [t.state for t in study.trials] == [t.state for t in plain.trials]
    assert elapsed < 5.0  # one missed deadline, then the cooldown skips the service


def test_default_fallback_is_median_pruner():
    assert isinstance(CurvecastPruner("127.0.0.1:1").fallback, MedianPruner)


def test_preset_and_result_meaning_reach_the_advisor_policy():
    """An Optuna objective usually returns its last value: keep_best_checkpoint=False says so."""
    from curvecast_client.integrations.presets import PRESETS

    pruner = CurvecastPruner("127.0.0.1:1", preset="aggressive", keep_best_checkpoint=False,
                             policy={"min_points": 4})
    assert pruner.advisor.policy == {**PRESETS["aggressive"], "min_points": 4, "keep_best_checkpoint": False}
    assert CurvecastPruner("127.0.0.1:1").advisor.policy == {}  # server defaults
