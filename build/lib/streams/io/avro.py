"""Avro encoding and decoding of churnstream records in the Confluent wire format.

A value on a churnstream topic is ``0x00`` (magic byte), the schema id as a 4-byte big-endian
integer (fixed in ``schemas/registry.json``), then the schemaless Avro body. :class:`AvroCodec`
parses every schema once; build one per process (:func:`default_codec`) and share it.

Decoding never trusts the bytes: every failure is a :class:`~streams.errors.DecodeError` whose
``reason`` (one of :data:`DECODE_REASONS`) is fit for dead-letter headers and metric labels.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from functools import lru_cache
from io import BytesIO
from typing import Any, Final

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate

from streams.core.events import EVENT_FIELDS, Event, OrderEvent, event_from_dict
from streams.errors import DecodeError, ValidationError
from streams.io.schemas import SchemaRegistry, SchemaVersion, default_registry

MAGIC_BYTE: Final[int] = 0
HEADER_SIZE: Final[int] = 5
DECODE_REASONS: Final[tuple[str, ...]] = (
    "empty",
    "wrong_magic_byte",
    "unknown_schema_id",
    "truncated",
    "invalid_field",
    "schema_mismatch",
)
# Input events: event_type of streams.core.events <-> Avro schema name.
EVENT_SCHEMAS: Final[Mapping[str, str]] = {
    "order": "order_event",
    "click": "click_event",
    "profile": "customer_profile",
}
_EVENT_TYPES: Final[Mapping[str, str]] = {schema: kind for kind, schema in EVENT_SCHEMAS.items()}
_HEADER: Final[struct.Struct] = struct.Struct(">bI")
# fastavro's full names look like "io.churnstream.order_event.amount"; users want "amount".
_NAMESPACE: Final[str] = "io.churnstream."


class AvroCodec:
    """Encodes records to, and decodes them from, the Confluent wire format."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry()
        self._headers = {
            name: _HEADER.pack(MAGIC_BYTE, version.schema_id)
            for name, version in self.registry.current.items()
        }
        # schema id -> the parsed reader schema to resolve it to (None: read as written)
        self._readers: dict[int, Any] = {}
        for schema_id, writer in self.registry.by_id.items():
            reader = self.registry.current.get(writer.name)
            self._readers[schema_id] = None if reader is writer or reader is None else reader.parsed

    @property
    def topic_schemas(self) -> Mapping[str, str | None]:
        """Return topic (unprefixed) -> schema name, None for the schema-less dead letters."""
        return self.registry.topics

    def encode(
        self, schema_name: str, record: Mapping[str, Any], *, trusted: bool = False
    ) -> bytes:
        """Return ``record`` encoded with the current ``schema_name`` schema, with its header.

        Raises ``ValidationError`` naming the field when ``record`` breaks the schema, and
        ``ValueError`` for an unknown ``schema_name`` (a programming error). ``trusted``
        skips the full validation pass for records the core built itself (the writer still
        fails on a wrong type): it is most of the cost of an encode.
        """
        version = self.registry.latest(schema_name)
        if trusted:
            buffer = BytesIO()
            buffer.write(self._headers[schema_name])
            schemaless_writer(buffer, version.parsed, record, strict_allow_default=True)
            return buffer.getvalue()
        for key, value in record.items():
            # fastavro would silently read a naive datetime as UTC; our times are aware.
            if isinstance(value, datetime) and value.tzinfo is None:
                msg = f"{schema_name} field {key!r}: naive datetime {value!r}, needs a time zone"
                raise ValidationError(msg, field=key)
        try:
            validate(record, version.parsed, raise_errors=True)
        except AvroValidationError as exc:
            raise _validation_error(schema_name, exc) from exc
        buffer = BytesIO()
        buffer.write(self._headers[schema_name])
        try:
            schemaless_writer(buffer, version.parsed, dict(record), strict_allow_default=True)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            field = str(exc).rsplit(": ", 1)[-1] if "more fields" in str(exc) else None
            msg = f"{schema_name}: cannot encode {field or 'record'!r}: {exc}"
            raise ValidationError(msg, field=field) from exc
        return buffer.getvalue()

    def decode(self, data: bytes, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """Return ``(schema name, record)`` decoded from ``data``, read as the current schema.

        Data written with an older registered version (a historic schema id) is resolved to
        the current version of its schema. ``expected``, when given, is the only schema name
        accepted. Every failure raises ``DecodeError`` with a reason from ``DECODE_REASONS``.
        """
        writer = self._writer_of(data)
        if expected is not None and writer.name != expected:
            self.registry.latest(expected)  # an unknown expected name is a programming error
            msg = f"schema id {writer.schema_id} is {writer.name!r}, expected {expected!r}"
            raise DecodeError(msg, "schema_mismatch")
        body = BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer.parsed, self._readers[writer.schema_id])
        # fastavro raises EOFError, IndexError, ValueError, UnicodeDecodeError, OverflowError,
        # MemoryError, SchemaResolutionError, ... on corrupt bodies: each means a bad record.
        except Exception as exc:
            # fastavro signals running off the end as EOFError, or IndexError on an empty read.
            ran_off = isinstance(exc, EOFError | StopIteration) or (
                isinstance(exc, IndexError) and body.tell() >= len(data)
            )
            reason = "truncated" if ran_off else "invalid_field"
            detail = _clip(str(exc), 160) or "input ended early"
            msg = (
                f"{writer.name} (schema id {writer.schema_id}): {len(data) - HEADER_SIZE}-byte "
                f"body is not valid Avro ({type(exc).__name__}: {detail})"
            )
            raise DecodeError(msg, reason) from exc
        trailing = len(data) - body.tell()
        if trailing:
            msg = f"{writer.name} (id {writer.schema_id}): {trailing} byte(s) after the record"
            raise DecodeError(msg, "invalid_field")
        if not isinstance(record, dict):
            msg = f"{writer.name}: decoded {type(record).__name__}, not a record"
            raise DecodeError(msg, "invalid_field")
        return writer.name, record

    def encode_event(self, event: Event) -> tuple[str, bytes]:
        """Return ``(topic, value)``: the unprefixed input topic of ``event`` and its bytes."""
        schema_name = EVENT_SCHEMAS[event.event_type]
        return self.registry.topic_of(schema_name), self.encode(schema_name, event_record(event))

    def decode_event(
        self, data: bytes, topic: str | None = None, now: datetime | None = None
    ) -> Event:
        """Return the validated input event in ``data``; ``DecodeError`` if it is not one.

        ``topic`` (unprefixed, e.g. ``"orders"``) pins the expected schema. ``now`` (aware UTC)
        rejects event times more than a day ahead. Valid Avro with invalid values (negative
        amount, unknown currency, ...) raises ``DecodeError`` with reason ``invalid_field``.
        """
        expected = None if topic is None else self.registry.schema_of_topic(topic)
        if topic is not None and expected not in _EVENT_TYPES:
            msg = f"topic {topic!r} does not carry input events"
            raise ValueError(msg)
        name, record = self.decode(data, expected)
        kind = _EVENT_TYPES.get(name)
        if kind is None:
            msg = f"schema {name!r} is not an input event ({sorted(_EVENT_TYPES)})"
            raise DecodeError(msg, "schema_mismatch")
        # A newer writer's schema may carry fields this reader does not use yet (an
        # allowed, compatible change): drop them. Only the events file is strict about them.
        known = EVENT_FIELDS[kind]
        if not known.issuperset(record):
            record = {key: value for key, value in record.items() if key in known}
        try:
            return event_from_dict(record, kind, now)
        # TypeError/OverflowError: a value event_from_dict did not expect, e.g. a year-1 time.
        except (ValidationError, TypeError, ValueError, OverflowError) as exc:
            msg = f"{name}: {exc}"
            raise DecodeError(msg, "invalid_field") from exc

    def _writer_of(self, data: bytes) -> SchemaVersion:
        if not data:
            msg = "empty value (no magic byte, no schema id)"
            raise DecodeError(msg, "empty")
        if data[0] != MAGIC_BYTE:
            msg = f"first byte is {data[0]:#04x}, not the magic byte 0x00 of the wire format"
            raise DecodeError(msg, "wrong_magic_byte")
        if len(data) < HEADER_SIZE:
            msg = f"{len(data)} bytes is shorter than the 5-byte wire-format header"
            raise DecodeError(msg, "truncated")
        _, schema_id = _HEADER.unpack_from(data)
        writer = self.registry.by_id.get(schema_id)
        if writer is None:
            msg = f"unknown schema id {schema_id!r} (known: {sorted(self.registry.by_id)})"
            raise DecodeError(msg, "unknown_schema_id")
        return writer


