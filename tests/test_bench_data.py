"""The bench's curve table format, synthetic source and real loaders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data import CurveRecord, default_data_dir, load_source, load_table, records_from_frame, save_table, synthetic_curves
from curvecast.domain.curve import Goal, XKind


def test_table_round_trip(tmp_path):
    recs = synthetic_curves(6, seed=3)
    path = tmp_path / "curves.csv"
    save_table(recs, path)
    back = {r.run_id: r for r in load_table(path)}
    assert set(back) == {r.run_id for r in recs}
    for r in recs:
        b = back[r.run_id]
        np.testing.assert_allclose(b.x, r.x)
        np.testing.assert_allclose(b.y, r.y)
        assert (b.goal, b.x_kind, b.budget, b.source) == (r.goal, r.x_kind, r.budget, r.source)
        assert (b.lr is None) == (r.lr is None and r.schedule is None)


def test_table_parquet_and_minimal_columns(tmp_path):
    df = pd.DataFrame({"run_id": ["a"] * 4 + ["b"] * 3, "x": [3, 1, 2, 4, 1, 2, 3], "value": [0.7, 0.9, 0.8, 0.6, 0.1, 0.2, 0.3], "goal": ["minimize"] * 4 + ["maximize"] * 3})
    df.to_parquet(tmp_path / "c.parquet")
    recs = {r.run_id: r for r in load_table(tmp_path / "c.parquet")}
    np.testing.assert_allclose(recs["a"].x, [1, 2, 3, 4])  # sorted by x
    np.testing.assert_allclose(recs["a"].y, [0.9, 0.8, 0.7, 0.6])
    assert recs["a"].budget == 4.0 and recs["b"].goal is Goal.MAXIMIZE and recs["a"].x_kind is XKind.STEP
    assert recs["a"].source == "c"


def test_table_cuts_runs_at_first_nonfinite_value():
    df = pd.DataFrame({"run_id": ["r"] * 5, "x": [1, 2, 3, 4, 5], "value": [3.0, 2.0, 1.5, np.nan, 1.0], "budget": 10})
    (rec,) = records_from_frame(df)
    np.testing.assert_allclose(rec.y, [3.0, 2.0, 1.5])
    assert rec.meta["diverged_at"] == 4.0 and rec.budget == 10.0


def test_table_requires_columns():
    with pytest.raises(ValueError, match="required columns"):
        records_from_frame(pd.DataFrame({"run_id": ["a"], "x": [1]}))


def test_record_rejects_unsorted_x():
    with pytest.raises(ValueError):
        CurveRecord("r", "s", np.array([2.0, 1.0]), np.array([1.0, 2.0]))


def test_synthetic_is_reproducible_and_valid():
    a, b, c = synthetic_curves(9, seed=1), synthetic_curves(9, seed=1), synthetic_curves(9, seed=2)
    assert all(np.array_equal(r.y, s.y) for r, s in zip(a, b))
    assert not all(np.array_equal(r.y, s.y) for r, s in zip(a, c))
    assert {r.goal for r in a} == {Goal.MINIMIZE, Goal.MAXIMIZE}
    assert any(r.schedule is not None for r in a)


@pytest.mark.parametrize("name", ["multipowerlaw", "gemstones", "scan_vlm"])
def test_real_loader_samples_reproducibly(name):
    data = default_data_dir()
    if not data.is_dir():
        pytest.skip(f"data folder {data} absent")
    a = load_source(name, data, 3, seed=0)
    b = load_source(name, data, 3, seed=0)
    assert a.skipped is None and 0 < len(a.records) <= 3
    assert [r.run_id for r in a.records] == [r.run_id for r in b.records]
    for r in a.records:
        assert np.all(np.isfinite(r.y)) and r.x[-1] <= r.budget * (1 + 1e-9)


def test_missing_data_is_skipped_clearly(tmp_path):
    s = load_source("taskset", tmp_path, 3, seed=0)
    assert s.records == [] and "not found" in (s.skipped or "")
    assert load_source("taskset", None, 3, 0).skipped == "no data folder"


def test_tune_and_report_splits_are_disjoint_halves():
    from bench.data.sources import in_split

    keys = [("task", i) for i in range(2000)]
    tune = {k for k in keys if in_split("taskset", k, "tune")}
    report = {k for k in keys if in_split("taskset", k, "report")}
    assert tune.isdisjoint(report) and len(tune | report) == len(keys)
    assert 800 < len(tune) < 1200
    assert all(in_split("taskset", k, "all") for k in keys)


def test_real_split_loads_disjoint_curves():
    data = default_data_dir()
    if not data.is_dir():
        pytest.skip(f"data folder {data} absent")
    a = {r.run_id for r in load_source("gemstones", data, 50, 0, "tune").records}
    b = {r.run_id for r in load_source("gemstones", data, 50, 0, "report").records}
    assert a and b and a.isdisjoint(b)


def test_lcpfn_prior_curves_follow_the_prior():
    from bench.data.synthetic import lcpfn_prior_curves

    a = lcpfn_prior_curves(200, seed=4)
    b = lcpfn_prior_curves(200, seed=4)
    assert len(a) == 200 and all(np.array_equal(r.y, s.y) for r, s in zip(a, b))
    y = np.stack([r.y for r in a])
    assert y.shape == (200, 100) and np.all(a[0].x == np.arange(1, 101))
    assert np.mean(y[:, -1] > y[:, 0]) > 0.85  # clean curves end above their start; noise flips a few
    assert np.mean((y > -0.1) & (y < 1.1)) > 0.99 and np.median(y.max(axis=1) - y.min(axis=1)) > 0.05
    assert {r.goal for r in a} == {Goal.MAXIMIZE}


def test_raw_per_step_source_and_its_block_means_share_runs_and_final_values():
    data = default_data_dir()
    if not (data / "modded_nanogpt" / "train_curves.csv.gz").exists():
        pytest.skip(f"modded_nanogpt train logs absent under {data}")
    raw = load_source("nanogpt_train", data, 3, seed=0)
    blocks = load_source("nanogpt_train_blocks", data, 3, seed=0)
    assert [r.meta["run"] for r in raw.records] == [r.meta["run"] for r in blocks.records]
    for r, b in zip(raw.records, blocks.records):
        assert r.final == b.final == pytest.approx(float(np.mean(r.y[-100:])))
        assert len(b.x) == len(r.x) // 100 and b.x[-1] == pytest.approx(np.mean(r.x[-100:]))
        assert r.budget == b.budget
