"""The sweeps benchmark's simulation, scores, methods and CLI plumbing on synthetic sweeps."""

import json

import numpy as np
import pandas as pd
import pytest

from bench import sweeps as S
from curvecast.domain.curve import Goal, XKind
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo


def _task(n_runs=12, n_points=20, seed=0, goal=Goal.MINIMIZE, diverge=()):
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, n_points + 1)
    runs = []
    for i in range(n_runs):
        y = 0.2 + 0.1 * i + 1.0 * x**-0.5 + 0.002 * rng.standard_normal(n_points)  # run 0 is the best
        y = y if goal is Goal.MINIMIZE else -y
        if i in diverge:
            y = y.copy()
            y[8:] = np.nan
        runs.append(S._make_run(str(i), x, y, XKind.STEP, 3))
    return S.SweepTask("synthetic", f"t{seed}", goal, XKind.STEP, float(n_points), tuple(runs))


class OracleEngine:
    """Knows every run's true curve: tight marginals around the truth (keyed by the observed prefix)."""

    name = "oracle"

    def __init__(self, task, std=1e-3):
        self.curves = {tuple(np.round(r.y[:2], 12)): r for r in task.runs}
        self.std = std

    def info(self):
        return EngineInfo("oracle", "0", "numpy")

    def forecast(self, queries):
        out = []
        for q in queries:
            run = self.curves[tuple(np.round(q.curve.y[:2], 12))]
            mean = np.interp(q.x_query, run.x, run.y)
            out.append(EngineForecast(Marginals.from_gaussian(q.x_query, mean, np.full(len(mean), self.std)), "oracle"))
        return out


def test_no_stopping_spends_full_runs_and_finds_the_best_drawn():
    task = _task()
    orders = S.orders_for(task, 5, 6, seed=1)
    traces = S.simulate(task, S.Method(), orders)
    for idx, tr in zip(orders, traces):
        assert tr.compute[-1] == pytest.approx(6.0)
        best_drawn = min(task.value(task.runs[i]) for i in idx)
        assert tr.raw_regret[-1] == pytest.approx(best_drawn - task.best)
        assert np.all(np.diff(tr.regret) <= 1e-12)  # regret never grows
    again = S.orders_for(task, 5, 6, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(orders, again))  # fixed seeds


def test_lcpfn_rule_with_oracle_saves_compute_without_regret():
    task = _task()
    cache = S.ForecastCache(OracleEngine(task))
    orders = S.orders_for(task, 6, 8, seed=0)
    base = S.simulate(task, S.Method(), orders)
    rule = S.simulate(task, S.LcpfnRule(cache), orders)
    cc = S.simulate(task, S.CurvecastPolicy(cache), orders)
    for b, r, c in zip(base, rule, cc):
        assert r.regret[-1] == pytest.approx(b.regret[-1])
        assert c.regret[-1] == pytest.approx(b.regret[-1])
    assert np.mean([t.compute[-1] for t in rule]) < 0.6 * np.mean([t.compute[-1] for t in base])
    assert np.mean([t.compute[-1] for t in cc]) < 0.6 * np.mean([t.compute[-1] for t in base])
    scores = S.score_task({"none": base, "lcpfn_rule": rule, "curvecast": cc}, 8)
    assert scores["none"].speedup == pytest.approx(1.0)
    assert scores["lcpfn_rule"].speedup > 1.5 and scores["lcpfn_rule"].compute_ratio > 1.5


def test_maximize_task_is_mirror_of_minimize():
    a, b = _task(goal=Goal.MINIMIZE), _task(goal=Goal.MAXIMIZE)
    oa, ob = S.orders_for(a, 4, 6, 0), S.orders_for(b, 4, 6, 0)
    ra = S.simulate(a, S.LcpfnRule(S.ForecastCache(OracleEngine(a))), oa)
    rb = S.simulate(b, S.LcpfnRule(S.ForecastCache(OracleEngine(b))), ob)
    for x, y in zip(ra, rb):
        np.testing.assert_allclose(x.compute, y.compute)
        np.testing.assert_allclose(x.regret, y.regret, atol=1e-9)


