"""Intervention router: every segment, trigger and guard rail, holdout share, records."""

from __future__ import annotations

import dataclasses
import doctest
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import streams.core.guardrails
import streams.core.intervention_config
import streams.core.interventions
import streams.core.segments
from streams.core.events import ClickEvent, OrderEvent, ProfileEvent
from streams.core.guardrails import holdout_position, in_holdout
from streams.core.interventions import (
    CAPPED,
    COOLDOWN,
    HELD_OUT,
    NO_CONSENT,
    ContactState,
    Intervention,
    InterventionConfig,
    release_deferred,
    route,
)
from streams.core.records import Reason, RiskChange, to_s
from streams.core.state import CustomerState
from streams.errors import SettingsError, ValidationError
from streams.io.avro import default_codec

T0 = datetime(2024, 1, 15, 12, tzinfo=UTC)  # noon UTC: no quiet hours in UTC
NO_HOLDOUT = InterventionConfig(holdout_percent=0.0)


def _customer(
    customer_id: str = "c1",
    orders: int = 0,
    spend: float = 0.0,
    timezone: str | None = "UTC",
    **consent: Any,
) -> CustomerState:
    state = CustomerState(customer_id, 0.0, 0.0, 0.0, order_count=orders, spend=spend)
    state.timezone = timezone
    state.email_opt_in = True
    for name, value in consent.items():
        setattr(state, name, value)
    return state


def _change(
    when: datetime = T0,
    to_band: str = "HIGH",
    from_band: str | None = "LOW",
    customer_id: str = "c1",
    event_id: str | None = None,
) -> RiskChange:
    reasons = (Reason("silence", "no visit in 41 days (usual: 9)", 0.4),)
    return RiskChange(
        event_id or f"rc-{customer_id}-{when.isoformat()}",
        customer_id,
        from_band,
        to_band,
        0.7,
        0.3,
        reasons,
        "m-7",
        when,
        "timer",
    )


def _order(
    status: str, when: datetime = T0, order_id: str = "o1", customer_id: str = "c1"
) -> OrderEvent:
    return OrderEvent(
        f"{order_id}-{status}",
        customer_id,
        order_id,
        when,
        25.0,
        "EUR",
        status=status,  # type: ignore[arg-type]  # a valid status literal, passed as str
    )


def _route_one(
    customer: CustomerState,
    trigger: Any,
    config: InterventionConfig = NO_HOLDOUT,
    contacts: ContactState | None = None,
    when: datetime | None = None,
) -> tuple[ContactState, Intervention]:
    now = when or getattr(trigger, "as_of", None) or trigger.event_time
    contacts, out = route(customer, contacts, trigger, to_s(now), config)
    assert len(out) == 1, out
    return contacts, out[0]


# --- segments ------------------------------------------------------------------------------


def test_never_ordered_gets_a_strong_first_order_coupon() -> None:
    _, decision = _route_one(_customer(), _change())
    assert (decision.segment, decision.kind, decision.channel) == (
        "never_ordered",
        "offer",
        "email",
    )
    assert decision.offer is not None
    assert decision.offer.discount_percent == 20.0
    assert decision.offer.code.startswith("FIRST-")
    assert decision.suppressed_reason is None
    assert decision.deliver_now
    assert decision.risk_change_id == decision.risk_change_id is not None
    assert "no visit in 41 days" in decision.reason


def test_low_value_early_customer_gets_an_offer_at_their_price_level() -> None:
    customer = _customer(orders=2, spend=36.0)  # average order 18
    contacts, none = route(
        customer, None, _order("placed", T0 - timedelta(days=40)), 0.0, NO_HOLDOUT
    )
    assert none == []
    assert contacts.currency == "EUR"
    _, decision = _route_one(customer, _change(), contacts=contacts)
    assert decision.segment == "low_value_early"
    assert decision.offer is not None
    # A quarter of their own average order (18 -> 4.5 -> 4), in their currency.
    assert (decision.offer.amount_off, decision.offer.currency) == (4.0, "EUR")
    big = _customer(orders=1, spend=30.0)
    _, decision = _route_one(big, _change(), contacts=ContactState("c1", currency="USD"))
    assert decision.offer is not None
    assert (decision.offer.amount_off, decision.offer.currency) == (8.0, "USD")


def test_low_value_without_known_currency_gets_a_percentage() -> None:
    _, decision = _route_one(_customer(orders=1, spend=10.0), _change())
    assert decision.segment == "low_value_early"
    assert decision.offer is not None
    assert (decision.offer.amount_off, decision.offer.discount_percent) == (None, 10.0)


