"""The Avro contracts: where ``schemas/`` lives, the registry of fixed ids, and contract checks.

Schema files are looked up in this order (the first directory holding ``registry.json`` wins):

1. ``streams/_schemas/`` next to the installed package: a non-editable install (wheel) has no
   repository around it, so a build that ships the contracts copies ``schemas/`` there and
   lists ``_schemas/*`` / ``_schemas/previous/*`` as package data;
2. ``schemas/`` at the root of the repository (editable install, tests, ``make demo``).

``schemas/registry.json`` fixes one Confluent schema id per (name, version). An id is never
reused: a new version gets a new id and the old entry stays (its file kept, e.g. under
``previous/``) so records already on a topic still decode. The current version of a name is
its entry with the highest ``version``. ``schemas/previous/`` holds the last committed
version of every schema; :func:`check_registry_compatible` checks the current ones against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema
from fastavro.schema import expand_schema

from streams.errors import ChurnstreamError

REGISTRY_FILE: Final[str] = "registry.json"
PREVIOUS_DIR: Final[str] = "previous"
_PACKAGED_DIR: Final[Path] = Path(__file__).resolve().parents[1] / "_schemas"
_REPO_DIR: Final[Path] = Path(__file__).resolve().parents[2] / "schemas"
# Avro's schema-resolution promotions: a reader may widen what the writer wrote.
_PROMOTIONS: Final[dict[str, frozenset[str]]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_NAMED: Final[frozenset[str]] = frozenset({"record", "enum", "fixed"})


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One registered version of a schema: its fixed id, its JSON and its parsed form."""

    schema_id: int
    name: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any  # fastavro's parsed schema (a dict), what its readers and writers take


@dataclass(frozen=True, slots=True)
class SchemaRegistry:
    """Every registered schema version by id, the current one by name, and topic -> schema."""

    directory: Path
    by_id: Mapping[int, SchemaVersion]
    current: Mapping[str, SchemaVersion]
    topics: Mapping[str, str | None]

    def latest(self, name: str) -> SchemaVersion:
        """Return the current version of schema ``name``; ``ValueError`` if there is none."""
        try:
            return self.current[name]
        except KeyError:
            msg = f"unknown schema name {name!r}; known: {sorted(self.current)}"
            raise ValueError(msg) from None

    def schema_of_topic(self, topic: str) -> str | None:
        """Return the schema name of ``topic`` (unprefixed), None for a schema-less topic."""
        try:
            return self.topics[topic]
        except KeyError:
            msg = f"unknown topic {topic!r}; known: {sorted(self.topics)}"
            raise ValueError(msg) from None

    def topic_of(self, name: str) -> str:
        """Return the (unprefixed) topic that carries schema ``name``."""
        for topic, schema_name in self.topics.items():
            if schema_name == name:
                return topic
        msg = f"no topic carries schema {name!r}"
        raise ValueError(msg)


def default_schema_dir() -> Path:
    """Return the directory holding ``registry.json``: packaged copy first, then the repo's."""
    for candidate in (_PACKAGED_DIR, _REPO_DIR):
        if (candidate / REGISTRY_FILE).is_file():
            return candidate
    msg = (
        f"no {REGISTRY_FILE} in {str(_PACKAGED_DIR)!r} or {str(_REPO_DIR)!r}. "
        "Operator action: run from a checkout of churnstream or install a build that ships "
        "the schemas as package data (streams/_schemas)."
    )
    raise ChurnstreamError(msg)


def load_schema_file(path: Path) -> dict[str, Any]:
    """Return the JSON of the Avro schema at ``path``; ``ChurnstreamError`` if unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read Avro schema {str(path)!r}: {exc}"
        raise ChurnstreamError(msg) from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        msg = f"Avro schema {str(path)!r} must be a JSON object of type 'record'"
        raise ChurnstreamError(msg)
    return raw


def parse(raw: Mapping[str, Any], origin: str = "<schema>") -> Any:
    """Return fastavro's parsed form of ``raw``, with its own set of named types."""
    try:
        # A fresh named-types dict per schema: RiskBand, Reason, ... are defined inline in each.
        return parse_schema(dict(raw), named_schemas={})
    except Exception as exc:  # fastavro raises several types for a bad schema
        msg = f"invalid Avro schema {origin}: {exc}"
        raise ChurnstreamError(msg) from exc


