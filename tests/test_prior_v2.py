"""Prior 2.0: each component produces what docs/prior.md says it does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from curvecast.engines.learned import normalization as nz
from curvecast.engines.learned.engine import MAX_CONTEXT, reduce_context
from training import prior as P1
from training import prior2 as P2

QUIET = P2.Prior2Params(warmup_transient_prob=0.0, plateau_prob=0.0, overfit_prob=0.0, divergence_prob=0.0)


def _lag_corr(e: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(e[:, :-lag].ravel(), e[:, lag:].ravel())[0, 1])


def test_ar_noise_has_the_stated_autocorrelation_also_across_gaps():
    rng = np.random.default_rng(0)
    idx = np.broadcast_to(np.arange(400), (200, 400))
    e = P2.ar_student_noise(rng, idx, np.full(200, 0.8), np.full(200, 50.0))
    assert abs(_lag_corr(e, 1) - 0.8) < 0.03
    assert abs(np.var(e) - 1.0) < 0.1
    # a subsample 3 steps apart sees phi^3, as the same curve logged less often would
    sub = P2.ar_student_noise(rng, idx[:, ::3].copy(), np.full(200, 0.8), np.full(200, 50.0))
    assert abs(_lag_corr(sub, 1) - 0.8**3) < 0.04
    # a repeated index is the same point: identical noise
    rep = P2.ar_student_noise(rng, np.array([[0, 5, 5, 9]]), np.array([0.5]), np.array([5.0]))
    assert rep[0, 1] == rep[0, 2]


def test_student_t_innovations_give_heavy_tails_with_unit_variance():
    rng = np.random.default_rng(1)
    idx = np.broadcast_to(np.arange(2000), (20, 2000))

    def kurtosis(df: float) -> float:
        e = P2.ar_student_noise(rng, idx, np.zeros(20), np.full(20, df)).ravel()
        return float(np.mean(e**4) / np.mean(e**2) ** 2 - 3.0)

    heavy, light = kurtosis(4.5), kurtosis(200.0)
    assert heavy > 1.0 and abs(light) < 0.3


@pytest.mark.parametrize("kappa, shrinks", [(2.0, True), (1.0, False)])
def test_noise_scale_shrinks_with_the_loss_when_kappa_exceeds_one(kappa, shrinks):
    rng = np.random.default_rng(2)
    n, k = 400, 200
    loss = np.broadcast_to(np.geomspace(1.0, 0.05, k), (n, k)).copy()
    idx = np.broadcast_to(np.arange(k), (n, k))
    noise = {"sig": np.full(n, 0.02), "phi": np.zeros(n), "df": np.full(n, 100.0), "kappa": np.full(n, kappa)}
    y = P2.noisy_losses(rng, loss, idx, np.ones((n, k)), noise)
    r = np.log(y / loss)
    ratio = r[:, -20:].std() / r[:, :20].std()
    assert np.all(y > 0)
    assert (ratio < 0.3) if shrinks else (0.8 < ratio < 1.25)


def _anneal_drop(p: P2.Prior2Params, seed: int = 3, n: int = 4000) -> np.ndarray:
    """Relative end-of-run loss drop of a full anneal (S2 = 1) against the same curve at constant LR."""
    f = np.zeros((n, 1, nz.N_FEATURES))
    f[..., 0] = f[..., 2] = 1.0  # t = S1 = 1
    f[..., 1] = 1.0
    const, _ = P2.clean_losses(np.random.default_rng(seed), f, p)
    f[..., 3] = 1.0
    annealed, _ = P2.clean_losses(np.random.default_rng(seed), f, p)
    return ((const - annealed) / const)[:, 0]


def test_cooldown_drop_is_in_the_documented_range_and_follows_its_parameter():
    drop = _anneal_drop(QUIET)
    assert np.all(drop >= 0) and np.all(drop < 1)
    # docs/prior.md: the median full-anneal drop is a few percent of the loss, within 1-30%
    assert 0.01 < np.median(drop) < 0.3
    bigger = _anneal_drop(replace(QUIET, cooldown_gain_log_mu=np.log(0.6)))
    assert np.median(bigger) > 1.5 * np.median(drop)


def test_overfitting_draws_turn_up_and_plain_draws_do_not():
    t = np.linspace(0.01, 1.0, 100)
    f = np.broadcast_to(nz.features_at(t, None), (2000, 100, nz.N_FEATURES)).copy()

    def turned_up(p: P2.Prior2Params) -> float:
        loss, _ = P2.clean_losses(np.random.default_rng(4), f, p)
        return float(np.mean(loss[:, -1] > 1.01 * loss.min(axis=1)))

    assert turned_up(replace(QUIET, overfit_prob=1.0)) > 0.6
    assert turned_up(QUIET) == 0.0
    # the default prior has some U-shapes, most curves none
    assert 0.05 < turned_up(P2.Prior2Params(divergence_prob=0.0)) < 0.4


def test_divergence_and_accuracy_collapse_turn_up():
    def rates(prob: float) -> tuple[float, float]:
        p = replace(P2.Prior2Params(), divergence_prob=prob, collapse_prob=prob)
        cs = P2.full_curves(np.random.default_rng(5), 800, 200, p)
        loss = cs.kind != P1.KIND_BOUNDED
        blow_up = np.mean(cs.y[loss, -1] / cs.y[loss].min(axis=1) > 3.0)
        acc = cs.y[~loss]
        collapse = np.mean(acc.max(axis=1) - acc[:, -1] > 0.2)
        return float(blow_up), float(collapse)

    (div0, col0), (div1, col1) = rates(0.0), rates(0.4)
    assert div1 - div0 > 0.1 and col1 - col0 > 0.05


def test_bounds_are_limits_values_never_reach_or_pile_onto_them():
    rng = np.random.default_rng(6)
    cs = P2.full_curves(rng, 800, 300, P2.Prior2Params())
    acc = cs.kind == P1.KIND_BOUNDED
    assert acc.any() and (~acc).any()
    assert np.all((cs.y[acc] > 0) & (cs.y[acc] < 1))
    assert np.all(cs.y[~acc] > 0) and np.isfinite(cs.y).all()
    assert np.mean(cs.y[acc] > 1 - 1e-6) < 1e-3  # no point mass at the bound


def test_lengths_span_3_to_1e5():
    rng = np.random.default_rng(7)
    p = P2.Prior2Params()
    lengths = []
    for _ in range(300):
        long = rng.uniform() < 0.5
        n_ctx = MAX_CONTEXT if long else int(rng.integers(1, MAX_CONTEXT + 1))
        length, n_obs = P2.draw_lengths(rng, 32, n_ctx, long, p)
        assert np.all((n_obs >= 1) & (n_obs < length))
        lengths.append(length)
    lengths = np.concatenate(lengths)
    assert lengths.min() >= 3 and lengths.max() <= 100_000
    assert lengths.min() <= 5 and lengths.max() >= 30_000


def test_long_contexts_are_reduced_exactly_by_the_training_rule():
    n_obs = np.array([97, 150, 5000, 99_999])
    rows, mask = P2._context_rows(n_obs, MAX_CONTEXT)
    for j, m in enumerate(n_obs):
        keep = reduce_context(int(m))
        assert int(mask[j].sum()) == len(keep)
        np.testing.assert_array_equal(rows[j, : len(keep)], keep)


def test_model_space_matches_the_serving_transform_on_short_prefixes():
    rng = np.random.default_rng(8)
    y = np.abs(rng.lognormal(0.0, 0.5, size=(6, 40)))
    kind = np.array([P1.KIND_LOSS, P1.KIND_LOSS_INFERRED] * 3)
    z = P2._model_space(y, kind, y[:, :3], np.ones((6, 3)), y, np.ones((6, 40)))
    for j in range(6):
        lower = 0.0 if kind[j] == P1.KIND_LOSS else None
        tr = nz.value_transform(y[j], True, lower, None)
        np.testing.assert_allclose(z[j], np.clip(tr.forward(y[j]), nz.Z_MIN, nz.Z_MAX), rtol=1e-9, atol=1e-12)


def test_make_batch_shapes_masks_and_ranges():
    rng = np.random.default_rng(9)
    p = P2.Prior2Params()
    seen_long = seen_short = False
    for _ in range(40):
        cx, cy, cm, qx, qy = P2.make_batch(rng, 32, p)
        assert cx.shape[:2] == cy.shape == cm.shape and qx.shape[:2] == qy.shape
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in (cx, cy, cm, qx, qy))
        assert np.all(cm[:, 0] == 1) and set(np.unique(cm)) <= {0.0, 1.0}
        assert np.all((qy >= nz.Z_MIN) & (qy <= nz.Z_MAX))
        # queries lie after every valid context point
        last_ctx = np.where(cm > 0, cx[..., 0], -np.inf).max(axis=1)
        assert np.all(qx[..., 0].min(axis=1) >= last_ctx - 1e-6)
        seen_long |= cx.shape[1] == MAX_CONTEXT
        seen_short |= cx.shape[1] < MAX_CONTEXT
    assert seen_long and seen_short
    b = P2.bucket_borders(rng, 50, p, n_batches=4, batch=16)
    assert b.shape == (51,) and np.all(np.diff(b) > 0)


def test_fitted_params_json_round_trips(tmp_path):
    path = tmp_path / "fitted.json"
    path.write_text('{"params": {"noise_log_mu": -3.25, "overfit_prob": 0.1, "unknown": 1}}')
    p = P2.load_params(path)
    assert p.noise_log_mu == -3.25 and p.overfit_prob == 0.1 and p.kappa_mu == P2.Prior2Params().kappa_mu
    assert P2.load_params(None) == P2.Prior2Params()