def test_diverged_run_ends_at_its_nan_point_and_costs_it():
    task = _task(diverge=(3,))
    run = task.runs[3]
    assert run.diverged_at == 9.0 and len(run.y) == 8 and run.n_points == 9
    tr = S.simulate(task, S.Method(), [np.array([3])])
    assert tr[0].compute[-1] == pytest.approx(9.0 / task.full_run_cost)


def test_curvecast_stops_blow_ups_without_a_forecast():
    task = _task(n_runs=3)
    x = task.runs[0].x
    y = np.concatenate([1.0 / np.sqrt(x[:8]), [5.0, 50.0, 500.0], np.full(len(x) - 11, 1e6)])
    blown = S.SweepRun("blown", x, y, np.ones(len(x)))
    task = S.SweepTask("synthetic", "blow", Goal.MINIMIZE, XKind.STEP, task.budget, (*task.runs, blown))

    class Refuse:
        name = "refuse"

        def forecast(self, queries):
            return [RuntimeError("no forecasts here")] * len(queries)

    m = S.CurvecastPolicy(S.ForecastCache(Refuse()))
    assert m.run(task, blown, incumbent=None) == 11
    assert m.actions == {"stop_diverged": 1}
    assert m.run(task, task.runs[1], incumbent=0.1) == task.runs[1].n_points  # failures never stop


def test_optuna_pruners_prune_on_separated_curves():
    pytest.importorskip("optuna")
    task = _task(n_runs=20)
    orders = [np.concatenate([np.arange(10, 20), np.arange(10)[::-1]])]  # worst first
    base = S.simulate(task, S.Method(), orders)
    for m in S.optuna_methods():
        tr = S.simulate(task, m, orders)
        assert tr[0].compute[-1] <= base[0].compute[-1] + 1e-9
    median = S.simulate(task, S.optuna_methods()[0], [np.concatenate([np.arange(5), np.arange(5, 20)])])
    assert median[0].compute[-1] < base[0].compute[-1]  # bad runs after 5 good ones get pruned


def test_score_task_speedup_from_known_traces():
    def tr(compute, regret):
        return S.OrderTrace(np.asarray(compute, float), np.asarray(regret, float), np.asarray(regret, float), 0)

    base = [tr([1, 2, 3, 4], [0.5, 0.5, 0.2, 0.0])]
    fast = [tr([0.5, 1.0, 1.5, 2.0], [0.5, 0.5, 0.2, 0.0])]
    bad = [tr([0.5, 1.0, 1.5, 2.0], [0.5, 0.5, 0.5, 0.5])]
    s = S.score_task({"none": base, "fast": fast, "bad": bad}, 4)
    assert s["fast"].speedup == pytest.approx(2.0, rel=0.02)
    assert s["fast"].compute_ratio == pytest.approx(2.0)
    assert s["bad"].speedup is None and s["bad"].compute_ratio is None
    assert s["fast"].regret_at_50 == pytest.approx(0.0) and s["none"].regret_at_50 == pytest.approx(0.5)


def test_split_tasks_is_stable_and_disjoint():
    tasks = [_task(seed=i) for i in range(7)]
    tune, rep = S.split_tasks(tasks)
    assert [t.name for t in tune] == ["t0", "t3", "t6"]
    assert not {t.name for t in tune} & {t.name for t in rep} and len(tune) + len(rep) == 7
    assert S.split_tasks(tasks[:2])[0] == []


def test_recalibration_choice_prefers_identity_when_calibrated():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert S.fit_recalibration(p, y).kind == "identity"
    over = 1 / (1 + np.exp(-4 * np.log(p / (1 - p))))
    assert S.fit_recalibration(over, y).kind in ("platt", "isotonic")


