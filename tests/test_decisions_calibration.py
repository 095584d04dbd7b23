"""Calibration metrics on inputs with known answers, and the recalibration maps."""

import numpy as np
import pytest

from curvecast.decisions.calibration import (
    Recalibration, brier_score, brier_skill_score, calibration_report, expected_calibration_error,
    fit_isotonic, fit_platt, load_recalibrations, recalibration_for, reliability_bins, save_recalibrations,
)


def test_brier_and_skill_known_values():
    p = np.array([0.9, 0.8, 0.3, 0.1])
    y = np.array([1, 1, 0, 0])
    assert brier_score(p, y) == pytest.approx((0.01 + 0.04 + 0.09 + 0.01) / 4)
    # base rate 0.5 -> reference Brier 0.25
    assert brier_skill_score(p, y) == pytest.approx(1 - 0.0375 / 0.25)
    assert brier_skill_score(np.full(4, 0.5), y) == pytest.approx(0.0)
    assert brier_skill_score(1 - p, y) < 0  # anti-skill scores below the base rate


def test_ece_known_values():
    p = np.array([0.15] * 10 + [0.85] * 10)
    y = np.array([1] * 2 + [0] * 8 + [1] * 7 + [0] * 3)
    # bin [0.1,0.2): freq 0.2 vs 0.15; bin [0.8,0.9): freq 0.7 vs 0.85
    assert expected_calibration_error(p, y) == pytest.approx(0.5 * 0.05 + 0.5 * 0.15)
    bins = reliability_bins(p, y)
    assert len(bins) == 10 and sum(b.count for b in bins) == 20
    assert bins[1].count == 10 and bins[1].frequency == pytest.approx(0.2)
    assert bins[8].mean_p == pytest.approx(0.85)


def test_calibrated_forecaster_scores_well():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = rng.uniform(size=p.size) < p
    rep = calibration_report(p, y)
    assert rep.ece < 0.02 and rep.brier_skill > 0.2
    over = calibration_report(np.clip((p - 0.5) * 3 + 0.5, 0, 1), y)  # over-confident
    assert over.ece > 0.1 and over.brier_skill < rep.brier_skill


def test_probability_one_falls_in_last_bin_and_nan_dropped():
    bins = reliability_bins(np.array([1.0, 0.0, np.nan]), np.array([1, 0, 1]))
    assert bins[-1].count == 1 and bins[0].count == 1


@pytest.mark.parametrize("fit", [fit_platt, fit_isotonic])
def test_recalibration_fixes_overconfidence(fit):
    rng = np.random.default_rng(1)
    true = rng.uniform(0.02, 0.98, size=20000)
    y = rng.uniform(size=true.size) < true
    raw = 1 / (1 + np.exp(-3 * np.log(true / (1 - true))))  # logit stretched 3x
    m = fit(raw[:10000], y[:10000])
    before = expected_calibration_error(raw[10000:], y[10000:])
    after = expected_calibration_error(m.apply(raw[10000:]), y[10000:])
    assert after < 0.5 * before and after < 0.03
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(m.apply(grid)) >= -1e-12)  # monotone
    if m.kind == "platt":
        assert m.a == pytest.approx(1 / 3, rel=0.15)


def test_roundtrip_json(tmp_path):
    path = tmp_path / "recal.json"
    maps = {"analytic": {"beat_incumbent": Recalibration(kind="platt", a=0.5, b=-0.2),
                         "target_within_budget": Recalibration(kind="isotonic", knots_p=(0.0, 0.5, 1.0),
                                                               knots_q=(0.1, 0.3, 0.9))}}
    save_recalibrations(maps, path, note="test")
    loaded = load_recalibrations(path)
    assert loaded == maps
    assert recalibration_for("analytic", "target_within_budget", path).apply(0.25) == pytest.approx(0.2)
    assert recalibration_for("missing", "beat_incumbent", path).apply(0.3) == pytest.approx(0.3)
    assert load_recalibrations(tmp_path / "absent.json") == {}


def test_saved_maps_are_seen_at_once_by_the_writing_process(tmp_path):
    path = tmp_path / "recal.json"
    save_recalibrations({"analytic": {"beat_incumbent": fit_platt(np.array([0.1, 0.9] * 20), np.array([0, 1] * 20))}},
                        path)
    first = recalibration_for("analytic", "beat_incumbent", path)
    save_recalibrations({}, path)  # rewritten by this process: no stale cache
    assert recalibration_for("analytic", "beat_incumbent", path).kind == "identity" != first.kind
