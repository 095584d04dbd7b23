"""Server configuration in one place: CLI flags, each with an environment-variable fallback.

Precedence: flag > environment variable > default. ``OPTIONS`` is the single table the parser, the
README's configuration table and the tests are built from.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "curvecast-pfn.onnx"


@dataclass(frozen=True)
class Settings:
    host: str = "[::]"
    port: int = 50051
    metrics_port: int = 9464
    workers: int = 0
    model: str = str(BUNDLED_MODEL)
    device: str = "cpu"
    default_engine: str = "analytic"
    engine_threads: int = 0
    ort_threads: int = 1
    analytic_workers: int = 0
    max_batch: int = 64
    max_delay_ms: float = 2.0
    max_inflight_curves: int = 4096
    max_message_mb: int = 16
    grace_s: float = 10.0
    log_format: str = "text"
    log_level: str = "INFO"
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    auth_tokens_file: str = ""
    auth_tokens: str = ""

    @property
    def resolved_workers(self) -> int:
        """Server processes sharing the port (0 = one per usable core; 1 = a single process, no supervisor)."""
        return self.workers if self.workers > 0 else usable_cpus()

    @property
    def resolved_engine_threads(self) -> int:
        return self.engine_threads or max(os.cpu_count() or 1, 1)

    @property
    def resolved_analytic_workers(self) -> int:
        """Process workers for the analytic engine; 0 keeps fits in threads (fine on 1 core)."""
        return self.analytic_workers


# name -> (help text; the env var is CURVECAST_<NAME>)
OPTIONS: dict[str, str] = {
    "host": "address to bind the gRPC server to",
    "port": "gRPC port",
    "metrics_port": "Prometheus /metrics HTTP port (0 disables)",
    "workers": "server processes sharing the gRPC port (SO_REUSEPORT) under one supervisor that restarts them and "
               "serves their summed metrics (0 = one per usable core, 1 = a single process)",
    "model": "path of the learned engine's ONNX file (its model-card.json must sit beside it)",
    "device": "cpu, cuda or auto: execution provider for the learned engine (falls back to CPU if CUDA is unusable)",
    "default_engine": "engine for requests that name none: ensemble, learned or analytic",
    "engine_threads": "threads running engine batches, per worker process (0 = number of CPUs, shared out over --workers)",
    "ort_threads": "onnxruntime intra-op threads per inference",
    "analytic_workers": "processes for analytic fits, so batches do not serialise on the GIL (0 = in threads)",
    "max_batch": "largest dynamic batch of curves per engine call",
    "max_delay_ms": "longest a curve waits for its batch to fill while the engine is busy (an idle engine starts at once), milliseconds",
    "max_inflight_curves": "curves admitted at once; beyond it calls get RESOURCE_EXHAUSTED",
    "max_message_mb": "largest request or response message, MiB",
    "grace_s": "seconds in-flight calls get to finish after SIGTERM",
    "log_format": "text or json",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "tls_cert": "server certificate (PEM); with tls_key enables TLS",
    "tls_key": "server private key (PEM)",
    "tls_client_ca": "CA bundle (PEM) for client certificates; enables mutual TLS",
    "auth_tokens_file": "file with one accepted bearer token per line; enables token auth (health stays open)",
    "auth_tokens": "comma-separated accepted bearer tokens (alternative to the file; prefer the file for secrets)",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("cpu", "cuda", "auto"),
    "default_engine": ("ensemble", "learned", "analytic"),
    "log_format": ("text", "json"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
}


def usable_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's limit),
    since ``os.cpu_count()`` reports the whole node inside a container."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(n, 1)


def env_name(name: str) -> str:
    return f"CURVECAST_{name.upper()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curvecast-server", description="Curvecast gRPC forecasting server.")
    defaults = Settings()
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        env = os.environ.get(env_name(f.name))
        kind: Any = type(default)
        value = kind(env) if env is not None else default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=value,
                            choices=CHOICES.get(f.name),
                            help=f"{OPTIONS[f.name]} (env {env_name(f.name)}, default {default!r})")
    return parser


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    return Settings(**vars(args))
