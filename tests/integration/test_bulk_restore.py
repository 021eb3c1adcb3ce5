"""BulkRestoreStore on the real broker: what it loads equals what Faust's own recovery writes.

The reference is Faust's own write path for recovery, ``Table.apply_changelog_batch`` (what
``faust/tables/recovery.py`` calls with its buffers of 1,000 changelog events), run over every
record of the changelog into a plain ``rocksdb://`` store. Databases are compared byte for
byte, Faust's persisted-offset key included; and with the last value per key (deletes gone).
The last test runs a real worker on an empty data dir and reads from Faust's own recovery log
that it found nothing left to replay.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from streams.io.kafka_clients import producer
from streams.settings import Settings
from streams.worker.bulk_restore import BulkRestoreStore, bulk_restore_store_url
from tests.faults.harness import read_rocksdb
from tests.support.processes import WorkerProcess

PARTITIONS = 2
OFFSET_KEY = b"__faust\0offset__"

# (partition, key bytes, value bytes or None for a tombstone), in the order produced
Op = tuple[int, bytes, bytes | None]


def changelog_topic(settings: Settings) -> str:
    """Return the worker's customers changelog topic for ``settings``' prefix."""
    return f"{settings.topic_prefix}churnstream-customers-changelog"


def create_changelog(settings: Settings) -> str:
    """Create the changelog topic as Faust would (compacted); return its name."""
    admin = KafkaAdminClient(bootstrap_servers=settings.broker)
    try:
        admin.create_topics(
            [
                NewTopic(
                    changelog_topic(settings),
                    num_partitions=PARTITIONS,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        admin.close()
    return changelog_topic(settings)


def history(seed: int, customers: int, ops: int, prefix: str = "c") -> list[Op]:
    """Return ``ops`` changelog writes: updates, deletes, and keys set again after a delete."""
    rng = random.Random(seed)
    result: list[Op] = []
    for number in range(ops):
        customer = f"{prefix}{rng.randrange(customers):05d}"
        key = json.dumps(customer).encode()
        partition = sum(customer.encode()) % PARTITIONS
        if rng.random() < 0.15:
            result.append((partition, key, None))
        else:
            value = json.dumps({"customer": customer, "n": number, "pad": "x" * rng.randrange(80)})
            result.append((partition, key, value.encode()))
    return result


def produce(settings: Settings, topic: str, ops: list[Op]) -> None:
    """Send ``ops`` to ``topic`` in order, to their partitions; wait for all acks."""
    client = producer(settings)
    try:
        for partition, key, value in ops:
            client.send(topic, key=key, value=value, partition=partition)
        client.flush()
    finally:
        client.close()


def last_values(ops: list[Op]) -> dict[int, dict[bytes, bytes]]:
    """Return the changelog's last value per key by partition (a deleted key is absent)."""
    tables: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    for partition, key, value in ops:
        if value is None:
            tables[partition].pop(key, None)
        else:
            tables[partition][key] = value
    return tables


def new_table(settings: Settings, data_dir: Path, store: str) -> Any:
    """Return the ``customers`` table of a fresh, unstarted worker app using ``data_dir``."""
    app = faust.App(
        f"{settings.topic_prefix}churnstream",  # the worker's: the changelog is named after it
        broker=f"kafka://{settings.broker}",
        store="rocksdb://",
        datadir=str(data_dir),
        # the bulk load's budget is a share of this
        broker_session_timeout=60,
        broker_request_timeout=90,
    )
    return app.Table(
        "customers",
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        partitions=PARTITIONS,
        store=store,
    )


def raw_items(store: Any, partition: int) -> dict[bytes, bytes]:
    """Return every row of one partition's database, Faust's offset key included."""
    db = store._db_for_partition(partition)
    return {key: value for key, value in db.items()}


async def read_changelog(broker: str, topic: str) -> list[Any]:
    """Return every record of ``topic``, partition by partition, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                fetched = await consumer.getmany(tp, timeout_ms=1000)
                records.extend(r for r in fetched.get(tp, []) if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


async def faust_recovery_of(settings: Settings, data_dir: Path) -> dict[int, dict]:
    """Return the databases Faust's own recovery writes for every changelog record."""
    table = new_table(settings, data_dir, "rocksdb://")
    records = await read_changelog(settings.broker, changelog_topic(settings))
    events = [
        SimpleNamespace(
            message=SimpleNamespace(
                tp=TP(r.topic, r.partition),
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
            )
        )
        for r in records
    ]
    for start in range(0, len(events), table.recovery_buffer_size):
        table.apply_changelog_batch(events[start : start + table.recovery_buffer_size])
    return {p: raw_items(table.data, p) for p in range(PARTITIONS)}


async def assign(store: BulkRestoreStore, topic: str) -> None:
    """Call the store's rebalance hook as Faust does on a worker's first assignment."""
    tps = {TP(topic, p) for p in range(PARTITIONS)}
    await store.on_rebalance(tps, set(), tps, store.app.consumer_generation_id)


