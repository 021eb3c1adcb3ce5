"""The per-customer step: silence raises risk, reasons name drivers, state round-trips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from streams.core.config import ScoringConfig
from streams.core.events import ClickEvent, Event, OrderEvent, ProfileEvent
from streams.core.features import FEATURE_NAMES
from streams.core.model import FrozenLinearModel, OnlineChurnModel
from streams.core.records import to_s
from streams.core.scoring import StepOutput, process_event, process_timer, score_as_of
from streams.core.state import CustomerState

CONFIG = ScoringConfig()
MODEL = FrozenLinearModel.prior_only()
T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)


def _at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def _order(days: float, order_id: str, status: str = "placed") -> OrderEvent:
    return OrderEvent(
        f"{order_id}:{status}",
        "c1",
        order_id,
        _at(days),
        30.0,
        "USD",
        status=status,  # type: ignore[arg-type]  # a valid status literal, passed as str
    )


def _click(days: float, action: str, session: str = "s1", rating: int | None = None) -> ClickEvent:
    return ClickEvent(f"{action}:{days}:{session}", "c1", session, _at(days), action, rating=rating)


def _feed(
    events: Sequence[Event], model: object = MODEL, round_trip: bool = False
) -> tuple[CustomerState, StepOutput]:
    state: CustomerState | None = None
    total = StepOutput()
    for event in events:
        if round_trip and state is not None:
            state = CustomerState.from_dict(json.loads(json.dumps(state.to_dict())))
        state, out = process_event(state, event, model, CONFIG)  # type: ignore[arg-type]  # test models
        total.extend(out)
    assert state is not None
    return state, total


REGULAR = [_order(d, f"o{i}") for i, d in enumerate(range(0, 120, 12))]  # every 12 days


def test_silence_raises_the_score_and_timers_rescore() -> None:
    state, _ = _feed(REGULAR)
    last_order_s = to_s(_at(108))
    scores = []
    for days in (5, 20, 40, 80, 160):
        state, out = score_as_of(state, last_order_s + days * 86_400, MODEL, CONFIG)
        scores.append(out.scores[-1].score)
    assert scores == sorted(scores)
    assert scores[-1] - scores[0] > 0.3
    # Timers alone (no as-of request) wake the customer at silence milestones.
    state, _ = _feed(REGULAR)
    state, out = process_timer(state, last_order_s + 100 * 86_400, MODEL, CONFIG)
    timer_scores = [s.score for s in out.scores]
    assert len(timer_scores) >= 3
    assert timer_scores[-1] > timer_scores[0]
    assert all(s.trigger == "timer" for s in out.scores)


def test_reasons_name_recency_with_the_customers_own_rhythm() -> None:
    state, _ = _feed(REGULAR)
    _, out = score_as_of(state, to_s(_at(149)), MODEL, CONFIG)
    texts = [r.text for r in out.scores[-1].reasons]
    assert texts[0] == "no order in 41 days, usually every 12"


def test_reasons_name_failed_payments_and_low_ratings() -> None:
    events: list[Event] = [
        _order(0, "o1"),
        _order(1, "o1"),
        _click(30, "review", rating=1),
        _order(31, "o2", "payment_failed"),
        _order(31.5, "o2", "payment_failed"),
    ]
    _, out = _feed(events)
    codes = {r.code: r.text for r in out.scores[-1].reasons}
    assert codes["failed_payments"] == "2 failed payments since the last order"
    assert "low_ratings" in codes
    assert "only 1 order so far" in codes.values()  # the retried order o1 counts once


def test_unrecovered_failed_payments_raise_the_cold_start_score_until_an_order() -> None:
    base = [_order(0, "o1"), _order(10, "o2")]
    failed = [*base, _order(12, "o3", "payment_failed"), _order(12.5, "o3", "payment_failed")]
    state, _ = _feed(failed)
    clean_score = score_as_of(_feed(base)[0], to_s(_at(13)), MODEL, CONFIG)[1].scores[-1]
    failed_score = score_as_of(state, to_s(_at(13)), MODEL, CONFIG)[1].scores[-1]
    assert failed_score.score > clean_score.score + 0.1
    assert failed_score.reasons[0].code == "failed_payments"
    recovered, _ = process_event(state, _order(13, "o4"), MODEL, CONFIG)
    assert recovered.unrecovered_failed_payments == 0


def test_learned_model_reasons_follow_its_contributions() -> None:
    online = OnlineChurnModel(learning_rate=0.05)
    for i in range(400):
        churned = i % 2
        # Only failed payments vary (and predict churn), so they must top the reasons.
        online.learn(_zeros() | {"recent_failed_payments": float(churned)}, churned)
    events: list[Event] = [_order(0, "o1"), _order(2, "o2"), _order(3, "o2x", "payment_failed")]
    _, out = _feed(events, model=online.freeze())
    assert out.scores[-1].reasons[0].code == "failed_payments"
    assert out.scores[-1].model_version == "m-400"


def _zeros() -> dict[str, float]:
    return {name: 0.0 for name in FEATURE_NAMES if name not in ("recent_failed_payments",)}


def test_state_round_trip_gives_identical_outputs() -> None:
    events: list[Event] = [
        *REGULAR,
        _click(50, "product_view"),
        _click(50.01, "add_to_cart"),
        _click(60, "search", session="s2"),
        ProfileEvent("c1", _at(61), email_opt_in=True, preferred_channel="email"),
        _order(200, "late"),
    ]
    plain_state, plain = _feed(events)
    trip_state, trip = _feed(events, round_trip=True)
    assert [s.to_record() for s in plain.scores] == [s.to_record() for s in trip.scores]
    assert [e.to_record() for e in plain.training_examples] == [
        e.to_record() for e in trip.training_examples
    ]
    assert plain_state == trip_state
    assert plain_state.counter("abandoned_carts") > 0  # cart without checkout, then new session


def test_state_stays_small_for_a_very_active_customer() -> None:
    events: list[Event] = []
    for i in range(3_000):
        events.append(
            ClickEvent(
                f"e{i}",
                "c1",
                f"s{i // 5}",
                _at(i * 0.1),
                "product_view",
                category=f"cat{i}",
                brand=f"brand{i % 97}",
            )
        )
    state, _ = _feed(events)
    assert len(state.categories) <= CONFIG.top_k_preferences
    assert len(state.brands) <= CONFIG.top_k_preferences
    assert len(state.pending) <= CONFIG.max_pending_snapshots
    assert len(json.dumps(state.to_dict())) < 4_000


def test_score_ids_are_deterministic_and_unique_per_event() -> None:
    _, first = _feed(REGULAR)
    _, second = _feed(REGULAR)
    ids = [s.event_id for s in first.scores]
    assert ids == [s.event_id for s in second.scores]
    assert len(set(ids)) == len(ids)
    record = first.scores[0].to_record()
    assert record["as_of"].tzinfo is not None
    assert isinstance(record["band"], str)


def test_late_event_does_not_rewind_the_customers_clock() -> None:
    state, _ = _feed([_order(10, "o1")])
    state, out = process_event(state, _order(5, "o0"), MODEL, CONFIG)
    assert out.scores[-1].as_of == _at(10)
    assert state.order_count == 2
