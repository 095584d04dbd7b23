"""Write a dynamically int8-quantised copy of the exported PFN and record it in the model card.

    PYTHONPATH=service:. python -m training.quantize \
        --model service/curvecast/models/curvecast-pfn.onnx [--out .../curvecast-pfn-int8.onnx]

Only the weight MatMuls are quantised (int8 weights, per output channel; activations quantised per
call by onnxruntime's DynamicQuantizeMatMul, which uses VNNI where the CPU has it). The attention
MatMuls (activation x activation) and everything else stay float32. ``--keep-float`` names weight
MatMuls to leave in float32 (by default the first encoder layers, which see raw positions and values;
they are tiny). Measured on LC-PFN's prior (2000 curves): -0.005 to -0.008 nats of log-likelihood per
point for about half the onnxruntime time; see MODEL_CARD.md.

The float model and its card entry are never touched: the int8 file is added to the card under
``variants`` with its own sha256 and size, so ``LearnedEngine.load`` verifies it the same way and the
server selects it simply by pointing its ``model`` setting at the int8 file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx

from curvecast.engines.learned.engine import CARD_NAME, sha256_of

# the first encoder layers see raw positions and values: 8-bit activations there would blur them
DEFAULT_KEEP_FLOAT = ("/enc_x/enc_x.0/MatMul", "/enc_y/enc_y.0/MatMul")


def weight_matmuls(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(MatMuls with a constant weight, the other MatMuls) by node name."""
    inits = {i.name for i in model.graph.initializer}
    weights, others = [], []
    for n in model.graph.node:
        if n.op_type == "MatMul":
            (weights if n.input[1] in inits else others).append(n.name)
    return weights, others


def quantize(src: Path, out: Path, keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    weights, others = weight_matmuls(model)
    unknown = set(keep_float) - set(weights)
    if unknown:
        raise ValueError(f"--keep-float names no weight MatMul: {sorted(unknown)}")
    quantized = [n for n in weights if n not in keep_float]
    quantize_dynamic(
        str(src), str(out), op_types_to_quantize=["MatMul"], nodes_to_quantize=quantized,
        nodes_to_exclude=list(others) + list(keep_float), per_channel=True, weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8 per-channel",
            "activations": "uint8, dynamic per call", "quantized_matmuls": len(quantized),
            "float_matmuls": sorted(others) + sorted(keep_float)}


def max_logprob_diff(a: Path, b: Path, seed: int = 0) -> float:
    """Max |log_probs(a) - log_probs(b)| over buckets with prob > 1e-3 on random padded inputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    bsz, n, m = 4, 30, 12
    feeds = {"ctx_x": rng.uniform(0, 1, (bsz, n, 5)).astype(np.float32),
             "ctx_y": np.sort(rng.uniform(0, 1, (bsz, n)), axis=1).astype(np.float32),
             "ctx_mask": np.ones((bsz, n), np.float32),
             "qry_x": rng.uniform(0, 1.2, (bsz, m, 5)).astype(np.float32)}
    feeds["ctx_x"][..., 0] = np.sort(feeds["ctx_x"][..., 0], axis=1)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["log_probs"], feeds)[0] for p in (a, b)]
    big = outs[0] > np.log(1e-3)
    return float(np.abs(outs[0] - outs[1])[big].max())


def record_variant(src: Path, out: Path, info: dict) -> Path:
    card_path = src.parent / CARD_NAME
    if out.parent != src.parent:
        raise ValueError("the quantised file must sit beside the float model so one card covers both")
    card = json.loads(card_path.read_text())
    if card.get("file") != src.name or card.get("sha256") != sha256_of(src):
        raise ValueError(f"{card_path} does not describe {src} (re-export first)")
    variants = card.setdefault("variants", {})
    variants[out.name] = {"sha256": sha256_of(out), "size_bytes": out.stat().st_size, "of": card["sha256"],
                          "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "quantization": info, "metrics": variants.get(out.name, {}).get("metrics", {})}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="service/curvecast/models/curvecast-pfn.onnx")
    p.add_argument("--out", default=None, help="default: <model stem>-int8.onnx beside the model")
    p.add_argument("--keep-float", default=",".join(DEFAULT_KEEP_FLOAT),
                   help="comma list of weight MatMul node names left in float32 ('' quantises all)")
    p.add_argument("--no-card", action="store_true", help="do not record the file in model-card.json")
    args = p.parse_args(argv)
    src = Path(args.model)
    out = Path(args.out) if args.out else src.with_name(src.stem + "-int8.onnx")
    keep = tuple(s for s in args.keep_float.split(",") if s)
    info = quantize(src, out, keep)
    info["max_abs_logprob_diff"] = round(max_logprob_diff(src, out), 4)
    card = None if args.no_card else record_variant(src, out, info)
    print(json.dumps({"onnx": str(out), "card": str(card) if card else None, **{k: info[k] for k in (
        "quantized_matmuls", "max_abs_logprob_diff")}}))


if __name__ == "__main__":
    main()
