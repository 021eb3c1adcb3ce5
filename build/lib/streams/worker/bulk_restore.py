"""A RocksDB table store that bulk-loads a changelog partition before Faust's recovery reads it.

Why: Faust's recovery replays a changelog record by record through its consumer, conductor
and recovery buffers, about 11,500 records/s here; a plain aiokafka ``getmany`` reads ~900k.
A worker that starts with an empty data dir (disk lost, new machine) would spend minutes per
million customers in that replay.

How, and which Faust internals it relies on (faust-streaming 0.15.3):

- ``App._on_partitions_assigned`` (faust/app/base.py:1851) awaits
  ``tables.on_rebalance`` (base.py:1896), which awaits every table's ``on_rebalance``, i.e.
  its store's (faust/tables/base.py:623 -> faust/stores/rocksdb.py:547, which opens the newly
  assigned active partitions' databases), and only *then* ``recovery.on_rebalance``
  (faust/tables/manager.py:198-207). That one reads ``table.persisted_offset(tp)``
  (faust/tables/recovery.py:230) and the recovery task later seeks the changelog partition to
  it (recovery.py:759) and replays until its offset reaches the end offset minus one
  (recovery.py:669 ``_build_highwaters``, recovery.py:925 ``need_recovery``).
- So :class:`BulkRestoreStore` overrides ``on_rebalance``: after ``super()`` it reads every
  newly assigned *active* changelog partition of its table from ``persisted_offset + 1`` (or
  the beginning) up to the end offset it sees then, with its own short-lived
  ``AIOKafkaConsumer`` (manual assignment, no group), and writes what it reads exactly as
  ``Store.apply_changelog_batch`` does (faust/stores/rocksdb.py:436-472): the record's key
  and value bytes unchanged (``put``), a tombstone as ``delete``, and the partition's
  persisted offset under ``Store.offset_key`` (rocksdb.py:225) as ``str(offset).encode()``
  (rocksdb.py:404). Faust's recovery then finds its offset at the end and reads only the tail
  written since (usually nothing). Standby partitions are left to Faust.
- Each fetched batch is one rocksdict ``WriteBatch`` that carries the persisted offset of its
  last record too, so the database never claims an offset whose records it does not hold. A
  load that fails (broker error, budget spent) logs a warning and stops; what it wrote is
  valid and Faust's own recovery reads the rest. Cancellation (shutdown) goes through.
- The load runs inside the consumer group's rebalance callback, where aiokafka sends no
  heartbeats (aiokafka/consumer/group_coordinator.py:716-738), so it is bounded to
  :attr:`BulkRestoreStore.bulk_budget_share` of ``broker_session_timeout``.
- Memory: one ``getmany`` of at most :attr:`BulkRestoreStore.bulk_batch_records` records is
  held at a time, plus aiokafka's prefetch of one fetch per partition
  (:attr:`BulkRestoreStore.bulk_fetch_bytes` each).

Selecting it: ``app.Table(name, ..., store=bulk_restore_store_url(name))`` (see
``streams/worker/app.py``). It keeps Faust's file layout, so a table without that argument
(the app's ``store="rocksdb://"``: Faust's own store and per-record recovery) reads the same
files: switching back and forth is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import aiokafka
from aiokafka import TopicPartition
from faust import stores as faust_stores
from faust.stores.rocksdb import Store as RocksStore
from faust.transport.drivers.aiokafka import Transport, credentials_to_aiokafka_auth, server_list
from faust.types import TP
from rocksdict import WriteBatch

from streams.errors import ChurnstreamError

log = logging.getLogger(__name__)

SCHEME: Final[str] = "churnstream-rocksdb"


def bulk_restore_store_url(table_name: str) -> str:
    """Register :class:`BulkRestoreStore` in Faust's store registry; return a URL naming it.

    Faust resolves a table's ``store`` URL by its scheme in ``faust.stores.STORES``
    (faust/stores/__init__.py:11, faust/tables/base.py:199). The URL carries the table's name
    as its path, the file name Faust's own ``rocksdb://`` gives the table: a bare
    ``scheme://`` is a false yarl URL, which ``Collection._new_store`` ignores in favour of the
    app's ``store`` (faust/tables/base.py:197).
    """
    faust_stores.STORES.aliases.setdefault(SCHEME, f"{__name__}:BulkRestoreStore")
    return f"{SCHEME}:{table_name}"


class ChangelogRecord(Protocol):
    """What a batch write reads of a consumed record (aiokafka's ``ConsumerRecord``)."""

    @property
    def offset(self) -> int:
        """The record's offset in its partition."""

    @property
    def key(self) -> bytes | None:
        """The record's key bytes."""

    @property
    def value(self) -> bytes | None:
        """The record's value bytes; ``None`` for a tombstone."""


def write_changelog_batch(
    db: Any, records: Iterable[ChangelogRecord], end_offset: int, offset_key: bytes
) -> tuple[int, int | None]:
    """Write records below ``end_offset`` and their last offset in one batch; return (count, last).

    Mirrors ``faust.stores.rocksdb.Store.apply_changelog_batch`` for one partition: key and
    value bytes as they are, a tombstone deletes, the last offset as its decimal ASCII under
    ``offset_key`` (Faust writes that one separately, after the batch; here it is part of it).
    Nothing is written when no record is below ``end_offset``.
    """
    batch = WriteBatch(raw_mode=True)
    count = 0
    last_offset: int | None = None
    for record in records:
        if record.offset >= end_offset:
            break
        if record.key is None:
            # Faust's own recovery would fail on it as well (a table key is never None).
            msg = f"changelog record at offset {record.offset} has no key"
            raise ChurnstreamError(msg)
        if record.value is None:
            batch.delete(record.key)
        else:
            batch.put(record.key, record.value)
        count += 1
        last_offset = record.offset
    if last_offset is None:
        return 0, None
    batch.put(offset_key, str(last_offset).encode())
    db.write(batch)
    return count, last_offset


@dataclass(slots=True)
class PartitionLoad:
    """One changelog partition being loaded: where it started, where it stops, how far it got."""

    tp: TopicPartition
    db: Any
    start_offset: int
    end_offset: int  # one past the last offset to load (the end offset seen at the start)
    records: int = 0
    persisted_offset: int | None = None  # the offset last written with its records

    @property
    def complete(self) -> bool:
        """Return whether every offset below the end offset is in the database."""
        return self.persisted_offset is not None and self.persisted_offset >= self.end_offset - 1


async def _stop_quietly(consumer: aiokafka.AIOKafkaConsumer) -> None:
    # A failure here must not reach Faust's rebalance callback, which would crash the app.
    try:
        await consumer.stop()
    except Exception as exc:
        log.warning("the bulk restore consumer did not stop cleanly: %r", exc)


class LoadInterruptedError(ChurnstreamError):
    """The worker is stopping or rebalancing again: what was written stays, Faust reads on."""


class BulkRestoreStore(RocksStore):
    """Faust's RocksDB store, whose newly assigned active partitions are bulk-loaded first."""

    #: Share of ``broker_session_timeout`` a rebalance may spend loading (no heartbeats then).
    bulk_budget_share: ClassVar[float] = 0.5
    #: Most records in one fetched batch (one RocksDB write).
    bulk_batch_records: ClassVar[int] = 20_000
    #: aiokafka's ``max_partition_fetch_bytes`` for the loading consumer.
    bulk_fetch_bytes: ClassVar[int] = 4 * 1024 * 1024
    #: How long one ``getmany`` waits for records before the loop checks again.
    bulk_poll_ms: ClassVar[int] = 500

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Open and close partitions as Faust does, then bulk-load the newly assigned actives."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        tps = self._partitions_to_load(newly_assigned)
        if not tps:
            return
        budget_s = float(self.app.conf.broker_session_timeout) * self.bulk_budget_share
        async with self.db_lock:
            await self.bulk_load(tps, budget_s, generation_id)

    def _partitions_to_load(self, newly_assigned: Iterable[TP]) -> list[TP]:
        standbys = self.app.assignor.assigned_standbys()
        topics = self.table.changelog_topic.topics
        return sorted(
            tp
            for tp in newly_assigned
            if tp.topic in topics and tp not in standbys and tp.partition in self._dbs
        )

    async def bulk_load(
        self, tps: Sequence[TP], budget_s: float, generation_id: int = 0
    ) -> list[PartitionLoad]:
        """Load ``tps`` from their changelog into their databases; return what was loaded.

        Never raises but for cancellation: a failure is logged and leaves the rest to Faust.
        """
        started = time.monotonic()
        consumer: aiokafka.AIOKafkaConsumer | None = None
        loads: list[PartitionLoad] = []
        try:
            async with asyncio.timeout(budget_s):
                consumer = self._new_bulk_consumer()
                await consumer.start()
                loads = await self._plan(consumer, tps)
                await self._read(consumer, loads, generation_id)
        except TimeoutError:
            log.warning(
                "bulk restore of %s stopped after its %.1fs budget: Faust's recovery reads "
                "the rest of the changelog",
                self.table_name,
                budget_s,
            )
        except LoadInterruptedError as exc:
            log.info("bulk restore of %s stopped: %s", self.table_name, exc)
        except asyncio.CancelledError:
            log.info("bulk restore of %s cancelled", self.table_name)
            raise
        except Exception as exc:
            log.warning(
                "bulk restore of %s failed (%r): Faust's recovery reads the rest of the changelog",
                self.table_name,
                exc,
            )
        finally:
            if consumer is not None:
                await _stop_quietly(consumer)
        elapsed_s = time.monotonic() - started
        records = sum(load.records for load in loads)
        log.info(
            "bulk restore of %s: %d records into %d partitions in %.2fs (%.0f records/s)%s",
            self.table_name,
            records,
            len(loads),
            elapsed_s,
            records / elapsed_s if elapsed_s > 0 else 0.0,
            "".join(
                f"; {load.tp.partition}: {load.start_offset}..{load.persisted_offset}"
                f" of {load.end_offset}"
                for load in loads
            ),
        )
        return loads

    def _new_bulk_consumer(self) -> aiokafka.AIOKafkaConsumer:
        conf = self.app.conf
        # Faust's own consumer reads committed records only under exactly-once
        # (faust/transport/drivers/aiokafka.py:571-574); so does this one.
        isolation_level = "read_committed" if self.app.in_transaction else "read_uncommitted"
        return aiokafka.AIOKafkaConsumer(
            bootstrap_servers=server_list(conf.broker_consumer, Transport.default_port),
            client_id=f"{conf.broker_client_id}-bulk-restore",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
            max_partition_fetch_bytes=self.bulk_fetch_bytes,
            fetch_max_bytes=max(self.bulk_fetch_bytes, 16 * 1024 * 1024),
            # a partition already read to its end is paused; a short wait keeps one whose
            # last offsets are no records (markers, compacted) from stalling the others
            fetch_max_wait_ms=100,
            request_timeout_ms=int(float(conf.broker_request_timeout) * 1000),
            check_crcs=conf.broker_check_crcs,
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )

    async def _plan(
        self, consumer: aiokafka.AIOKafkaConsumer, tps: Sequence[TP]
    ) -> list[PartitionLoad]:
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        beginnings: Mapping[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        ends: Mapping[TopicPartition, int] = await consumer.end_offsets(partitions)
        loads = []
        for tp in partitions:
            persisted = self.persisted_offset(TP(tp.topic, tp.partition))
            end = ends[tp]
            if persisted is not None and persisted >= end:
                # Faust's recovery decides what to do with a database ahead of its changelog
                # (recovery_consistency_check); nothing is read here.
                log.warning(
                    "%s[%d]: local offset %d is not below the changelog's end %d: not bulk-loaded",
                    tp.topic,
                    tp.partition,
                    persisted,
                    end,
                )
                continue
            start = beginnings[tp] if persisted is None else max(persisted + 1, beginnings[tp])
            if start < end:
                loads.append(PartitionLoad(tp, self._dbs[tp.partition], start, end))
        consumer.assign([load.tp for load in loads])
        for load in loads:
            consumer.seek(load.tp, load.start_offset)
        return loads

    async def _read(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        loads: Sequence[PartitionLoad],
        generation_id: int,
    ) -> None:
        pending = {load.tp: load for load in loads}
        while pending:
            if self.should_stop or self.app.should_stop:
                raise LoadInterruptedError("the worker is stopping")
            if generation_id != self.app.consumer_generation_id:
                raise LoadInterruptedError("the group rebalanced again")
            fetched = await consumer.getmany(
                *pending, timeout_ms=self.bulk_poll_ms, max_records=self.bulk_batch_records
            )
            for tp, records in fetched.items():
                load = pending.get(tp)
                if load is None:
                    continue
                count, last_offset = write_changelog_batch(
                    load.db, records, load.end_offset, self.offset_key
                )
                load.records += count
                if last_offset is not None:
                    load.persisted_offset = last_offset
            for tp, load in list(pending.items()):
                if not load.complete and await consumer.position(tp) < load.end_offset:
                    continue
                if not load.complete:
                    # Every offset below the end was consumed, the last few were no records
                    # (transaction markers, or compacted away): the database holds them all.
                    self.set_persisted_offset(TP(tp.topic, tp.partition), load.end_offset - 1)
                    load.persisted_offset = load.end_offset - 1
                consumer.pause(tp)
                del pending[tp]
            await asyncio.sleep(0)
