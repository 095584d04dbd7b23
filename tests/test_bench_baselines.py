"""Baselines fit what they claim to fit and honour the Engine protocol."""

from __future__ import annotations

import numpy as np

from bench.baselines import BestFamilyEngine, LastValueEngine, fit_pow3
from bench.data import CurveRecord, synthetic_curves
from bench.tasks import make_tasks
from curvecast.engines.base import Engine, EngineForecast


def test_pow3_recovers_parameters():
    x = np.arange(1.0, 41.0)
    y = 2.0 + 3.0 * (x / 40.0) ** -0.5
    c, a, alpha, shift, rss = fit_pow3(x, y)
    assert shift == 0.0 and rss < 1e-3
    assert abs(alpha - 0.5) < 0.05 and abs(c - 2.0) < 0.1


def test_pow3_handles_x_starting_at_zero():
    x = np.arange(0.0, 30.0)
    y = 1.0 + 2.0 / np.sqrt(x + 1.0)
    c, a, alpha, shift, rss = fit_pow3(x, y)
    assert shift == 1.0 and rss < 1e-3


def test_best_family_extrapolates_clean_power_law():
    x = np.arange(1.0, 101.0)
    rec = CurveRecord("p", "s", x, 1.5 + 2.0 * x**-0.7, budget=100.0)
    (task,) = make_tasks([rec], (0.4,))
    (res,) = BestFamilyEngine().forecast([task.query])
    assert isinstance(res, EngineForecast)
    assert abs(float(res.marginals.quantile(0.5)[-1]) - rec.final) < 0.01


def test_last_value_spread_widens_with_horizon_and_respects_bounds():
    tasks = make_tasks(synthetic_curves(6, seed=0), (0.2,))
    eng = LastValueEngine()
    assert isinstance(eng, Engine) and isinstance(BestFamilyEngine(), Engine)
    for t, res in zip(tasks, eng.forecast([t.query for t in tasks])):
        assert isinstance(res, EngineForecast)
        q = res.marginals.quantile([0.05, 0.95])
        width = q[:, 1] - q[:, 0]
        assert np.all(np.diff(width) >= -1e-12) and width[-1] > width[0]
        if t.query.curve.upper_bound is not None:
            assert np.all(res.marginals.values <= t.query.curve.upper_bound)
        assert np.allclose(res.marginals.quantile(0.5), t.y_obs[-1], atol=1e-9) or t.query.curve.upper_bound is not None
