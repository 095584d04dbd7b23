"""Cross-run scaling laws (no gRPC here): Chinchilla / Gadre / Kaplan fits with bootstrap and predictive
intervals, and Approach 2 isoFLOP profiles (isoflop.py).

The fitting code (numpy, scipy) is imported on first use, so importing ``curvecast.scaling.cancel`` or
``curvecast.scaling.limits`` (the server does at start-up) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fit import ScalingFit, ScalingPoint, fit_scaling_law

__all__ = ["ScalingFit", "ScalingPoint", "fit_scaling_law"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import fit

        return getattr(fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