def without_offset(rows: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """Return a partition's rows without Faust's offset key."""
    return {key: value for key, value in rows.items() if key != OFFSET_KEY}


@pytest.fixture
def changelog(topic_settings: Callable[..., Settings]) -> tuple[Settings, str]:
    """Return settings with a unique prefix and its (empty) customers changelog topic."""
    settings = topic_settings(partitions=PARTITIONS)
    return settings, create_changelog(settings)


def test_bulk_load_writes_what_faust_recovery_writes_and_resumes_at_the_persisted_offset(
    changelog: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, topic = changelog
    first = history(seed=1, customers=400, ops=4000)
    tail = history(seed=2, customers=400, ops=600)  # same keys: updates and deletes
    produce(settings, topic, first)

    async def run() -> None:
        table = new_table(settings, tmp_path / "bulk", bulk_restore_store_url("customers"))
        store = table.data
        assert isinstance(store, BulkRestoreStore)
        assert store.persisted_offset(TP(topic, 0)) is None
        await assign(store, topic)

        reference = await faust_recovery_of(settings, tmp_path / "faust1")
        loaded = {p: raw_items(store, p) for p in range(PARTITIONS)}
        assert loaded == reference  # byte for byte, offset keys included
        assert {p: without_offset(rows) for p, rows in loaded.items()} == last_values(first)
        ends = {p: sum(1 for op in first if op[0] == p) for p in range(PARTITIONS)}
        for p in range(PARTITIONS):
            # Faust's recovery seeks to this offset and replays up to end - 1: nothing left
            assert store.persisted_offset(TP(topic, p)) == ends[p] - 1

        # The tail written afterwards: the next load reads only it.
        produce(settings, topic, tail)
        loads = await store.bulk_load([TP(topic, p) for p in range(PARTITIONS)], 30.0)
        assert {load.tp.partition: load.start_offset for load in loads} == ends
        assert sum(load.records for load in loads) == len(tail)
        reference = await faust_recovery_of(settings, tmp_path / "faust2")
        assert {p: raw_items(store, p) for p in range(PARTITIONS)} == reference
        assert {p: without_offset(raw_items(store, p)) for p in range(PARTITIONS)} == (
            last_values(first + tail)
        )

    asyncio.run(run())


def test_a_cancelled_load_leaves_a_consistent_prefix_that_the_next_load_completes(
    changelog: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, topic = changelog
    ops = [op for op in history(seed=3, customers=2000, ops=20_000) if op[0] == 0]
    produce(settings, topic, ops)
    tp = TP(topic, 0)

    async def run() -> None:
        table = new_table(settings, tmp_path / "bulk", bulk_restore_store_url("customers"))
        store = table.data
        store.bulk_batch_records = 200
        store._db_for_partition(0)
        loading = asyncio.ensure_future(store.bulk_load([tp], 30.0))
        while store.persisted_offset(tp) is None and not loading.done():
            await asyncio.sleep(0)
        loading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loading
        persisted = store.persisted_offset(tp)
        assert persisted is not None
        # the rows are exactly the changelog up to the persisted offset: never ahead, never behind
        assert without_offset(raw_items(store, 0)) == last_values(ops[: persisted + 1])[0]

        loads = await store.bulk_load([tp], 30.0)
        assert [load.start_offset for load in loads] == [persisted + 1]
        assert store.persisted_offset(tp) == len(ops) - 1
        assert without_offset(raw_items(store, 0)) == last_values(ops)[0]

    asyncio.run(run())


def test_an_unreachable_broker_leaves_the_database_to_faust(tmp_path: Path) -> None:
    async def run() -> None:
        # nothing listens on port 1
        settings = Settings.load({}, {"broker": "127.0.0.1:1", "topic_prefix": "nobroker-"})
        table = new_table(settings, tmp_path / "bulk", bulk_restore_store_url("customers"))
        store = table.data
        store._db_for_partition(0)
        tp = TP(changelog_topic(settings), 0)
        loads = await store.bulk_load([tp], 5.0)  # logs a warning, raises nothing
        assert loads == []
        assert store.persisted_offset(tp) is None
        assert raw_items(store, 0) == {}

    asyncio.run(run())


def test_a_worker_on_an_empty_data_dir_bulk_loads_and_faust_has_nothing_left_to_replay(
    changelog: tuple[Settings, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings, topic = changelog
    ops = history(seed=4, customers=3000, ops=30_000)
    produce(settings, topic, ops)
    worker = start_worker(settings, CHURNSTREAM_TRAIN="false")
    worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert re.search(rf"bulk restore of customers: {len(ops)} records into {PARTITIONS} ", log), (
        worker.log_tail()
    )
    # Faust's recovery read no backlog: it did not start replaying ...
    assert "Restoring state from changelog topics" not in log, worker.log_tail(60)
    # ... because each partition's reading started at its highwater (its end offset - 1).
    highwaters = faust_log_table(log, "Highwater - Active")
    starts = faust_log_table(log, "Reading Starts At - Active")
    ends = {p: sum(1 for op in ops if op[0] == p) for p in range(PARTITIONS)}
    assert highwaters == starts == {p: end - 1 for p, end in ends.items()}, log
    tables = read_rocksdb(worker.data_dir)
    expected = last_values(ops)
    assert {name: rows for name, rows in tables.items() if name.startswith("customers-")} == {
        f"customers-{p}": expected[p] for p in range(PARTITIONS)
    }


def faust_log_table(log: str, title: str) -> dict[int, int]:
    """Return ``partition -> offset`` from one of the tables Faust's recovery logs.

    They look like ``+Highwater - Active---+``, a header row, then ``| topic | 0 | 15008 |``
    rows (a repeated topic shown as a ditto mark) until the closing ``+---+`` line.
    """
    lines = log[log.index(title) :].splitlines()
    rows: dict[int, int] = {}
    for line in lines[1:]:
        if not line.startswith(("|", "+")):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[1].isdigit():
            rows[int(cells[1])] = int(cells[2])
    return rows
