"""Schema contracts: documented, consistent, and compatible with the previous committed version."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import expand_schema

from streams.io.schemas import (
    PREVIOUS_DIR,
    check_backward_compatible,
    check_forward_compatible,
    check_registry_compatible,
    default_registry,
    inconsistent_named_types,
    load_schema_file,
    undocumented_fields,
)

REGISTRY = default_registry()
NAMES = sorted(REGISTRY.current)
SCHEMA_FILES = sorted(REGISTRY.directory.glob("*.avsc")) + sorted(
    (REGISTRY.directory / PREVIOUS_DIR).glob("*.avsc")
)


def _current(name: str) -> dict[str, Any]:
    return REGISTRY.current[name].raw


def _previous(name: str) -> dict[str, Any]:
    return load_schema_file(REGISTRY.directory / PREVIOUS_DIR / f"{name}.avsc")


def _sample(schema: Any, filled: bool) -> Any:
    """Return a value of (expanded) ``schema``: optionals set when ``filled``, else null."""
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] if filled else schema
        return _sample(branches[0], filled)
    kind = schema["type"] if isinstance(schema, dict) else schema
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    simple = {
        "null": None,
        "boolean": True,
        "int": 3,
        "long": 2**40,
        "float": 0.5,
        "double": 0.25,
        "bytes": b"\x00\x01",
        "string": "text",
    }
    if kind in simple:
        return simple[kind]
    if kind == "record":
        return {f["name"]: _sample(f["type"], filled) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "array":
        return [_sample(schema["items"], filled)] * 2
    if kind == "map":
        return {"a": _sample(schema["values"], filled)}
    raise AssertionError(f"no sample for {schema!r}")


def _read_across(writer_raw: dict[str, Any], reader_raw: dict[str, Any], filled: bool) -> Any:
    writer, reader = parse_schema(writer_raw), parse_schema(reader_raw)
    buffer = BytesIO()
    schemaless_writer(buffer, writer, _sample(expand_schema(writer_raw), filled))
    buffer.seek(0)
    return schemaless_reader(buffer, writer, reader)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_field_has_a_doc(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert undocumented_fields(raw) == []
    assert raw["namespace"] == "io.churnstream"
    assert raw.get("doc")


def test_undocumented_fields_finds_nested_fields_without_doc() -> None:
    raw = copy.deepcopy(_current("order_event"))
    del raw["fields"][-1]["type"][1]["items"]["fields"][0]["doc"]
    assert undocumented_fields(raw) == ["order_event.items/OrderItem.sku"]


def test_shared_named_types_are_defined_identically() -> None:
    assert inconsistent_named_types(_current(name) for name in NAMES) == []
    changed = copy.deepcopy(_current("risk_change"))
    changed["fields"][2]["type"][1]["symbols"].append("EXTREME")
    assert inconsistent_named_types([_current("churn_score"), changed]) == [
        "io.churnstream.RiskBand"
    ]


def test_every_time_is_timestamp_millis() -> None:
    for name in NAMES:
        text = json.dumps(_current(name))
        assert "timestamp-micros" not in text
        for field in _current(name)["fields"]:
            if field["name"].endswith(("_time", "_at", "as_of", "_after")):
                assert "timestamp-millis" in json.dumps(field["type"]), (name, field["name"])


def test_registry_is_compatible_with_previous_versions() -> None:
    assert check_registry_compatible() == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("filled", [True, False], ids=["optionals-set", "optionals-null"])
def test_current_and_previous_read_each_others_data(name: str, filled: bool) -> None:
    current, previous = _current(name), _previous(name)
    assert check_backward_compatible(previous, current) == []
    assert check_forward_compatible(previous, current) == []
    assert _read_across(previous, current, filled) is not None
    assert _read_across(current, previous, filled) is not None


def test_adding_a_required_field_is_detected_and_really_breaks_reading() -> None:
    old = _current("churn_score")
    new = copy.deepcopy(old)
    new["fields"].append({"name": "segment", "type": "string", "doc": "Customer segment."})
    assert check_backward_compatible(old, new) == [
        "churn_score.segment: field 'segment' added without a default"
    ]
    assert check_forward_compatible(old, new) == []  # old readers just skip the new field
    with pytest.raises(SchemaResolutionError, match="segment"):
        _read_across(old, new, filled=True)
    new["fields"][-1] = {**new["fields"][-1], "type": ["null", "string"], "default": None}
    assert check_backward_compatible(old, new) == []


@pytest.mark.parametrize(
    ("change", "backward", "forward"),
    [
        ("remove_enum_symbol", True, False),
        ("add_enum_symbol", False, True),
        ("int_to_long", False, True),
        ("string_to_long", True, True),
        ("rename_record", True, True),
        ("drop_required_field", False, True),
        ("millis_to_micros", True, True),
        ("optional_to_required", True, False),
    ],
)
def test_breaking_changes_are_detected(change: str, backward: bool, forward: bool) -> None:
    old = _current("risk_change")
    new = copy.deepcopy(old)
    fields = {field["name"]: field for field in new["fields"]}
    if change == "remove_enum_symbol":
        fields["from_band"]["type"][1]["symbols"].remove("CRITICAL")
    elif change == "add_enum_symbol":
        fields["from_band"]["type"][1]["symbols"].append("EXTREME")
    elif change == "int_to_long":
        old = _current("training_example")
        new = copy.deepcopy(old)
        next(f for f in new["fields"] if f["name"] == "label")["type"] = "long"
    elif change == "string_to_long":
        fields["trigger"]["type"] = "long"
    elif change == "rename_record":
        new["name"] = "risk_changed"
    elif change == "drop_required_field":
        new["fields"].remove(fields["trigger"])
    elif change == "millis_to_micros":
        fields["as_of"]["type"] = {"type": "long", "logicalType": "timestamp-micros"}
    elif change == "optional_to_required":
        fields["previous_score"]["type"] = "double"
        del fields["previous_score"]["default"]
    assert bool(check_backward_compatible(old, new)) is backward, change
    assert bool(check_forward_compatible(old, new)) is forward, change


def test_registry_ids_never_change() -> None:
    # Records already on the topics carry these ids: (name, version) -> id is forever.
    registered = {(v.name, v.version): v.schema_id for v in REGISTRY.by_id.values()}
    first_versions = {
        ("click_event", 1): 1,
        ("order_event", 1): 2,
        ("customer_profile", 1): 3,
        ("churn_score", 1): 4,
        ("risk_change", 1): 5,
        ("training_example", 1): 6,
        ("model_snapshot", 1): 7,
        ("intervention", 1): 8,
    }
    assert {key: registered.get(key) for key in first_versions} == first_versions
