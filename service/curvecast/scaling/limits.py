"""Documented limits of one scaling-law fit (reported by GetModelInfo).

The fit is linear in the points and in the bootstrap replicates (each replicate refits every point), so
``max_point_replicates`` bounds points x bootstrap, which bounds the fit's time (well under a minute on
the idle 2-core reference VM: docs/bench/scaling_speed.md); memory is linear in the points alone (about
210 MB peak for a process at 100,000 points, 90 MB of it the interpreter and its libraries).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.errors import FieldViolation

DEFAULT_BOOTSTRAP = 200
MAX_LISTED = 20  # bad point values named one by one; the rest are counted (an error must stay small)


@dataclass(frozen=True)
class ScalingLimits:
    max_points: int = 100_000
    max_bootstrap: int = 2_000
    max_point_replicates: int = 10_000_000  # points x bootstrap
    max_predict_at: int = 1_000
    max_compute_budgets: int = 1_000

    def default_bootstrap(self, n_points: int) -> int:
        """Replicates for a request that names none: the default, or fewer when that would exceed
        ``max_point_replicates`` (a caller who sends many points and no bootstrap is not refused)."""
        return max(0, min(DEFAULT_BOOTSTRAP, self.max_point_replicates // max(n_points, 1)))

    def violations(self, n_points: int, bootstrap: int, n_predict_at: int = 0,
                   n_compute_budgets: int = 0) -> list[FieldViolation]:
        """Every limit the request breaks, naming its field (counts only: checked before decoding)."""
        bad: list[FieldViolation] = []
        if n_points > self.max_points:
            bad.append(FieldViolation("points", f"has {n_points} points; the limit is {self.max_points}"))
        if not 0 <= bootstrap <= self.max_bootstrap:
            bad.append(FieldViolation("bootstrap", f"must be in [0, {self.max_bootstrap}], got {bootstrap}"))
        elif n_points * bootstrap > self.max_point_replicates:
            most = self.max_point_replicates // max(n_points, 1)
            bad.append(FieldViolation("bootstrap", f"{bootstrap} replicates of {n_points} points exceed the limit of "
                                      f"{self.max_point_replicates} points x replicates; use at most {most}"))
        if n_predict_at > self.max_predict_at:
            bad.append(FieldViolation("predict_at", f"has {n_predict_at} entries; the limit is {self.max_predict_at}"))
        if n_compute_budgets > self.max_compute_budgets:
            bad.append(FieldViolation("compute_budgets",
                                      f"has {n_compute_budgets} entries; the limit is {self.max_compute_budgets}"))
        return bad