def load_registry(directory: Path | None = None) -> SchemaRegistry:
    """Return the registry in ``directory`` (default :func:`default_schema_dir`), all parsed."""
    root = directory if directory is not None else default_schema_dir()
    index_path = root / REGISTRY_FILE
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        entries = index["schemas"]
        topics = dict(index["topics"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"cannot read schema registry {str(index_path)!r}: {exc!r}"
        raise ChurnstreamError(msg) from exc
    by_id: dict[int, SchemaVersion] = {}
    current: dict[str, SchemaVersion] = {}
    for entry in entries:
        version = _load_entry(root, entry)
        if version.schema_id in by_id:
            msg = f"{str(index_path)!r}: schema id {version.schema_id} is used twice"
            raise ChurnstreamError(msg)
        by_id[version.schema_id] = version
        known = current.get(version.name)
        if known is not None and known.version == version.version:
            msg = f"{str(index_path)!r}: {version.name!r} version {version.version} listed twice"
            raise ChurnstreamError(msg)
        if known is None or version.version > known.version:
            current[version.name] = version
    for topic, name in topics.items():
        if name is not None and name not in current:
            msg = f"{str(index_path)!r}: topic {topic!r} names unknown schema {name!r}"
            raise ChurnstreamError(msg)
    return SchemaRegistry(directory=root, by_id=by_id, current=current, topics=topics)


def _load_entry(root: Path, entry: Any) -> SchemaVersion:
    try:
        schema_id, name = int(entry["id"]), str(entry["name"])
        version, file = int(entry["version"]), str(entry["file"])
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"bad entry {entry!r} in {str(root / REGISTRY_FILE)!r}: {exc!r}"
        raise ChurnstreamError(msg) from exc
    if not 0 <= schema_id < 2**31:
        msg = f"schema id {schema_id!r} of {name!r} does not fit the 4-byte wire-format id"
        raise ChurnstreamError(msg)
    path = root / file
    raw = load_schema_file(path)
    if raw.get("name") != name:
        msg = f"{str(path)!r} defines record {raw.get('name')!r}, registry says {name!r}"
        raise ChurnstreamError(msg)
    parsed = parse(raw, repr(str(path)))
    return SchemaVersion(schema_id, name, version, path, raw, parsed)


@lru_cache(maxsize=1)
def default_registry() -> SchemaRegistry:
    """Return the registry of :func:`default_schema_dir`, loaded once per process."""
    return load_registry()


def undocumented_fields(raw: Any, path: str = "") -> list[str]:
    """Return the paths of record fields in ``raw`` that lack a non-empty ``doc``.

    >>> undocumented_fields({"type": "record", "name": "r", "fields": [
    ...     {"name": "a", "type": "int", "doc": "A."}, {"name": "b", "type": "int"}]})
    ['r.b']
    """
    if isinstance(raw, list):
        return [bad for branch in raw for bad in undocumented_fields(branch, path)]
    if not isinstance(raw, dict):
        return []
    kind = raw.get("type")
    if kind == "record":
        here = f"{path}{raw.get('name')}"
        missing: list[str] = []
        for field in raw.get("fields", []):
            doc = field.get("doc")
            if not isinstance(doc, str) or not doc.strip():
                missing.append(f"{here}.{field.get('name')}")
            missing.extend(undocumented_fields(field.get("type"), f"{here}.{field.get('name')}/"))
        return missing
    if kind == "array":
        return undocumented_fields(raw.get("items"), path)
    if kind == "map":
        return undocumented_fields(raw.get("values"), path)
    return undocumented_fields(kind, path) if isinstance(kind, dict | list) else []


def inconsistent_named_types(schemas: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return the full names of named types defined differently (docs included) in ``schemas``."""
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for raw in schemas:
        for full_name, canonical in _named_types(expand_schema(dict(raw))).items():
            if seen.setdefault(full_name, canonical) != canonical and full_name not in clashes:
                clashes.append(full_name)
    return clashes


def _named_types(schema: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    if isinstance(schema, list):
        for branch in schema:
            found.update(_named_types(branch))
    elif isinstance(schema, dict):
        if schema.get("type") in _NAMED:
            found[schema["name"]] = json.dumps(schema, sort_keys=True)
        for field in schema.get("fields", []):
            found.update(_named_types(field["type"]))
        for key in ("items", "values"):
            if key in schema:
                found.update(_named_types(schema[key]))
    return found


def check_backward_compatible(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Return why ``new`` (reader) cannot read data written with ``old``; empty if it can.

    Follows Avro's schema-resolution rules: fields added without a default, removed enum
    symbols, type changes other than the allowed promotions, renamed records, changed
    logical types.

    >>> old = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}
    >>> new = {"type": "record", "name": "r", "fields": [
    ...     {"name": "a", "type": "long"}, {"name": "b", "type": "string"}]}
    >>> check_backward_compatible(old, new)
    ["r.b: field 'b' added without a default"]
    """
    writer, reader = expand_schema(dict(old)), expand_schema(dict(new))
    return _problems(writer, reader, _label(reader))


def check_forward_compatible(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Return why ``old`` (reader, e.g. a consumer not yet upgraded) cannot read ``new`` data."""
    return check_backward_compatible(new, old)


def check_registry_compatible(directory: Path | None = None) -> list[str]:
    """Return every problem between the schemas in ``directory`` and their ``previous/`` copy.

    A schema must stay both backward and forward compatible with its previous committed
    version, so producers and consumers can be upgraded in any order.
    """
    registry = load_registry(directory)
    problems: list[str] = []
    for name, version in sorted(registry.current.items()):
        previous_path = registry.directory / PREVIOUS_DIR / version.path.name
        if not previous_path.is_file():
            problems.append(f"{name}: no previous version at {str(previous_path)!r}")
            continue
        previous = load_schema_file(previous_path)
        problems += [
            f"{name} (backward): {p}" for p in check_backward_compatible(previous, version.raw)
        ]
        problems += [
            f"{name} (forward): {p}" for p in check_forward_compatible(previous, version.raw)
        ]
    return problems


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _label(schema: Any) -> str:
    if isinstance(schema, dict) and "name" in schema:
        return str(schema["name"]).rsplit(".", 1)[-1]
    return _kind(schema)


def _names_match(writer: Mapping[str, Any], reader: Mapping[str, Any]) -> bool:
    def short(name: str) -> str:
        return name.rsplit(".", 1)[-1]

    aliases = {short(alias) for alias in reader.get("aliases", [])}
    return short(writer["name"]) in {short(reader["name"]), *aliases}


def _problems(writer: Any, reader: Any, path: str) -> list[str]:
    writer_kind, reader_kind = _kind(writer), _kind(reader)
    if writer_kind == "union":
        # Every branch the writer may have used must be readable.
        return [p for branch in writer for p in _problems(branch, reader, path)]
    if reader_kind == "union":
        if any(not _problems(writer, branch, path) for branch in reader):
            return []
        labels = [_label(branch) for branch in reader]
        return [f"{path}: writer type {_label(writer)!r} matches no branch of {labels}"]
    if writer_kind != reader_kind:
        if reader_kind in _PROMOTIONS.get(writer_kind, frozenset()):
            return []
        return [f"{path}: type {writer_kind!r} cannot be read as {reader_kind!r}"]
    if writer_kind in _NAMED and not _names_match(writer, reader):
        return [f"{path}: {writer_kind} {writer['name']!r} renamed to {reader['name']!r}"]
    if writer_kind == "record":
        return _record_problems(writer, reader, path)
    if writer_kind == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and reader.get("default") is None:
            return [f"{path}: enum symbols {missing} removed (and the reader has no default)"]
        return []
    if writer_kind == "array":
        return _problems(writer["items"], reader["items"], f"{path}[]")
    if writer_kind == "map":
        return _problems(writer["values"], reader["values"], f"{path}{{}}")
    if writer_kind == "fixed" and writer["size"] != reader["size"]:
        return [f"{path}: fixed size {writer['size']} changed to {reader['size']}"]
    writer_logical = writer.get("logicalType") if isinstance(writer, dict) else None
    reader_logical = reader.get("logicalType") if isinstance(reader, dict) else None
    if writer_logical != reader_logical:
        return [f"{path}: logical type {writer_logical!r} changed to {reader_logical!r}"]
    return []


def _record_problems(writer: Mapping[str, Any], reader: Mapping[str, Any], path: str) -> list[str]:
    writer_fields = {field["name"]: field for field in writer["fields"]}
    problems: list[str] = []
    for field in reader["fields"]:
        names: Sequence[str] = [field["name"], *field.get("aliases", [])]
        source = next((writer_fields[n] for n in names if n in writer_fields), None)
        here = f"{path}.{field['name']}"
        if source is None:
            if "default" not in field:
                problems.append(f"{here}: field {field['name']!r} added without a default")
            continue
        problems.extend(_problems(source["type"], field["type"], here))
    return problems
