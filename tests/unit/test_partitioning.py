"""The customer -> partition function the worker's parts share (worker/partitioning.py)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from streams.worker.partitioning import partitioner


def test_it_picks_the_partition_kafka_producers_pick() -> None:
    partitions = list(range(6))
    partition_of = partitioner(6)
    for customer in ("c-1", "c-2", "h0000042", "é-ü"):
        key = customer.encode("utf-8")
        assert partition_of(customer) == DefaultPartitioner()(key, partitions, partitions)


def test_one_function_per_partition_count_so_its_answers_are_cached_once() -> None:
    assert partitioner(4) is partitioner(4)
    assert partitioner(4) is not partitioner(8)
