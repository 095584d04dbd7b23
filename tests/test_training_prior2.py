"""Training on prior 2.0: warm start from the bundled ONNX, masked batches, resume keeps the prior."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from training import onnx_init, train  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "service/curvecast/models/curvecast-pfn.onnx"


def test_param_names_follow_torch_scopes():
    assert onnx_init._param_name("/blocks.0/ff/ff.0/MatMul") == "blocks.0.ff.0.weight"
    assert onnx_init._param_name("/enc_x/enc_x.2/MatMul") == "enc_x.2.weight"
    assert onnx_init._param_name("/blocks.3/kv/MatMul") == "blocks.3.kv.weight"


@pytest.mark.skipif(not MODEL.exists(), reason="bundled model absent")
def test_warm_start_reproduces_the_bundled_model():
    model = onnx_init.load_onnx_weights(MODEL, onnx_init.config_from_card(MODEL))
    assert onnx_init.parity(model, MODEL) < 1e-4


def test_masked_padding_does_not_change_predictions():
    from training.model import CurvePFN, ModelConfig

    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=32, n_buckets=20, d_dec=32)
    model = CurvePFN(cfg, torch.linspace(-2, 3, 21)).eval()
    g = torch.Generator().manual_seed(0)
    cx, cy, qx = torch.rand(1, 5, 5, generator=g), torch.rand(1, 5, generator=g), torch.rand(1, 3, 5, generator=g)
    pad_x = torch.cat([cx, torch.rand(1, 4, 5, generator=g)], 1)
    pad_y = torch.cat([cy, torch.rand(1, 4, generator=g)], 1)
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 4)], 1)
    with torch.no_grad():
        a, _ = model(cx, cy, torch.ones(1, 5), qx)
        b, _ = model(pad_x, pad_y, mask, qx)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_prior2_run_trains_checkpoints_and_resumes_on_the_same_prior(tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), "--max-minutes", "0.05", "--prior", "2.0", "--batch", "8", "--d-model", "32",
            "--layers", "1", "--heads", "2", "--d-ff", "32", "--buckets", "50", "--log-every", "1"]
    train.main(args)
    ck = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False)
    assert ck["prior_version"] == "curvecast-prior-2.0" and ck["step"] > 0
    assert "noise_log_mu" in ck["prior_params"]
    first = ck["step"]
    # resuming without --prior keeps the run's own prior
    train.main(["--out", str(out), "--max-minutes", "0.1", "--batch", "8", "--log-every", "1"])
    ck = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False)
    assert ck["step"] > first and ck["prior_version"] == "curvecast-prior-2.0"
    lines = [json.loads(x) for x in (out / "train.log").read_text().splitlines()]
    assert any(x.get("event") == "resume" for x in lines)
    assert all(np.isfinite(x["loss"]) for x in lines if "loss" in x and "event" not in x)


def test_worker_batches_are_a_deterministic_stream():
    from training import prior2 as P2

    p2 = P2.Prior2Params()
    a = train._worker_batch((7, 3, 8, 0.35, p2))
    b = train._worker_batch((7, 3, 8, 0.35, p2))
    c = train._worker_batch((7, 4, 8, 0.35, p2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, c))


def test_training_with_worker_processes(tmp_path):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--max-minutes", "0.05", "--prior", "2.0", "--batch", "8", "--d-model", "32",
                "--layers", "1", "--heads", "2", "--d-ff", "32", "--buckets", "50", "--workers", "1",
                "--device", "cpu"])
    ck = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False)
    assert ck["step"] > 0


def test_resume_keeps_the_prior_parameters_the_run_started_with(tmp_path):
    params = tmp_path / "fitted.json"
    params.write_text('{"params": {"noise_log_mu": -3.0}}')
    out = tmp_path / "run"
    common = ["--out", str(out), "--prior", "2.0", "--prior-params", str(params), "--batch", "8", "--d-model", "32",
              "--layers", "1", "--heads", "2", "--d-ff", "32", "--buckets", "50"]
    train.main(common + ["--max-minutes", "0.05"])
    params.write_text('{"params": {"noise_log_mu": -1.0}}')  # edited after the run started
    train.main(common + ["--max-minutes", "0.1"])
    ck = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False)
    assert ck["prior_params"]["noise_log_mu"] == -3.0
