"""Writing many records of one partition at once: aiokafka produce batches and RocksDB batches.

Faust sends every record through ``Producer.send`` (a ``FutureMessage``, the producer
buffer, ``Topic.publish_message``, aiokafka's per-record future and accumulator step: ~10 µs
each) and every table write through ``Table.__setitem__`` (all of that for the changelog
record, then a RocksDB ``put`` and a done-callback that stores the persisted offset). A flush
window's coalesced states and latest scores are many records per partition written together,
so they go here instead:

- :class:`PartitionBatches` appends records to aiokafka ``BatchBuilder``\\ s
  (``AIOKafkaProducer.create_batch``/``send_batch``) of one topic partition: no future per
  record. The batches join the same producer's accumulator as Faust's own sends, so
  ``producer.flush()`` (which Faust's consumer awaits before it commits offsets) waits for
  them too: outputs stay at-least-once.
- :class:`TableBatchWriter` writes a table partition's states exactly as ``Table.__setitem__``
  would (the store's own key and value encoding, the same bytes to RocksDB and to the
  changelog partition of the same number), with one RocksDB ``WriteBatch`` per call; when a
  changelog batch is acknowledged its last offset becomes the partition's persisted offset,
  as Faust's ``Collection._on_changelog_sent`` does per record.

Both fall back to Faust's per-record path inside a Faust transaction (exactly-once), where
the producer must be the transaction's; churnstream's worker runs at-least-once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

Pair = tuple[bytes, bytes]


class PartitionBatches:
    """Sends records to one topic partition at a time as aiokafka produce batches.

    aiokafka's ``send_batch`` waits until the partition's previous batch has left the
    accumulator (linger plus a produce round trip), so :meth:`send` only builds the batches
    and hands them over in a background task per partition, chained so that they keep their
    order. :meth:`settled` waits until everything handed over is in the accumulator: call it
    before acknowledging the records whose outputs these are.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records = 0
        self.batches = 0
        self._last: dict[tuple[str, int], asyncio.Future[None]] = {}

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        """Queue ``records`` (key, value) to ``topic``/``partition``, in order.

        ``on_delivered(last_offset)`` is called as each batch is acknowledged by the broker,
        with the offset of that batch's last record.
        """
        if not records:
            return
        if self.app.in_transaction:
            await self._send_one_by_one(topic, partition, records, on_delivered)
            return
        producer = self.app.producer._ensure_producer()  # faust's aiokafka Producer
        batch = producer.create_batch()
        count = 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                self._submit(producer, batch, topic, partition, count, on_delivered)
                batch, count = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    msg = f"a record of {len(value)} bytes does not fit a batch of {topic}"
                    raise ValueError(msg)
            count += 1
        self._submit(producer, batch, topic, partition, count, on_delivered)

    async def settled(self) -> None:
        """Wait until every batch handed over is in the producer's accumulator.

        Raises what a hand-over raised (the producer is closed or failed).
        """
        while self._last:
            pending = list(self._last.items())
            await asyncio.gather(*(future for _, future in pending))
            for key, future in pending:
                if self._last.get(key) is future:
                    del self._last[key]

    def _submit(
        self,
        producer: Any,
        batch: Any,
        topic: str,
        partition: int,
        count: int,
        on_delivered: Callable[[int], None] | None,
    ) -> None:
        if not count:
            return
        key = (topic, partition)
        previous = self._last.get(key)
        self._last[key] = asyncio.ensure_future(
            self._hand_over(previous, producer, batch, topic, partition, count, on_delivered)
        )
        self.records += count
        self.batches += 1

    @staticmethod
    async def _hand_over(
        previous: asyncio.Future[None] | None,
        producer: Any,
        batch: Any,
        topic: str,
        partition: int,
        count: int,
        on_delivered: Callable[[int], None] | None,
    ) -> None:
        if previous is not None:
            await previous
        future = await producer.send_batch(batch, topic, partition=partition)
        if on_delivered is not None:

            def delivered(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    on_delivered(done.result().offset + count - 1)

            future.add_done_callback(delivered)

    async def _send_one_by_one(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None,
    ) -> None:
        producer = self.app.producer
        for key, value in records:
            future = await producer.send(topic, key, value, partition, None, None)
            self.records += 1
            if on_delivered is not None:
                future.add_done_callback(
                    lambda done: None if done.exception() else on_delivered(done.result().offset)
                )


class TableBatchWriter:
    """Writes many keys of one partition of a Faust table (RocksDB store) at once."""

    def __init__(self, table: Any, batches: PartitionBatches) -> None:
        self.table = table
        self.batches = batches

    async def write(self, partition: int, items: Sequence[tuple[Any, Any]]) -> int:
        """Set ``items`` (key, value) in ``partition`` of the table; return how many."""
        if not items:
            return 0
        table = self.table
        if table.app.in_transaction:
            for key, value in items:
                table[key] = value  # the caller runs in the partition's event context
            return len(items)
        store = table.data
        encode_key, encode_value = store._encode_key, store._encode_value
        pairs = [(encode_key(key), encode_value(value)) for key, value in items]
        db = store._db_for_partition(partition)
        key_index = store._key_index
        batch = WriteBatch(raw_mode=True)
        for key_bytes, value_bytes in pairs:
            batch.put(key_bytes, value_bytes)
            key_index[key_bytes] = partition
        db.write(batch)
        changelog = table.changelog_topic.get_topic_name()
        tp = TP(changelog, partition)
        persisted = [-1]

        def delivered(last_offset: int) -> None:
            # Batches of a partition are acknowledged in order; never move the offset back.
            if last_offset > persisted[0]:
                persisted[0] = last_offset
                if partition in store._dbs:  # not revoked meanwhile
                    store.set_persisted_offset(tp, last_offset)

        await self.batches.send(changelog, partition, pairs, delivered)
        return len(pairs)
