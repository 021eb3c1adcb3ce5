"""Batched table writes and partition reads match Faust's own table (worker/batch_writes.py).

No broker: the table's RocksDB partitions are opened locally and the changelog batches are
captured instead of produced (the real-broker path is covered by the worker pipeline, restore
and scale-out tests).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.events import Event as FaustEvent
from faust.streams import _current_event
from faust.types import TP

from streams.worker.batch_writes import (
    Pair,
    PartitionBatches,
    TableBatchWriter,
    flush_hooks,
    table_reader,
)
from streams.worker.bulk_restore import bulk_restore_store_url
from streams.worker.partitioning import partitioner
from streams.worker.tuning import TunedApp

PARTITIONS = 4


class CapturedBatches:
    """Stands in for PartitionBatches: records what would be produced, acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[Pair]]] = []
        self.next_offset: dict[tuple[str, int], int] = {}

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        self.sent.append((topic, partition, list(records)))
        first = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = first + len(records)
        if on_delivered is not None:
            on_delivered(first + len(records) - 1)


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Any]:
    app = TunedApp(
        "batch-writes-test",
        broker="kafka://127.0.0.1:9",
        store="rocksdb://",
        datadir=str(tmp_path),
        topic_partitions=PARTITIONS,
        web_enabled=False,
    )
    customers = app.Table(
        "customers",
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        partitions=PARTITIONS,
        store=bulk_restore_store_url("customers"),
    )
    for partition in range(PARTITIONS):
        customers.data._db_for_partition(partition)
    yield customers
    customers.data.reset_state()


def faust_set(table: Any, partition: int, key: str, value: Any) -> None:
    """What ``Table.__setitem__`` does to the store, in the partition's event context."""
    message = type("Message", (), {"partition": partition, "topic": "in", "key": b"", "value": b""})
    event = FaustEvent(table.app, b"", b"", None, message)
    token = _current_event.set(weakref.ref(event))
    try:
        table.data[key] = value
    finally:
        _current_event.reset(token)


def test_batched_states_are_the_bytes_faust_writes_and_go_to_the_same_partition(
    table: Any,
) -> None:
    partition_of = partitioner(PARTITIONS)
    items = [(f"c{i}", {"n": i, "name": f"é{i}", "tags": [i, None]}) for i in range(40)]
    mine = [item for item in items if partition_of(item[0]) == 2]
    batches = CapturedBatches()
    writer = TableBatchWriter(table, batches)  # type: ignore[arg-type]
    assert asyncio.run(writer.write(2, mine)) == len(mine)
    db = table.data._db_for_partition(2)
    stored = {key: db.get(key) for key, _ in batches.sent[0][2]}
    for key, value in mine:
        faust_set(table, 1, key, value)  # Faust's own write, into another partition
    faust_db = table.data._db_for_partition(1)
    assert stored == {key: faust_db.get(key) for key in stored}
    # the changelog carries exactly the stored bytes, to the changelog partition 2
    topic, partition, records = batches.sent[0]
    assert (topic, partition) == (table.changelog_topic.get_topic_name(), 2)
    assert dict(records) == stored
    # and the last acknowledged offset is the partition's persisted offset
    assert table.data.persisted_offset(TP(topic, 2)) == len(mine) - 1


def test_the_partition_reader_answers_as_table_get_does(table: Any) -> None:
    partition_of = partitioner(PARTITIONS)
    writer = TableBatchWriter(table, CapturedBatches())  # type: ignore[arg-type]
    by_partition: dict[int, list[tuple[str, Any]]] = {}
    for i in range(60):
        key = f"k{i}"
        by_partition.setdefault(partition_of(key), []).append((key, {"i": i}))
    for partition, items in by_partition.items():
        asyncio.run(writer.write(partition, items))
    read = table_reader(table, partition_of)
    for key in [f"k{i}" for i in range(60)] + ["never-seen", "k60"]:
        assert read(key) == table.get(key), key
    assert read("k7") == {"i": 7}
    assert read("never-seen") is None


