"""Stop-policy presets: one table in the service, mirrored in the SDK, ordered from safe to aggressive."""

import pytest

from curvecast.decisions.presets import DEFAULT_PRESET, PRESETS, preset
from curvecast.domain.curve import StopPolicy
from curvecast_client.integrations.presets import PRESETS as CLIENT_PRESETS
from curvecast_client.integrations.presets import resolve_policy


def test_client_mirror_equals_the_service_table():
    assert set(CLIENT_PRESETS) == set(PRESETS)
    for name, p in PRESETS.items():
        assert CLIENT_PRESETS[name] == p.as_dict()


def test_presets_are_ordered_by_risk():
    safe, bal, agg = PRESETS["safe"], PRESETS["balanced"], PRESETS["aggressive"]
    for frac_left in (0.0, 0.5, 1.0):
        bars = [max(p.min_prob_beat_incumbent, p.compute_weight * frac_left) for p in (safe, bal, agg)]
        assert bars == sorted(bars)
    assert all(p.min_relative_improvement == 0.0 for p in PRESETS.values())  # the leader is never stopped


def test_preset_policy_and_overrides():
    p = preset("Aggressive").policy(keep_best_checkpoint=False)
    assert isinstance(p, StopPolicy) and p.keep_best_checkpoint is False
    assert p.min_prob_beat_incumbent == PRESETS["aggressive"].min_prob_beat_incumbent
    assert p.compute_weight == PRESETS["aggressive"].compute_weight
    assert DEFAULT_PRESET == "balanced"
    with pytest.raises(ValueError, match="safe"):
        preset("reckless")


def test_resolve_policy_layers_preset_policy_and_result_meaning():
    assert resolve_policy() == {}
    r = resolve_policy("safe", {"min_points": 5}, keep_best_checkpoint=False)
    assert r["min_points"] == 5 and r["keep_best_checkpoint"] is False
    assert r["min_prob_beat_incumbent"] == CLIENT_PRESETS["safe"]["min_prob_beat_incumbent"]
    with pytest.raises(ValueError):
        resolve_policy("nope")
