"""``churnstream worker``: build the Faust app from Settings and run it until stopped."""

from __future__ import annotations

import logging

from streams.errors import ChurnstreamError
from streams.settings import Settings


def input_partitions(settings: Settings) -> int:
    """Return the partition count of the input topics (they must all agree)."""
    from kafka import KafkaConsumer

    from streams.io.kafka_clients import client_config
    from streams.settings import INPUT_TOPICS

    consumer = KafkaConsumer(**client_config(settings))
    try:
        counts = {}
        for name in INPUT_TOPICS:
            partitions = consumer.partitions_for_topic(settings.topic(name))
            if not partitions:
                msg = (
                    f"input topic {settings.topic(name)!r} does not exist. "
                    "Operator action: run `churnstream topics create` first"
                )
                raise ChurnstreamError(msg)
            counts[name] = len(partitions)
    finally:
        consumer.close()
    if len(set(counts.values())) != 1:
        msg = f"input topics must be co-partitioned, but have {counts}"
        raise ChurnstreamError(msg)
    return next(iter(counts.values()))


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Run the worker until it is stopped (SIGTERM/SIGINT); return its exit code."""
    import faust

    from streams.io.kafka_clients import check_login
    from streams.logging_setup import logging_dict_config
    from streams.worker.app import create_worker
    from streams.worker.gc_policy import GcPauses, calm_gc
    from streams.worker.tuning import use_uvloop

    GcPauses().install()
    use_uvloop()  # before the app exists: its loops (and the consumer thread's) are uvloop's
    check_login(settings)  # a refused SASL login is one clear error, not endless retries
    partitions = input_partitions(settings)
    worker = create_worker(settings, partitions)
    logging.getLogger("streams").setLevel(loglevel.upper())
    calm_gc()
    # Faust replaces the root logger's handlers: hand it the JSON/redaction set-up instead.
    faust.Worker(
        worker.app, loglevel=loglevel, logging_config=logging_dict_config(settings, loglevel)
    ).execute_from_commandline()
    return 0
