"""Run small linear algebra single-threaded.

OpenBLAS spins up its thread pool for every tiny BLAS call inside scipy's L-BFGS-B / least_squares;
on a busy machine that made one 5-parameter fit ~50x slower (600 ms instead of 10 ms, measured).
Our problems are tiny, and concurrency comes from processes, so we cap BLAS at one thread while fitting.
``threadpoolctl`` is optional: without it this is a no-op (set OPENBLAS_NUM_THREADS=1 instead).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

_controller = None


def single_threaded_blas() -> ContextManager:
    global _controller
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()  # created lazily: after numpy/scipy loaded their BLAS
        return _controller.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unable to inspect the libraries
        return contextlib.nullcontext()
