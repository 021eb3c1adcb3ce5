"""Fuzzing the edges: whatever bytes or text arrive, decoders raise only their own error."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.events import ClickEvent, OrderEvent, OrderItem, ProfileEvent
from streams.errors import DecodeError, EventsFileError
from streams.io.avro import DECODE_REASONS, default_codec
from streams.io.events_file import parse_event_line

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CODEC = default_codec()
VALID: list[bytes] = [
    CODEC.encode_event(
        OrderEvent(
            "o1",
            "c1",
            "o1",
            T0,
            12.5,
            "USD",
            item_count=2,
            items=(OrderItem("s1", 1, 2.5, "toys", "Acme"), OrderItem("s2", 1, 10.0)),
        )
    )[1],
    CODEC.encode_event(ClickEvent("k1", "c1", "s1", T0, "review", "p1", "toys", "Acme", 3.0, 4))[1],
    CODEC.encode_event(ProfileEvent("c1", T0, True, False, None, True, "UTC", "chat", "p1"))[1],
    CODEC.encode(
        "churn_score",
        {
            "event_id": "e",
            "customer_id": "c1",
            "score": 0.5,
            "band": "MEDIUM",
            "reasons": [{"code": "a", "text": "b", "weight": 0.1}],
            "model_version": "m1",
            "as_of": T0,
            "trigger": "timer",
        },
    ),
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_HEADERS = st.sampled_from(sorted(CODEC.registry.by_id)).map(
    lambda i: struct.pack(">bI", 0, i)
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Return a valid encoding with a few bytes flipped, inserted, deleted or cut off."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=9))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 4))]
        elif action == "cut":
            del data[position:]
    return bytes(data)


def _decode_all_ways(data: bytes) -> None:
    for call in (
        lambda: CODEC.decode(data),
        lambda: CODEC.decode(data, expected="order_event"),
        lambda: CODEC.decode_event(data, now=T0),
        lambda: CODEC.decode_event(data, topic="clickstream"),
    ):
        reason = None
        try:
            result = call()
        except DecodeError as exc:
            reason = exc.reason
        else:
            assert result is not None
        assert reason is None or reason in DECODE_REASONS


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    _decode_all_ways(data)


@FUZZ
@given(KNOWN_HEADERS, st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header_raise_only_decode_error(
    header: bytes, body: bytes
) -> None:
    _decode_all_ways(header + body)


@FUZZ
@given(mutated())
def test_mutated_valid_encodings_raise_only_decode_error(data: bytes) -> None:
    _decode_all_ways(data)


def _parse(line: str | bytes) -> None:
    line_number = 7
    try:
        parse_event_line(line, "fuzz.jsonl", 7, now=T0)
    except EventsFileError as exc:
        line_number = exc.line_number
    assert line_number == 7


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_lines_raise_only_events_file_error(line: str | bytes) -> None:
    _parse(line)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["USD", "search", "2024-03-01T12:00:00Z", "0001-01-01T00:00:00+14:00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    [
        "event_type",
        "event_id",
        "customer_id",
        "order_id",
        "session_id",
        "event_time",
        "amount",
        "currency",
        "status",
        "item_count",
        "items",
        "action",
        "price",
        "rating",
        "preferred_channel",
        "timezone",
        "sms_opt_in",
    ]
)


@FUZZ
@given(
    st.sampled_from(["order", "click", "profile"]),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=10),
)
def test_event_shaped_json_raises_only_events_file_error(
    event_type: str, fields: dict[str, Any]
) -> None:
    _parse(json.dumps({"event_type": event_type, **fields}))
