"""MLflow reader: runs logged with the real mlflow client into a local sqlite store, read by the SDK and by
`curvecast forecast --mlflow` against the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="the readers extra (mlflow-skinny) is not installed")

from curvecast_client.cli import EXIT_USAGE, main  # noqa: E402
from curvecast_client.readers import ReaderError, mlflow_runs, read_mlflow  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, dict[str, str]]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sweep")
    ids = {}
    for name, offset in (("good", 0.0), ("bad", 0.6)):
        run = client.create_run(exp, run_name=name)
        for i, v in enumerate([3.9, 3.4, 3.2, 3.05, 2.97]):
            client.log_metric(run.info.run_id, "val_loss", v + offset, step=100 * (i + 1))
        client.log_metric(run.info.run_id, "val_loss", 3.3 + offset, step=200)  # logged twice: the later wins
        client.set_terminated(run.info.run_id)
        ids[name] = run.info.run_id
    return uri, ids


def test_read_by_run_id_and_by_experiment(store):
    uri, ids = store
    c = read_mlflow(uri, "val_loss", run_id=ids["good"])
    assert c.x == [100.0, 200.0, 300.0, 400.0, 500.0] and c.y[1] == pytest.approx(3.3) and c.name == "good"
    assert read_mlflow(uri, "val_loss", experiment="sweep", run_name="bad").y[0] == pytest.approx(4.5)
    assert [r.name for r in mlflow_runs(uri, "sweep", "val_loss")] == ["good", "bad"]


def test_errors_name_what_exists(store):
    uri, ids = store
    with pytest.raises(ReaderError, match=r"no metric 'acc' \(metrics: val_loss\)"):
        read_mlflow(uri, "acc", run_id=ids["good"])
    with pytest.raises(ReaderError, match="experiments: .*sweep"):
        mlflow_runs(uri, "nope", "val_loss")


def test_cli_forecast_from_mlflow(server, store, capsys):
    uri, ids = store
    assert main(["forecast", "--mlflow", uri, "--run-id", ids["good"], "--metric-key", "val_loss",
                 "--server", server.address, "--total-steps", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["final"]["x"] == 1000
    assert main(["forecast", "--mlflow", uri, "--server", server.address]) == EXIT_USAGE
    assert "--metric-key" in capsys.readouterr().err


def test_cli_report_over_an_mlflow_experiment(server, store, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (plot extra) is not installed")
    uri, _ = store
    out = tmp_path / "sweep.html"
    assert main(["report", "--mlflow", uri, "--experiment", "sweep", "--metric-key", "val_loss",
                 "--server", server.address, "--out", str(out), "--total-steps", "1000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in summary["runs"]] == ["good", "bad"] and summary["budget"] == 1000
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 2 and "MLflow" in page
