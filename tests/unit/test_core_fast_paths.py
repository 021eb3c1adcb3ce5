"""The hand-tuned hot paths of the core give exactly what their plain definitions give.

Each fast path (explicit state (de)serialisation, the timer index's shortcuts, the reason
rules and reasons worked out only when read, skipping a prediction the blend weighs by zero,
the decoder's shortcuts) is checked against a straightforward reference on many random
inputs: equal values, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from streams.core.clock import TimerIndex
from streams.core.config import ScoringConfig
from streams.core.events import ClickEvent, OrderEvent, OrderStatus, _id, parse_event_time
from streams.core.features import FEATURE_NAMES, compute_features, prior_of
from streams.core.model import FrozenLinearModel
from streams.core.reasons import DeferredReasons, explain
from streams.core.records import Reason
from streams.core.scoring import _cold_start, process_event
from streams.core.state import (
    COUNTER_INDEX,
    DECAYED_COUNTERS,
    STATE_FIELDS,
    STATE_VERSION,
    CustomerState,
    PendingSnapshot,
)
from streams.errors import ValidationError

CONFIG = ScoringConfig()
MODEL = FrozenLinearModel.prior_only()
T0_S = 1_704_067_200.0  # 2024-01-01T00:00:00Z
DAY_S = 86_400.0


def _random_state(rng: random.Random, customer_id: str = "c1") -> CustomerState:
    """Return a state with every field set to something plausible (or None where allowed)."""

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.3 else value

    first_seen_s = T0_S + rng.uniform(0, 400) * DAY_S
    clock_s = first_seen_s + rng.uniform(0, 300) * DAY_S
    order_count = rng.choice((0, 0, 1, 2, 3, 7))
    last_order_s = maybe(first_seen_s + rng.uniform(0, 200) * DAY_S) if order_count else None
    state = CustomerState(customer_id, first_seen_s, clock_s, clock_s)
    state.counters = [rng.choice((0.0, 0.0, 0.3, 0.6, rng.uniform(0, 9))) for _ in DECAYED_COUNTERS]
    state.order_count = order_count
    state.spend = rng.uniform(0, 900) if order_count else 0.0
    state.first_order_s = last_order_s and first_seen_s
    state.last_order_s = last_order_s
    state.last_order_id = maybe("o9")
    state.order_gap_days = maybe(rng.uniform(0.2, 60)) if order_count > 1 else None
    state.session_count = rng.randrange(20)
    state.last_visit_s = maybe(first_seen_s + rng.uniform(0, 250) * DAY_S)
    state.last_session_id = maybe("s3")
    state.visit_gap_days = maybe(rng.uniform(0.2, 30))
    state.session_has_cart = rng.random() < 0.5
    state.session_checked_out = rng.random() < 0.5
    state.categories = {f"cat{i}": rng.uniform(0, 5) for i in range(rng.randrange(6))}
    state.brands = {f"brand{i}": rng.uniform(0, 5) for i in range(rng.randrange(6))}
    state.email_opt_in = maybe(rng.random() < 0.5)
    state.sms_opt_in = maybe(rng.random() < 0.5)
    state.push_opt_in = maybe(rng.random() < 0.5)
    state.chat_opt_in = maybe(rng.random() < 0.5)
    state.preferred_channel = maybe("email")
    state.timezone = maybe("Europe/Berlin")
    state.pending = [
        PendingSnapshot(
            clock_s - i * DAY_S,
            [rng.uniform(-2, 2) for _ in FEATURE_NAMES],
            rng.random(),
            "m-7",
            rng.random() < 0.5,
        )
        for i in range(rng.randrange(4))
    ]
    state.next_snapshot_s = clock_s + rng.uniform(0, 30) * DAY_S
    state.next_wake_s = maybe(clock_s + rng.uniform(0, 30) * DAY_S)
    state.band = maybe(rng.choice(("LOW", "MEDIUM", "HIGH", "CRITICAL")))
    state.band_since_s = maybe(clock_s)
    state.last_score = maybe(rng.random())
    state.unrecovered_failed_payments = rng.choice((0, 0, 1, 2))
    state.input_offsets = [rng.randrange(-1, 99) for _ in range(3)]
    state.contacts = maybe({"v": 1, "customer_id": customer_id, "contacts": [[clock_s, "x"]]})
    return state


def _plain_to_dict(state: CustomerState) -> dict[str, Any]:
    """The generic form of ``to_dict`` (a loop over the dataclass fields)."""
    values: list[Any] = []
    for spec in fields(state):
        value = getattr(state, spec.name)
        if spec.name == "pending":
            value = [snapshot.to_list() for snapshot in value]
        elif isinstance(value, list | dict):
            value = value.copy()
        values.append(value)
    return {"v": STATE_VERSION, "values": values}


def test_state_values_follow_the_declared_fields() -> None:
    assert tuple(spec.name for spec in fields(CustomerState)) == STATE_FIELDS
    rng = random.Random(4)
    for number in range(300):
        state = _random_state(rng, f"c{number}")
        raw = state.to_dict()
        assert raw == _plain_to_dict(state)
        # what the table stores (JSON) reads back to an equal state, which writes the same
        stored = json.loads(json.dumps(raw))
        again = CustomerState.from_dict(stored)
        assert again == state
        assert again.to_dict() == raw
        # lists and dicts are copies: changing the state later never changes a written dict
        state.counters[0] += 1.0
        state.categories["new"] = 1.0
        assert raw == again.to_dict()


def test_state_from_dict_refuses_other_versions_and_lengths() -> None:
    raw = _random_state(random.Random(1)).to_dict()
    with pytest.raises(ValidationError, match="version"):
        CustomerState.from_dict({**raw, "v": STATE_VERSION - 1})
    with pytest.raises(ValidationError, match="number of values"):
        CustomerState.from_dict({**raw, "values": raw["values"][:-1]})


class _NaiveTimers:
    """What TimerIndex promises, with no buckets: one due time per customer."""

    def __init__(self) -> None:
        self.due: dict[str, float] = {}

    def schedule(self, customer_id: str, due_s: float | None) -> None:
        if due_s is None:
            self.due.pop(customer_id, None)
        else:
            self.due[customer_id] = due_s

    def pop_due(self, watermark_s: float) -> list[tuple[float, str]]:
        found = sorted((due_s, cid) for cid, due_s in self.due.items() if due_s <= watermark_s)
        for _, customer_id in found:
            del self.due[customer_id]
        return found


@pytest.mark.parametrize("seed", range(6))
def test_timer_index_matches_the_naive_one(seed: int) -> None:
    rng = random.Random(seed)
    bucket_s = rng.choice((1.0, 10.0, 60.0, 3600.0))
    timers, naive = TimerIndex(bucket_s), _NaiveTimers()
    watermark_s = 0.0
    ids = [f"c{i}" for i in range(40)]
    for _ in range(4000):
        roll = rng.random()
        if roll < 0.55:
            customer_id = rng.choice(ids)
            # mostly ahead of the watermark, inside its bucket too; sometimes behind it
            due_s: float | None = watermark_s + rng.choice(
                (rng.uniform(0, bucket_s), rng.uniform(0, 5 * bucket_s), -rng.uniform(0, 9))
            )
            if rng.random() < 0.1:
                due_s = None
            timers.schedule(customer_id, due_s)
            naive.schedule(customer_id, due_s)
        else:
            watermark_s += rng.choice((0.0, rng.uniform(0, bucket_s / 3), rng.uniform(0, 3)))
            assert timers.pop_due(watermark_s) == naive.pop_due(watermark_s)
        assert len(timers) == len(naive.due)
        for customer_id in rng.sample(ids, 3):
            assert timers.due_time(customer_id) == naive.due.get(customer_id)


def _plain_explain(
    state: CustomerState,
    now_s: float,
    contributions: Mapping[str, float] | None,
    max_reasons: int,
) -> tuple[Reason, ...]:
    """The reason rules written plainly, one after the other."""

    def plural(count: int, word: str) -> str:
        return f"{count} {word}" + ("" if count == 1 else "s")

    def count_of(counter: str) -> int:
        value = state.counters[COUNTER_INDEX[counter]]
        return max(1, round(value)) if value >= 0.5 else 0

    hits: dict[str, tuple[str, float]] = {}
    if state.last_order_s is None:
        days = int((now_s - state.first_seen_s) / DAY_S)
        hits["no_recent_order"] = (
            f"no order yet, first seen {plural(days, 'day')} ago",
            0.3 + days / 90,
        )
    else:
        days = int((now_s - state.last_order_s) / DAY_S)
        gap = state.order_gap_days
        if gap is not None and days >= max(gap, 1.0):
            text = f"no order in {days} days, usually every {max(1, round(gap))}"
            hits["no_recent_order"] = (text, 0.5 * (days / max(gap, 1.0)))
        elif gap is None and days >= 30:
            hits["no_recent_order"] = (f"no order in {days} days", days / 90)
    if state.order_count in (1, 2):
        word = "order" if state.order_count == 1 else "orders"
        hits["few_orders"] = (f"only {state.order_count} {word} so far", 0.5 / state.order_count)
    if state.last_visit_s is not None and (now_s - state.last_visit_s) / DAY_S >= 7:
        days = int((now_s - state.last_visit_s) / DAY_S)
        gap = state.visit_gap_days
        if gap is not None and days >= 2 * max(gap, 1.0):
            usual = max(gap, 1.0)
            text = f"no visit in {days} days (usual: {round(usual)})"
            hits["no_recent_visit"] = (text, 0.25 * days / usual)
        elif gap is None:
            hits["no_recent_visit"] = (f"no visit in {days} days", days / 180)
    unrecovered = state.unrecovered_failed_payments
    if unrecovered:
        text = f"{plural(unrecovered, 'failed payment')} since the last order"
        hits["failed_payments"] = (text, 0.6 * unrecovered)
    elif count := count_of("failed_payments"):
        hits["failed_payments"] = (f"{plural(count, 'failed payment')} recently", 0.6 * count)
    counted = {
        "cancellations": ("cancellations", "cancelled order", 0.5),
        "returns": ("returns", "returned order", 0.4),
        "refunds": ("refunds", "refund", 0.4),
        "low_ratings": ("low_ratings", "low rating", 0.5),
        "support_chats": ("support_chats", "support chat", 0.3),
        "abandoned_carts": ("abandoned_carts", "abandoned cart", 0.2),
    }
    for code, (counter, word, per_count) in counted.items():
        if count := count_of(counter):
            hits[code] = (f"{plural(count, word)} recently", per_count * count)
    features_of = {
        "no_recent_order": (
            "log_days_since_last_order",
            "years_since_last_order",
            "silence_to_usual_gap",
            "prior_logit",
        ),
        "few_orders": ("log_order_count", "one_time_buyer", "recent_orders"),
        "no_recent_visit": ("log_days_since_last_visit", "recent_sessions"),
        "failed_payments": ("recent_failed_payments", "unrecovered_failed_payments"),
        **{code: (f"recent_{counter}",) for code, (counter, _, _) in counted.items()},
    }
    found = []
    for code, (text, fixed_weight) in hits.items():
        weight = fixed_weight
        if contributions is not None:
            weight = sum(contributions.get(name, 0.0) for name in features_of[code])
        if weight > 0:
            found.append(Reason(code, text, round(weight, 4)))
    found.sort(key=lambda reason: (-reason.weight, reason.code))
    return tuple(found[:max_reasons])


def test_explain_matches_the_plain_rules() -> None:
    rng = random.Random(11)
    model = FrozenLinearModel(
        "m-9",
        9,
        means={name: rng.uniform(-1, 1) for name in FEATURE_NAMES},
        scales={name: rng.uniform(0, 2) for name in FEATURE_NAMES},
        weights={name: rng.uniform(-2, 2) for name in FEATURE_NAMES},
        intercept=0.1,
    )
    seen_codes: set[str] = set()
    for number in range(2000):
        state = _random_state(rng, f"c{number}")
        now_s = state.clock_s + rng.uniform(0, 120) * DAY_S
        features = compute_features(state, now_s, prior_of(state, now_s, CONFIG))
        for contributions in (None, model.contributions(features)):
            for max_reasons in (1, 3, 10):
                got = explain(state, now_s, contributions, max_reasons)
                assert got == _plain_explain(state, now_s, contributions, max_reasons)
                seen_codes.update(reason.code for reason in got)
    assert len(seen_codes) == 10  # every rule fired at least once


class _UnlearnedModel:
    """A model with nothing learned yet, whose prediction the blend must ignore."""

    version = "prior-0"
    examples_learned = 0

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def predict_proba(self, features: Mapping[str, float]) -> float:
        return self.probability

    def learn(self, features: Mapping[str, float], label: int) -> None:
        raise TypeError("does not learn")


def test_an_unlearned_models_score_is_the_cold_start_prior() -> None:
    rng = random.Random(5)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for number in range(200):
        customer_id = f"c{number}"
        state = None
        for step in range(rng.randrange(1, 6)):
            at = t0 + timedelta(days=step * rng.uniform(0, 40))
            status: OrderStatus = rng.choice(("paid", "payment_failed", "cancelled"))
            event = OrderEvent(f"e{step}", customer_id, f"o{step}", at, 20.0, "EUR", status)
            before: CustomerState | None = (
                None if state is None else CustomerState.from_dict(state.to_dict())
            )
            state, out = process_event(state, event, _UnlearnedModel(0.93), CONFIG)
            _, other = process_event(before, event, _UnlearnedModel(0.01), CONFIG)
            assert out == other  # the model's own vote has weight 0.0
            now_s = state.clock_s  # a late event is scored at the customer's clock
            features = compute_features(state, now_s, prior_of(state, now_s, CONFIG))
            blended = 0.0 * 0.93 + (1.0 - 0.0) * _cold_start(features, CONFIG)
            assert out.scores[-1].score == blended


def test_event_time_shortcut_equals_the_full_parse() -> None:
    def full(value: datetime) -> datetime:
        utc = value.astimezone(UTC)
        return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)

    rng = random.Random(2)
    zones = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)))
    for _ in range(500):
        when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**14))
        if rng.random() < 0.5:
            when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        when = when.astimezone(rng.choice(zones))
        parsed = parse_event_time(when)
        assert parsed == full(when)
        assert parsed.tzinfo is UTC
        assert parsed.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="time zone"):
        parse_event_time(datetime(2024, 1, 1))  # the naive time under test


@pytest.mark.parametrize(
    "value", ["", " ", "\t\n", "\u2003", "\x1c\x1f", "\u200b", "a", " a ", "\u00a0x", "é"]
)
def test_id_check_refuses_exactly_the_blank_strings(value: str) -> None:
    blank = not value.strip()
    if blank:
        with pytest.raises(ValidationError, match="non-empty"):
            _id({"event_id": value}, "event_id")
    else:
        assert _id({"event_id": value}, "event_id") == value


def test_click_decoding_is_unchanged_for_avro_times() -> None:
    # what the Avro decoder gives: aware UTC in whole milliseconds, returned as is
    when = datetime(2024, 3, 1, 12, 30, 5, 123000, tzinfo=UTC)
    event = ClickEvent("e1", "c1", "s1", when, "search")
    assert parse_event_time(event.event_time) is when
    assert math.isclose(when.timestamp(), 1709296205.123)


def test_deferred_reasons_equal_the_reasons_at_score_time() -> None:
    rng = random.Random(8)
    model = FrozenLinearModel(
        "m-9",
        9,
        means=dict.fromkeys(FEATURE_NAMES, 0.5),
        scales=dict.fromkeys(FEATURE_NAMES, 1.0),
        weights={name: rng.uniform(-2, 2) for name in FEATURE_NAMES},
        intercept=0.0,
    )
    for number in range(300):
        state = _random_state(rng, f"c{number}")
        now_s = state.clock_s + rng.uniform(0, 60) * DAY_S
        features = compute_features(state, now_s, prior_of(state, now_s, CONFIG))
        calls: list[int] = []

        def contributions_later(
            features: dict[str, float] = features, calls: list[int] = calls
        ) -> Mapping[str, float]:
            calls.append(1)
            return model.contributions(features)

        want = explain(state, now_s, model.contributions(features), 3)
        deferred = DeferredReasons(state, now_s, contributions_later, 3)
        # the state moves on before the reasons are read
        state.counters = [value + 5.0 for value in state.counters]
        state.last_order_s = now_s
        state.order_count += 3
        assert calls == []
        assert deferred == want
        assert want == deferred
        assert tuple(deferred) == want
        assert list(deferred) == list(want)
        assert len(deferred) == len(want)
        assert bool(deferred) == bool(want)
        assert hash(deferred) == hash(want)
        assert repr(deferred) == repr(want)
        assert pickle.loads(pickle.dumps(deferred)) == want
        assert deferred[:1] == want[:1]
        assert calls == [1]  # worked out once


def test_scores_with_deferred_reasons_equal_scores_with_eager_ones() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    _, out = process_event(
        None, OrderEvent("e1", "c1", "o1", t0, 20.0, "EUR", "payment_failed"), MODEL, CONFIG
    )
    score = out.scores[-1]
    eager = dataclasses.replace(score, reasons=tuple(score.reasons))
    assert isinstance(score.reasons, DeferredReasons)
    assert score == eager
    assert hash(score) == hash(eager)
    assert score.to_record() == eager.to_record()
    assert out.risk_changes[0].reasons == score.reasons  # the first band: a risk change
    assert isinstance(out.risk_changes[0].reasons, tuple)


@pytest.mark.parametrize("seed", range(3))
def test_timer_index_matches_the_naive_one_as_the_watermark_creeps_through_a_full_bucket(
    seed: int,
) -> None:
    # The live case: thousands of timers in the watermark's own hour, popped a few at a time
    # while new ones keep landing in it and some are moved elsewhere.
    rng = random.Random(seed)
    timers, naive = TimerIndex(3600.0), _NaiveTimers()
    ids = [f"c{i}" for i in range(2000)]
    for customer_id in ids:
        due_s = rng.uniform(0, 7200)
        timers.schedule(customer_id, due_s)
        naive.schedule(customer_id, due_s)
    watermark_s = 0.0
    while watermark_s < 8000:
        watermark_s += rng.uniform(0, 20)
        for customer_id in rng.sample(ids, 3):
            due_s = rng.choice((watermark_s + rng.uniform(0, 600), None, watermark_s - 1))
            timers.schedule(customer_id, due_s)
            naive.schedule(customer_id, due_s)
        assert timers.pop_due(watermark_s) == naive.pop_due(watermark_s)
        assert len(timers) == len(naive.due)
