"""The Avro codec: every schema round-trips; every malformed value fails with the right reason."""

from __future__ import annotations

import json
import shutil
import struct
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from streams.core.events import (
    ClickEvent,
    Event,
    OrderEvent,
    OrderItem,
    ProfileEvent,
    event_from_dict,
)
from streams.errors import ChurnstreamError, DecodeError, ValidationError
from streams.io.avro import DECODE_REASONS, AvroCodec, decode, default_codec, encode
from streams.io.schemas import default_registry, load_registry

T0 = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
REASONS = [
    {"code": "days_since_last_order", "text": "No order for 74 days", "weight": 0.31},
    {"code": "payment_failed", "text": "A payment failed last week", "weight": 0.12},
]
SAMPLES: dict[str, dict[str, Any]] = {
    "click_event": {
        "event_id": "clk-1",
        "customer_id": "c42",
        "session_id": "s-9",
        "event_time": T0,
        "action": "review",
        "product_id": "p-17",
        "category": "books",
        "brand": "Penguin",
        "price": 12.99,
        "rating": 2,
    },
    "order_event": {
        "event_id": "ord-1-paid",
        "customer_id": "c42",
        "order_id": "ord-1",
        "event_time": T0,
        "amount": 54.97,
        "currency": "EUR",
        "status": "paid",
        "item_count": 3,
        "items": [
            {"sku": "sku-1", "qty": 2, "price": 12.99, "category": "books", "brand": "Penguin"},
            {"sku": "sku-2", "qty": 1, "price": 28.99, "category": None, "brand": None},
        ],
    },
    "customer_profile": {
        "customer_id": "c42",
        "event_time": T0,
        "email_opt_in": True,
        "sms_opt_in": False,
        "push_opt_in": None,
        "chat_opt_in": True,
        "timezone": "Europe/Berlin",
        "preferred_channel": "email",
        "event_id": "prof-1",
    },
    "churn_score": {
        "event_id": "score-c42-1",
        "customer_id": "c42",
        "score": 0.73,
        "band": "HIGH",
        "reasons": REASONS,
        "model_version": "m-2024-03-01-7",
        "as_of": T0,
        "trigger": "timer",
    },
    "risk_change": {
        "event_id": "rc-c42-1",
        "customer_id": "c42",
        "from_band": "MEDIUM",
        "to_band": "HIGH",
        "score": 0.73,
        "previous_score": 0.41,
        "reasons": REASONS,
        "model_version": "m-2024-03-01-7",
        "as_of": T0,
        "trigger": "order",
    },
    "training_example": {
        "example_id": "ex-c42-1",
        "customer_id": "c42",
        "snapshot_time": T0 - timedelta(days=90),
        "label_time": T0,
        "label": 1,
        "features": {"days_since_last_order": 74.0, "orders_90d": 1.0},
        "prior": 0.35,
        "model_version": "m-2024-03-01-7",
    },
    "model_snapshot": {
        "model_version": "m-2024-03-01-7",
        "created_at": T0,
        "examples_learned": 123_456_789_012,
        "algorithm": "StandardScaler|LogisticRegression",
        "feature_names": ["days_since_last_order", "orders_90d"],
        "metrics": {"roc_auc": 0.81, "log_loss": 0.44},
        "payload": b"\x80\x04\x95pickled-model\x00\xff",
        "signature": "ab" * 32,
    },
    "intervention": {
        "intervention_id": "iv-c42-1",
        "customer_id": "c42",
        "kind": "offer",
        "channel": "email",
        "segment": "lapsing_high_value",
        "reason": "HIGH risk after 74 days without an order",
        "offer": {
            "code": "COMEBACK15",
            "discount_percent": 15.0,
            "amount_off": None,
            "currency": None,
            "categories": ["books"],
            "brands": [],
            "member_only": False,
        },
        "holdout": False,
        "suppressed_reason": None,
        "created_at": T0,
        "expires_at": T0 + timedelta(days=14),
        "deliver_after": T0 + timedelta(hours=8),
        "risk_change_id": "rc-c42-1",
        "trigger": "order",
        "model_version": "m-2024-03-01-7",
    },
}
ORDER = OrderEvent(
    event_id="o1",
    customer_id="c1",
    order_id="o1",
    event_time=T0,
    amount=29.5,
    currency="USD",
    status="refunded",
    item_count=2,
    items=(OrderItem("sku-1", 2, 14.75, category="toys"),),
)
EVENTS: list[Event] = [
    ORDER,
    ClickEvent("k1", "c1", "s1", T0, "add_to_cart", product_id="p1", price=3.0),
    ClickEvent("k2", "c1", "s1", T0, "review", rating=5),
    ProfileEvent("c1", T0, sms_opt_in=False, timezone="Asia/Tokyo", preferred_channel="push"),
    ProfileEvent("c1", T0, event_id="p-7"),
]