def test_early_customer_with_higher_orders_gets_a_next_order_coupon() -> None:
    _, decision = _route_one(_customer(orders=2, spend=160.0), _change())
    assert decision.segment == "early"
    assert decision.offer is not None
    assert decision.offer.discount_percent == 10.0


def test_loyal_customer_gets_favourites_and_a_member_only_coupon() -> None:
    customer = _customer(orders=4, spend=200.0)
    customer.categories = {"books": 5.0, "games": 9.0, "art": 1.0, "music": 5.0}
    customer.brands = {"acme": 2.0}
    _, decision = _route_one(customer, _change())
    assert decision.segment == "loyal"
    assert decision.offer is not None
    assert decision.offer.categories == ("games", "books", "music")
    assert decision.offer.brands == ("acme",)
    assert decision.offer.member_only
    assert decision.offer.code.startswith("MEMBER-")


def test_high_value_at_high_risk_gets_a_human_on_live_chat() -> None:
    customer = _customer(orders=6, spend=900.0, chat_opt_in=True)
    _, decision = _route_one(customer, _change(to_band="CRITICAL", from_band="MEDIUM"))
    assert (decision.segment, decision.kind, decision.channel) == (
        "high_value_at_risk",
        "chat",
        "chat",
    )
    assert decision.offer is None
    assert decision.expires_at - decision.created_at == timedelta(hours=24)


def test_high_value_without_chat_consent_falls_back_to_their_segment_offer() -> None:
    customer = _customer(orders=6, spend=900.0, chat_opt_in=False)
    _, decision = _route_one(customer, _change())
    assert (decision.segment, decision.kind, decision.channel) == ("loyal", "offer", "email")
    assert "no consent for chat" in decision.reason


@pytest.mark.parametrize(
    ("from_band", "to_band"),
    [("HIGH", "MEDIUM"), ("LOW", "MEDIUM"), ("CRITICAL", "HIGH"), (None, "LOW")],
)
def test_falling_or_mild_risk_changes_call_for_nothing(from_band: str | None, to_band: str) -> None:
    contacts, out = route(
        _customer(), None, _change(to_band=to_band, from_band=from_band), to_s(T0), NO_HOLDOUT
    )
    assert out == []
    assert contacts.contacts == []


def test_a_first_band_is_no_signal_unless_configured() -> None:
    first = _change(to_band="HIGH", from_band=None)
    assert route(_customer(), None, first, to_s(T0), NO_HOLDOUT)[1] == []
    eager = dataclasses.replace(NO_HOLDOUT, act_on_first_band=True)
    assert _route_one(_customer(), first, eager)[1].segment == "never_ordered"


def test_a_risk_change_made_stale_by_what_followed_calls_for_nothing() -> None:
    calmer = _customer(orders=2, spend=160.0)
    calmer.band = "MEDIUM"  # the same step brought the customer down again
    assert route(calmer, None, _change(), to_s(T0), NO_HOLDOUT)[1] == []
    ordered = _customer(orders=3, spend=160.0)
    ordered.last_order_s = to_s(T0) + 60.0  # ordered right after the silence timer fired
    assert route(ordered, None, _change(), to_s(T0) + 60.0, NO_HOLDOUT)[1] == []
    ordered.band = "HIGH"
    ordered.last_order_s = to_s(T0) - 60.0
    assert _route_one(ordered, _change())[1].suppressed_reason is None


# --- immediate triggers ----------------------------------------------------------------------


def test_failed_payment_sends_a_payment_recovery_message() -> None:
    _, decision = _route_one(_customer(orders=1, spend=25.0), _order("payment_failed"))
    assert (decision.segment, decision.kind, decision.trigger) == (
        "payment_recovery",
        "message",
        "order",
    )
    assert decision.offer is None
    assert decision.risk_change_id is None
    assert decision.model_version is None


def test_cancellation_asks_why_and_offers_a_win_back() -> None:
    _, decision = _route_one(_customer(orders=1, spend=25.0), _order("cancelled"))
    assert (decision.segment, decision.kind) == ("cancellation", "offer")
    assert "ask why" in decision.reason
    assert decision.offer is not None
    assert decision.offer.code.startswith("BACK-")


