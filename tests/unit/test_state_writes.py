"""Customer states made durable in crash-safe order (worker/state_writes.py).

No broker: the table's RocksDB partitions are opened locally and a stand-in for
PartitionBatches acknowledges batches only when the test says so (the real-broker path is
covered by the worker pipeline, the crash tests of tests/faults and the scale-out bench).
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.worker.batch_writes import Pair, store_codec, table_reader
from streams.worker.bulk_restore import bulk_restore_store_url
from streams.worker.partitioning import partitioner
from streams.worker.state_writes import DurableStates
from streams.worker.tuning import TunedApp

PARTITIONS = 4


class ManualBatches:
    """Stands in for PartitionBatches: one batch per enqueue, acknowledged by :meth:`ack`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[Pair]]] = []
        self.batches: dict[tuple[str, int], list[tuple[list[Pair], Callable[[int], None] | None]]]
        self.batches = {}
        self.acked: dict[tuple[str, int], int] = {}
        self.on_delivery: list[Callable[[], None]] = []
        self.next_offset: dict[tuple[str, int], int] = {}

    def enqueue(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        self.sent.append((topic, partition, list(records)))
        self.batches.setdefault((topic, partition), []).append((list(records), on_delivered))

    def created(self, topic: str, partition: int) -> int:
        return len(self.batches.get((topic, partition), []))

    def delivered_count(self, topic: str, partition: int) -> int:
        return self.acked.get((topic, partition), 0)

    def mark(self) -> dict[tuple[str, int], int]:
        return {key: len(batches) for key, batches in self.batches.items()}

    def delivered(self, mark: dict[tuple[str, int], int]) -> bool:
        return all(self.acked.get(key, 0) >= count for key, count in mark.items())

    def ack(self, topic: str, partition: int) -> None:
        """The broker acknowledges the partition's next batch."""
        key = (topic, partition)
        records, on_delivered = self.batches[key][self.acked.get(key, 0)]
        self.acked[key] = self.acked.get(key, 0) + 1
        first = self.next_offset.get(key, 0)
        self.next_offset[key] = first + len(records)
        if on_delivered is not None:
            on_delivered(first + len(records) - 1)
        for listener in self.on_delivery:
            listener()

    def ack_all(self) -> None:
        progress = True
        while progress:
            progress = False
            for (topic, partition), batches in list(self.batches.items()):
                if self.acked.get((topic, partition), 0) < len(batches):
                    self.ack(topic, partition)
                    progress = True


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Any]:
    app = TunedApp(
        "state-writes-test",
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


def test_states_are_the_bytes_faust_writes_and_go_to_the_same_partition(table: Any) -> None:
    partition_of = partitioner(PARTITIONS)
    items = [(f"c{i}", {"n": i, "name": f"é{i}", "tags": [i, None]}) for i in range(40)]
    mine = [item for item in items if partition_of(item[0]) == 2]
    batches = ManualBatches()
    states = DurableStates(table, batches)  # type: ignore[arg-type]
    assert asyncio.run(states.add(2, mine)) == len(mine)
    batches.ack_all()
    assert states.settled()
    db = table.data._db_for_partition(2)
    topic, partition, records = batches.sent[0]
    stored = {key: db.get(key) for key, _ in records}
    for key, value in mine:
        faust_set(table, 1, key, value)  # Faust's own write, into another partition
    faust_db = table.data._db_for_partition(1)
    assert stored == {key: faust_db.get(key) for key in stored}
    # the changelog carries exactly the stored bytes, to the changelog partition 2
    assert (topic, partition) == (table.changelog_topic.get_topic_name(), 2)
    assert dict(records) == stored
    # and the last acknowledged offset is the partition's persisted offset
    assert table.data.persisted_offset(TP(topic, 2)) == len(mine) - 1


def test_a_state_waits_for_earlier_outputs_then_for_its_changelog(table: Any) -> None:
    """A crash at any step leaves no state durable whose record's outputs could be lost."""
    batches = ManualBatches()
    states = DurableStates(table, batches)  # type: ignore[arg-type]
    changelog = table.changelog_topic.get_topic_name()
    db = table.data._db_for_partition(0)
    key = table.data._encode_key("c1")
    batches.enqueue("risk-changes", 3, [(b"c1", b"raised")])  # caused by the state's record
    asyncio.run(states.add(0, [("c1", {"n": 1})]))
    assert [topic for topic, _, _ in batches.sent] == ["risk-changes"], "not before the output"
    assert db.get(key) is None
    batches.ack("risk-changes", 3)
    assert [topic for topic, _, _ in batches.sent] == ["risk-changes", changelog]
    assert db.get(key) is None, "the store is never ahead of the changelog"
    assert not states.settled()
    batches.ack(changelog, 0)
    assert db.get(key) is not None
    assert states.settled()


def test_later_states_wait_for_earlier_ones_and_wake_a_waiter(table: Any) -> None:
    batches = ManualBatches()
    states = DurableStates(table, batches)  # type: ignore[arg-type]
    changelog = table.changelog_topic.get_topic_name()

    async def scenario() -> list[str]:
        await states.add(1, [("a", {"n": 1})])
        await states.add(1, [("a", {"n": 2})])  # the same customer, taken later
        waiting = asyncio.ensure_future(states.wait_settled())
        await asyncio.sleep(0)
        assert not waiting.done()
        batches.ack(changelog, 1)
        batches.ack(changelog, 1)
        await waiting
        return [value for _, _, records in batches.sent for _, value in records]

    assert asyncio.run(scenario()) == [b'{"n":1}', b'{"n":2}']
    assert table.data._db_for_partition(1).get(table.data._encode_key("a")) == b'{"n":2}'


def test_dropped_states_are_forgotten(table: Any) -> None:
    batches = ManualBatches()
    states = DurableStates(table, batches)  # type: ignore[arg-type]
    batches.enqueue("risk-changes", 0, [(b"k", b"v")])
    asyncio.run(states.add(0, [("c9", {"n": 9})]))
    states.drop()
    assert states.settled()
    batches.ack("risk-changes", 0)
    assert len(batches.sent) == 1, "nothing sent for a dropped state"


def test_the_partition_reader_answers_as_table_get_does(table: Any) -> None:
    partition_of = partitioner(PARTITIONS)
    batches = ManualBatches()
    states = DurableStates(table, batches)  # type: ignore[arg-type]
    by_partition: dict[int, list[tuple[str, Any]]] = {}
    for i in range(60):
        key = f"k{i}"
        by_partition.setdefault(partition_of(key), []).append((key, {"i": i}))
    for partition, items in by_partition.items():
        asyncio.run(states.add(partition, items))
    batches.ack_all()
    read = table_reader(table, partition_of)
    for key in [f"k{i}" for i in range(60)] + ["never-seen", "k60"]:
        assert read(key) == table.get(key), key
    assert read("k7") == {"i": 7}
    assert read("never-seen") is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(max_size=20), value=json_values)
def test_the_fast_codec_writes_and_reads_what_faust_does(table: Any, key: str, value: Any) -> None:
    store = table.data
    encode_key, encode_value, decode_value = store_codec(store)
    assert encode_key(key) == store._encode_key(key)
    encoded = encode_value(value)
    assert encoded == store._encode_value(value)
    assert decode_value(encoded) == store._decode_value(encoded)
