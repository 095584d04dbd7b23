"""The learned engine: a prior-data fitted transformer served through onnxruntime (no torch)."""

from .engine import LearnedEngine, ModelLoadError

__all__ = ["LearnedEngine", "ModelLoadError"]
