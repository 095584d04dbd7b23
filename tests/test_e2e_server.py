"""End-to-end: the real server process, talked to through the SDK and the CLI (no gRPC mocks)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from curvecast_client import Client, CurvecastError
from curvecast_client.cli import main as cli_main


def loss_curve(n: int = 40, total: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.linspace(10, 0.3 * total, n)
    y = 2.0 + 4.0 * x**-0.4 + rng.normal(0, 0.01, n)
    return x, y


def test_health_serving(server):
    with Client(server.address) as c:
        assert c.health() == "SERVING"
        assert c.health("curvecast.v1.Curvecast") == "SERVING"
        assert c.health("curvecast.engine.analytic") == "SERVING"


def test_reflection_lists_services(server):
    with grpc.insecure_channel(server.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert {"curvecast.v1.Curvecast", "grpc.health.v1.Health"} <= names
        req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="curvecast.v1.Curvecast")
        resp = next(stub.ServerReflectionInfo(iter([req])))
        fd = descriptor_pb2.FileDescriptorProto.FromString(resp.file_descriptor_response.file_descriptor_proto[0])
        assert "Forecast" in [m.name for m in fd.service[0].method]


def test_forecast_loss_curve(server):
    x, y = loss_curve()
    with Client(server.address) as c:
        f = c.forecast(x, y, goal="minimize", total_steps=1000, target=2.2, incumbent=2.25)
    assert len(f.predictions) == 50
    assert f.predictions[-1].x == pytest.approx(1000)
    assert f.final.x == pytest.approx(1000)
    for p in f.predictions:
        q = [p.quantiles[lv] for lv in (0.05, 0.25, 0.5, 0.75, 0.95)]
        assert q == sorted(q) and all(math.isfinite(v) for v in q)
    # a decreasing power law keeps decreasing: the median at the budget is below the last observation
    assert f.final.median < y[-1]
    truth = 2.0 + 4.0 * 1000**-0.4
    assert f.final.quantiles[0.05] - 0.1 < truth < f.final.quantiles[0.95] + 0.1
    assert f.compute_to_target is not None and 0.0 <= f.compute_to_target.prob_within_budget <= 1.0
    assert f.recommendation.action in {"continue", "stop_unpromising", "stop_converged"}
    assert f.recommendation.prob_beat_incumbent is not None
    assert f.engines and f.engines[0].provider


def test_forecast_accuracy_curve_respects_bounds(server):
    x = np.arange(1, 21, dtype=float)
    y = 0.95 - 0.5 * np.exp(-0.25 * x)
    with Client(server.address) as c:
        f = c.forecast(x, y, goal="maximize", x_kind="epoch", total_steps=60, lower_bound=0, upper_bound=1,
                       quantiles=[0.1, 0.5, 0.9])
    assert set(f.final.quantiles) == {0.1, 0.5, 0.9}
    assert all(p.quantiles[0.9] <= 1.0 for p in f.predictions)
    assert f.final.median >= y[-1] - 0.02


@pytest.mark.parametrize("kwargs, field", [
    (dict(x=[1, 2, 3], y=[1.0, float("nan"), 0.5]), "curve.values[1]"),
    (dict(x=[1, 3, 2], y=[1.0, 0.9, 0.8]), "curve.x[2]"),
    (dict(x=[1, 2, 3], y=[1.0, 0.9]), "curve.values"),
    (dict(x=[], y=[]), "curve.x"),
    (dict(x=[1, 2, 3], y=[1.0, 0.9, 0.8], quantiles=[0.5, 1.5]), "quantiles[1]"),
    (dict(x=[1, 2, 3], y=[1.0, 0.9, 0.8], total_steps=2), "run.total_steps"),
    (dict(x=[1, 2, float("inf")], y=[1.0, 0.9, 0.8]), "curve.x[2]"),
])
def test_bad_input_is_invalid_argument_naming_the_field(server, kwargs, field):
    with Client(server.address, retries=0) as c:
        with pytest.raises(CurvecastError) as err:
            c.forecast(**kwargs)
    assert err.value.code == "INVALID_ARGUMENT"
    assert field in [v.field for v in err.value.violations]


def test_oversized_curve_rejected(server):
    n = 100_001
    with Client(server.address, retries=0) as c:
        with pytest.raises(CurvecastError) as err:
            c.forecast(range(n), [1.0] * n)
    assert err.value.code == "INVALID_ARGUMENT" and err.value.violations[0].field == "curve.x"


def test_diverged_tail_gives_stop_diverged(server):
    x, y = loss_curve(20)
    with Client(server.address) as c:
        f = c.forecast(list(x) + [x[-1] + 5], list(y) + [float("nan")], total_steps=1000)
    assert f.recommendation.action == "stop_diverged"


def test_batch_isolates_bad_items(server):
    x, y = loss_curve()
    runs = [dict(x=x, y=y, total_steps=1000), dict(x=[1, 1], y=[1.0, 2.0]), dict(x=x, y=y, total_steps=2000)]
    with Client(server.address) as c:
        out = c.forecast_batch(runs)
    assert len(out) == 3
    assert not isinstance(out[0], CurvecastError) and not isinstance(out[2], CurvecastError)
    assert isinstance(out[1], CurvecastError) and out[1].code == "INVALID_ARGUMENT"
    assert out[1].violations[0].field == "requests[1].curve.x[1]"
    assert out[2].final.x == pytest.approx(2000)


def test_model_info(server):
    with Client(server.address) as c:
        info = c.model_info()
    assert info.api_version == "curvecast.v1"
    names = {e.name: e for e in info.engines}
    assert names["analytic"].available
    assert "learned" in names
    assert info.max_curve_points == 100_000
    assert info.scaling_limits == {"max_points": 100_000, "max_bootstrap": 2_000, "max_point_replicates": 10_000_000,
                                   "max_predict_at": 1_000, "max_compute_budgets": 1_000}


def test_metrics_endpoint_counts_calls(server):
    with Client(server.address, retries=0) as c:
        c.model_info()
        with pytest.raises(CurvecastError):
            c.forecast([2, 1], [1.0, 0.9])
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="GetModelInfo"' in body
    assert 'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Forecast"' in body
    assert "curvecast_engine_inference_seconds_bucket" in body


def test_cli_forecast_json_from_stdin(server, tmp_path):
    x, y = loss_curve()
    csv_text = "step,value\n" + "\n".join(f"{a},{b}" for a, b in zip(x, y)) + "\n"
    proc = subprocess.run([sys.executable, "-m", "curvecast_client.cli", "forecast", "--server", server.address,
                           "--goal", "minimize", "--total-steps", "1000", "--json"],
                          input=csv_text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"predictions", "final", "compute_to_target", "recommendation", "model"} <= set(out)
    assert out["predictions"][-1]["x"] == pytest.approx(1000)
    assert set(out["final"]["quantiles"]) == {"0.05", "0.25", "0.5", "0.75", "0.95"}


def test_cli_table_health_info_and_bad_input(server, tmp_path, capsys):
    x, y = loss_curve()
    path = tmp_path / "curve.json"
    path.write_text(json.dumps({"x": list(x), "y": list(y)}))
    assert cli_main(["forecast", str(path), "--server", server.address, "--total-steps", "500"]) == 0
    assert "recommendation:" in capsys.readouterr().out
    assert cli_main(["health", "--server", server.address]) == 0
    assert cli_main(["info", "--server", server.address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["api_version"] == "curvecast.v1"
    assert cli_main(["info", "--server", server.address]) == 0
    text = capsys.readouterr().out
    assert "sweep context: 1000 sibling runs, 200000 sibling points in all" in text and "scaling fits: " in text
    bad = tmp_path / "bad.csv"
    bad.write_text("step,value\n1,1.0\n1,0.9\n")
    assert cli_main(["forecast", str(bad), "--server", server.address]) == 1
    assert "curve.x[1]" in capsys.readouterr().err


def test_request_id_is_echoed_in_body_and_metadata(server):
    from curvecast_api.v1 import curvecast_pb2 as pb
    from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc
    from curvecast_client import forecast_request

    x, y = loss_curve()
    req = forecast_request(x, y, total_steps=1000, request_id="trial-42")
    with grpc.insecure_channel(server.address) as ch:
        resp, call = pb_grpc.CurvecastStub(ch).Forecast.with_call(req, metadata=(("x-request-id", "trial-42"),),
                                                                   timeout=30)
    assert resp.request_id == "trial-42"
    assert ("x-request-id", "trial-42") in tuple(call.initial_metadata())
    assert isinstance(resp, pb.ForecastResponse)


@pytest.mark.parametrize("engine", ["learned", "ensemble", "analytic"])
def test_each_engine_answers_and_reports_itself(server, engine):
    with Client(server.address) as c:
        if not {e.name: e for e in c.model_info().engines}["learned"].available and engine != "analytic":
            pytest.skip("bundled learned model not loadable here")
        x, y = loss_curve()
        f = c.forecast(x, y, total_steps=1000, engine=engine)
    names = {e.name for e in f.engines}
    assert names == ({"learned", "analytic"} if engine == "ensemble" else {engine})
    assert all(e.provider for e in f.engines)
    if engine != "analytic":
        assert {e.name: e for e in f.engines}["learned"].provider.endswith("ExecutionProvider")
    assert sum(e.weight for e in f.engines) == pytest.approx(1.0)
    assert f.final.quantiles[0.05] <= f.final.median <= f.final.quantiles[0.95]


def test_ready_line_is_plain_text_by_default(server):
    assert any(line.rstrip("\n") == f"curvecast-server ready on port {server.port}" for line in server.output)


def test_ready_line_is_a_json_record_under_json_logs(tmp_path):
    """Under --log-format json every line is a JSON record, the readiness line too (at any log level); its
    message is still the plain line, which is what the tests' and bench's start-up waits look for."""
    from conftest import ServerProcess

    proc = ServerProcess("--log-format", "json", "--log-level", "ERROR", "--model", str(tmp_path / "absent.onnx"))
    try:
        proc.wait_ready()
    finally:
        proc.stop()
    ready = [json.loads(line) for line in proc.output if "curvecast-server ready" in line]
    assert len(ready) == 1
    assert ready[0]["msg"] == f"curvecast-server ready on port {proc.port}" and ready[0]["port"] == proc.port
    assert ready[0]["level"] == "INFO" and "ts" in ready[0]
    for line in proc.output:
        json.loads(line)  # nothing but JSON records