def test_end_to_end_on_a_table(tmp_path):
    pytest.importorskip("optuna")
    rows = []
    for t in range(3):
        task = _task(n_runs=8, n_points=12, seed=t, diverge=(5,))
        for r in task.runs:
            full_y = np.concatenate([r.y, [np.nan] if r.diverged_at else []])
            full_x = np.concatenate([r.x, [r.diverged_at] if r.diverged_at else []])
            for xv, yv in zip(full_x, full_y):
                rows.append({"run_id": f"{t}-{r.run_id}", "x": xv, "value": yv, "task": f"task{t}", "budget": 12.0})
    table = tmp_path / "sweeps.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    tasks = S.load_table_tasks(table)
    assert len(tasks) == 3 and sum(r.diverged_at is not None for r in tasks[0].runs) == 1

    class Widening:
        name = "widening"

        def forecast(self, queries):
            out = []
            for q in queries:
                y = q.curve.y
                slope = (y[-1] - y[-2]) if len(y) > 1 else 0.0
                mean = y[-1] + 0.5 * slope * np.log1p(q.x_query - q.curve.last_x)
                out.append(EngineForecast(Marginals.from_gaussian(q.x_query, mean, 0.02 + 0.0 * mean), "widening"))
            return out

    cfg = S.Config(orders=3, runs=6, calib_runs=4, quick=True)
    out = tmp_path / "out"
    payload = S.run_benchmark(cfg, Widening(), out, table=table, log=lambda s: None)
    assert (out / "README.md").exists() and (out / "sweeps_regret.png").exists()
    assert (out / "sweeps_calibration.png").exists()
    data = json.loads((out / "sweeps.json").read_text())
    assert data["tune_tasks"] == ["sweeps/task0"]
    assert set(data["summary"]["sweeps"]) >= {"none", "median", "lcpfn_rule", "curvecast"}
    assert payload["results"]["sweeps/task1"]["methods"]["none"]["compute"] > 0
    readme = (out / "README.md").read_text()
    assert "| sweeps | curvecast |" in readme
    assert "Targets (issue 13):" in readme and "| curvecast_aggressive |" in readme
    assert {"beat_incumbent", "beat_incumbent_last", "target_within_budget"} <= set(data["calibration"])
    assert set(data["presets"]) == {"safe", "balanced", "aggressive"}
    for m in ("percentile", "wilcoxon", "curvecast_safe", "curvecast_aggressive"):
        assert m in data["summary"]["sweeps"]


def test_module_split_keeps_the_public_names():
    """bench/sweeps.py was split into data, simulation, policies and report modules; the old names stay."""
    from bench import sweep_data, sweep_policies, sweep_report, sweep_sim

    assert S.SweepTask is sweep_data.SweepTask and S.simulate is sweep_sim.simulate
    assert S.CurvecastPolicy is sweep_policies.CurvecastPolicy and S.render_markdown is sweep_report.render_markdown


def test_best_killed_saving_and_excess_regret():
    """Killing the order's best run (run 0) is counted, and costs regret; the oracle LC-PFN rule kills none."""
    task = _task()
    orders = [np.array([3, 0, 5, 7, 2, 9])]

    class KillRunZero(S.Method):
        name = "kill0"

        def run(self, task, run, incumbent):
            return 3 if run.run_id == "0" else run.n_points

    base = S.simulate(task, S.Method(), orders)
    killed = S.simulate(task, KillRunZero(), orders)
    assert killed[0].best_killed and not base[0].best_killed
    rule = S.simulate(task, S.LcpfnRule(S.ForecastCache(OracleEngine(task))), orders)
    assert not rule[0].best_killed
    s = S.score_task({"none": base, "kill0": killed, "rule": rule}, 6)
    assert s["kill0"].best_killed == 1.0 and s["kill0"].excess_regret > 0
    assert s["kill0"].saving == pytest.approx(base[0].compute[-1] / killed[0].compute[-1])
    assert s["rule"].excess_regret == pytest.approx(0.0) and s["rule"].saving > 1.5


def test_all_optuna_pruners_are_real_and_named():
    optuna = pytest.importorskip("optuna")
    names = [m.name for m in S.optuna_methods()]
    assert names == ["median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patience"]
    task = _task(n_runs=20)
    order = [np.concatenate([np.arange(10), np.arange(10, 20)])]  # good runs first: later bad ones are prunable
    for m in S.optuna_methods():
        m.new_order(task, 0)
        assert isinstance(m.study.pruner, optuna.pruners.BasePruner)
        tr = S.simulate(task, m, order)
        assert tr[0].compute[-1] <= 20.0 + 1e-9


