"""Shared fixtures: a real server process on free ports, and data-folder discovery."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_dir() -> Path | None:
    path = Path(os.environ.get("CURVECAST_DATA", ROOT.parent / "shared" / "data"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = data_dir()
    if path is None:
        pytest.skip("real data folder absent (set CURVECAST_DATA or place ../shared/data); skipping real-data test")
    return path


class ServerProcess:
    """The real server in a subprocess. One process unless ``--workers`` is passed: most tests check
    single-process behaviour (log order, per-process counters), and a 2-core CI runs many servers."""

    def __init__(self, *extra: str, env: dict[str, str] | None = None) -> None:
        if "--workers" not in extra:
            extra = ("--workers", "1", *extra)
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "curvecast.server.app", "--host", "127.0.0.1", "--port", str(self.port),
               "--metrics-port", str(self.metrics_port), *extra]
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True)
        self.output: list[str] = []

    def wait_ready(self, timeout: float = 90.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError("server exited early:\n" + "".join(self.output))
                continue
            self.output.append(line)
            if "curvecast-server ready" in line:
                return self
        raise RuntimeError("server did not become ready:\n" + "".join(self.output))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    proc = ServerProcess().wait_ready()
    yield proc
    proc.stop()