def _wire(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def _order_bytes(**overrides: Any) -> bytes:
    return encode("order_event", {**SAMPLES["order_event"], **overrides})


def test_every_registered_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(default_registry().current)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_schema_round_trips(name: str) -> None:
    data = encode(name, SAMPLES[name])
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == default_registry().current[name].schema_id
    assert decode(data) == (name, SAMPLES[name])
    assert decode(data, expected=name) == (name, SAMPLES[name])


def test_missing_optional_fields_decode_as_their_defaults() -> None:
    minimal = {k: v for k, v in SAMPLES["order_event"].items() if k not in {"status", "items"}}
    _, record = decode(encode("order_event", minimal))
    assert record["status"] == "placed"
    assert record["items"] is None


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.event_type}")
def test_input_events_round_trip(event: Event) -> None:
    topic, data = default_codec().encode_event(event)
    assert (
        topic
        == {"order": "orders", "click": "clickstream", "profile": "customer-profiles"}[
            event.event_type
        ]
    )
    assert default_codec().decode_event(data) == event
    assert default_codec().decode_event(data, topic=topic, now=T0) == event


def test_topic_schemas_cover_every_topic() -> None:
    assert default_codec().topic_schemas == {
        "clickstream": "click_event",
        "orders": "order_event",
        "customer-profiles": "customer_profile",
        "churn-scores": "churn_score",
        "risk-changes": "risk_change",
        "training-examples": "training_example",
        "churn-models": "model_snapshot",
        "interventions": "intervention",
        "dead-letters": None,
    }


def _reason(data: bytes, expected: str | None = None) -> str:
    with pytest.raises(DecodeError) as caught:
        decode(data, expected)
    assert caught.value.reason in DECODE_REASONS
    return caught.value.reason


def test_malformed_headers_fail_with_their_reason() -> None:
    good = _order_bytes()
    assert _reason(b"") == "empty"
    assert _reason(b"\x01" + good[1:]) == "wrong_magic_byte"
    assert _reason(b'{"event_id": 1}') == "wrong_magic_byte"
    assert _reason(good[:3]) == "truncated"
    assert _reason(_wire(999, good[5:])) == "unknown_schema_id"
    assert _reason(good, expected="click_event") == "schema_mismatch"


def test_truncated_body_and_trailing_garbage_are_rejected() -> None:
    good = _order_bytes()
    for cut in (5, 6, len(good) // 2, len(good) - 1):
        assert _reason(good[:cut]) == "truncated", cut
    with pytest.raises(DecodeError, match="1 byte") as caught:
        decode(good + b"\x00")
    assert caught.value.reason == "invalid_field"


def test_enum_index_out_of_range_is_an_invalid_field() -> None:
    # churn_score: event_id "a", customer_id "c", score 0.0, band index 14 (of 4), no reasons,
    # model_version "m", as_of 0, trigger "t".
    body = b"\x02a" + b"\x02c" + b"\x00" * 8 + b"\x1c" + b"\x00" + b"\x02m" + b"\x00" + b"\x02t"
    assert _reason(_wire(4, body)) == "invalid_field"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": -3.0}, "amount"),
        ({"currency": "XXX"}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"customer_id": ""}, "customer_id"),
        ({"event_time": T0 + timedelta(days=400)}, "event_time"),
        ({"items": [{"sku": "s", "qty": 0, "price": 1.0}]}, "items[0].qty"),
    ],
)
def test_valid_avro_with_invalid_values_is_an_invalid_field(
    overrides: dict[str, Any], field: str
) -> None:
    data = _order_bytes(**overrides)
    with pytest.raises(DecodeError, match=field.replace("[", r"\[")) as caught:
        default_codec().decode_event(data, topic="orders", now=T0)
    assert caught.value.reason == "invalid_field"
    assert isinstance(caught.value.__cause__, ValidationError)


