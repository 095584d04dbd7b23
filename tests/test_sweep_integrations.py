"""Integrations pass sweep context themselves (issue 13): the SDK request, the Advisor, the Optuna pruner
(from study.get_trials) and the Ray Tune book (from its trials' results)."""

from __future__ import annotations

import pytest

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_client._convert import forecast_request
from curvecast_client._types import Sibling
from curvecast_client.integrations._advisor import Advice, Advisor, RunTracker, sweep_siblings


def test_sdk_request_carries_siblings_with_the_runs_goal_and_bounds():
    req = forecast_request([1, 2, 3], [0.9, 0.8, 0.7], goal="maximize", x_kind="epoch", lower_bound=0.0,
                           total_steps=10, sweep_id="s1",
                           siblings=[Sibling("a", (1, 2, 3, 4), (0.9, 0.8, 0.75, 0.7), budget=20, finished=True,
                                             hyperparameters={"lr": 0.1}),
                                     {"run_id": "b", "x": (1, 2), "y": (0.95, 0.9)}])
    assert req.sweep.sweep_id == "s1" and len(req.sweep.siblings) == 2
    a, b = req.sweep.siblings
    assert a.curve.goal == pb.GOAL_MAXIMIZE and a.curve.x_kind == pb.X_KIND_EPOCH and a.curve.lower_bound == 0.0
    assert a.budget == 20.0 and a.finished and dict(a.hyperparameters) == {"lr": 0.1}
    assert not b.HasField("budget") and not b.finished and list(b.curve.values) == [0.95, 0.9]


def test_no_siblings_no_sweep_field():
    assert not forecast_request([1, 2], [1.0, 0.9]).HasField("sweep")


def test_sweep_siblings_bounds_count_and_points():
    sibs = [Sibling(str(i), tuple(range(1, 1001)), tuple(1.0 / k for k in range(1, 1001))) for i in range(5)]
    out = sweep_siblings(sibs, max_siblings=3, max_points=100)
    assert [s.run_id for s in out] == ["2", "3", "4"]  # the most recent
    assert all(len(s.x) <= 100 and s.x[0] == 1 and s.x[-1] == 1000 for s in out)


class _Recorder(Advisor):
    def __init__(self) -> None:
        super().__init__("localhost:1")
        self.calls: list[dict] = []

    def advise(self, x, y, **kw) -> Advice:  # type: ignore[override]
        self.calls.append({"x": list(x), "y": list(y), **kw})
        return Advice(False, None, "recorded")


def test_run_tracker_asks_its_sibling_source_at_each_decision():
    rec = _Recorder()
    seen = [[Sibling("a", (1.0,), (1.0,))], [Sibling("a", (1.0, 2.0), (1.0, 0.9)), Sibling("b", (1.0,), (1.1,))]]
    tracker = RunTracker(rec, goal="min", total_steps=10, target=None, incumbent=None, metric="loss",
                         siblings=lambda: seen[len(rec.calls)], sweep_id="grid")
    tracker.record(1.0, 1.0)
    tracker.decide()
    tracker.record(2.0, 0.95)
    tracker.decide()
    assert [len(c["siblings"]) for c in rec.calls] == [1, 2] and rec.calls[1]["sweep_id"] == "grid"


def test_optuna_pruner_sends_complete_pruned_and_running_trials():
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    from curvecast_client.integrations.optuna import CurvecastPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = CurvecastPruner("localhost:1", total_steps=4)
    rec = _Recorder()
    pruner._advisor = rec
    study = optuna.create_study(pruner=pruner)
    done = study.ask()
    for s in range(5):
        done.report(1.0 - 0.1 * s, s)
    study.tell(done, 0.6)
    pruned = study.ask()
    pruned.report(1.2, 0)
    pruned.report(1.1, 1)
    study.tell(pruned, state=TrialState.PRUNED)
    running = study.ask()
    running.report(0.9, 0)
    me = study.ask()
    me.report(1.0, 0)
    me.report(0.95, 1)
    me.should_prune()
    call = rec.calls[-1]
    sibs = {s.run_id: s for s in call["siblings"]}
    assert set(sibs) == {f"trial-{done.number}", f"trial-{pruned.number}", f"trial-{running.number}"}
    assert sibs[f"trial-{done.number}"].finished and not sibs[f"trial-{pruned.number}"].finished
    assert sibs[f"trial-{pruned.number}"].y == (1.2, 1.1) and sibs[f"trial-{running.number}"].x == (0.0,)
    assert call["total_steps"] == 4.0 and call["sweep_id"] == study.study_name
    off = CurvecastPruner("localhost:1", total_steps=4, sweep_context=False)
    off._advisor = rec
    off.prune(study, study.trials[me.number])
    assert rec.calls[-1]["siblings"] is None


def test_ray_tune_book_sends_the_other_trials():
    pytest.importorskip("ray")
    from curvecast_client.integrations.ray_tune import _Book

    rec = _Recorder()
    book = _Book(rec, "training_iteration", 10.0, None)
    for tid, vals in (("a", [1.0, 0.8, 0.7]), ("b", [1.1, 1.0]), ("c", [0.9])):
        for i, v in enumerate(vals, 1):
            book.add(tid, {"training_iteration": i, "loss": v}, "loss")
    book.finish("a", "minimize")
    book.should_stop("c", "minimize", "loss")
    sibs = {s.run_id: s for s in rec.calls[-1]["siblings"]}
    assert set(sibs) == {"a", "b"} and sibs["a"].finished and not sibs["b"].finished
    assert sibs["b"].y == (1.1, 1.0)
