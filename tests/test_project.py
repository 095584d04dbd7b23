"""Project hygiene that CI must enforce: generated code in sync, one onnxruntime, light SDK, documented config."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from curvecast.server.config import OPTIONS, Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_proto(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, cwd=ROOT,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc produced nothing"
    for rel in generated:
        committed = ROOT / "client" / rel
        assert committed.exists(), f"{rel} missing: run `make proto`"
        assert filecmp.cmp(tmp_path / rel, committed, shallow=False), f"{rel} is stale: run `make proto`"


def test_onnxruntime_packages_not_both_installed():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_onnxruntime.py")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_sdk_import_is_light():
    code = ("import sys, curvecast_client, curvecast_client.cli; "
            "heavy = [m for m in ('numpy', 'scipy', 'onnxruntime', 'torch', 'optuna', 'curvecast') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the SDK imported heavy modules: {out}"


def test_every_setting_is_documented_in_readme_and_env_fallback_works(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    for name in OPTIONS:
        assert f"`--{name.replace('_', '-')}`" in readme and env_name(name) in readme, name
    assert set(OPTIONS) == set(Settings.__dataclass_fields__)
    monkeypatch.setenv("CURVECAST_PORT", "6123")
    monkeypatch.setenv("CURVECAST_MAX_DELAY_MS", "0.5")
    s = load_settings([])
    assert s.port == 6123 and s.max_delay_ms == 0.5
    assert load_settings(["--port", "7000"]).port == 7000  # flag beats environment


def test_readme_quickstart_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