def test_far_future_time_passes_without_now() -> None:
    data = _order_bytes(event_time=T0 + timedelta(days=400))
    assert default_codec().decode_event(data).event_time == T0 + timedelta(days=400)


def test_decode_event_rejects_outputs_and_the_wrong_topic() -> None:
    with pytest.raises(DecodeError) as caught:
        default_codec().decode_event(encode("churn_score", SAMPLES["churn_score"]))
    assert caught.value.reason == "schema_mismatch"
    with pytest.raises(DecodeError) as caught:
        default_codec().decode_event(_order_bytes(), topic="clickstream")
    assert caught.value.reason == "schema_mismatch"
    with pytest.raises(ValueError, match="churn-scores"):
        default_codec().decode_event(_order_bytes(), topic="churn-scores")


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({**SAMPLES["order_event"], "amount": "12.00"}, "amount"),
        ({**SAMPLES["order_event"], "status": "shipped"}, "status"),
        ({**SAMPLES["order_event"], "items": [{"sku": "s", "qty": 1.5, "price": 1.0}]}, "qty"),
        ({**SAMPLES["order_event"], "coupon": "X"}, "coupon"),
        ({**SAMPLES["order_event"], "items": [{"sku": "s", "qty": 1, "price": 1, "x": 1}]}, "x"),
        ({k: v for k, v in SAMPLES["order_event"].items() if k != "currency"}, "currency"),
        ({**SAMPLES["order_event"], "event_time": datetime(2024, 1, 1)}, "event_time"),
        ({**SAMPLES["churn_score"], "band": "SEVERE"}, "band"),
    ],
)
def test_encode_rejects_invalid_records_naming_the_field(
    record: dict[str, Any], field: str
) -> None:
    name = "churn_score" if "band" in record else "order_event"
    with pytest.raises(ValidationError, match=field) as caught:
        encode(name, record)
    assert caught.value.field is not None
    assert field in caught.value.field


def test_encode_of_an_unknown_schema_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no_such_schema"):
        encode("no_such_schema", {})


def _registry_with_old_order_schema(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Copy schemas/ to tmp_path and register an older order_event (no items) as id 102."""
    source = default_registry().directory
    shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    old = json.loads((source / "order_event.avsc").read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] not in {"items", "item_count"}]
    (tmp_path / "previous" / "order_event.v0.avsc").write_text(json.dumps(old))
    index = json.loads((source / "registry.json").read_text())
    index["schemas"].append(
        {"id": 102, "name": "order_event", "version": 0, "file": "previous/order_event.v0.avsc"}
    )
    (tmp_path / "registry.json").write_text(json.dumps(index))
    return tmp_path, old


def test_records_of_an_older_schema_id_decode_as_the_current_schema(tmp_path: Path) -> None:
    directory, old = _registry_with_old_order_schema(tmp_path)
    codec = AvroCodec(load_registry(directory))
    assert codec.registry.current["order_event"].schema_id == 2
    record = {k: v for k, v in SAMPLES["order_event"].items() if k not in {"items", "item_count"}}
    body = BytesIO()
    schemaless_writer(body, parse_schema(old), record)
    name, decoded = codec.decode(_wire(102, body.getvalue()), expected="order_event")
    assert name == "order_event"
    assert decoded == {**record, "items": None, "item_count": None}
    event = codec.decode_event(_wire(102, body.getvalue()))
    assert isinstance(event, OrderEvent)
    assert event.order_id == "ord-1"


def test_registry_rejects_a_reused_id(tmp_path: Path) -> None:
    shutil.copytree(default_registry().directory, tmp_path, dirs_exist_ok=True)
    index = json.loads((tmp_path / "registry.json").read_text())
    index["schemas"].append(
        {"id": 1, "name": "order_event", "version": 2, "file": "order_event.avsc"}
    )
    (tmp_path / "registry.json").write_text(json.dumps(index))
    with pytest.raises(ChurnstreamError, match="schema id 1 is used twice"):
        load_registry(tmp_path)


def test_decoded_event_equals_the_one_built_from_the_events_file_form() -> None:
    raw = {
        "event_type": "order",
        "event_id": "o9",
        "customer_id": "c9",
        "order_id": "o9",
        "event_time": "2024-03-01T12:30:15.123Z",
        "amount": 10,
        "currency": "GBP",
    }
    event = event_from_dict(raw)
    assert default_codec().decode_event(default_codec().encode_event(event)[1]) == event
