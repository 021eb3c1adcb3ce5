"""What the scoring agent sends, and the metrics it observes per step (Faust's producer)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streams.core.records import ChurnScore
from streams.core.scoring import StepOutput
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
        self.batches = PartitionBatches(worker.app)
        self._partitioners: dict[int, Callable[[str], int]] = {}

    async def emit(self, topic: str, key: str, value: bytes) -> None:
        """Send one record of output ``topic`` (short name) keyed by ``key``."""
        # Straight to the producer: Faust's Topic.send wraps every record in futures and
        # buffers that cost more than the record. The consumer flushes the producer before
        # it commits offsets, so outputs stay at-least-once.
        producer = self.worker.app.producer
        await producer.send(self.names[topic], key.encode(), value, None, None, None)

    async def send_now(self, out: StepOutput, routed: Routed) -> None:
        """Send the records that do not wait for the flush window."""
        codec, worker = self.codec, self.worker
        for change in out.risk_changes:
            value = codec.encode("risk_change", change.to_record(), trusted=True)
            await self.emit("risk-changes", change.customer_id, value)
            worker.delivery.risk_change(change)
        for example in out.training_examples:
            value = codec.encode("training_example", example.to_record(), trusted=True)
            await self.emit("training-examples", example.customer_id, value)
        for decision in routed.decisions:
            value = codec.encode("intervention", decision.to_record(), trusted=True)
            await self.emit("interventions", decision.customer_id, value)
            worker.metrics.intervention(decision.kind, decision.channel, decision.holdout)
        for item, band in routed.deliver:
            worker.delivery.intervention(item, band)

    async def send_score(self, score: ChurnScore) -> None:
        """Send a customer's latest score of a window to the compacted scores topic."""
        value = self.codec.encode("churn_score", score.to_record(), trusted=True)
        await self.emit("churn-scores", score.customer_id, value)

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
        found = self._partitioners.get(count)
        if found is None:
            found = self._partitioners[count] = partitioner(count)
        return found


def band_of(worker: Worker) -> Callable[[str], str | None]:
    """Return ``customer id -> current band`` (None for unknown customers)."""

    def band(customer_id: str) -> str | None:
        state = worker.shell.state_of(customer_id)
        return None if state is None else state.band

    return band


def observe(worker: Worker, out: StepOutput, event_s: float, arrival_s: float) -> None:
    """Record the latency and band metrics of one step's outputs."""
    now_s = time.time()
    for score in out.scores:
        latency_s = None if score.trigger == "timer" else now_s - event_s
        worker.metrics.observe_score(score.band, latency_s)
    for change in out.risk_changes:
        worker.metrics.observe_risk_change(
            change.from_band, change.to_band, time.monotonic() - arrival_s
        )
