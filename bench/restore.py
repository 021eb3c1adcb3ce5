"""Restore time: a worker with an empty data dir rebuilding N customers' state from Kafka.

:func:`write_changelog` fills the worker's ``customers`` changelog topic
(``<prefix>churnstream-customers-changelog``) directly, as the worker itself would have:
key = the JSON-serialised customer id, value = the JSON of a ``CustomerState.to_dict()``,
partition = the customer's input partition. The states are real ones: the scoring core run
over generated histories of a few hundred customers, copied under new customer ids (a
customer's state holds its id). The caller then starts a worker on an empty data dir and
times start -> ``/readyz`` 200 (tables recovered, model feed caught up).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Final

from aiokafka import AIOKafkaProducer
from inputs import generate_events, partition_of
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from streams.core.config import ScoringConfig
from streams.core.model import PriorOnlyModel
from streams.core.scoring import process_event
from streams.core.state import CustomerState
from streams.settings import Settings

PLACEHOLDER: Final[str] = "__bench_customer__"


def state_templates(end: datetime, customers: int = 300, seed: int = 11) -> list[str]:
    """Return JSON states of ``customers`` generated customers, their id a placeholder.

    Their histories span the 30 days before ``end``, so the restored clocks sit before any
    event the bench sends afterwards.
    """
    start = end - timedelta(days=30)
    events = generate_events(customers, customers * 5, seed, start, 29.0, id_prefix="t")
    config = ScoringConfig()
    model = PriorOnlyModel()
    states: dict[str, CustomerState] = {}
    for event in events:
        state, _ = process_event(states.get(event.customer_id), event, model, config)
        states[event.customer_id] = state
    templates = []
    for state in states.values():
        raw = state.to_dict()
        raw["values"][0] = PLACEHOLDER
        templates.append(json.dumps(raw, separators=(",", ":")))
    return templates


def fresh_state_templates(end: datetime) -> list[str]:
    """Return :func:`state_templates` computed by a new interpreter.

    The worker about to restore them imports the scoring core now; this process imported
    it minutes ago. Built in a child process, the states match the code the worker runs
    even when someone edited the core during the run.
    """
    done = subprocess.run(
        [sys.executable, __file__, "--templates", end.isoformat()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    templates: list[str] = json.loads(done.stdout)
    return templates


def changelog_topic(settings: Settings) -> str:
    """Return the name of the worker's customers changelog topic for ``settings``' prefix."""
    return f"{settings.topic_prefix}churnstream-customers-changelog"


def create_changelog(settings: Settings, partitions: int) -> None:
    """Create the customers changelog topic as Faust would (compacted, same partitions)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.broker)
    try:
        admin.create_topics(
            [
                NewTopic(
                    changelog_topic(settings),
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        admin.close()


async def _produce(
    settings: Settings, customers: int, partitions: int, end: datetime, seed: int
) -> int:
    templates = fresh_state_templates(end)
    rng = random.Random(seed)
    topic = changelog_topic(settings)
    client = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all")
    await client.start()
    written = 0
    try:
        batches = {p: client.create_batch() for p in range(partitions)}
        sent = []
        for number in range(customers):
            customer_id = f"r{number:08d}"
            key = json.dumps(customer_id).encode()
            value = rng.choice(templates).replace(f'"{PLACEHOLDER}"', key.decode()).encode()
            written += len(value)
            partition = partition_of(customer_id.encode(), partitions)
            if batches[partition].append(key=key, value=value, timestamp=None) is None:
                sent.append(await client.send_batch(batches[partition], topic, partition=partition))
                batches[partition] = client.create_batch()
                batches[partition].append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            if batch.record_count():
                sent.append(await client.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await client.stop()
    return written


def write_changelog(
    settings: Settings, customers: int, partitions: int, end: datetime, seed: int = 5
) -> tuple[float, float]:
    """Write ``customers`` states (clocks before ``end``) to the changelog.

    Returns (seconds taken, mean value bytes).
    """
    started = time.perf_counter()
    create_changelog(settings, partitions)
    written = asyncio.run(_produce(settings, customers, partitions, end, seed))
    return time.perf_counter() - started, written / max(1, customers)


def restored_customer_ids(customers: int, sample: int = 3, seed: int = 5) -> list[str]:
    """Return a few ids :func:`write_changelog` wrote, to ask the score API for."""
    rng = random.Random(seed + 1)
    return [f"r{rng.randrange(customers):08d}" for _ in range(sample)]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--templates":
        print(json.dumps(state_templates(datetime.fromisoformat(sys.argv[2]))))
    else:
        sys.exit("usage: restore.py --templates END_ISO_TIME (used by bench/run.py)")
