"""Input records on their way in: decoded, checked, held in their partition's event-time merge.

A record that cannot be decoded goes to the dead letters; one keyed by something other than
its customer is sent back to its topic keyed by the customer (so the customer's partition
owns it). Every other record waits in its partition's :class:`PartitionMerge` until the
merge of the three input topics lets it go (smallest event time first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from faust.types import TP

from streams.core.events import Event
from streams.core.merge import PartitionMerge
from streams.errors import DecodeError
from streams.worker.deadletters import dead_letter_headers

if TYPE_CHECKING:
    from streams.worker.app import Worker

log = logging.getLogger(__name__)
# How long a record waits for an input topic that lags behind (Kafka Streams' max.task.idle.ms).
MERGE_MAX_WAIT_S = 0.5


class Received(Enum):
    """What became of a record :meth:`Intake.receive` was given."""

    HELD = "held"  # in its partition's merge
    DONE = "done"  # dead-lettered or sent back re-keyed: acknowledge it
    STALE = "stale"  # a rebalance happened meanwhile: it comes again, forget it


@dataclass(slots=True)
class Held:
    """A decoded record waiting in its partition's event-time merge."""

    tp: TP
    record: Any  # aiokafka's ConsumerRecord
    decoded: Event
    source: int
    arrival_s: float
    generation: int


class Intake:
    """The input records of one worker between the consumer and the scoring.

    ``generation`` returns the caller's rebalance generation: a record whose decoding spans
    a rebalance (its dead letter or re-keyed copy is sent meanwhile) is not held.
    """

    def __init__(
        self,
        worker: Worker,
        input_names: Mapping[str, str],
        dead_letters: Any,
        resend: Mapping[str, Any],
        generation: Callable[[], int],
    ) -> None:
        self.worker = worker
        self.codec = worker.codec
        self.input_names = input_names  # full topic name -> input topic name
        self.source_topics = list(input_names)
        self.dead_letters = dead_letters
        self.resend = resend
        self.generation = generation
        # Each partition's records wait here until the event-time merge lets them go.
        self.merges: dict[int, PartitionMerge[Held]] = {}
        # The next offset of each input topic partition this worker expects.
        self.next_unseen: dict[TP, int] = {}

    def forget(self) -> None:
        """Drop every held record (a rebalance: they are delivered again)."""
        self.merges.clear()
        self.next_unseen.clear()

    def holds_any(self) -> bool:
        """Whether some record waits in a merge."""
        return any(merge.held for merge in self.merges.values())

    def waiting(self) -> list[tuple[int, PartitionMerge[Held]]]:
        """Return the partitions with records waiting, and their merges."""
        return [(partition, merge) for partition, merge in self.merges.items() if merge.held]

    async def receive(
        self, tp: TP, record: Any, source: int, now: datetime, arrival_s: float
    ) -> Received:
        """Decode ``record`` and hold it in its partition's merge (``merges[tp.partition]``)."""
        received_in = self.generation()
        self.next_unseen[tp] = record.offset + 1
        decoded = await self._decode(record, self.input_names[tp.topic], now)
        if received_in != self.generation():
            return Received.STALE
        if decoded is None:
            return Received.DONE
        if (record.key or b"").decode("utf-8", "replace") != decoded.customer_id:
            # Keyed otherwise: re-key by customer so the customer's partition owns it.
            self.worker.repartitioned += 1
            self.worker.metrics.record_repartitioned()
            key = decoded.customer_id.encode()
            await self.resend[tp.topic].send(key=key, value=record.value)
            return Received.DONE
        merge = self.merges.get(tp.partition)
        if merge is None:
            merge = self.merges[tp.partition] = PartitionMerge()
        held = Held(tp, record, decoded, source, arrival_s, received_in)
        merge.add(source, decoded.event_time.timestamp(), held)
        return Received.HELD

    def release(self, partition: int, merge: PartitionMerge[Held], consumer: Any) -> list[Held]:
        """Return the records ``merge`` lets go now, in event-time order."""
        released = merge.release(
            self._pending_of(partition, consumer), time.monotonic(), MERGE_MAX_WAIT_S
        )
        for source in released.gave_up:
            # Waited long enough: expect nothing more from it until a record arrives.
            tp = TP(self.source_topics[source], partition)
            highwater = consumer.highwater(tp)
            log.info(
                "merge gave up waiting for %s/%d: next %s, highwater %s",
                tp.topic,
                partition,
                self.next_unseen.get(tp),
                highwater,
            )
            self.next_unseen[tp] = max(self.next_unseen.get(tp, 0), highwater or 0)
        return released.items

    def _pending_of(self, partition: int, consumer: Any) -> Callable[[int], bool]:
        # Whether a source topic's partition may still deliver records this worker has not
        # seen: the consumer's highwater (from its last fetch) is past the next offset.
        def pending(source: int) -> bool:
            tp = TP(self.source_topics[source], partition)
            highwater = consumer.highwater(tp)
            if highwater is None:
                return True
            next_offset = self.next_unseen.get(tp)
            if next_offset is None:
                # Faust's record of the committed offsets, set when it seeks on assignment.
                committed = getattr(consumer, "_committed_offset", {})
                next_offset = committed.get(tp) or 0
            return bool(next_offset < highwater)

        return pending

    async def _decode(self, record: Any, topic: str, now: datetime) -> Event | None:
        try:
            return self.codec.decode_event(record.value or b"", topic=topic, now=now)
        except DecodeError as exc:
            self.worker.dead_letters += 1
            self.worker.metrics.dead_letter(exc.reason)
            headers = dead_letter_headers(record, exc, exc.reason)
            await self.dead_letters.send(key=record.key, value=record.value, headers=headers)
            return None
