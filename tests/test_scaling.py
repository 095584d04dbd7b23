"""Cross-run scaling-law fits (curvecast.scaling) on synthetic data; real data only when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from curvecast.domain.errors import InvalidRequest
from curvecast.scaling import ScalingPoint, fit_scaling_law

TRUTH = {"E": 1.8172, "A": 477.8, "B": 2143.4, "alpha": 0.3473, "beta": 0.3672}  # Besiroglu et al. 2024


def _law(N, D, t=TRUTH):
    return t["E"] + t["A"] / N ** t["alpha"] + t["B"] / D ** t["beta"]


def _isoflop(noise=0.01, seed=0, sizes=24):
    rng = np.random.default_rng(seed)
    pts = []
    for C in np.logspace(18, 22, 7):
        for N in np.logspace(7.6, 10.4, sizes):
            D = C / (6 * N)
            if 1e8 <= D <= 1e12:
                pts.append(ScalingPoint(float(N), float(D), float(_law(N, D) * np.exp(rng.laplace(0, noise)))))
    return pts


@pytest.fixture(scope="module")
def chinchilla_fit():
    return fit_scaling_law(_isoflop(), bootstrap=20, seed=1)


def test_approach3_recovers_published_parameters(chinchilla_fit):
    fit = chinchilla_fit
    for k, v in TRUTH.items():
        lo, hi = fit.intervals[k]
        assert lo <= v <= hi, (k, v, fit.intervals[k])
    assert fit.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.04)
    assert fit.params["beta"] == pytest.approx(TRUTH["beta"], abs=0.04)
    assert fit.residual_rmse < 0.03
    assert fit.n_runs == fit.n_points  # no run ids: every point is its own run


def test_predict_band_and_compute_optimal(chinchilla_fit):
    fit = chinchilla_fit
    mean, lo, hi = fit.predict([1e9, 7e10], [2e10, 1.4e12])
    assert np.all(lo <= mean) and np.all(mean <= hi)
    assert np.allclose(mean, _law(np.array([1e9, 7e10]), np.array([2e10, 1.4e12])), rtol=0.02)
    C = 5.76e23
    n_opt, d_opt, loss = fit.compute_optimal(C)
    assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-6)
    # the optimum really is the lowest loss along the iso-FLOP line
    for f in (0.5, 2.0):
        n = n_opt * f
        assert fit.predict(n, C / (6 * n))[0][0] > loss
    # and it agrees with the true law's optimum within a factor 2 in N
    t = TRUTH
    G = (t["alpha"] * t["A"] / (t["beta"] * t["B"])) ** (1 / (t["alpha"] + t["beta"]))
    n_true = G * (C / 6) ** (t["beta"] / (t["alpha"] + t["beta"]))
    assert 0.5 < n_opt / n_true < 2.0


def test_invalid_points_name_the_field():
    pts = _isoflop()[:10]
    pts[3] = ScalingPoint(1e8, 1e9, -1.0)
    with pytest.raises(InvalidRequest) as e:
        fit_scaling_law(pts)
    assert any(v.field == "points[3].loss" for v in e.value.violations)
    with pytest.raises(InvalidRequest) as e:
        fit_scaling_law(_isoflop()[:4], bootstrap=0)
    assert e.value.violations[0].field == "points"
    with pytest.raises(InvalidRequest):
        fit_scaling_law(_isoflop(), form="nope")
    with pytest.raises(InvalidRequest) as e:
        fit_scaling_law([ScalingPoint(float("nan"), 1e9, 3.0)] * 6)
    assert e.value.violations[0].field == "points[0].n_params"


def test_checkpoints_drop_early_and_bootstrap_over_runs():
    rng = np.random.default_rng(3)
    pts = []
    for i, N in enumerate(np.logspace(7.5, 9.5, 8)):
        final = 40 * N
        for frac in np.linspace(0.05, 1.0, 12):
            D = frac * final
            # early checkpoints carry an extra warm-up penalty the law does not model
            L = _law(N, D) * (1 + 0.1 * max(0.0, 1 - frac / 0.25) ** 2) * np.exp(rng.normal(0, 0.003))
            pts.append(ScalingPoint(float(N), float(D), float(L), run_id=f"run{i}"))
    kept = fit_scaling_law(pts, bootstrap=10, drop_early_fraction=0.25)
    assert kept.n_runs == 8
    assert kept.n_points == sum(1 for p in pts if p.tokens >= 0.25 * 40 * p.n_params * (1 - 1e-9))
    everything = fit_scaling_law(pts, bootstrap=0, drop_early_fraction=0.0)
    assert everything.n_points == len(pts)
    target_n, target_d = 1e10, 4e11
    truth = _law(target_n, target_d)
    err_kept = abs(kept.predict(target_n, target_d)[0][0] - truth) / truth
    err_all = abs(everything.predict(target_n, target_d)[0][0] - truth) / truth
    assert err_kept < err_all
    assert err_kept < 0.02


def test_gadre_form_shares_the_exponent():
    t = dict(TRUTH, beta=TRUTH["alpha"])
    rng = np.random.default_rng(4)
    pts = [ScalingPoint(float(N), float(M * N), float(_law(N, M * N, t) * np.exp(rng.normal(0, 0.003))))
           for N in np.logspace(7, 9, 5) for M in (5, 20, 80, 320)]
    fit = fit_scaling_law(pts, form="gadre", bootstrap=0)
    p = fit.params
    assert p["alpha"] == p["beta"] == pytest.approx(2 * p["eta"])
    assert p["alpha"] == pytest.approx(t["alpha"], abs=0.05)
    # a and b are the C-M form's coefficients: a*M^eta*C^-eta == A*N^-alpha at C = 6ND
    N, D = 1e9, 2e10
    C, M = 6 * N * D, D / N
    assert p["a"] * M ** p["eta"] * C ** -p["eta"] == pytest.approx(p["A"] * N ** -p["alpha"], rel=1e-6)


def test_kaplan_compute_law():
    rng = np.random.default_rng(5)
    C = np.logspace(17, 21, 12)
    L = 1.7 + (3.1e8 * 8.64e19 / C) ** 0.05 * 0 + 30.0 * C**-0.1
    pts = [ScalingPoint(1e8, c / 6e8, float(l * np.exp(rng.normal(0, 0.002)))) for c, l in zip(C, L)]
    fit = fit_scaling_law(pts, form="kaplan", bootstrap=0)
    assert fit.params["alpha_C"] == pytest.approx(0.1, abs=0.02)
    with pytest.raises(InvalidRequest):
        fit.compute_optimal(1e22)


def _data() -> Path:
    env = os.environ.get("CURVECAST_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_gemstones_extrapolation_if_data_present():
    path = _data() / "gemstones" / "fineweb_edu_losses_combined.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found (set CURVECAST_DATA)")
    import pandas as pd

    df = pd.read_json(path, lines=True)
    mk = lambda r: ScalingPoint(float(r.params_active_precise), float(r.tokens), float(r.final_loss), run_id=r.run_name)  # noqa: E731
    small = df[df.params_active_precise < 1.5e9]
    big = df[(df.params_active_precise >= 1.5e9) & (df.tokens >= 0.7 * df.tokens.max())]
    fit = fit_scaling_law([mk(r) for r in small.iloc[::2].itertuples()], bootstrap=0)
    pred = fit.predict(big.params_active_precise.to_numpy(), big.tokens.to_numpy())[0]
    are = float(np.mean(np.abs(pred - big.final_loss.to_numpy()) / big.final_loss.to_numpy()))
    assert are < 0.02