def test_return_and_low_rating_bring_support_in() -> None:
    _, returned = _route_one(_customer(), _order("returned"))
    assert (returned.segment, returned.kind) == ("service_recovery", "message")
    review = ClickEvent("e9", "c1", "s1", T0, "review", product_id="p7", rating=1)
    _, rated = _route_one(_customer(), review)
    assert rated.segment == "service_recovery"
    assert "p7" in rated.reason
    happy = dataclasses.replace(review, rating=4)
    assert route(_customer(), None, happy, to_s(T0), NO_HOLDOUT)[1] == []


@pytest.mark.parametrize("status", ["placed", "paid", "delivered", "refunded"])
def test_ordinary_order_updates_call_for_nothing(status: str) -> None:
    assert route(_customer(), None, _order(status), to_s(T0), NO_HOLDOUT)[1] == []


def test_profiles_and_page_views_call_for_nothing() -> None:
    profile = ProfileEvent("c1", T0, email_opt_in=False)
    view = ClickEvent("e1", "c1", "s1", T0, "page_view")
    for event in (profile, view):
        assert route(_customer(), None, event, to_s(T0), NO_HOLDOUT)[1] == []


# --- consent and channels -----------------------------------------------------------------


def test_no_consent_means_no_message_but_the_decision_is_counted() -> None:
    customer = _customer(email_opt_in=None)
    contacts, decision = _route_one(customer, _change())
    assert decision.suppressed_reason == NO_CONSENT
    assert decision.channel is None
    assert contacts.contacts == []  # nothing was sent, so nothing counts against the caps
    assert contacts.last_outcome == NO_CONSENT


def test_opt_out_moves_to_the_next_allowed_channel_and_preference_wins() -> None:
    customer = _customer(email_opt_in=False, push_opt_in=True, sms_opt_in=True)
    assert _route_one(customer, _change())[1].channel == "push"
    customer.preferred_channel = "sms"
    assert _route_one(customer, _change())[1].channel == "sms"
    customer.sms_opt_in = False  # an opt-out beats the preference
    assert _route_one(customer, _change())[1].channel == "push"


def test_service_messages_need_no_opt_in_but_respect_opt_outs() -> None:
    silent = _customer(email_opt_in=None)
    assert _route_one(silent, _order("payment_failed"))[1].channel == "email"
    opted_out = _customer(email_opt_in=False, push_opt_in=False, sms_opt_in=False)
    assert _route_one(opted_out, _order("payment_failed"))[1].suppressed_reason == NO_CONSENT
    strict = dataclasses.replace(NO_HOLDOUT, service_needs_opt_in=True)
    assert _route_one(silent, _order("payment_failed"), strict)[1].suppressed_reason == NO_CONSENT


# --- cooldown and caps ----------------------------------------------------------------------


def test_cooldown_blocks_a_second_proactive_contact_until_it_passes() -> None:
    customer = _customer(orders=4, spend=200.0)
    contacts, first = _route_one(customer, _change())
    assert first.suppressed_reason is None
    contacts, second = _route_one(customer, _change(T0 + timedelta(days=1)), contacts=contacts)
    assert second.suppressed_reason == COOLDOWN
    contacts, third = _route_one(customer, _change(T0 + timedelta(days=4)), contacts=contacts)
    assert third.suppressed_reason is None


def test_a_burst_of_failed_payments_gets_one_recovery_message() -> None:
    customer, contacts = _customer(orders=1, spend=25.0), None
    outcomes = []
    for minute in range(5):
        event = _order("payment_failed", T0 + timedelta(minutes=minute), order_id="o1")
        event = dataclasses.replace(event, event_id=f"retry-{minute}")
        contacts, decision = _route_one(customer, event, contacts=contacts)
        outcomes.append(decision.suppressed_reason)
    assert outcomes == [None, COOLDOWN, COOLDOWN, COOLDOWN, COOLDOWN]
    # A different service message is not blocked by the payment one.
    _, returned = _route_one(
        customer, _order("returned", T0 + timedelta(minutes=9)), contacts=contacts
    )
    assert returned.suppressed_reason is None