def test_presets_from_the_service_drive_the_benchmark_policy():
    from curvecast.decisions.presets import PRESETS

    knobs = S.preset_knobs()
    assert set(knobs) == {"safe", "balanced", "aggressive"}
    for name, k in knobs.items():
        assert k.min_prob_beat_incumbent == PRESETS[name].min_prob_beat_incumbent
        assert k.stop_policy().compute_weight == PRESETS[name].compute_weight
    # safer presets never stop more: on an oracle sweep their compute is at least the aggressive one's
    task = _task()
    cache = S.ForecastCache(OracleEngine(task, std=0.05))
    orders = S.orders_for(task, 4, 8, seed=0)
    comp = {n: np.mean([t.compute[-1] for t in S.simulate(task, S.CurvecastPolicy(cache, k), orders)])
            for n, k in knobs.items()}
    assert comp["safe"] >= comp["balanced"] - 1e-9 >= comp["aggressive"] - 2e-9


def test_select_presets_respects_the_limits():
    task = _task(n_runs=12)
    cache = S.ForecastCache(OracleEngine(task, std=0.05))
    cfg = S.Config(runs=8, tune_orders=4)
    chosen, history = S.select_presets([task], cache, cfg, S.IDENTITY, log=lambda s: None)
    assert len(history) == len(S.PRESET_GRID) and set(chosen) == set(S.PRESET_LIMITS)
    for name, (max_ex, max_kill) in S.PRESET_LIMITS.items():
        row = next(h for h in history if h["knobs"] == S.asdict(chosen[name]))
        ok = all(v["excess_regret"] <= max_ex and v["best_killed"] <= max_kill for v in row["per_source"].values())
        assert ok or row is history[0]


def test_calibration_samples_score_both_meanings_of_result():
    """Best checkpoint: outcome = the run's best beats the incumbent; last value: its last value beats the
    best last value of the others. An overfitting sweep makes the two differ."""
    rng = np.random.default_rng(3)
    x = np.arange(1.0, 21)
    runs = []
    for i in range(12):
        y = 0.3 + 0.05 * i + 1.0 / x + 0.02 * np.maximum(x - 10, 0) * (i % 2) + 0.001 * rng.standard_normal(20)
        runs.append(S._make_run(str(i), x, y, XKind.STEP, 3))
    task = S.SweepTask("synthetic", "overfit", Goal.MINIMIZE, XKind.STEP, 20.0, tuple(runs))
    cs = S.calibration_samples(task, S.ForecastCache(OracleEngine(task, std=0.01)), 12, 0)
    assert len(cs.p_beat) > 5 and len(cs.p_beat_last) > 5
    assert all(0.0 <= p <= 1.0 for p in cs.p_beat + cs.p_beat_last)
    # an oracle is sharp: its probabilities agree with what happened
    for p, y in ((cs.p_beat, cs.y_beat), (cs.p_beat_last, cs.y_beat_last)):
        assert np.mean(np.abs(np.asarray(p) - np.asarray(y))) < 0.1


def test_choose_presets_safe_per_source_others_on_the_mean():
    def h(p, sav, ex_a, ex_b, k_a, k_b):
        return {"knobs": S.asdict(S.PolicyKnobs(min_prob_beat_incumbent=p, min_points=2)), "gmean_saving": sav,
                "per_source": {"a": {"excess_regret": ex_a, "best_killed": k_a, "saving": sav},
                               "b": {"excess_regret": ex_b, "best_killed": k_b, "saving": sav}}}

    history = [h(0.001, 1.2, 0.0, 0.0, 0.0, 0.0),
               h(0.01, 2.0, 0.0, 0.008, 0.0, 0.08),   # one source over the balanced limits, the mean within
               h(0.05, 4.0, 0.01, 0.02, 0.1, 0.3),    # mean excess 0.015, killed 0.2: aggressive only
               h(0.2, 8.0, 0.05, 0.05, 0.5, 0.5)]     # over every limit
    chosen = S.choose_presets(history)
    assert chosen["safe"].min_prob_beat_incumbent == 0.001
    assert chosen["balanced"].min_prob_beat_incumbent == 0.01
    assert chosen["aggressive"].min_prob_beat_incumbent == 0.05
