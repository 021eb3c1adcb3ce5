"""A disk cache of the encoded input, so a second ``make bench`` skips ~20 s of encoding.

The key covers everything the records depend on: the sizes and seed, the generator and
simulator sources, and the Avro schemas. The file is a JSON header line followed by
length-prefixed records (no pickle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from inputs import Input, Record, describe, encode_records, shop_events

if TYPE_CHECKING:
    from run import Plan

REPO: Final[Path] = Path(__file__).resolve().parents[1]
CACHE_VERSION: Final[int] = 1
_FRAME: Final[struct.Struct] = struct.Struct(">BHHIq")


def cache_key(plan: Plan, args: argparse.Namespace) -> str:
    """Return the hex digest naming the cached input for this plan and these sources."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [CACHE_VERSION, plan.events, plan.customers, args.seed, not args.no_simulator]
        ).encode()
    )
    sources = [REPO / "bench" / "inputs.py"]
    sources += sorted((REPO / "streams" / "sim").glob("*.py"))
    sources += sorted((REPO / "schemas").glob("**/*"))
    for path in sources:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def save(path: Path, loaded: Input) -> None:
    """Write ``loaded`` to ``path`` (atomically)."""
    topics = sorted({record.topic for record in loaded.records})
    index = {topic: number for number, topic in enumerate(topics)}
    header = {
        "topics": topics,
        "source": loaded.source,
        "customers": loaded.customers,
        "counts": loaded.counts,
        "end_time": loaded.end_time.isoformat(),
        "records": len(loaded.records),
    }
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as out:
        out.write(json.dumps(header).encode() + b"\n")
        for record in loaded.records:
            customer = record.customer_id.encode()
            out.write(
                _FRAME.pack(
                    index[record.topic],
                    len(record.key),
                    len(customer),
                    len(record.value),
                    record.event_time_ms,
                )
            )
            out.write(record.key + customer + record.value)
    temporary.replace(path)


def load(path: Path) -> Input:
    """Return the input saved at ``path``."""
    data = path.read_bytes()
    end = data.index(b"\n")
    header = json.loads(data[:end])
    position = end + 1
    records = []
    for _ in range(header["records"]):
        topic, key_len, customer_len, value_len, event_ms = _FRAME.unpack_from(data, position)
        position += _FRAME.size
        key = data[position : position + key_len]
        position += key_len
        customer = data[position : position + customer_len].decode()
        position += customer_len
        value = data[position : position + value_len]
        position += value_len
        records.append(Record(header["topics"][topic], key, value, customer, event_ms))
    return Input(
        records,
        header["source"],
        header["customers"],
        header["counts"],
        datetime.fromisoformat(header["end_time"]),
    )


def load_input(
    plan: Plan,
    args: argparse.Namespace,
    cache_dir: Path,
    log: Callable[[str], None],
) -> Input:
    """Return the run's input, from the cache when it holds it, else made and cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"input-{cache_key(plan, args)}.bin"
    if path.exists() and not args.fresh_input:
        loaded = load(path)
        log(f"input: {len(loaded.records):,} records from the cache ({loaded.source})")
        return loaded
    started = time.perf_counter()
    events, source = shop_events(plan.customers, plan.events, args.seed, not args.no_simulator)
    log(f"input: {len(events):,} events from {source} in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    loaded = describe(encode_records(events), source, events)
    log(f"input: encoded with the project's Avro codec in {time.perf_counter() - started:.1f}s")
    for stale in cache_dir.glob("input-*.bin"):
        stale.unlink()
    save(path, loaded)
    return loaded
