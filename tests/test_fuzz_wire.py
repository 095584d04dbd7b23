"""A short run of the wire fuzzer (fuzz/fuzz_wire.py) against a real server: arbitrary, truncated and
mutated bytes to every RPC never get UNKNOWN/INTERNAL, and the server stays up and healthy. The long run
(100,000 inputs) is `python -m fuzz.fuzz_wire` (see fuzz/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wire_fuzz_short_run_has_no_violation():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "client"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "fuzz.fuzz_wire", "--inputs", "600", "--seed", "7"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and summary["violations"] == [], summary
    assert summary["inputs"] == 600
    codes = {key.split("/")[1] for key in summary["counts"]}
    assert "INVALID_ARGUMENT" in codes and "OK" in codes  # both refusals and answers were exercised
    for method in ("Forecast", "ForecastBatch", "FitScalingLaw", "GetModelInfo"):
        assert any(key.startswith(method + "/") for key in summary["counts"]), method
