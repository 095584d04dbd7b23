"""Scheduler and training-loop integrations; each submodule needs its own library, this package none.

    from curvecast_client.integrations.optuna import CurvecastPruner          # optuna
    from curvecast_client.integrations.ray_tune import CurvecastScheduler     # ray[tune]
    from curvecast_client.integrations.lightning import CurvecastCallback     # lightning
    from curvecast_client.integrations.keras import CurvecastCallback         # keras>=3
    from curvecast_client.integrations.transformers import CurvecastCallback  # transformers (+ accelerate)

All of them fail open: when Curvecast is unreachable, errors or misses its deadline, training goes on
(the Optuna pruner asks its fallback pruner instead). :class:`Advisor` is the shared core, usable directly
in a hand-written training loop.
"""

from ._advisor import STOP_ACTIONS, Advice, Advisor

__all__ = ["STOP_ACTIONS", "Advice", "Advisor"]
