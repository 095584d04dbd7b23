"""Marginals: the one distribution type every engine answers in."""

import numpy as np
import pytest
from scipy import stats

from curvecast.domain.distribution import LEVELS, Marginals, count_le_rows, interp_rows


def gaussian(m=3):
    return Marginals.from_gaussian(np.arange(m, dtype=float), np.array([0.0, 1.0, 2.0][:m]), np.array([1.0, 2.0, 0.5][:m]))


def test_quantiles_match_gaussian():
    g = gaussian()
    np.testing.assert_allclose(g.quantile(0.5), [0.0, 1.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(g.quantile(0.95), stats.norm.ppf(0.95, [0, 1, 2], [1, 2, 0.5]), rtol=1e-6)


def test_log_pdf_close_to_gaussian_in_the_body_and_finite_in_the_tails():
    g = gaussian()
    v = np.array([0.3, 1.5, 2.2])
    np.testing.assert_allclose(g.log_pdf(v), stats.norm.logpdf(v, [0, 1, 2], [1, 2, 0.5]), atol=0.02)
    far = g.log_pdf(np.array([50.0, -50.0, 1e6]))
    assert np.all(np.isfinite(far)) and np.all(far < -10)


def test_cdf_is_monotone_and_inverts_quantile():
    g = gaussian(1)
    vs = np.linspace(-6, 6, 200)
    c = g.cdf_grid(vs[None, :])[0]
    assert np.all(np.diff(c) >= 0) and c[0] < 0.001 and c[-1] > 0.999
    assert g.cdf(g.quantile(0.3))[0] == pytest.approx(0.3, abs=1e-9)


def test_crps_matches_closed_form_for_gaussian():
    g = gaussian(1)
    y = 0.7
    closed = 1.0 * (y * (2 * stats.norm.cdf(y) - 1) + 2 * stats.norm.pdf(y) - 1 / np.sqrt(np.pi))
    assert g.crps(np.array([y]))[0] == pytest.approx(closed, rel=0.03)


def test_mixture_of_identical_parts_is_the_part_and_mixture_widens():
    a = Marginals.from_gaussian(np.array([0.0]), np.array([0.0]), np.array([1.0]))
    b = Marginals.from_gaussian(np.array([0.0]), np.array([4.0]), np.array([1.0]))
    same = Marginals.mixture([a, a], [0.3, 0.7])
    np.testing.assert_allclose(same.quantile([0.1, 0.5, 0.9]), a.quantile([0.1, 0.5, 0.9]), atol=0.02)
    mix = Marginals.mixture([a, b], [0.5, 0.5])
    assert mix.quantile(0.5)[0] == pytest.approx(2.0, abs=0.05)
    assert mix.mean[0] == pytest.approx(2.0)


def test_affine_flip_and_clip():
    g = gaussian(1)
    f = g.affine(-1.0, 0.0)
    assert f.quantile(0.9)[0] == pytest.approx(-g.quantile(0.1)[0])
    c = Marginals.from_gaussian(np.array([0.0]), np.array([0.95]), np.array([0.1])).clip(0, 1)
    assert c.values.max() <= 1.0


def test_samples_constructor():
    rng = np.random.default_rng(0)
    s = rng.normal(2.0, 0.5, size=(20000, 2))
    m = Marginals.from_samples(np.array([1.0, 2.0]), s)
    np.testing.assert_allclose(m.quantile(0.5), [2.0, 2.0], atol=0.02)
    assert len(LEVELS) == m.values.shape[1]


def test_row_wise_interp_and_search_match_numpy_per_row():
    rng = np.random.default_rng(1)
    rows = np.sort(rng.normal(0, 1, (7, 20)), axis=1)
    rows[2, 5:9] = rows[2, 5]  # ties
    v = rng.normal(0, 1.5, (7, 11))
    v[2, 0] = rows[2, 5]
    expect = np.array([np.searchsorted(r, q, side="right") for r, q in zip(rows, v)])
    np.testing.assert_array_equal(count_le_rows(rows, v), expect)
    huge = rows.copy()
    huge[0, -1] = 1.5e308  # the span overflows: the merge fallback answers the same
    huge[0, 0] = -1.5e308
    expect[0] = np.searchsorted(huge[0], v[0], side="right")
    np.testing.assert_array_equal(count_le_rows(huge, v), expect)
    fp = rng.normal(0, 1, (7, 20))
    got = interp_rows(v, rows, fp)
    for i in (0, 1, 3, 6):  # rows without ties (np.interp is undefined on tied xp)
        np.testing.assert_allclose(got[i], np.interp(v[i], rows[i], fp[i]), rtol=1e-12)


def test_vectorised_queries_agree_with_their_definitions_beyond_the_grid():
    g = gaussian()
    q = g.quantile([1e-4, 0.001, 0.5, 0.999, 0.9999])
    assert np.all(np.diff(q, axis=1) > 0)  # exponential tails continue the grid monotonically
    np.testing.assert_allclose(g.cdf(q[:, 0]), 1e-4, rtol=1e-6)
    np.testing.assert_allclose(g.cdf(q[:, -1]), 1 - 1e-4, rtol=1e-6)
    v = np.array([0.1, 5.0, -3.0])
    c = g.cdf_grid(v[:, None])[:, 0]
    np.testing.assert_allclose(c, g.cdf(v), atol=1e-12)


def test_mixture_quantiles_invert_the_mixture_cdf_even_for_separated_parts():
    rng = np.random.default_rng(3)
    vals = np.sort(rng.standard_t(3, (20, len(LEVELS))), axis=1)
    a = Marginals.from_quantile_values(np.arange(20.0), vals)
    b = Marginals.from_quantile_values(np.arange(20.0), vals * 0.3 + 25.0)  # far apart: a bimodal mixture
    mix = Marginals.mixture([a, b], [0.3333, 0.6667])
    back = 0.3333 * a.cdf_grid(mix.values) + 0.6667 * b.cdf_grid(mix.values)
    np.testing.assert_allclose(back, np.broadcast_to(LEVELS, back.shape), atol=1e-3)
