"""Making customer states durable in an order a crash cannot break: outputs, changelog, store.

The worker applies each input event to a customer's state exactly once: a state remembers
the input offsets it applied, and a record delivered again after a crash whose effect is in
the state is skipped. That is only safe if nothing the record caused can be lost once its
effect is in a state that survives the crash. So a state reaches durable places in order:

1. its risk changes, interventions, training examples and scores (everything the worker
   sent before the state was taken) are acknowledged by the broker; only then
2. the state is sent to the table's changelog; and only once that is acknowledged
3. it is written to the local RocksDB store, with the changelog offset as the partition's
   persisted offset (as Faust's ``Collection._on_changelog_sent`` does per record).

After a kill at any point, the local store is never ahead of the changelog (Faust restores
the rest from the changelog), and neither is ahead of the outputs. A state's bytes are
those ``Table.__setitem__`` would write (the store's key and value encoding, the changelog
partition of the same number), and a partition's states go out in one produce batch and one
RocksDB ``WriteBatch`` per chunk instead of a send, a future and a ``put`` per state.

Until a state is in the store the worker reads it from its cache (the scoring shell keeps
every state of a window that is being written), and the window's records are acknowledged
only once all of its states are in the store (:meth:`DurableStates.settled`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from streams.worker.batch_writes import Pair, PartitionBatches, store_codec


@dataclass(slots=True)
class _Chunk:
    """States of one partition on their way: waiting for outputs, the changelog, the store."""

    partition: int
    pairs: list[Pair]
    outputs: dict[tuple[str, int], int]  # PartitionBatches.mark() when the states were taken
    changelog_batch: int = -1  # the changelog batch holding its last state, once sent
    last_offset: int = -1  # its last changelog record's offset, once acknowledged


class DurableStates:
    """Writes encoded customer states of a Faust table (RocksDB store) in crash-safe order.

    :meth:`add` takes the states and returns at once; they move on as the broker
    acknowledges what they wait for (``PartitionBatches.on_delivery``).
    """

    def __init__(self, table: Any, batches: PartitionBatches) -> None:
        self.table = table
        self.batches = batches
        self.queue: deque[_Chunk] = deque()
        self._settled_waiters: list[asyncio.Future[None]] = []
        self._codec: tuple[Callable[[Any], bytes], Callable[[Any], bytes], Any] | None = None
        batches.on_delivery.append(self.advance)

    @property
    def changelog(self) -> str:
        """Return the table's changelog topic name."""
        name: str = self.table.changelog_topic.get_topic_name()
        return name

    async def add(self, partition: int, items: Sequence[tuple[Any, Any]]) -> int:
        """Start making ``items`` (key, value) of ``partition`` durable; return how many.

        Inside a Faust transaction (exactly-once) they are set through the table at once:
        the transaction's commit then makes outputs and changelog atomic.
        """
        if not items:
            return 0
        table = self.table
        if table.app.in_transaction:
            for key, value in items:
                table[key] = value  # the caller runs in the partition's event context
            return len(items)
        if self._codec is None:
            self._codec = store_codec(table.data)
        encode_key, encode_value, _ = self._codec
        pairs = [(encode_key(key), encode_value(value)) for key, value in items]
        self.queue.append(_Chunk(partition, pairs, self.batches.mark()))
        self.advance()
        return len(pairs)

    def settled(self) -> bool:
        """Return whether every state added so far is in the store."""
        return not self.queue

    async def wait_settled(self) -> None:
        """Wait until :meth:`settled`."""
        if self.queue:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._settled_waiters.append(waiter)
            await waiter

    def drop(self) -> None:
        """Forget states not yet in the store (their records will be delivered again)."""
        self.queue.clear()
        self._wake()

    def advance(self) -> None:
        """Move every chunk on as far as the broker's acknowledgements allow (in order)."""
        queue = self.queue
        batches = self.batches
        changelog = self.changelog
        for chunk in queue:
            if chunk.changelog_batch >= 0:
                continue
            if not batches.delivered(chunk.outputs):
                break  # later chunks were taken later: they wait for at least as much
            self._send(chunk, changelog)
        while queue:
            chunk = queue[0]
            if chunk.changelog_batch < 0:
                break
            if batches.delivered_count(changelog, chunk.partition) < chunk.changelog_batch:
                break
            self._store(chunk, changelog)
            queue.popleft()
        if not queue:
            self._wake()

    def _send(self, chunk: _Chunk, changelog: str) -> None:
        def delivered(last_offset: int) -> None:
            chunk.last_offset = max(chunk.last_offset, last_offset)

        self.batches.enqueue(changelog, chunk.partition, chunk.pairs, delivered)
        chunk.changelog_batch = self.batches.created(changelog, chunk.partition)

    def _store(self, chunk: _Chunk, changelog: str) -> None:
        store = self.table.data
        db = store._dbs.get(chunk.partition)
        if db is None:
            return  # revoked meanwhile: the new owner restores it from the changelog
        key_index = store._key_index
        batch = WriteBatch(raw_mode=True)
        for key_bytes, value_bytes in chunk.pairs:
            batch.put(key_bytes, value_bytes)
            key_index[key_bytes] = chunk.partition
        db.write(batch)
        if chunk.last_offset >= 0:
            store.set_persisted_offset(TP(changelog, chunk.partition), chunk.last_offset)

    def _wake(self) -> None:
        waiters, self._settled_waiters = self._settled_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
