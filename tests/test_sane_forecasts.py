"""Issue 12: forecasts that stay sane on realistic input (schedules in any x unit, raw per-step logs,
initial transients, validation losses that turn up)."""

from __future__ import annotations

import numpy as np
import pytest

from curvecast.domain.curve import Curve, ForecastQuery, Goal, LrSchedule, RunInfo, ScheduleShape, XKind
from curvecast.engines.analytic.engine import forecast_one
from curvecast.engines.analytic.lr_laws import TissueLaw, features

WARM, TOTAL, PEAK, STEPS_PER_EPOCH = 500, 10000, 3e-4, 100
TRUE = TissueLaw(L0=2.5, A=20.0, alpha=0.45, C=1.5e-4)


def _wsd(scale: float, total: int) -> LrSchedule:
    """The same WSD plan in steps (scale 1) or in epochs (scale 1 / steps per epoch)."""
    return LrSchedule(ScheduleShape.WSD, peak_lr=PEAK, final_lr=PEAK / 10, warmup_steps=WARM * scale,
                      total_steps=total * scale, decay_start=0.8 * total * scale)


def _query(x_kind: XKind, scale: float, total: int = TOTAL) -> ForecastQuery:
    lr = _wsd(1.0, total).lr_at(np.arange(total + 1, dtype=float))
    steps = np.arange(WARM + 100, 0.6 * total + 1, total // 100)
    loss = TRUE.predict(features(lr), steps) * np.exp(np.random.default_rng(1).normal(0, 1e-3, len(steps)))
    xq = np.array([0.7, 0.8, 0.9, 1.0]) * total * scale
    return ForecastQuery(curve=Curve(x=steps * scale, y=loss, x_kind=x_kind),
                         run=RunInfo(total_steps=total * scale, schedule=_wsd(scale, total)), x_query=xq)


@pytest.mark.parametrize("x_kind,steps_per_x,total", [(XKind.EPOCH, 100.0, 10_000), (XKind.EPOCH, 37.0, 30_000), (XKind.SAMPLES, 1 / 64, 4_000)])
def test_a_schedule_in_epochs_or_samples_is_used_like_one_in_steps(x_kind, steps_per_x, total):
    """The plan in the curve's own x units: the cooldown ahead is anticipated as with steps (the steps
    per x are unknown to the engine, so only the shape must agree, within the laws' own spread)."""
    in_steps = forecast_one(_query(XKind.STEP, 1.0, total))
    other = forecast_one(_query(x_kind, 1.0 / steps_per_x, total))
    assert other.details.get("lr_law") == 1.0
    med_s, med_o = in_steps.marginals.quantile(0.5), other.marginals.quantile(0.5)
    assert np.array_equal(other.marginals.x, _query(x_kind, 1.0 / steps_per_x, total).x_query)
    assert med_o[-1] < med_o[1] - 0.03  # the cooldown after 80% of the plan lowers the loss
    assert med_o == pytest.approx(med_s, rel=0.02)
    truth = TRUE.predict(features(_wsd(1.0, total).lr_at(np.arange(total + 1, dtype=float))), np.array([total]))[0]
    assert other.marginals.quantile(0.05)[-1] <= truth <= other.marginals.quantile(0.95)[-1]


def _u_shaped(n_obs: int = 20, n_total: int = 60, seed: int = 0):
    """An image classifier's test loss per epoch: falls, bottoms out near epoch 11, then rises."""
    e = np.arange(1.0, n_total + 1)
    truth = 0.45 + 1.6 * e**-0.9 + 0.015 * e
    y = truth * np.exp(np.random.default_rng(seed).normal(0, 0.01, len(e)))
    q = ForecastQuery(curve=Curve(x=e[:n_obs], y=y[:n_obs], x_kind=XKind.EPOCH, lower_bound=0.0, metric="test_loss"),
                      run=RunInfo(total_steps=float(n_total)), x_query=e[n_obs:])
    return q, truth[n_obs:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_validation_loss_that_turned_up_is_forecast_to_keep_rising(seed):
    q, truth = _u_shaped(seed=seed)
    res = forecast_one(q)
    med = res.marginals.quantile(0.5)
    lo, hi = res.marginals.quantile(0.05), res.marginals.quantile(0.95)
    assert abs(med[-1] - truth[-1]) / truth[-1] < 0.10  # monotone families alone: ~30% too optimistic
    assert lo[-1] <= truth[-1] <= hi[-1]
    assert lo[-1] < float(np.min(q.curve.y))  # a recovery stays possible
    assert any("overfitting" in w for w in res.warnings) and res.details["turn_slope"] > 0
    # an accuracy that turned down is the same case, mirrored
    acc = ForecastQuery(curve=Curve(x=q.curve.x, y=1.0 - q.curve.y / 3, goal=Goal.MAXIMIZE, x_kind=XKind.EPOCH,
                                    lower_bound=0.0, upper_bound=1.0), run=q.run, x_query=q.x_query)
    acc_med = forecast_one(acc).marginals.quantile(0.5)
    assert abs(acc_med[-1] - (1.0 - truth[-1] / 3)) < 0.03


def test_a_curve_that_keeps_improving_is_not_called_overfitting():
    e = np.arange(1.0, 41.0)
    y = (0.45 + 1.6 * e**-0.9) * np.exp(np.random.default_rng(3).normal(0, 0.01, len(e)))
    res = forecast_one(ForecastQuery(curve=Curve(x=e[:20], y=y[:20], lower_bound=0.0), run=RunInfo(total_steps=40.0), x_query=e[20:]))
    assert "turn_slope" not in res.details and not any("overfitting" in w for w in res.warnings)


def _per_step_log(n: int = 6000, seed: int = 0, transient: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training loop's raw per-step loss: near ln(vocab) at first, a steep fall, then a power law;
    heavy-tailed, autocorrelated noise whose scale shrinks with the loss."""
    rng = np.random.default_rng(seed)
    s = np.arange(1.0, n + 1)
    law = 2.9 + 4.0 * (s / 100.0) ** -0.45
    mean = np.where(s < 300, law + (10.8 - law) / (1 + np.exp((s - 120) / 25)), law) if transient else law
    ar = np.zeros(n)
    shocks = rng.standard_t(3, n) * 0.02
    for i in range(1, n):
        ar[i] = 0.7 * ar[i - 1] + shocks[i]
    return s, mean, mean * np.exp(ar)


def test_an_initial_transient_is_found_and_left_out_of_the_fit():
    from curvecast.engines.analytic.prep import transient_end

    s, _, y = _per_step_log()
    k = transient_end(s, y)
    assert 150 <= k <= 2000  # after the steep fall, well before the end
    s2, _, y2 = _per_step_log(transient=False)
    assert transient_end(s2, y2) == 0  # a power law from step 1 has no transient
    assert transient_end(s[:150], y[:150]) == 0  # evaluation curves are never trimmed


@pytest.mark.parametrize("seed", [0, 1])
def test_raw_per_step_input_is_forecast_as_well_as_its_block_means(seed):
    s, mean, y = _per_step_log(seed=seed)
    cut = 2400
    truth = float(np.mean(mean[-100:]))
    raw = ForecastQuery(curve=Curve(x=s[:cut], y=y[:cut], lower_bound=0.0), run=RunInfo(total_steps=6000.0), x_query=np.array([6000.0]))
    xb = s[:cut].reshape(-1, 100).mean(axis=1)
    yb = y[:cut].reshape(-1, 100).mean(axis=1)
    blocks = ForecastQuery(curve=Curve(x=xb, y=yb, lower_bound=0.0), run=RunInfo(total_steps=6000.0), x_query=np.array([6000.0]))
    err_raw = abs(forecast_one(raw).marginals.quantile(0.5)[0] - truth) / truth
    err_blocks = abs(forecast_one(blocks).marginals.quantile(0.5)[0] - truth) / truth
    assert err_raw < 0.04  # without the transient left out: up to 18% at 20% of the run
    assert err_raw <= err_blocks + 0.01


def test_the_learned_engine_reads_a_schedule_given_in_epochs():
    from curvecast.engines.learned.engine import LearnedEngine
    from curvecast.server.config import BUNDLED_MODEL

    eng = LearnedEngine.load(BUNDLED_MODEL)
    q = _query(XKind.EPOCH, 1.0 / STEPS_PER_EPOCH)
    flat = ForecastQuery(curve=q.curve, run=RunInfo(total_steps=q.run.total_steps), x_query=q.x_query)
    with_plan, without = (r.marginals.quantile(0.5) for r in eng.forecast([q, flat]))
    assert with_plan[-1] < without[-1] - 0.01  # the cooldown in the epoch plan lowers the forecast


def test_an_accuracy_sent_without_goal_maximize_is_forecast_as_it_moves():
    """The curve ahead does not depend on what the caller calls better: an accuracy curve left at the
    default goal=minimize is fitted rising (with a note), as with goal=maximize."""
    x = np.arange(1.0, 41.0)
    y = 0.9 - 0.5 * x**-0.6 + np.random.default_rng(4).normal(0, 0.003, len(x))
    run, xq = RunInfo(total_steps=120.0), np.array([60.0, 120.0])
    right = forecast_one(ForecastQuery(curve=Curve(x=x, y=y, goal=Goal.MAXIMIZE, lower_bound=0.0, upper_bound=1.0), run=run, x_query=xq))
    wrong = forecast_one(ForecastQuery(curve=Curve(x=x, y=y, lower_bound=0.0, upper_bound=1.0), run=run, x_query=xq, target=0.5))
    assert wrong.marginals.quantile(0.5) == pytest.approx(right.marginals.quantile(0.5), abs=1e-9)
    assert any("fitted as goal=maximize" in w for w in wrong.warnings)
    assert not any(k.startswith("target_") for k in wrong.details)
