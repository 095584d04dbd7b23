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


def _pins(name: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints" / f"{name}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, _, version = line.partition("==")
            pins[canonicalize_name(package)] = version
    return pins


def test_every_installed_package_is_pinned_in_the_test_constraints():
    """`make test` installs from constraints/dev.txt: a package outside it (or at another version) means a
    fresh clone would resolve something the suite never ran against. `make lock` regenerates the files."""
    import sysconfig
    from importlib import metadata

    from packaging.utils import canonicalize_name

    pins = {**_pins("gpu"), **_pins("dev")}  # a CUDA venv (`make serve-gpu`) swaps in gpu.txt's onnxruntime
    # What pip installed into the environment, not what some package vendors and adds to sys.path at import
    # (ray puts its thirdparty_files, colorama among them, there).
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for dist in metadata.distributions(path=site):
        name = canonicalize_name(dist.metadata["Name"])
        if name == "curvecast":
            continue
        version = dist.version.split("+", 1)[0]  # torch's local label: 2.13.0+cpu is the pin 2.13.0
        assert pins.get(name) == version, f"{name}=={version} is installed but constraints/dev.txt pins {pins.get(name)}"


def test_constraint_files_agree():
    serve, dev, gpu = _pins("serve"), _pins("dev"), _pins("gpu")
    assert serve.items() <= dev.items(), "dev.txt must contain serve.txt unchanged (run `make lock`)"
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert all(serve.get(name, version) == version for name, version in gpu.items())
