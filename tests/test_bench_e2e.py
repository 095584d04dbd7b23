"""The bench's e2e mode against the real server process (the shared ``server`` fixture), and the
quantile-to-marginals reconstruction it relies on."""

from __future__ import annotations

import json

import numpy as np
from scipy import stats

from bench.__main__ import main
from bench.engines import E2E_QUANTILES, quantiles_to_marginals


def test_quantiles_to_marginals_recovers_a_gaussian():
    x = np.array([1.0, 2.0])
    mu, sd = np.array([0.0, 5.0]), np.array([1.0, 0.1])
    vals = mu[:, None] + sd[:, None] * stats.norm.ppf(E2E_QUANTILES)[None, :]
    m = quantiles_to_marginals(x, E2E_QUANTILES, vals, mu)
    np.testing.assert_allclose(m.quantile([0.001, 0.3, 0.999]), mu[:, None] + sd[:, None] * stats.norm.ppf([0.001, 0.3, 0.999])[None, :], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m.cdf(mu + sd), stats.norm.cdf(1.0), atol=2e-3)


def test_e2e_mode_through_real_server(server, tmp_path):
    out = tmp_path / "e2e"
    rc = main(["run", "--quick", "--no-data", "--sources", "synthetic", "--mode", "e2e", "--server", server.address, "--engines", "analytic,last_value", "--out", str(out), "--no-plots", "--no-speed"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["mode"] == "e2e" and res["engines"]["ran"] == ["analytic", "last_value"]
    assert "grpc://" in res["engines"]["info"]["analytic"] and "answered by analytic" in res["engines"]["info"]["analytic"]
    assert res["macro"]["analytic"]["all"]["n_failed"] == 0 and res["macro"]["analytic"]["all"]["n_tasks"] > 0
    assert "mode: **e2e**" in (out / "report.md").read_text()
