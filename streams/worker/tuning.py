"""Faust, tuned for a low-latency, per-record pipeline (the worker's and the bench's app class).

What faust-streaming 0.15 does by default, and what this module changes:

- Its aiokafka consumer asks the broker to hold every fetch up to **1.5 s** when there is
  nothing to return (``fetch_max_wait_ms=1500``, hard-coded in
  ``faust/transport/drivers/aiokafka.py``). aiokafka keeps one fetch in flight per broker,
  so a partition that gets a record while a long-poll fetch for *other* partitions is
  waiting is only fetched when that one returns: on a single-node broker with a trickle of
  records this adds up to 1.5 s to a record's latency. :class:`TunedApp` sets it to
  :data:`FETCH_MAX_WAIT_MS`.
- Its :class:`~faust.sensors.monitor.Monitor` sensor runs on every record (message in,
  stream event in and out, table get and set, send initiated and completed), keeping
  timestamps and deques for Faust's own ``/stats`` page, which churnstream does not serve
  (its metrics are Prometheus). :class:`QuietMonitor` keeps the per-commit, per-rebalance
  and end-offset bookkeeping and drops the per-record work.
- Its consumer loop hands every record to the conductor inside its own ``wait_first`` (a
  task and four futures per record); :class:`TunedApp`'s consumer delivers each fetched
  batch at once and can hand a topic's records to a batch handler as lists
  (``streams/worker/dispatch.py``).
- Its consumer's commit bookkeeping can leave the group's committed offset behind for
  minutes or for good after a rebalance; :class:`TunedApp`'s consumer uses
  ``streams/worker/commits.py`` instead.
- ``uvloop`` replaces asyncio's event loop (see :func:`use_uvloop`).
- CPython's cyclic garbage collector: see ``streams/worker/gc_policy.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.worker.batch_writes import flush_hooks
from streams.worker.commits import StalledCommits, commit_offsets, new_offset
from streams.worker.dispatch import drain_messages

log = logging.getLogger(__name__)

# Longest a fetch waits at the broker when no partition in it has a record. Short waits
# cost an idle worker a few fetch requests per second; long ones cost latency.
FETCH_MAX_WAIT_MS = 10
# What a fetch waits for (up to FETCH_MAX_WAIT_MS) before it returns. aiokafka's default, one
# byte, makes a worker under a steady trickle of records fetch again as soon as a fetch
# returns, a few records at a time: per record, the fetch requests, responses and thread hops
# then cost more than the record's own work (measured at 2,600 records/s: 165 µs of the main
# thread and 85 µs of the consumer thread per record, against ~70 µs in all from a backlog).
FETCH_MIN_BYTES = 64 * 1024


class QuietMonitor(Monitor):
    """Faust's monitor without its per-record bookkeeping (commit/rebalance stats remain)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """Do nothing per record."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        """Do nothing per record."""

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        """Do nothing per record."""

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        """Do nothing per record."""

    def on_table_get(self, table: Any, key: Any) -> None:
        """Do nothing per read."""

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        """Do nothing per write."""

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        """Do nothing per send."""

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """Do nothing per send."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when it creates its fetcher at start (private, but stable
        # since aiokafka 0.5; checked by tests/unit/test_worker_tuning.py).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await drain_messages(self, fetcher)

    _stalled: StalledCommits | None = None

    def _new_offset(self, tp: Any) -> int | None:
        offset = new_offset(self, tp)
        if self._stalled is None:
            self._stalled = StalledCommits()
        self._stalled.observe(tp, offset, self._acked.get(tp) or (), self._committed_offset[tp])
        return offset

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        if self.in_transaction:
            done: bool = await super()._commit_offsets(offsets, start_new_transaction)
            return done
        return await commit_offsets(self, offsets)


class _Producer(faust_aiokafka.Producer):
    """Faust's producer, plus a second aiokafka producer for records a person waits for.

    aiokafka keeps one produce request in flight per broker connection: a risk change
    queued behind a request carrying a window's states and scores waits for that request's
    answer. The second producer (same settings, its own connection) carries only the topics
    ``PartitionBatches`` is told are urgent (risk changes and interventions;
    ``streams/worker/batch_writes.py``).
    """

    _urgent: Any = None

    async def on_start(self) -> None:
        await super().on_start()
        if not self.app.in_transaction:
            urgent = self._new_producer()
            await urgent.start()
            self._urgent = urgent

    async def on_stop(self) -> None:
        urgent, self._urgent = self._urgent, None
        if urgent is not None:
            await urgent.stop()  # sends what it holds first
        await super().on_stop()

    async def flush(self) -> None:
        # What the app sends beside Faust's producer API (streams/worker/batch_writes.py)
        # must be in aiokafka's accumulator before aiokafka's flush looks at it: Faust
        # flushes before it commits offsets.
        for hook in list(flush_hooks(self.app)):
            await hook()
        await super().flush()
        if self._urgent is not None:
            await self._urgent.flush()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer


class TunedApp(faust.App):
    """A Faust app whose consumer fetches with short waits and whose monitor is quiet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("monitor", QuietMonitor())
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme != "kafka":
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)


def use_uvloop() -> bool:
    """Install uvloop's event loop policy if uvloop is importable; return whether it was."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - it is a dependency; kept for odd platforms
        log.warning("uvloop is not installed: using asyncio's event loop")
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
