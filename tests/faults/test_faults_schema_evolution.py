"""R8: schema evolution through the codec itself, for every schema.

tests/unit/test_schema_compat.py checks the committed schemas against ``schemas/previous/``
with fastavro's reader/writer resolution and that breaking changes are detected. Here every
schema gets the change the compatibility rule allows (an optional field with a default) in a
copy of the registry (new ids, version 2), and data crosses the versions through
``AvroCodec``, as a worker reads a topic:

- old writer -> new reader: the new field reads as its default;
- new writer -> old reader: a reader whose registry lists the new id (but still reads with
  the old schema) drops the field; a reader whose registry does not list the id yet dead-
  letters the record (``unknown_schema_id``), so a new id must reach every reader's
  ``schemas/registry.json`` before any producer writes with it;
- input events written with the newer schema still become events for a worker whose event
  model does not know the new field yet (producers add fields for other consumers).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro.schema import expand_schema

from streams.core.events import ClickEvent, OrderEvent, OrderItem, ProfileEvent
from streams.errors import DecodeError
from streams.io.avro import EVENT_SCHEMAS, AvroCodec, event_record
from streams.io.schemas import (
    REGISTRY_FILE,
    SchemaRegistry,
    check_backward_compatible,
    check_forward_compatible,
    default_registry,
    load_registry,
)

OLD = default_registry()
NAMES = sorted(OLD.current)
NEW_ID_OFFSET = 100
PROBE = {
    "name": "fault_probe",
    "type": ["null", "string"],
    "default": None,
    "doc": "An optional field added by the schema-evolution test.",
}
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
ITEMS = (OrderItem("s", 1, 9.5),)
EVENTS: dict[str, OrderEvent | ClickEvent | ProfileEvent] = {
    "order_event": OrderEvent("o1", "c1", "o1", T0, 9.5, "EUR", "paid", 1, ITEMS),
    "click_event": ClickEvent("k1", "c1", "s1", T0, "product_view", "p1", "toys", "Acme", 3.0),
    "customer_profile": ProfileEvent("c1", T0, True, False, None, True, "UTC", "chat", "p1"),
}  # fmt: skip


@dataclass(frozen=True)
class Registries:
    """The committed registry, its evolved copy, and an old reader that knows the new ids."""

    old: SchemaRegistry
    new: SchemaRegistry
    old_reader: SchemaRegistry


def _evolved(raw: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(raw)
    changed["fields"].append(dict(PROBE))
    return changed


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Registries:
    """Return the registries of both schema versions (the new one in a temporary copy)."""
    directory = tmp_path_factory.mktemp("schemas")
    index = json.loads((OLD.directory / REGISTRY_FILE).read_text())
    entries = list(index["schemas"])
    for entry in index["schemas"]:
        shutil.copy(OLD.directory / entry["file"], directory / entry["file"])
        version = OLD.by_id[entry["id"]]
        if OLD.current[version.name] is not version:
            continue
        new_file = f"{version.name}.v{version.version + 1}.avsc"
        (directory / new_file).write_text(json.dumps(_evolved(version.raw)))
        entries.append(
            {
                "id": entry["id"] + NEW_ID_OFFSET,
                "name": version.name,
                "version": version.version + 1,
                "file": new_file,
            }
        )
    (directory / REGISTRY_FILE).write_text(json.dumps({**index, "schemas": entries}))
    new = load_registry(directory)
    old_current = {name: new.by_id[OLD.current[name].schema_id] for name in NAMES}
    old_reader = SchemaRegistry(directory, new.by_id, old_current, new.topics)
    return Registries(OLD, new, old_reader)


def _sample(schema: Any) -> Any:
    """Return a value of (expanded) ``schema`` with every optional field set."""
    if isinstance(schema, list):
        return _sample(next(branch for branch in schema if branch != "null"))
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return T0
    kind = schema["type"] if isinstance(schema, dict) else schema
    simple = {"boolean": True, "int": 3, "long": 2**40, "double": 0.25, "bytes": b"\x01"}
    if kind in simple:
        return simple[kind]
    if kind == "string":
        return "text"
    if kind == "record":
        return {f["name"]: _sample(f["type"]) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_sample(schema["items"])]
    if kind == "map":
        return {"k": _sample(schema["values"])}
    raise AssertionError(f"no sample for {schema!r}")


def _record(name: str) -> dict[str, Any]:
    sample: dict[str, Any] = _sample(expand_schema(dict(OLD.current[name].raw)))
    return sample


@pytest.mark.parametrize("name", NAMES)
def test_an_added_optional_field_passes_the_compatibility_rule(name: str) -> None:
    old = OLD.current[name].raw
    assert check_backward_compatible(old, _evolved(old)) == []
    assert check_forward_compatible(old, _evolved(old)) == []


@pytest.mark.parametrize("name", NAMES)
def test_old_writer_new_reader_decodes_through_the_codec(registries: Registries, name: str) -> None:
    written = AvroCodec(registries.old).encode(name, _record(name))
    schema_name, record = AvroCodec(registries.new).decode(written)
    _, as_written = AvroCodec(registries.old).decode(written)
    assert schema_name == name
    assert record == {**as_written, "fault_probe": None}


@pytest.mark.parametrize("name", NAMES)
def test_new_writer_old_reader_decodes_through_the_codec(registries: Registries, name: str) -> None:
    written = AvroCodec(registries.new).encode(name, {**_record(name), "fault_probe": "new"})
    assert written[1:5] == (OLD.current[name].schema_id + NEW_ID_OFFSET).to_bytes(4, "big")
    schema_name, record = AvroCodec(registries.old_reader).decode(written)
    assert schema_name == name
    old = AvroCodec(registries.old)
    assert record == old.decode(old.encode(name, _record(name)))[1]
    # A reader whose registry does not list the new id yet cannot resolve it: a dead letter.
    with pytest.raises(DecodeError) as unknown:
        AvroCodec(registries.old).decode(written)
    assert unknown.value.reason == "unknown_schema_id"


@pytest.mark.parametrize("name", sorted(EVENT_SCHEMAS.values()))
def test_input_events_with_a_newer_optional_field_still_become_events(
    registries: Registries, name: str
) -> None:
    event = EVENTS[name]
    newer = AvroCodec(registries.new)
    written = newer.encode(name, {**event_record(event), "fault_probe": "set by a producer"})
    assert newer.decode_event(written, topic=OLD.topic_of(name)) == event
    older_data = AvroCodec(registries.old).encode_event(event)[1]
    assert newer.decode_event(older_data, topic=OLD.topic_of(name)) == event
