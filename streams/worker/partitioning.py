"""Which partition a customer's records go to: the murmur2 hash Kafka's producers use."""

from __future__ import annotations

import functools
from collections.abc import Callable

from kafka.partitioner.default import murmur2


@functools.cache
def partitioner(partitions: int) -> Callable[[str], int]:
    """Return ``customer_id -> partition``, the same murmur2 hash Kafka producers use.

    One function (and so one cache of answers) per partition count: the scoring shell, the
    state reader, the intervention router and the outputs all ask about the same customers.
    """

    # kafka-python's murmur2 is pure Python (a few µs): the worker asks several times per
    # record, so recent answers are remembered.
    @functools.lru_cache(maxsize=1 << 16)
    def partition_of(customer_id: str) -> int:
        return int((murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions)

    return partition_of
