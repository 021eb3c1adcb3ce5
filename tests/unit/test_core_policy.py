"""Risk bands: hysteresis and dwell stop wobbles; changes carry deterministic ids."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from streams.core.config import ScoringConfig
from streams.core.events import ProfileEvent
from streams.core.policy import next_band
from streams.core.scoring import process_event

CONFIG = ScoringConfig(band_thresholds=(0.4, 0.6, 0.8), band_hysteresis=0.05, min_dwell_days=1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class ConstantModel:
    """Returns whatever score the test sets."""

    version = "const-1"
    examples_learned = 10_000

    def __init__(self, score: float) -> None:
        self.score = score

    def predict_proba(self, features: Mapping[str, float]) -> float:
        return self.score

    def learn(self, features: Mapping[str, float], label: int) -> None:
        raise TypeError("constant")


def _profile(hours: float) -> ProfileEvent:
    return ProfileEvent("c1", T0 + timedelta(hours=hours), email_opt_in=True)


def test_wobble_around_threshold_emits_nothing() -> None:
    model = ConstantModel(0.62)
    state, out = process_event(None, _profile(0), model, CONFIG)
    assert [(c.from_band, c.to_band) for c in out.risk_changes] == [(None, "HIGH")]
    emitted = []
    for step, score in enumerate([0.58, 0.63, 0.57, 0.61, 0.59, 0.64], start=1):
        model.score = score
        state, out = process_event(state, _profile(48 * step), model, CONFIG)
        emitted.extend(out.risk_changes)
        assert out.scores[0].band == "HIGH"
    assert emitted == []


def test_clear_move_changes_band_once_with_previous_score() -> None:
    model = ConstantModel(0.5)
    state, _ = process_event(None, _profile(0), model, CONFIG)
    model.score = 0.9
    state, out = process_event(state, _profile(48), model, CONFIG)
    (change,) = out.risk_changes
    assert (change.from_band, change.to_band, change.previous_score) == ("MEDIUM", "CRITICAL", 0.5)
    state, out = process_event(state, _profile(96), model, CONFIG)
    assert out.risk_changes == []


def test_min_dwell_holds_band_then_lets_it_move() -> None:
    assert next_band(0.95, "LOW", band_since_s=0.0, now_s=3_600.0, config=CONFIG) == "LOW"
    assert next_band(0.95, "LOW", band_since_s=0.0, now_s=90_000.0, config=CONFIG) == "CRITICAL"


def test_risk_change_ids_are_deterministic_and_distinct() -> None:
    def run() -> list[str]:
        model = ConstantModel(0.1)
        state, out = process_event(None, _profile(0), model, CONFIG)
        ids = [c.event_id for c in out.risk_changes]
        model.score = 0.9
        state, out = process_event(state, _profile(48), model, CONFIG)
        return ids + [c.event_id for c in out.risk_changes]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == 2
