"""Recover a trainable ``CurvePFN`` from an exported ONNX file (warm start without the checkpoint).

The committed model's checkpoint is not in the repository (``training/runs/`` is git-ignored), but the
ONNX file holds every weight: biases and LayerNorm parameters keep their torch names, and each Linear
weight is the (transposed) constant input of the MatMul node named after its module scope. A parity
check against onnxruntime guards the mapping.

    PYTHONPATH=service:. python -m training.onnx_init --onnx service/curvecast/models/curvecast-pfn.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from training.model import CurvePFN, ModelConfig


def _param_name(node_name: str) -> str:
    """'/blocks.0/ff/ff.0/MatMul' -> 'blocks.0.ff.0.weight'; '/enc_x/enc_x.0/MatMul' -> 'enc_x.0.weight'."""
    parts = node_name.strip("/").split("/")[:-1]
    out: list[str] = []
    for p in parts:
        if out and p.startswith(out[-1] + "."):
            out[-1] = p  # torch scopes repeat the parent's attribute name ('ff' then 'ff.0')
        else:
            out.append(p)
    return ".".join(out) + ".weight"


def load_onnx_weights(path: Path, cfg: ModelConfig) -> CurvePFN:
    """CurvePFN with every tensor taken from the ONNX file; raises if any parameter is missing."""
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for name, arr in inits.items():
        if not name.startswith("onnx::"):
            state[name.removesuffix(".1") if name.startswith("borders") else name] = torch.from_numpy(arr.copy())
    for node in m.graph.node:
        if node.op_type == "MatMul":
            for inp in node.input:
                if inp in inits and inp.startswith("onnx::"):
                    state[_param_name(node.name)] = torch.from_numpy(inits[inp].T.copy())
    model = CurvePFN(cfg, state["borders"])
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise KeyError(f"ONNX file lacks {sorted(missing)}")
    model.load_state_dict({k: state[k] for k in model.state_dict()})
    return model


def parity(model: CurvePFN, path: Path) -> float:
    """Max |log_prob| difference between torch and onnxruntime on a random batch."""
    import onnxruntime as ort

    g = np.random.default_rng(0)
    cx = g.uniform(size=(2, 9, model.cfg.n_features)).astype(np.float32)
    cy = g.uniform(size=(2, 9)).astype(np.float32)
    mask = np.ones((2, 9), np.float32)
    qx = g.uniform(size=(2, 5, model.cfg.n_features)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(["log_probs"], {"ctx_x": cx, "ctx_y": cy, "ctx_mask": mask, "qry_x": qx})[0]
    with torch.no_grad():
        lp, _ = model(*(torch.from_numpy(a) for a in (cx, cy, mask, qx)))
    return float(np.abs(lp.numpy() - ref).max())


def config_from_card(path: Path) -> ModelConfig:
    card = json.loads((path.parent / "model-card.json").read_text())
    keys = ModelConfig.__dataclass_fields__
    return ModelConfig(**{k: v for k, v in card["architecture"].items() if k in keys})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", default="service/curvecast/models/curvecast-pfn.onnx")
    args = p.parse_args(argv)
    path = Path(args.onnx)
    model = load_onnx_weights(path, config_from_card(path))
    print(json.dumps({"max_abs_logprob_diff": parity(model, path)}))


if __name__ == "__main__":
    main()
