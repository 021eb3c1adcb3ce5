"""Every worker reads the whole compacted model topic itself (no consumer group)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

if TYPE_CHECKING:
    from streams.worker.app import Worker

log = logging.getLogger(__name__)


def aiokafka_security(worker: Worker) -> dict[str, Any]:
    """Return aiokafka connection settings (security) of the worker's settings."""
    settings = worker.settings
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        cafile = None if settings.kafka_ssl_cafile is None else str(settings.kafka_ssl_cafile)
        config["ssl_context"] = create_ssl_context(cafile=cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password
    return config


async def follow_models(worker: Worker, models_topic_name: str) -> None:
    """Offer every snapshot on the model topic to the worker's model holder, forever.

    Sets ``worker.models_ready`` once the snapshots published before start have been read,
    so the trainer continues from the latest one instead of starting over.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=worker.settings.broker,
        enable_auto_commit=False,
        group_id=None,
        **aiokafka_security(worker),
    )
    await consumer.start()
    try:
        partition = TopicPartition(models_topic_name, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        if end == 0:
            worker.models_ready.set()
        while True:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            for record in batch.get(partition, []):
                if record.value is not None:
                    outcome = worker.models.offer(record.value)
                    worker.metrics.model_snapshot(outcome)
                    if outcome == "swapped":
                        worker.metrics.model_in_use(
                            worker.models.version, worker.models.get().examples_learned
                        )
                if record.offset + 1 >= end:
                    worker.models_ready.set()
    finally:
        await consumer.stop()