def event_record(event: Event) -> dict[str, Any]:
    """Return ``event`` as the Avro record of its schema (aware datetimes, items as dicts)."""
    record = {f.name: getattr(event, f.name) for f in fields(event) if f.name != "event_type"}
    if isinstance(event, OrderEvent) and event.items is not None:
        record["items"] = [
            {
                "sku": item.sku,
                "qty": item.qty,
                "price": item.price,
                "category": item.category,
                "brand": item.brand,
            }
            for item in event.items
        ]
    return record


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _validation_error(schema_name: str, exc: AvroValidationError) -> ValidationError:
    # fastavro lists one error per union branch tried, outermost first: the last is deepest.
    errors = exc.errors or ()
    if not errors:
        return ValidationError(f"{schema_name}: {exc}")
    worst = errors[-1]
    field = str(worst.field).removeprefix(_NAMESPACE).removeprefix(f"{schema_name}.")
    expected = worst.schema
    if isinstance(expected, dict):
        expected = expected.get("name", expected.get("type"))
    msg = f"{schema_name} field {field!r}: {worst.datum!r} is not a valid {expected}"
    return ValidationError(_clip(msg), field=field)


@lru_cache(maxsize=1)
def default_codec() -> AvroCodec:
    """Return the process-wide codec over :func:`~streams.io.schemas.default_registry`."""
    return AvroCodec()


def encode(schema_name: str, record: Mapping[str, Any]) -> bytes:
    """Return ``record`` in the wire format, via :func:`default_codec` (see ``AvroCodec``)."""
    return default_codec().encode(schema_name, record)


def decode(data: bytes, expected: str | None = None) -> tuple[str, dict[str, Any]]:
    """Return ``(schema name, record)`` from ``data``, via :func:`default_codec`."""
    return default_codec().decode(data, expected)


def encode_event(event: Event) -> tuple[str, bytes]:
    """Return ``(topic, value)`` for an input event, via :func:`default_codec`."""
    return default_codec().encode_event(event)


def decode_event(data: bytes, topic: str | None = None, now: datetime | None = None) -> Event:
    """Return the validated input event in ``data``, via :func:`default_codec`."""
    return default_codec().decode_event(data, topic, now)
