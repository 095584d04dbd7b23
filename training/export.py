"""Export a trained checkpoint to ONNX and write the model card next to it.

    PYTHONPATH=service:. python -m training.export --ckpt training/runs/NAME/ckpt.pt \
        --out service/curvecast/models/curvecast-pfn.onnx

ONNX inputs (float32): ``ctx_x`` (B, N, 5), ``ctx_y`` (B, N), ``ctx_mask`` (B, N; 1 valid, 0 padding),
``qry_x`` (B, M, 5). Outputs: ``log_probs`` (B, M, K) over the buckets and ``borders`` (K + 1,).
B, N and M are dynamic. The card (``model-card.json``) records the sha256 of the ONNX file, which the
serving engine verifies at load time; metrics are added later by ``training.eval_prior``
without touching the hash.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from curvecast.engines.learned.engine import sha256_of
from training.model import CurvePFN, ModelConfig

INPUT_NAMES = ["ctx_x", "ctx_y", "ctx_mask", "qry_x"]
OUTPUT_NAMES = ["log_probs", "borders"]
OPSET = 17


def load_checkpoint(path: Path) -> tuple[CurvePFN, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ModelConfig(**ck["config"])
    model = CurvePFN(cfg, ck["model"]["borders"])
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def example_inputs(n_feat: int, b: int = 2, n: int = 7, m: int = 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(b, n, n_feat, generator=g),
        torch.rand(b, n, generator=g),
        torch.ones(b, n),
        torch.rand(b, m, n_feat, generator=g),
    )


def export_onnx(model: CurvePFN, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    dyn = {
        "ctx_x": {0: "batch", 1: "n_ctx"},
        "ctx_y": {0: "batch", 1: "n_ctx"},
        "ctx_mask": {0: "batch", 1: "n_ctx"},
        "qry_x": {0: "batch", 1: "n_qry"},
        "log_probs": {0: "batch", 1: "n_qry"},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model, example_inputs(model.cfg.n_features), str(out), input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES, dynamic_axes=dyn, opset_version=OPSET, dynamo=False,
        )


def write_card(onnx_path: Path, ck: dict, model: CurvePFN, extra: dict | None = None) -> Path:
    card_path = onnx_path.parent / "model-card.json"
    cfg = model.cfg
    card = {
        "name": "curvecast-pfn",
        "file": onnx_path.name,
        "sha256": sha256_of(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prior": {"version": ck.get("prior_version"), "params": ck.get("prior_params")},
        "normalization": "curvecast.engines.learned.normalization (features t, lr, S1, S2, known; z = a + b*y)",
        "architecture": {**cfg.to_dict(), "params": int(sum(p.numel() for p in model.parameters())),
                         "attention": "PFN: all tokens attend to valid context tokens only", "norm": "pre-LN",
                         "output": "bar distribution, equal-mass borders from the prior, half-normal tails"},
        "onnx": {"opset": OPSET, "inputs": {"ctx_x": ["B", "N", cfg.n_features], "ctx_y": ["B", "N"],
                                             "ctx_mask": ["B", "N"], "qry_x": ["B", "M", cfg.n_features]},
                 "outputs": {"log_probs": ["B", "M", cfg.n_buckets], "borders": [cfg.n_buckets + 1]}},
        "training": {"steps": ck.get("step"), "curves_seen": ck.get("curves_seen"),
                     "wall_s": round(float(ck.get("elapsed_s", 0.0)), 1), "args": ck.get("args")},
        "metrics": {},
    }
    if card_path.exists():  # keep metrics measured earlier for the same file
        old = json.loads(card_path.read_text())
        if old.get("sha256") == card["sha256"]:
            card["metrics"] = old.get("metrics", {})
    if extra:
        card.update(extra)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def check_parity(model: CurvePFN, onnx_path: Path, seed: int = 0) -> float:
    """Max |torch - onnxruntime| of log_probs on random padded inputs (returned for the log)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    b, n, m = 3, 11, 6
    cx = rng.uniform(0, 1, (b, n, model.cfg.n_features)).astype(np.float32)
    cy = rng.uniform(0, 1, (b, n)).astype(np.float32)
    mask = np.ones((b, n), np.float32)
    mask[1, 7:] = 0.0
    qx = rng.uniform(0, 1, (b, m, model.cfg.n_features)).astype(np.float32)
    got = sess.run(["log_probs"], {"ctx_x": cx, "ctx_y": cy, "ctx_mask": mask, "qry_x": qx})[0]
    with torch.no_grad():
        ref = model(*(torch.from_numpy(a) for a in (cx, cy, mask, qx)))[0].numpy()
    return float(np.abs(got - ref).max())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", default="service/curvecast/models/curvecast-pfn.onnx")
    p.add_argument("--note", default="", help="free-text note stored in the card (e.g. the run's history)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, ck = load_checkpoint(Path(args.ckpt))
    out = Path(args.out)
    export_onnx(model, out)
    card = write_card(out, ck, model, {"notes": args.note} if args.note else None)
    print(json.dumps({"onnx": str(out), "card": str(card), "max_abs_diff": check_parity(model, out)}))


if __name__ == "__main__":
    main()
