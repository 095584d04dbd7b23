"""FitScalingLaw end to end: SDK and CLI against the real server on synthetic Chinchilla-shaped runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curvecast_client import Client, CurvecastError
from curvecast_client.cli import main as cli_main

TRUE = dict(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def chinchilla(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def runs(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    points = []
    for n in np.geomspace(2e7, 1e9, 8):
        for mult in (5, 10, 20, 40, 80):
            d = n * mult
            points.append({"n_params": n, "tokens": d, "loss": chinchilla(n, d) * np.exp(rng.normal(0, 0.005)),
                           "run_id": f"{n:.3g}-{mult}"})
    return points


def test_fit_recovers_law_predicts_and_splits_budget(server):
    with Client(server.address, timeout=120) as c:
        fit = c.fit_scaling_law(runs(), form="chinchilla", predict_at=[(7e10, 1.4e12)], compute_budgets=[1e23],
                                bootstrap=40)
    assert fit.form == "chinchilla" and fit.n_points == 40
    assert fit.parameters["E"].lower95 - 0.05 <= TRUE["E"] <= fit.parameters["E"].upper95 + 0.05
    assert fit.parameters["alpha"].value == pytest.approx(TRUE["alpha"], abs=0.08)
    pred = fit.predictions[0]
    assert pred["loss"] == pytest.approx(chinchilla(7e10, 1.4e12), rel=0.02)
    assert pred["lower95"] <= pred["loss"] <= pred["upper95"]
    opt = fit.compute_optimal[0]
    assert 6 * opt["n_params"] * opt["tokens"] == pytest.approx(1e23, rel=1e-6)


def test_bad_points_and_options_are_rejected_naming_the_field(server):
    pts = runs()
    pts[3] = {**pts[3], "loss": -1.0}
    weighted = runs()
    weighted[5] = {**weighted[5], "weight": float("nan")}
    with Client(server.address, retries=0) as c:
        for kwargs, field in (({"points": pts}, "points[3].loss"), ({"points": weighted}, "points[5].weight"),
                              ({"drop_early_fraction": 1.5}, "drop_early_fraction"),
                              ({"huber_delta": -1.0}, "huber_delta")):
            with pytest.raises(CurvecastError) as err:
                c.fit_scaling_law(kwargs.pop("points", runs()), **kwargs)
            assert err.value.code == "INVALID_ARGUMENT" and err.value.violations[0].field == field


def test_options_weights_kaplan_budgets_and_isoflop_over_the_wire(server):
    pts = runs()
    for p in pts[:5]:
        p["weight"] = 0.0
    with Client(server.address, timeout=120) as c:
        fit = c.fit_scaling_law(pts, drop_early_fraction=0.0, huber_delta=1.0, bootstrap=0, isoflop=True,
                                compute_budgets=[1e20])
        kap = c.fit_scaling_law(runs(), form="kaplan", compute_budgets=[1e20, 1e22], bootstrap=10)
    assert fit.dropped == {"zero_weight": 5} and fit.n_points_dropped == 5 and fit.n_points == 35
    assert fit.huber_delta == 1.0 and fit.drop_early_fraction == 0.0
    assert fit.isoflop is not None and len(fit.isoflop["budgets"]) > 0 and "exponent" in fit.isoflop
    assert [c["flops"] for c in kap.compute_losses] == [1e20, 1e22] and not kap.compute_optimal
    for c in kap.compute_losses:
        assert c["predictive_lower95"] <= c["lower95"] <= c["loss"] <= c["upper95"] <= c["predictive_upper95"]


def test_cli_fit_scaling_json(server, tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,run_id\n" + "\n".join(f"{p['n_params']},{p['tokens']},{p['loss']},{p['run_id']}"
                                                     for p in runs(1)))
    assert cli_main(["fit-scaling", str(path), "--server", server.address, "--predict", "1e10,2e11",
                     "--budget", "1e22", "--bootstrap", "20", "--json", "--timeout", "120"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_runs"] == 40 and len(out["compute_optimal"]) == 1 and "alpha" in out["parameters"]
    assert out["predictions"][0]["predictive_lower95"] <= out["predictions"][0]["lower95"]
    assert out["compute_optimal"][0]["n_params_lower95"] < out["compute_optimal"][0]["n_params"]


def test_cli_fit_scaling_options_and_text(server, tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,run_id,weight\n" + "\n".join(
        f"{p['n_params']},{p['tokens']},{p['loss']},{p['run_id']},{0 if i < 3 else 1}" for i, p in enumerate(runs(2))))
    assert cli_main(["fit-scaling", str(path), "--server", server.address, "--predict", "1e10,2e11",
                     "--budget", "1e22", "--bootstrap", "10", "--drop-early", "0", "--huber-delta", "0.001",
                     "--isoflop", "--timeout", "120"]) == 0
    text = capsys.readouterr().out
    assert "37 points" in text and "dropped: 3 zero_weight" in text and "Huber delta 0.001" in text
    assert "95% predictive [" in text and "isoflop" in text.lower()
    assert cli_main(["fit-scaling", str(path), "--server", server.address, "--drop-early", "2"]) != 0
