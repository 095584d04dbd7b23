"""Fails when onnxruntime and onnxruntime-gpu are installed together (they overwrite each other's files)."""

import sys
from importlib import metadata

installed = sorted({d.metadata["Name"].lower() for d in metadata.distributions()} & {"onnxruntime", "onnxruntime-gpu"})
if len(installed) > 1:
    sys.exit(f"both {installed} are installed: they share the onnxruntime/ package; uninstall both and reinstall one")
print(f"onnxruntime check ok: {installed or 'none installed'}")
