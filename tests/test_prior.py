"""The training prior respects its constraints and the shared normalisation round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecast.engines.learned import normalization as nz
from training import prior as P


def test_lcpfn_clean_curves_obey_lcpfn_rejection_rules():
    y, sigma = P.sample_lcpfn_clean(np.random.default_rng(0), 500)
    assert y.shape == (500, 100)
    assert np.all((y >= 0) & (y <= 1))
    assert np.all(y[:, -1] > y[:, 0])
    assert np.all(sigma > 0)
    # noise std is exp(N(-4, 1)): its log-median is about -4
    assert abs(np.median(np.log(sigma)) + 4.0) < 0.2


def test_lcpfn_noisy_curves_are_the_clean_ones_plus_noise():
    y = P.sample_lcpfn(np.random.default_rng(1), 300)
    assert np.isfinite(y).all()
    assert (y < 0).any() or (y > 1).any() or np.ptp(y) > 0  # noise may leave [0, 1]


def test_schedule_features_constant_warmup_cosine():
    g = nz.SCHEDULE_GRID
    u = (np.arange(g) + 0.5) / g
    const = np.ones(g)
    warm = np.clip(u / 0.1, 0, 1)  # warm-up then constant
    cosine = 0.5 * (1 + np.cos(np.pi * u))
    lr, s1, s2 = nz.schedule_features(np.stack([const, warm, cosine]), 0.05)
    t = np.linspace(0, 1, g + 1)
    np.testing.assert_allclose(s1[0], t, atol=1e-12)
    assert np.all(s2[0] == 0) and np.all(s2[1] == 0), "warm-up must not leave an S2 offset"
    assert np.all(np.diff(s2[2]) >= 0) and 0.5 < s2[2, -1] <= 1.05  # discretisation: about 1 + 1/(2 tau G)
    assert np.all(np.diff(s1[2]) >= 0) and s1[2, -1] < 0.6
    assert lr.max() <= 1.0 + 1e-12


def test_schedule_curves_respect_value_constraints():
    raw = P.sample_schedule_curves(np.random.default_rng(2), 400)
    assert raw.feats.shape == (400, 100, nz.N_FEATURES) and np.isfinite(raw.feats).all()
    t = raw.feats[..., 0]
    assert np.all(np.diff(t, axis=1) >= 0) and np.all((t > 0) & (t <= 1))
    acc = raw.kind == P.KIND_BOUNDED
    assert acc.any() and (~acc).any()
    assert np.all((raw.y[acc] >= 0) & (raw.y[acc] <= 1))
    assert np.all(raw.y[~acc] >= 0) and np.isfinite(raw.y).all()
    known = raw.feats[..., 4]
    assert set(np.unique(known)) == {0.0, 1.0}
    unknown = known[:, 0] == 0
    np.testing.assert_allclose(raw.feats[unknown][..., 2], raw.feats[unknown][..., 0])


def test_losses_mostly_decrease_and_start_near_zero_in_model_space():
    raw = P.sample_schedule_curves(np.random.default_rng(3), 400)
    z = P.to_model_space(raw, cutoff=10)
    loss = raw.kind == P.KIND_LOSS
    assert np.median(np.abs(z[loss, :3].mean(axis=1))) < 1e-6  # ref = mean of the first 3 points
    assert np.mean(z[loss, -1] > z[loss, 0]) > 0.8  # losses fall -> z rises
    assert np.all((z >= nz.Z_MIN) & (z <= nz.Z_MAX))


def test_make_batch_shapes_and_borders():
    rng = np.random.default_rng(4)
    cx, cy, qx, qy = P.make_batch(rng, 16, 30)
    assert cx.shape == (16, 30, 5) and cy.shape == (16, 30) and qx.shape == (16, 70, 5) and qy.shape == (16, 70)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in (cx, cy, qx, qy))
    b = P.bucket_borders(rng, 100, n_batches=5, batch=16)
    assert b.shape == (101,) and np.all(np.diff(b) > 0)


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.lists(st.floats(0.01, 1e4), min_size=1, max_size=20),
    minimize=st.booleans(),
    bounds=st.sampled_from([(None, None), (0.0, None), (None, 2e4), (0.0, 2e4)]),
    probe=st.floats(-1e4, 1e4),
)
def test_value_transform_round_trips(prefix, minimize, bounds, probe):
    tr = nz.value_transform(np.array(prefix), minimize, *bounds)
    assert tr.b != 0 and np.isfinite(tr.a) and np.isfinite(tr.b)
    y = np.array(prefix + [probe])
    np.testing.assert_allclose(tr.inverse(tr.forward(y)), y, rtol=1e-9, atol=1e-9 * np.abs(y).max() + 1e-9)
    # higher is better in model space
    assert (tr.b < 0) == minimize


def test_accuracy_in_unit_interval_is_the_identity():
    tr = nz.value_transform(np.array([0.1, 0.3]), False, 0.0, 1.0)
    assert (tr.a, tr.b) == (0.0, 1.0)
    loss = nz.value_transform(np.array([4.0, 2.0, 3.0, 1.0]), True, 0.0, None)
    np.testing.assert_allclose(loss.forward(np.array([3.0, 0.0, 6.0])), [0.0, 1.0, -1.0])


def test_features_without_schedule_match_lcpfn_inputs():
    f = nz.features_at(np.array([0.1, 0.5]), None)
    np.testing.assert_allclose(f, [[0.1, 1, 0.1, 0, 0], [0.5, 1, 0.5, 0, 0]])


@pytest.mark.parametrize("n", [5, 96, 97, 500])
def test_reduce_context_keeps_the_tail(n):
    from curvecast.engines.learned.engine import MAX_CONTEXT, TAIL_KEEP, reduce_context

    idx = reduce_context(n)
    assert len(idx) <= MAX_CONTEXT and np.all(np.diff(idx) > 0) and idx[0] == 0
    assert idx[-1] == n - 1 and set(range(max(n - TAIL_KEEP, 0), n)) <= set(idx.tolist())


def test_scalar_and_per_row_momentum_give_the_same_s2():
    lr = P.sample_schedules(np.random.default_rng(5), 6)
    batched = nz.schedule_features(lr, np.full(6, 0.03))
    for row in range(6):
        single = nz.schedule_features(lr[row], 0.03)
        for a, b in zip(batched, single):
            np.testing.assert_allclose(a[row], b, rtol=1e-9, atol=1e-12)


def test_degenerate_bound_ranges_fall_back_to_finite_transforms():
    for lo, hi in [(0.0, 5e-324), (0.0, 0.0), (-1e308, 1e308)]:
        tr = nz.value_transform(np.array([5e-324, 0.0, 0.0]), True, lo, hi)
        assert np.isfinite(tr.a) and np.isfinite(tr.b) and tr.b != 0
        assert np.isfinite(tr.inverse(tr.forward(np.array([0.0, 1e-300])))).all()
