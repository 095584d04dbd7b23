"""Named stop-policy presets: safe, balanced (the server default), aggressive.

A preset is a point on the trade-off between compute saved and the risk of killing the eventual winner,
chosen on the sweeps benchmark's *tuning* tasks (bench/sweeps.py; TaskSet, LCDB, ScAn-Bench VLM) and
measured on its held-out report tasks (docs/bench/sweeps/README.md). ``measured`` quotes those report-task
numbers so a caller picks a preset by what it costs, not by its thresholds. The SDK's integrations
mirror this table (curvecast_client.integrations.presets; a test keeps the two equal) because the
client installs without the service.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..domain.curve import StopPolicy


@dataclass(frozen=True)
class Preset:
    """StopPolicy thresholds with the trade-off they were measured to give."""

    name: str
    min_prob_beat_incumbent: float  # stop as unpromising below this recalibrated P(result beats incumbent)
    compute_weight: float  # cost awareness: threshold = max(min_prob, compute_weight * fraction left)
    min_points: int = 2
    min_fraction_observed: float = 0.0
    min_relative_improvement: float = 0.0  # 0: the leader is never stopped as converged
    measured: str = ""  # report-task trade-off on the sweeps benchmark

    def policy(self, **overrides: object) -> StopPolicy:
        """The StopPolicy of this preset; ``overrides`` (e.g. keep_best_checkpoint) win."""
        base = StopPolicy(min_prob_beat_incumbent=self.min_prob_beat_incumbent,
                          min_relative_improvement=self.min_relative_improvement,
                          min_points=self.min_points, min_fraction_observed=self.min_fraction_observed,
                          compute_weight=self.compute_weight)
        return replace(base, **overrides) if overrides else base

    def as_dict(self) -> dict[str, float | int]:
        """The StopPolicy fields, as an SDK ``policy=`` mapping takes them."""
        return {"min_prob_beat_incumbent": self.min_prob_beat_incumbent, "compute_weight": self.compute_weight,
                "min_points": self.min_points, "min_fraction_observed": self.min_fraction_observed,
                "min_relative_improvement": self.min_relative_improvement}


PRESETS: dict[str, Preset] = {
    "safe": Preset("safe", min_prob_beat_incumbent=0.002, compute_weight=0.0,
                   measured="report tasks: saving 1.05x / 1.30x / 1.03x (TaskSet / LCDB / ScAn-VLM), excess "
                            "regret +0.000 / +0.017 / +0.000, best killed 0.6% / 8.8% / 0%; tuning tasks: "
                            "1.08x / 2.22x / 1.04x at +0.000 / +0.000 / +0.000"),
    "balanced": Preset("balanced", min_prob_beat_incumbent=0.005, compute_weight=0.02,
                       measured="report tasks: saving 2.53x / 3.49x / 1.39x (TaskSet / LCDB / ScAn-VLM), excess "
                                "regret +0.025 / +0.079 / +0.000, best killed 14% / 23% / 2.5%; tuning tasks: "
                                "2.47x / 3.81x / 1.46x at +0.000 / +0.000 / +0.006"),
    "aggressive": Preset("aggressive", min_prob_beat_incumbent=0.05, compute_weight=0.0,
                         measured="report tasks: saving 4.37x / 5.80x / 1.70x (TaskSet / LCDB / ScAn-VLM), excess "
                                  "regret +0.065 / +0.105 / +0.006, best killed 24% / 39% / 12.5%; tuning tasks: "
                                  "3.95x / 5.50x / 1.81x at +0.025 / +0.000 / +0.012"),
}
DEFAULT_PRESET = "balanced"


def preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive); ValueError naming the known ones otherwise."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
