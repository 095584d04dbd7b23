"""docs/tutorial-optuna.md runs as written: its sweep.py against the real server on the real TaskSet data."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("optuna", reason="optuna (the optuna extra) is not installed")
pytest.importorskip("pandas", reason="pandas is needed to read the dev data")

DOC = ROOT / "docs" / "tutorial-optuna.md"


def _script() -> str:
    text = DOC.read_text()
    found = re.search(r"<!-- sweep.py -->\n```python\n(.*?)```", text, re.S)
    assert found, "the tutorial has no sweep.py block"
    return found.group(1)


def test_tutorial_commands_run_and_print_what_it_shows(server, shared_data, tmp_path):
    if not (shared_data / "taskset" / "taskset_curves.parquet").exists():
        pytest.skip("taskset/taskset_curves.parquet absent from the data folder")
    (tmp_path / "sweep.py").write_text(_script())
    text = DOC.read_text()
    assert "python sweep.py" in text and 'pip install "./client[optuna]"' in text
    env = {**os.environ, "CURVECAST_SERVER": server.address, "CURVECAST_DATA": str(shared_data),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "sweep.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    m = re.search(r"trials: 40, pruned: (\d+), questions Curvecast did not answer: (\d+)", out)
    assert m, out
    pruned, unanswered = int(m.group(1)), int(m.group(2))
    assert pruned >= 10 and unanswered <= 2, out
    saved = int(re.search(r"\((\d+)% saved\)", out).group(1))
    assert saved >= 30, out
    found, full = map(float, re.search(r"found: ([\d.]+); .*fully: ([\d.]+)", out).groups())
    assert found <= full * 1.05, out  # pruning did not lose the sweep's winner (within 5%)