class FakeBuilder:
    def __init__(self, room: int) -> None:
        self.records: list[Pair] = []
        self.room = room
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        if self.closed or len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """aiokafka's batch API as PartitionBatches uses it: a partition's next batch is taken
    only when the previous one has left (here: when the test opens the gate)."""

    def __init__(self, room: int = 3) -> None:
        self.room = room
        self.sent: list[list[Pair]] = []
        self.gate = asyncio.Event()
        self.next_offset = 0
        self.fail: Exception | None = None

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.room)

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        # aiokafka lingers on a batch that is still open (producer_linger): a closed one
        # leaves with the next produce request.
        assert batch.closed, "a batch is closed before it is handed over"
        await self.gate.wait()
        self.gate.clear()
        if self.fail is not None:
            raise self.fail
        self.sent.append(batch.records)
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivered.set_result(type("Meta", (), {"offset": self.next_offset}))
        self.next_offset += len(batch.records)
        return delivered


def fake_app(producer: FakeProducer) -> Any:
    app = type("App", (), {"in_transaction": False})()
    app.producer = type("P", (), {"_ensure_producer": lambda self: producer})()
    return app


def record(n: int) -> Pair:
    return (f"k{n}".encode(), f"v{n}".encode())


def test_records_sent_while_a_batch_waits_join_the_next_batch_in_order() -> None:
    producer = FakeProducer(room=3)
    app = fake_app(producer)
    batches = PartitionBatches(app)
    offsets: list[int] = []

    async def scenario() -> None:
        await batches.send("t", 0, [record(0), record(1)], offsets.append)
        await asyncio.sleep(0)  # the lane's task takes the first batch and waits
        await batches.send("t", 0, [record(2)], offsets.append)
        await batches.send("t", 0, [record(3), record(4), record(5)], offsets.append)
        settled = asyncio.ensure_future(batches.settled())
        while not settled.done():
            producer.gate.set()
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert producer.sent == [
        [record(0), record(1)],
        [record(2), record(3), record(4)],  # joined while the first one waited
        [record(5)],
    ]
    assert offsets == [1, 4, 4, 5], "each call hears of every batch holding its records"


def test_handed_over_waits_for_what_was_queued_before_not_for_later_records() -> None:
    producer = FakeProducer(room=2)
    app = fake_app(producer)
    batches = PartitionBatches(app)
    assert flush_hooks(app) == [batches.handed_over], "the producer's flush awaits it"

    async def scenario() -> list[list[Pair]]:
        await batches.send("t", 0, [record(0), record(1), record(2)])  # two batches
        await batches.send("t", 1, [record(3)])
        waiting = asyncio.ensure_future(batches.handed_over())
        sent_when_done: list[list[Pair]] = []
        for n in range(4, 40):  # a steady stream of later records: never all handed over
            producer.gate.set()
            await asyncio.sleep(0)
            if waiting.done() and not sent_when_done:
                sent_when_done = list(producer.sent)
            await batches.send("t", 0, [record(n)])
        assert waiting.done(), "it must return under a steady stream of sends"
        await waiting
        return sent_when_done

    sent = asyncio.run(scenario())
    flat = [pair for batch in sent for pair in batch]
    assert {record(0), record(1), record(2), record(3)} <= set(flat)


def test_handed_over_raises_what_the_hand_over_raised() -> None:
    producer = FakeProducer(room=2)
    producer.fail = RuntimeError("producer closed")
    batches = PartitionBatches(fake_app(producer))

    async def scenario() -> None:
        await batches.send("t", 0, [record(0)])
        waiting = asyncio.ensure_future(batches.handed_over())
        producer.gate.set()
        await waiting

    with pytest.raises(RuntimeError, match="producer closed"):
        asyncio.run(scenario())
