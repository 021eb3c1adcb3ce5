"""R7 fuzzing, in addition to tests/unit/test_fuzz_decoders.py (bounded: a few seconds).

tests/unit/test_fuzz_decoders.py feeds the decoders random bytes, random bodies behind valid
headers and mutated valid encodings, and the events-file line parser random text and
event-shaped JSON: only ``DecodeError`` / ``EventsFileError`` may escape. Two gaps are closed
here:

- *valid Avro with arbitrary values*: records that the schema accepts (any double, any
  string, any time the wire format can hold, ...) must decode into an event that satisfies
  every rule of the events contract, or fail with ``DecodeError("invalid_field")``;
- *whole events files*: random bytes, cut and corrupt gzip, and gzip around random lines,
  read with ``read_events``: only ``EventsFileError`` may escape.
"""

from __future__ import annotations

import gzip
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.currencies import CURRENCIES
from streams.core.events import (
    CHANNELS,
    CLICK_ACTIONS,
    MAX_AMOUNT,
    MAX_FUTURE_SKEW,
    MAX_ID_LENGTH,
    MIN_EVENT_TIME,
    ClickEvent,
    Event,
    OrderEvent,
    OrderItem,
    ProfileEvent,
)
from streams.errors import DecodeError, EventsFileError, ValidationError
from streams.io.avro import EVENT_SCHEMAS, default_codec, event_record
from streams.io.events_file import read_events

CODEC = default_codec()
NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(max_size=200),
    st.sampled_from(["", " ", "USD", "usd", "EUR", "€", "page_view", "chat", "x" * 129]),
)
DOUBLES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, -1e-9, 0.0, MAX_AMOUNT, MAX_AMOUNT * 1.0000001, 1e308]),
)
TIMES = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.sampled_from(
        [NOW, NOW + MAX_FUTURE_SKEW, NOW + MAX_FUTURE_SKEW + timedelta(seconds=1), MIN_EVENT_TIME]
    ),
)


def _value_of(schema: Any) -> st.SearchStrategy[Any]:
    """Return a strategy of every value the (expanded) Avro ``schema`` accepts."""
    if isinstance(schema, list):
        return st.one_of([_value_of(branch) for branch in schema])
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return TIMES
    kind = schema["type"] if isinstance(schema, dict) else schema
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "double": DOUBLES,
        "string": TEXT,
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_value_of(schema["items"]), max_size=3)
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: _value_of(f["type"]) for f in schema["fields"]})
    raise AssertionError(f"no strategy for {schema!r}")


BASES: dict[str, dict[str, Any]] = {
    "order": event_record(
        OrderEvent("o1", "c1", "o1", NOW, 12.5, "USD", "paid", 1, (OrderItem("s", 1, 12.5),))
    ),
    "click": event_record(ClickEvent("k1", "c1", "s1", NOW, "review", "p1", "toys", "A", 3.0, 2)),
    "profile": event_record(ProfileEvent("c1", NOW, True, None, False, None, "UTC", "email")),
}


@st.composite
def _records(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """Return a record of ``kind``'s schema: a valid one with 0-3 fields set to anything."""
    from fastavro.schema import expand_schema

    schema: Any = expand_schema(dict(CODEC.registry.current[EVENT_SCHEMAS[kind]].raw))
    fields: list[dict[str, Any]] = schema["fields"]
    record = dict(BASES[kind])
    for spec in draw(st.lists(st.sampled_from(fields), max_size=3, unique_by=lambda f: f["name"])):
        record[spec["name"]] = draw(_value_of(spec["type"]))
    return record


def _check_event(event: Event) -> None:
    """Assert every rule of the events contract (../shared/INTERFACES.md) holds."""
    assert event.event_time.tzinfo is not None
    assert MIN_EVENT_TIME <= event.event_time <= NOW + MAX_FUTURE_SKEW
    assert 0 < len(event.customer_id) <= MAX_ID_LENGTH
    if isinstance(event, OrderEvent):
        assert math.isfinite(event.amount)
        assert 0 <= event.amount <= MAX_AMOUNT
        assert event.currency in CURRENCIES
        assert event.item_count is None or event.item_count >= 0
        for item in event.items or ():
            assert item.qty >= 1
            assert math.isfinite(item.price)
            assert item.price >= 0
    elif isinstance(event, ClickEvent):
        assert event.action in CLICK_ACTIONS
        assert event.price is None or (math.isfinite(event.price) and event.price >= 0)
        assert event.rating is None or 1 <= event.rating <= 5
    else:
        assert isinstance(event, ProfileEvent)
        assert event.preferred_channel is None or event.preferred_channel in CHANNELS


def _decode_or_reject(schema_name: str, record: dict[str, Any]) -> None:
    try:
        data = CODEC.encode(schema_name, record)
    except (ValidationError, ValueError, OverflowError):
        return  # the wire format cannot hold it: no producer could send it either
    topic = CODEC.registry.topic_of(schema_name)
    reason = None
    try:
        event = CODEC.decode_event(data, topic=topic, now=NOW)
    except DecodeError as exc:
        reason = exc.reason
    else:
        _check_event(event)
    assert reason in {None, "invalid_field"}


@FUZZ
@given(_records("order"))
def test_valid_avro_orders_decode_to_valid_events_or_invalid_field(record: dict[str, Any]) -> None:
    _decode_or_reject(EVENT_SCHEMAS["order"], record)


@FUZZ
@given(_records("click"))
def test_valid_avro_clicks_decode_to_valid_events_or_invalid_field(record: dict[str, Any]) -> None:
    _decode_or_reject(EVENT_SCHEMAS["click"], record)


@FUZZ
@given(_records("profile"))
def test_valid_avro_profiles_decode_to_valid_events_or_invalid_field(
    record: dict[str, Any],
) -> None:
    _decode_or_reject(EVENT_SCHEMAS["profile"], record)


LINES = st.lists(
    st.one_of(
        st.text(max_size=80),
        st.sampled_from(
            [
                '{"event_type": "order"}',
                '{"event_type": "click", "event_id": "e", "customer_id": "c", "session_id": "s",'
                ' "event_time": "2024-01-01T00:00:00Z", "action": "page_view"}',
                "[]",
                "null",
                "",
            ]
        ),
    ),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@st.composite
def events_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """Return (suffix, content): random bytes, gzip of lines, or gzip cut or corrupted."""
    lines = draw(LINES)
    packed = gzip.compress(lines)
    kind = draw(st.sampled_from(["bytes", "lines", "gzip", "gzip-cut", "gzip-flipped"]))
    if kind == "bytes":
        return draw(st.sampled_from([".jsonl", ".jsonl.gz"])), draw(st.binary(max_size=300))
    if kind == "lines":
        return ".jsonl", lines
    if kind == "gzip":
        return ".jsonl.gz", packed
    if kind == "gzip-cut":
        return ".jsonl.gz", packed[: draw(st.integers(0, len(packed)))]
    position = draw(st.integers(0, len(packed) - 1))
    flipped = bytearray(packed)
    flipped[position] ^= draw(st.integers(1, 255))
    return ".jsonl.gz", bytes(flipped)


@FUZZ
@given(events_files())
def test_reading_any_events_file_raises_only_events_file_error(
    tmp_path: Path, case: tuple[str, bytes]
) -> None:
    suffix, content = case
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    line_number = 0
    try:
        for event in read_events(path, now=NOW):
            _check_event(event)
    except EventsFileError as exc:
        line_number = exc.line_number
    assert line_number >= 0