@pytest.mark.parametrize(("spend", "cap"), [(20.0, 4), (150.0, 3), (900.0, 2)])
def test_caps_under_a_burst_give_valuable_customers_fewer_contacts(spend: float, cap: int) -> None:
    config = dataclasses.replace(NO_HOLDOUT, cooldown_hours=0.0, trigger_cooldown_hours=0.0)
    customer, contacts = _customer(orders=3, spend=spend), None
    outcomes: Counter[str | None] = Counter()
    for index in range(12):
        when = T0 + timedelta(days=index)
        change = _change(when, event_id=f"burst-{index}")
        contacts, decision = _route_one(customer, change, config, contacts)
        outcomes[decision.suppressed_reason] += 1
    # 12 days of daily risk changes fit in one 30-day window: only the cap's worth go out.
    assert outcomes == {None: cap, CAPPED: 12 - cap}
    later = T0 + timedelta(days=31)
    _, fresh = _route_one(customer, _change(later, event_id="later"), config, contacts)
    assert fresh.suppressed_reason is None  # the window moved on
    assert contacts is not None
    assert len(contacts.contacts) <= 5  # bounded history


# --- quiet hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "deliver_after"),
    [
        ("UTC", datetime(2024, 1, 16, 8, tzinfo=UTC)),
        ("Asia/Tokyo", datetime(2024, 1, 15, 23, tzinfo=UTC)),  # 07:30 local -> 08:00
        ("America/New_York", None),  # 17:30 local
        ("Australia/Sydney", None),  # 09:30 local next day
        ("Mars/Olympus_Mons", datetime(2024, 1, 16, 8, tzinfo=UTC)),  # unknown zone -> UTC
        (None, datetime(2024, 1, 16, 8, tzinfo=UTC)),
    ],
)
def test_quiet_hours_follow_the_customers_time_zone(
    timezone: str | None, deliver_after: datetime | None
) -> None:
    night = datetime(2024, 1, 15, 22, 30, tzinfo=UTC)
    contacts, decision = _route_one(_customer(timezone=timezone), _change(night))
    assert decision.deliver_after == deliver_after
    assert decision.suppressed_reason is None
    assert decision.deferred == (deliver_after is not None)
    assert len(contacts.deferred) == (0 if deliver_after is None else 1)


def test_quiet_hours_end_at_local_eight_across_a_dst_change() -> None:
    # Berlin moves to summer time in the night of 2024-03-31: 08:00 local is 06:00 UTC then.
    late = datetime(2024, 3, 30, 22, tzinfo=UTC)  # 23:00 in Berlin
    _, decision = _route_one(_customer(timezone="Europe/Berlin"), _change(late))
    assert decision.deliver_after == datetime(2024, 3, 31, 6, tzinfo=UTC)


def test_deferred_interventions_are_released_when_quiet_hours_end() -> None:
    night = datetime(2024, 1, 15, 22, 30, tzinfo=UTC)
    contacts, decision = _route_one(_customer(), _change(night))
    assert contacts.next_release_s() == to_s(datetime(2024, 1, 16, 8, tzinfo=UTC))
    contacts, due, expired = release_deferred(contacts, to_s(datetime(2024, 1, 16, 7, tzinfo=UTC)))
    assert (due, expired) == ([], [])
    contacts, due, expired = release_deferred(contacts, to_s(datetime(2024, 1, 16, 8, tzinfo=UTC)))
    assert (due, expired) == ([decision], [])
    assert contacts.deferred == []
    assert contacts.next_release_s() is None


def test_deferred_interventions_past_their_expiry_are_dropped_and_reported() -> None:
    night = datetime(2024, 1, 15, 22, 30, tzinfo=UTC)
    customer = _customer(orders=6, spend=900.0, chat_opt_in=True)
    contacts, decision = _route_one(customer, _change(night, to_band="CRITICAL"))
    assert decision.kind == "chat"
    _, due, expired = release_deferred(contacts, to_s(night + timedelta(days=2)))
    assert (due, expired) == ([], [decision])


# --- holdout ------------------------------------------------------------------------------


def test_holdout_share_is_within_tolerance_and_stable_on_10k_ids() -> None:
    config = InterventionConfig()  # 10 %
    ids = [f"customer-{index}" for index in range(10_000)]
    held = {customer_id for customer_id in ids if in_holdout(customer_id, config)}
    assert 900 <= len(held) <= 1100
    assert held == {customer_id for customer_id in ids if in_holdout(customer_id, config)}
    resalted = dataclasses.replace(config, holdout_salt="another-experiment")
    held_again = {customer_id for customer_id in ids if in_holdout(customer_id, resalted)}
    assert 50 <= len(held & held_again) <= 160  # independent draw: about 1 % overlap
    positions = [holdout_position(customer_id, config.holdout_salt) for customer_id in ids]
    assert 0.0 <= min(positions) < max(positions) < 100.0


