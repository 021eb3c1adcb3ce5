"""What the scoring handler sends, and the metrics it observes per step.

Everything goes out as aiokafka produce batches per topic partition
(streams/worker/batch_writes.py), on the producer Faust's consumer flushes before it commits
offsets, so outputs stay at-least-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streams.core.records import ChurnScore
from streams.core.scoring import StepOutput
from streams.metrics import ObservedSteps
from streams.worker.batch_writes import Pair, PartitionBatches
from streams.worker.intervene import Routed
from streams.worker.partitioning import partitioner

if TYPE_CHECKING:
    from streams.worker.app import Worker

OUTPUT_NAMES = ("churn-scores", "risk-changes", "training-examples", "interventions")


class Outputs:
    """Encodes and sends a step's records; pushes deliverable ones to chat tools."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.codec = worker.codec
        self.names = {name: worker.settings.topic(name) for name in OUTPUT_NAMES}
        urgent = (self.names["risk-changes"], self.names["interventions"])
        self.batches = PartitionBatches(worker.app, urgent_topics=urgent)
        self._now: list[tuple[str, str, bytes]] = []  # (topic, key, value) to send now

    async def send_now(self, out: StepOutput, routed: Routed) -> None:
        """Queue the records that do not wait for the flush window; :meth:`flush_now` sends.

        The scoring handler flushes after each list of records (and the timers after their
        work), so a risk change waits at most for the rest of its list (``BATCH_MAX``
        records in streams/worker/dispatch.py); chat tools get it at once.
        """
        codec, worker, names, queued = self.codec, self.worker, self.names, self._now
        for change in out.risk_changes:
            value = codec.encode("risk_change", change.to_record(), trusted=True)
            queued.append((names["risk-changes"], change.customer_id, value))
            worker.delivery.risk_change(change)
        for example in out.training_examples:
            value = codec.encode("training_example", example.to_record(), trusted=True)
            queued.append((names["training-examples"], example.customer_id, value))
        for decision in routed.decisions:
            value = codec.encode("intervention", decision.to_record(), trusted=True)
            queued.append((names["interventions"], decision.customer_id, value))
            worker.metrics.intervention(decision.kind, decision.channel, decision.holdout)
        for item, band in routed.deliver:
            worker.delivery.intervention(item, band)

    async def flush_now(self) -> None:
        """Send what :meth:`send_now` queued: one produce batch per topic partition."""
        if not self._now:
            return
        queued, self._now = self._now, []
        by_partition: dict[tuple[str, int], list[Pair]] = {}
        partitioners: dict[str, Callable[[str], int]] = {}
        for topic, key, value in queued:
            partition_of = partitioners.get(topic)
            if partition_of is None:
                partition_of = partitioners[topic] = await self._partitioner_for(topic)
            records = by_partition.setdefault((topic, partition_of(key)), [])
            records.append((key.encode(), value))
        for (topic, partition), records in by_partition.items():
            await self.batches.send(topic, partition, records)

    async def push_now(self) -> None:
        """:meth:`flush_now`, then let the event loop put the risk changes and interventions
        into a produce request before the caller's next CPU-bound step (``push_urgent`` in
        streams/worker/batch_writes.py says why)."""
        await self.flush_now()
        await self.batches.push_urgent()

    async def settled(self) -> None:
        """Send what is queued; wait until everything sent is in the producer."""
        await self.flush_now()
        await self.batches.settled()

    async def send_scores(self, scores: Sequence[ChurnScore]) -> None:
        """Send customers' latest scores of a window, one produce batch per partition.

        Each goes to the partition the producer's own partitioner would pick for its key
        (murmur2 over the topic's partition count, read from the producer's metadata).
        """
        if not scores:
            return
        topic = self.names["churn-scores"]
        partition_of = await self._partitioner_for(topic)
        encode = self.codec.encode
        by_partition: dict[int, list[Pair]] = {}
        for score in scores:
            value = encode("churn_score", score.to_record(), trusted=True)
            records = by_partition.setdefault(partition_of(score.customer_id), [])
            records.append((score.customer_id.encode(), value))
        for partition, records in by_partition.items():
            await self.batches.send(topic, partition, records)

    async def _partitioner_for(self, topic: str) -> Callable[[str], int]:
        producer = self.worker.app.producer._ensure_producer()  # type: ignore[attr-defined]
        await producer.client._wait_on_metadata(topic)
        count = len(producer.client.cluster.partitions_for_topic(topic) or ())
        return partitioner(count)  # one per partition count (cached there)


def band_of(worker: Worker) -> Callable[[str], str | None]:
    """Return ``customer id -> current band`` (None for unknown customers)."""

    def band(customer_id: str) -> str | None:
        state = worker.shell.state_of(customer_id)
        return None if state is None else state.band

    return band


def observe(steps: ObservedSteps, out: StepOutput, event_s: float, arrival_s: float) -> None:
    """Count the latency and band metrics of one step's outputs in ``steps``.

    ``Metrics.observe_steps`` adds them to the Prometheus series, once per list of records.
    """
    if out.scores:
        now_s = time.time()
        for score in out.scores:
            steps.score(score.band, None if score.trigger == "timer" else now_s - event_s)
    if out.risk_changes:
        arrived_s = time.monotonic() - arrival_s
        for change in out.risk_changes:
            steps.risk_change(change.from_band, change.to_band, arrived_s)
