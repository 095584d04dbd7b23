"""Request validation: every bad field is named, good input becomes a consistent domain value."""

import numpy as np
import pytest

from curvecast.domain.curve import Goal, ScheduleShape, StopPolicy, XKind
from curvecast.domain.errors import InvalidRequest
from curvecast.domain.validation import (
    Limits,
    Violations,
    build_curve,
    build_policy,
    build_quantiles,
    build_query_x,
    build_schedule,
    check_budget,
)


def curve(x, y, **kw):
    c = Violations()
    out = build_curve(c, x, y, goal=Goal.MINIMIZE, x_kind=XKind.STEP, **kw)
    return out, [v.field for v in c.violations]


def test_good_curve_roundtrip():
    out, bad = curve([1, 2, 4], [3.0, 2.0, 1.5])
    assert not bad and out is not None and out.last_x == 4 and not out.diverged


@pytest.mark.parametrize("x, y, field", [
    ([], [], "curve.x"),
    ([1, 2], [1.0], "curve.values"),
    ([1, 1], [1.0, 2.0], "curve.x[1]"),
    ([1, float("nan")], [1.0, 2.0], "curve.x[1]"),
    ([1, 2, 3], [1.0, float("inf"), 2.0], "curve.values[1]"),
    ([1, 2], [float("nan"), float("nan")], "curve.values[0]"),
    ([1, 2], [1e308 * 10, 1.0], "curve.values[0]"),
])
def test_bad_curves_name_the_field(x, y, field):
    out, bad = curve(x, y)
    assert out is None and field in bad


def test_trailing_non_finite_means_diverged():
    out, bad = curve([1, 2, 3, 4], [2.0, 1.0, float("nan"), float("inf")])
    assert not bad and out.diverged and out.diverged_at == 3 and len(out.x) == 2


def test_length_limit():
    n = 11
    out, bad = curve(np.arange(n), np.ones(n), limits=Limits(max_curve_points=10))
    assert out is None and bad == ["curve.x"]


def test_bounds_and_lr():
    _, bad = curve([1, 2], [0.5, 0.6], lower_bound=1.0, upper_bound=0.0)
    assert "curve.upper_bound" in bad
    _, bad = curve([1, 2], [0.5, 0.6], lr=[0.1])
    assert "curve.lr" in bad
    _, bad = curve([1, 2], [0.5, 0.6], lr=[0.1, -1])
    assert "curve.lr[1]" in bad


def test_quantiles_and_query_x_and_budget():
    c = Violations()
    assert build_quantiles(c, [], Limits()) == (0.05, 0.25, 0.5, 0.75, 0.95)
    build_quantiles(c, [0.5, 0.0, 1.0], Limits())
    assert [v.field for v in c.violations] == ["quantiles[1]", "quantiles[2]"]
    c = Violations()
    cv, _ = curve([1, 2, 10], [3.0, 2.0, 1.0])
    q = build_query_x(c, [], cv, 100.0, Limits())
    assert len(q) == 50 and q[0] > 10 and q[-1] == 100
    build_query_x(c, [5, 4], cv, None, Limits())
    assert [v.field for v in c.violations] == ["query_x[1]"]
    check_budget(c, cv, 5.0)
    assert "run.total_steps" in [v.field for v in c.violations]
    with pytest.raises(InvalidRequest) as err:
        c.raise_if_any()
    assert len(err.value.violations) == 2


def test_schedules():
    c = Violations()
    s = build_schedule(c, ScheduleShape.COSINE, peak_lr=1e-3, final_lr=1e-4, warmup_steps=10, total_steps=100)
    assert not c.violations
    lr = s.lr_at(np.array([0, 5, 10, 100]))
    assert lr[0] == 0 and lr[1] == pytest.approx(5e-4) and lr[2] == pytest.approx(1e-3) and lr[3] == pytest.approx(1e-4)
    build_schedule(c, ScheduleShape.WSD, peak_lr=1e-3)
    assert [v.field for v in c.violations] == ["run.total_steps"]
    c = Violations()
    e = build_schedule(c, ScheduleShape.EXPLICIT, steps=[0, 10, 20], values=[0.0, 1.0, 0.5])
    assert e.lr_at(np.array([5.0]))[0] == pytest.approx(0.5)
    build_schedule(c, ScheduleShape.EXPLICIT, steps=[0, 10], values=[0.0, float("nan")])
    assert [v.field for v in c.violations] == ["run.schedule.values[1]"]


def test_policy_overrides_and_ranges():
    c = Violations()
    p = build_policy(c, StopPolicy(), min_prob_beat_incumbent=0.1, min_points=5)
    assert p.min_prob_beat_incumbent == 0.1 and p.min_points == 5 and not c.violations
    build_policy(c, StopPolicy(), min_prob_beat_incumbent=2.0, min_points=0, min_relative_improvement=-1)
    assert len(c.violations) == 3