def test_held_out_customers_get_nothing_but_the_decision_is_recorded() -> None:
    config = InterventionConfig(holdout_percent=100.0)
    customer = _customer(orders=4, spend=200.0)
    contacts, decision = _route_one(customer, _change(), config)
    assert decision.holdout
    assert decision.suppressed_reason == HELD_OUT
    assert decision.channel == "email"  # what would have been used: like for like with treated
    assert not decision.deliver_now
    # The shadow contact applies the same cooldown as a real one would.
    _, second = _route_one(customer, _change(T0 + timedelta(days=1)), config, contacts)
    assert second.suppressed_reason == COOLDOWN
    assert second.holdout
    night = datetime(2024, 1, 20, 22, 30, tzinfo=UTC)
    contacts, deferred = _route_one(customer, _change(night), config, contacts)
    assert deferred.deliver_after is not None
    assert contacts.deferred == []


# --- ids, records, state --------------------------------------------------------------------


def test_same_inputs_give_the_same_ids_and_decisions() -> None:
    def run() -> list[dict[str, Any]]:
        contacts: ContactState | None = None
        customer = _customer(orders=3, spend=120.0, chat_opt_in=True)
        records: list[dict[str, Any]] = []
        for index in range(6):
            when = T0 + timedelta(days=index, hours=5 * index)
            failed = _order("payment_failed", when, order_id=f"o{index}")
            for trigger in (_change(when, event_id=f"r{index}"), failed):
                contacts, out = route(customer, contacts, trigger, to_s(when), InterventionConfig())
                records.extend(item.to_record() for item in out)
        return records

    first, second = run(), run()
    assert first == second
    assert len({record["intervention_id"] for record in first}) == len(first) == 12
    # The same trigger seen twice (at-least-once input) gives the same id: downstream dedupes.
    customer = _customer()
    once = route(customer, None, _order("cancelled"), to_s(T0), NO_HOLDOUT)[1]
    twice = route(customer, None, _order("cancelled"), to_s(T0), NO_HOLDOUT)[1]
    assert once == twice


def test_records_encode_with_the_avro_contract_and_round_trip() -> None:
    codec = default_codec()
    night = datetime(2024, 1, 15, 22, 30, tzinfo=UTC)
    customer = _customer(orders=4, spend=200.0, email_opt_in=None)
    decisions = [
        _route_one(_customer(), _change(night))[1],
        _route_one(customer, _change())[1],
        _route_one(_customer(), _order("payment_failed"))[1],
        _route_one(
            _customer(orders=4, spend=100.0), _change(), InterventionConfig(holdout_percent=100)
        )[1],
    ]
    for decision in decisions:
        _, decoded = codec.decode(
            codec.encode("intervention", decision.to_record()), "intervention"
        )
        assert Intervention.from_record(decoded) == decision
        assert Intervention.from_record(json.loads(json.dumps(decision.to_json()))) == decision


def test_contact_state_round_trips_through_json() -> None:
    night = datetime(2024, 1, 15, 22, 30, tzinfo=UTC)
    contacts, _ = _route_one(_customer(), _change(night))
    contacts, _ = route(_customer(), contacts, _order("placed"), to_s(night), NO_HOLDOUT)
    raw = json.loads(json.dumps(contacts.to_dict()))
    assert ContactState.from_dict(raw) == contacts
    with pytest.raises(ValidationError, match="version"):
        ContactState.from_dict({"v": 99})
    with pytest.raises(ValidationError, match="malformed"):
        ContactState.from_dict({"v": 1, "customer_id": "c1", "contacts": [[1.0]], "deferred": []})


def test_a_trigger_of_another_customer_is_refused() -> None:
    with pytest.raises(ValidationError, match="'c2'"):
        route(_customer("c1"), None, _change(customer_id="c2"), to_s(T0), NO_HOLDOUT)


def test_bad_config_values_are_named() -> None:
    with pytest.raises(SettingsError, match="holdout_percent"):
        InterventionConfig(holdout_percent=120.0)
    with pytest.raises(SettingsError, match="act_from_band"):
        InterventionConfig(act_from_band="SEVERE")
    with pytest.raises(SettingsError, match="expiry"):
        InterventionConfig(chat_expiry_hours=6.0)


@pytest.mark.parametrize(
    "module",
    [
        streams.core.guardrails,
        streams.core.intervention_config,
        streams.core.interventions,
        streams.core.segments,
    ],
)
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
