"""onnxruntime session for the curve PFN: CUDA when present, else CPU, never torch.

The provider actually in use is read back from the session (``sess.get_providers()[0]``), because
onnxruntime silently falls back to CPU when the CUDA libraries are missing. Intra-op threads are
configurable and spinning is disabled so an idle server does not burn cores.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INPUT_NAMES = ("ctx_x", "ctx_y", "ctx_mask", "qry_x")

_dlls_preloaded = False


def _preload_cuda_dlls(ort) -> None:
    """Load pip-installed CUDA/cuDNN libraries once (onnxruntime >= 1.21); harmless when absent."""
    global _dlls_preloaded
    if _dlls_preloaded:
        return
    _dlls_preloaded = True
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - a missing GPU stack must never break CPU serving
        log.info("onnxruntime.preload_dlls() failed, CPU only: %s", exc)


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in (CUDA, CPU) if p in available] or [CPU]


class OnnxRuntime:
    """One inference session plus the facts the server reports about it."""

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        wanted = list(providers) if providers else default_providers()
        if CUDA in wanted:
            _preload_cuda_dlls(ort)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads) if threads else max(1, min(4, os.cpu_count() or 1))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        available = set(ort.get_available_providers())
        use = [p for p in wanted if p in available] or [CPU]
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=use)
        self.provider: str = self.session.get_providers()[0]
        self.threads = opts.intra_op_num_threads
        self._borders: np.ndarray | None = None

    def run(self, ctx_x: np.ndarray, ctx_y: np.ndarray, ctx_mask: np.ndarray, qry_x: np.ndarray) -> np.ndarray:
        """log_probs (B, M, K) for float32 inputs (B, N, F), (B, N), (B, N), (B, M, F)."""
        feeds = {
            "ctx_x": np.ascontiguousarray(ctx_x, dtype=np.float32),
            "ctx_y": np.ascontiguousarray(ctx_y, dtype=np.float32),
            "ctx_mask": np.ascontiguousarray(ctx_mask, dtype=np.float32),
            "qry_x": np.ascontiguousarray(qry_x, dtype=np.float32),
        }
        log_probs, borders = self.session.run(["log_probs", "borders"], feeds)
        if self._borders is None:
            self._borders = np.asarray(borders, dtype=np.float64)
        return log_probs

    @property
    def borders(self) -> np.ndarray:
        if self._borders is None:
            self.warmup()
        assert self._borders is not None
        return self._borders

    def warmup(self, n_features: int = 5, shapes: Sequence[tuple[int, int, int]] = ((1, 10, 10), (8, 64, 32))) -> None:
        """Run a few representative shapes so the first real request pays no initialisation cost."""
        for b, n, m in shapes:
            t = np.linspace(0.01, 1.0, n + m, dtype=np.float32)
            feats = np.zeros((b, n + m, n_features), np.float32)
            feats[..., 0] = t
            feats[..., 1] = 1.0
            feats[..., 2] = t
            self.run(feats[:, :n], np.tile(t[:n], (b, 1)), np.ones((b, n), np.float32), feats[:, n:])
