"""Stop-policy presets by name: "safe", "balanced" and "aggressive".

A mirror of the service's ``curvecast.decisions.presets`` (a test keeps the two equal): the SDK installs
without the service, and the protocol has no preset field, so a preset travels as the StopPolicy fields
it stands for. Their measured trade-offs (compute saved, excess regret, share of winners killed) are in
docs/bench/sweeps/README.md.
"""

from __future__ import annotations

from typing import Mapping

PRESETS: dict[str, dict[str, float]] = {
    "safe": {"min_prob_beat_incumbent": 0.002, "compute_weight": 0.0, "min_points": 2,
             "min_fraction_observed": 0.0, "min_relative_improvement": 0.0},
    "balanced": {"min_prob_beat_incumbent": 0.005, "compute_weight": 0.02, "min_points": 2,
                 "min_fraction_observed": 0.0, "min_relative_improvement": 0.0},
    "aggressive": {"min_prob_beat_incumbent": 0.05, "compute_weight": 0.0, "min_points": 2,
                   "min_fraction_observed": 0.0, "min_relative_improvement": 0.0},
}


def resolve_policy(preset: str | None = None, policy: Mapping[str, float] | None = None,
                   keep_best_checkpoint: bool | None = None) -> dict[str, float]:
    """StopPolicy overrides: the preset's fields, then ``policy``'s, then ``keep_best_checkpoint``.

    ``keep_best_checkpoint`` says what a trial's result is: its best reported value (True) or its last
    (False; e.g. an Optuna objective that returns the final value). Every probability follows it.
    """
    out: dict[str, float] = {}
    if preset is not None:
        try:
            out.update(PRESETS[preset.lower()])
        except KeyError:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}") from None
    out.update(policy or {})
    if keep_best_checkpoint is not None:
        out["keep_best_checkpoint"] = bool(keep_best_checkpoint)
    return out
