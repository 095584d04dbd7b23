"""bench/scaling_heldout.py: per-source pooling of coverage, width and errors, and its markdown table."""

from __future__ import annotations

import pytest

from bench.scaling_heldout import markdown, summary


def _row(source, covered, n, widths, cc, a3, ls, drop=None):
    r = {"source": source, "subset": "s", "n_train": 10, "n_test": n, "predictive_covered": covered,
         "bootstrap_covered": 0, "predictive_width_pct": widths, "curvecast_are_pct": cc, "approach3_are_pct": a3,
         "curve_fit_are_pct": ls, "kappa": 0.1, "folds": 3, "warnings": [], "seconds": 1.0}
    return r if drop is None else r | {"drop": drop}


def test_summary_pools_targets_and_flags_the_error_target():
    rows = [_row("porian", 9, 10, [10.0, 20.0], 5.0, 7.0, 6.0), _row("porian", 1, 10, [30.0], 7.0, 7.0, 6.0),
            _row("gemstones", 5, 5, [1.0], 1.0, 1.0, 1.0, drop=0.5), _row("gemstones", 0, 5, [9.0], 9.0, 1.0, 1.0, drop=0.0)]
    s = {r["source"]: r for r in summary(rows)}
    assert s["porian"]["predictive_cover"] == pytest.approx(0.5) and s["porian"]["n_test"] == 20
    assert s["porian"]["median_width_pct"] == pytest.approx(20.0)
    assert s["porian"]["curvecast"] == pytest.approx(6.0) and s["porian"]["curve_fit"] == pytest.approx(6.0)
    assert s["gemstones"]["fits"] == 1 and s["gemstones"]["predictive_cover"] == 1.0  # only the default drop
    md = markdown({"command": "x", "rows": rows, "summary": list(s.values())})
    assert "| porian | 2 | 20 | 0.50 |" in md and "| met |" in md
