"""The whole harness on synthetic curves: report files, skipped engines, failures, determinism."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from bench.__main__ import main
from bench.runner import run_engine
from bench.data import synthetic_curves
from bench.tasks import make_tasks
from curvecast.domain.curve import ForecastQuery
from curvecast.domain.distribution import Marginals
from curvecast.engines.base import EngineForecast, EngineInfo


def _run(tmp_path, name: str, seed: int = 0) -> dict:
    out = tmp_path / name
    rc = main(["run", "--quick", "--no-data", "--engines", "last_value,empirical_spread,pow3_ls,no_such_engine", "--out", str(out), "--seed", str(seed), "--no-plots", "--no-cache"])
    assert rc == 0
    assert (out / "report.md").exists()
    return json.loads((out / "results.json").read_text())


def test_quick_run_writes_report_and_is_deterministic(tmp_path):
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b")
    c = _run(tmp_path, "c", seed=1)
    assert a["engines"]["ran"] == ["last_value", "empirical_spread", "pow3_ls"]
    assert "no_such_engine" in a["engines"]["skipped"]
    assert a["sources_run"] == ["synthetic"] and a["config"]["mode"] == "inprocess"
    assert a["groups"] == b["groups"] and a["events"] == b["events"]
    assert (tmp_path / "a" / "tasks.csv.gz").exists()
    import pandas as pd

    assert pd.read_csv(tmp_path / "a" / "tasks.csv.gz").equals(pd.read_csv(tmp_path / "b" / "tasks.csv.gz"))
    assert a["groups"] != c["groups"]
    assert a["machine"]["cpu_count"] >= 1 and "last_value" in a["speed"]["engines"]
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Headline" in md and "no_such_engine" in md and "skipped" in md


class _FlakyEngine:
    """Test-only stub: fails odd queries, answers even ones with a wide Gaussian."""

    name = "flaky"

    def info(self) -> EngineInfo:
        return EngineInfo("flaky", "0", "test")

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        out: list[EngineForecast | Exception] = []
        for i, q in enumerate(queries):
            if i % 2:
                out.append(RuntimeError("boom"))
            else:
                m = Marginals.from_gaussian(q.x_query, np.full(len(q.x_query), q.curve.y[-1]), np.ones(len(q.x_query)))
                out.append(EngineForecast(m, "flaky"))
        return out


class _BrokenEngine(_FlakyEngine):
    def forecast(self, queries):
        raise RuntimeError("whole batch failed")


def test_runner_isolates_failures():
    tasks = make_tasks(synthetic_curves(6, seed=0))
    run = run_engine("flaky", _FlakyEngine(), tasks, set(), batch_size=8)
    failed = [s for s in run.scores if s.error]
    assert len(run.scores) == len(tasks) and 0 < len(failed) < len(tasks)
    assert all("boom" in s.error for s in failed)
    broken = run_engine("broken", _BrokenEngine(), tasks, set())
    assert all(s.error and "whole batch" in s.error for s in broken.scores)


def test_learned_targets_section_and_ensemble(tmp_path, monkeypatch):
    """With a stand-in for the learned engine (pow3_ls), the issue-5 target table and the ensemble appear."""
    import bench.engines as be
    from bench.baselines import Pow3LSEngine

    real = be._load_inprocess
    monkeypatch.setattr(be, "_load_inprocess", lambda name, *a: Pow3LSEngine() if name == "learned" else real(name, *a))
    out = tmp_path / "t"
    assert main(["run", "--quick", "--no-data", "--engines", "learned,ensemble,last_value", "--out", str(out), "--no-plots", "--no-speed"]) == 0
    res = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    if "analytic" in res["engines"]["skipped"] or "ensemble" in res["engines"]["skipped"]:
        assert "ensemble" in res["engines"]["skipped"]
    else:
        assert "ensemble" in res["engines"]["ran"]
    assert "**learned**:" in md and "checks met" in md
    assert res["events"]["learned"]["beats_incumbent"]["all"]["n"] > 0


def test_user_curves_file(tmp_path):
    from bench.data import save_table

    recs = synthetic_curves(4, seed=9)
    path = tmp_path / "mine.csv"
    save_table(recs, path)
    out = tmp_path / "u"
    assert main(["run", "--curves", str(path), "--sources", "", "--no-data", "--engines", "last_value", "--out", str(out), "--no-plots", "--no-speed"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["sources_run"] == ["synthetic"] and res["sources"]["synthetic"]["n_curves"] == 4
    assert res["macro"]["last_value"]["all"]["n_failed"] == 0


def test_load_results_section_renders_load_generator_json():
    from bench.report import load_markdown

    assert "Not measured" in load_markdown(None)
    load = {"meta": {"command": "python -m bench.load", "date": "d", "cpus": 2, "engines_answered": ["analytic"]},
            "closed_loop": [{"target": "server", "mode": "unary", "concurrency": 4, "curves_per_s": 55.5, "p50_ms": 20.0, "p99_ms": 80.0, "errors": {"UNAVAILABLE": 2}},
                            {"target": "noop", "mode": "unary", "concurrency": 4, "curves_per_s": 900.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": {}}]}
    md = load_markdown(load)
    assert "55.500" in md and "900" not in md and "| 2 |" in md and "analytic" in md


def test_quick_default_engines_leave_out_the_slow_baselines(tmp_path):
    out = tmp_path / "q"
    assert main(["run", "--quick", "--no-data", "--out", str(out), "--no-plots", "--no-speed", "--no-cache"]) == 0
    res = json.loads((out / "results.json").read_text())
    ran = res["engines"]["ran"]
    assert "empirical_spread" in ran and "pow3_ls" in ran
    assert "pow3_robust" not in ran and "best_of_families" not in ran
    assert res["vs_baselines"] and all(r["best_baseline"] in res["baselines"]["names"] for r in res["vs_baselines"])
