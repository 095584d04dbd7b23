#!/usr/bin/env bash
# One-shot GPU training of the prior-2.0 curve PFN, for a session that is lent a GPU (docs/prior.md).
#
#   OUT=/path/for/results MINUTES=6 bash training/gpu_run.sh        # from the repo root
#
# Installs nothing and reaches no network: it uses $PYTHON (default .venv/bin/python, the repo's pinned
# venv) and stops with exit code 3 if that python lacks torch with CUDA, onnx or onnxruntime.
# Steps: train MINUTES of wall time on CUDA (bf16, --workers prior processes), export ONNX + card,
# torch/onnxruntime parity, the LC-PFN prior benchmark on EVAL_CURVES curves. Everything that comes
# back is under $OUT (at most 8 files of <= 15 MiB: the ONNX file is split, reassemble with
# `cat curvecast-pfn.onnx.part-* > curvecast-pfn.onnx` and check its sha256 against model-card.json).
# The optimiser checkpoint (too large to return) stays in $WORK; a later session continues from the
# returned ONNX with `--init-onnx` (training/onnx_init.py), not from the checkpoint.
set -euo pipefail

OUT=${OUT:?set OUT to the folder for results}
MINUTES=${MINUTES:-6}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu (with a tiny ARCH) smoke-tests the script on a CPU box
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/curvecast-gpu-run}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
EVAL_CURVES=${EVAL_CURVES:-2000}
PRIOR_PARAMS=${PRIOR_PARAMS:-training/prior2_fitted.json}
# about 10.6 M parameters: the fp32 ONNX (~43 MB) still fits the 64 MiB that can come back
ARCH=${ARCH:---d-model 384 --layers 8 --heads 6 --d-ff 768}
TRAIN_EXTRA=${TRAIN_EXTRA:---batch 512 --lr 3e-4 --warmup-frac 0.05}
export PYTHONPATH=service:. PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"

DEVICE=$DEVICE "$PYTHON" - <<'EOF' > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; echo "no usable torch+CUDA in $PYTHON" >&2; exit 3; }
import os, sys, torch, onnx, onnxruntime, numpy, scipy
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)
if os.environ["DEVICE"] == "cuda":
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    print("device", torch.cuda.get_device_name(0))
else:
    print("device cpu (smoke test)")
EOF
cat "$OUT/env.txt"
PARAMS_ARG=()
[ -f "$PRIOR_PARAMS" ] && PARAMS_ARG=(--prior-params "$PRIOR_PARAMS")

set -o pipefail
# shellcheck disable=SC2086
"$PYTHON" -m training.train --out "$WORK/run" --device "$DEVICE" --bf16 --prior 2.0 "${PARAMS_ARG[@]}" \
    --max-minutes "$MINUTES" --workers "$WORKERS" --threads 4 --seed 7 $ARCH $TRAIN_EXTRA \
    --eval-every-s 120 --ckpt-every-s 120 --log-every 50 2>&1 | tee "$OUT/train.log" | grep -E '"event"'
[ -f "$WORK/run/ckpt.pt" ] || { echo "training wrote no checkpoint" >&2; exit 4; }

"$PYTHON" -m training.export --ckpt "$WORK/run/ckpt.pt" --out "$WORK/model/curvecast-pfn.onnx" \
    --note "training/gpu_run.sh: prior 2.0, $MINUTES min on $(head -2 "$OUT/env.txt" | tail -1)" | tee "$OUT/export.json"
"$PYTHON" -m training.eval_prior --model "$WORK/model/curvecast-pfn.onnx" --curves "$EVAL_CURVES" \
    --seed 20261125 --threads "$(nproc)" --update-card > "$OUT/eval_prior.json"
cp "$WORK/model/model-card.json" "$OUT/model-card.json"
split -b 15m -d "$WORK/model/curvecast-pfn.onnx" "$OUT/curvecast-pfn.onnx.part-"
"$PYTHON" -c "import json; d=json.load(open('$OUT/eval_prior.json')); print('prior LL', d['prior_ll'])"
ls -la "$OUT"
