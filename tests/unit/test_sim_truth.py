"""The shop's ground truth agrees with its events, and interventions have their true effect."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from streams.core.events import ClickEvent, Event, OrderEvent, event_from_dict, event_to_dict
from streams.errors import ValidationError
from streams.sim.customers import customer_id_of
from streams.sim.effects import EffectConfig
from streams.sim.emit import iso
from streams.sim.shop import Shop, SimConfig
from streams.sim.truth import Truth, TruthWriter, read_truth

DAY_MS = 86_400_000
PURCHASES = {"placed", "paid"}


def _until(shop: Shop, until_ms: int) -> list[Event]:
    out = []
    while (when := shop.peek_ms()) is not None and when < until_ms:
        event = shop.next_event()
        assert event is not None
        out.append(event)
    return out


def _record(
    intervention_id: str,
    customer_id: str,
    at_ms: int,
    *,
    suppressed: str | None = None,
    segment: str = "loyal",
    kind: str = "offer",
    channel: str | None = "email",
    expires_days: float = 7.0,
) -> dict[str, Any]:
    return {
        "intervention_id": intervention_id,
        "customer_id": customer_id,
        "kind": kind,
        "channel": channel,
        "segment": segment,
        "reason": "test",
        "offer": None,
        "holdout": suppressed == "held_out",
        "suppressed_reason": suppressed,
        "created_at": iso(at_ms),
        "expires_at": iso(at_ms + int(expires_days * DAY_MS)),
        "deliver_after": None,
        "risk_change_id": None,
        "trigger": "timer",
        "model_version": None,
    }


def _truth_of(shop: Shop, tmp_path: Path) -> Truth:
    writer = TruthWriter(tmp_path / "truth.jsonl")
    writer.write(shop.drain_truth())
    writer.write([shop.end_record()])
    writer.close()
    return read_truth(tmp_path / "truth.jsonl")


def _ms(event: Event) -> int:
    return int(event.event_time.timestamp() * 1000)


def _bought_in(events: Iterable[Event], customer_id: str, after_ms: int, until_ms: int) -> int:
    return int(
        any(
            isinstance(e, OrderEvent)
            and e.customer_id == customer_id
            and e.status in PURCHASES
            and after_ms < _ms(e) <= until_ms
            for e in events
        )
    )


def test_every_event_passes_validation_in_time_order() -> None:
    config = SimConfig(customers=300, days=120, seed=4)
    events = list(Shop(config))
    assert {e.event_type for e in events} == {"order", "click", "profile"}
    for event in events:
        assert event_from_dict(event_to_dict(event)) == event
        assert event.event_time.microsecond % 1000 == 0
    times = [e.event_time for e in events]
    assert times == sorted(times)
    statuses = {e.status for e in events if isinstance(e, OrderEvent)}
    assert {"placed", "paid", "payment_failed", "delivered", "returned", "refunded"} <= statuses
    actions = {e.action for e in events if isinstance(e, ClickEvent)}
    assert {"page_view", "product_view", "add_to_cart", "checkout_start", "review"} <= actions


def test_no_orders_or_visits_after_a_dropout_unless_revived(tmp_path: Path) -> None:
    effects = EffectConfig(respond={"loyal": 1.0}, offer_immune_share=0.0)
    shop = Shop(SimConfig(customers=400, days=200, seed=8, acquisition_days=20, effects=effects))
    day_80 = shop.start_ms + 80 * DAY_MS
    events = _until(shop, day_80)
    for index in sorted(shop.customers):
        record = _record(f"win-{index}", customer_id_of(index), day_80)
        shop.apply_intervention(record, day_80)
    events += list(shop)
    truth = _truth_of(shop, tmp_path)
    assert truth.revived_by, "the offers revived nobody: the closed loop is not closed"
    dropped = [c for c in truth.customers.values() if c.gone]
    assert len(dropped) > 100
    placed_orders: set[str] = set()
    for event in events:
        customer = truth.customers[event.customer_id]
        when = _ms(event)
        if isinstance(event, OrderEvent) and event.status == "placed":
            assert not customer.dropped_at(when), f"order {event.order_id} after a dropout"
            placed_orders.add(event.order_id)
        elif isinstance(event, OrderEvent):
            assert event.order_id in placed_orders  # later statuses only of known orders
        elif isinstance(event, ClickEvent) and event.action == "page_view":
            assert not customer.dropped_at(when), f"visit {event.session_id} after a dropout"
    # Revived customers do come back: some of them place orders after their revival.
    comebacks = 0
    for customer_id in set(truth.revived_by.values()):
        revived_ms = truth.customers[customer_id].gone[0][1]
        assert revived_ms is not None
        comebacks += _bought_in(events, customer_id, revived_ms, shop.end_ms)
    assert comebacks > 0


def test_a_strong_effect_raises_orders_of_treated_over_held_out(tmp_path: Path) -> None:
    effects = EffectConfig(respond={"loyal": 0.9}, offer_immune_share=0.0)
    shop = Shop(SimConfig(customers=1500, days=120, seed=21, acquisition_days=30, effects=effects))
    day_60 = shop.start_ms + 60 * DAY_MS
    _until(shop, day_60)
    arms: dict[str, bool] = {}
    for index in sorted(shop.customers):
        treated = index % 2 == 0
        customer_id = customer_id_of(index)
        arms[customer_id] = treated
        record = _record(
            f"i-{index}", customer_id, day_60, suppressed=None if treated else "held_out"
        )
        shop.apply_intervention(record, day_60)
    window_end = day_60 + 14 * DAY_MS
    later = _until(shop, window_end + DAY_MS)
    rates = {}
    for arm in (True, False):
        members = [c for c, treated in arms.items() if treated is arm]
        rates[arm] = sum(_bought_in(later, c, day_60, window_end) for c in members) / len(members)
    # P(respond) = 0.9 x 0.6 (email) = 0.54, less those who would have bought anyway.
    assert rates[True] - rates[False] > 0.3
    truth = _truth_of(shop, tmp_path)
    effects_seen = [t.effect for t in truth.interventions.values()]
    assert all(effect is not None for effect in effects_seen)
    true_uplift = sum(e for e in effects_seen if e is not None) / len(effects_seen)
    assert abs(true_uplift - (rates[True] - rates[False])) < 0.08


def test_potential_outcomes_match_what_happened(tmp_path: Path) -> None:
    effects = EffectConfig(respond={"early": 0.5, "loyal": 0.5})
    shop = Shop(SimConfig(customers=600, days=100, seed=13, acquisition_days=30, effects=effects))
    day_50 = shop.start_ms + 50 * DAY_MS
    _until(shop, day_50)
    for index in sorted(shop.customers):
        held_out = index % 3 == 0
        segment = "early" if index % 2 else "loyal"
        record = _record(
            f"p-{index}",
            customer_id_of(index),
            day_50,
            suppressed="held_out" if held_out else None,
            segment=segment,
            channel="chat",
            kind="chat",
        )
        shop.apply_intervention(record, day_50)
    window_end = day_50 + 14 * DAY_MS
    later = _until(shop, window_end + DAY_MS)
    truth = _truth_of(shop, tmp_path)
    checked = 0
    for item in truth.interventions.values():
        observed = _bought_in(later, item.customer_id, day_50, window_end)
        expected = item.y1 if item.arm == "treated" else item.y0
        assert observed == expected, item
        checked += 1
    assert checked == len(shop.customers)
    assert any(item.effect == 1 for item in truth.interventions.values())


def test_later_contacts_in_an_open_window_revise_its_first_decisions_y1(tmp_path: Path) -> None:
    effects = EffectConfig(respond={"early": 0.3, "loyal": 0.3}, offer_immune_share=0.0)
    shop = Shop(SimConfig(customers=800, days=100, seed=31, acquisition_days=30, effects=effects))
    day_50 = shop.start_ms + 50 * DAY_MS
    _until(shop, day_50)
    for index in sorted(shop.customers):
        held_out = "held_out" if index % 3 == 0 else None
        first = _record(f"f-{index}", customer_id_of(index), day_50, suppressed=held_out)
        shop.apply_intervention(first, day_50)
    day_54 = day_50 + 4 * DAY_MS
    seen = _until(shop, day_54)
    joined = 0
    for index in sorted(shop.customers):
        customer_id = customer_id_of(index)
        if _bought_in(seen, customer_id, day_50, day_54):
            continue  # the estimator has closed this customer's window: a new one would open
        held_out = "held_out" if index % 3 == 0 else None
        second = _record(f"g-{index}", customer_id, day_54, suppressed=held_out, segment="early")
        record = shop.apply_intervention(second, day_54)
        assert record is not None
        assert record["joins_window_of"] == f"f-{index}"
        joined += 1
    window_end = day_50 + 14 * DAY_MS
    later = seen + _until(shop, window_end + DAY_MS)
    truth = _truth_of(shop, tmp_path)
    assert joined > 300
    for index in sorted(shop.customers):
        item = truth.interventions[f"f-{index}"]
        observed = _bought_in(later, item.customer_id, day_50, window_end)
        assert observed == (item.y1 if item.arm == "treated" else item.y0), item


def test_held_out_and_suppressed_decisions_change_nothing() -> None:
    config = SimConfig(customers=200, days=90, seed=17, acquisition_days=10)
    plain, other = Shop(config), Shop(config)
    day_30 = plain.start_ms + 30 * DAY_MS
    assert _until(plain, day_30) == _until(other, day_30)
    for index in sorted(other.customers):
        reason = "held_out" if index % 2 else "capped"
        truth = other.apply_intervention(
            _record(f"s-{index}", customer_id_of(index), day_30, suppressed=reason), day_30
        )
        assert truth is not None
        assert truth["delivered"] is False
    assert list(plain) == list(other)


def test_too_many_contacts_backfire_and_some_customers_opt_out() -> None:
    shop = Shop(SimConfig(customers=300, days=60, seed=23, acquisition_days=5))
    day_10 = shop.start_ms + 10 * DAY_MS
    _until(shop, day_10)
    touchy = [c for c in shop.customers.values() if c.traits.contact_tolerance == 1]
    assert len(touchy) > 10
    opted_out = 0
    for customer in touchy:
        customer_id = customer.traits.customer_id
        first = shop.apply_intervention(_record(f"a-{customer_id}", customer_id, day_10), day_10)
        second = shop.apply_intervention(
            _record(f"b-{customer_id}", customer_id, day_10 + DAY_MS), day_10 + DAY_MS
        )
        assert first is not None
        assert second is not None
        assert not first["backfires"]
        assert second["backfires"]
        assert not second["responds"]
        opted_out += bool(second["opts_out"])
    later = _until(shop, day_10 + 3 * DAY_MS)
    opt_outs = [e for e in later if getattr(e, "email_opt_in", None) is False]
    assert (
        0
        < opted_out
        == len(
            {
                e.customer_id
                for e in opt_outs
                if e.customer_id in {c.traits.customer_id for c in touchy}
            }
        )
    )


def test_expired_duplicate_and_unknown_interventions() -> None:
    config = SimConfig(customers=20, days=30, seed=2, acquisition_days=2, honour_expiry=True)
    shop = Shop(config)
    day_5 = shop.start_ms + 5 * DAY_MS
    _until(shop, day_5)
    stale = _record("old", customer_id_of(1), day_5 - 3 * DAY_MS, expires_days=1.0)
    truth = shop.apply_intervention(stale, day_5)
    assert truth is not None
    assert truth["expired"] is True
    assert truth["delivered"] is False
    assert truth["y0"] == truth["y1"]
    assert truth["lag_hours"] == 72.0
    assert shop.apply_intervention(stale, day_5) is None  # a redelivered record counts once
    lenient = Shop(dataclasses.replace(config, honour_expiry=False))
    _until(lenient, day_5)
    late = lenient.apply_intervention(stale, day_5)
    assert late is not None
    assert late["delivered"] is True
    stranger = shop.apply_intervention(_record("x", "someone-else", day_5), day_5)
    assert stranger is not None
    assert stranger["arm"] == "unknown_customer"


def test_a_record_without_required_fields_is_rejected_naming_the_field() -> None:
    shop = Shop(SimConfig(customers=5, days=5, seed=2))
    record = _record("bad", customer_id_of(0), shop.start_ms)
    del record["created_at"]
    with pytest.raises(ValidationError, match="created_at"):
        shop.apply_intervention(record, shop.start_ms)
    record = _record("bad2", customer_id_of(0), shop.start_ms)
    record["expires_at"] = "tomorrow"
    with pytest.raises(ValidationError, match="expires_at"):
        shop.apply_intervention(record, shop.start_ms)


def test_effects_are_configurable_per_segment_and_channel(tmp_path: Path) -> None:
    path = tmp_path / "effects.json"
    path.write_text('{"respond": {"loyal": 0.5, "loyal:sms": 0.05}, "offer_immune_share": 0.1}')
    effects = EffectConfig.from_file(path)
    assert effects.respond_p("loyal", "sms") == 0.05
    assert effects.respond_p("loyal", "chat") == 0.5
    assert effects.respond_p("loyal", "push") == 0.25
    assert effects.respond_p("never_heard_of", None) == effects.default_respond
    path.write_text('{"respond": {"loyal": 1.5}}')
    with pytest.raises(Exception, match="loyal"):
        EffectConfig.from_file(path)
    path.write_text('{"bogus": 1}')
    with pytest.raises(Exception, match="bogus"):
        EffectConfig.from_file(path)
