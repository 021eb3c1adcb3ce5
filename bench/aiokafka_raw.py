"""Scenario (a): raw aiokafka batch consumption of the input records, the client's ceiling.

Usage: ``python bench/aiokafka_raw.py --broker B --topics T1,T2,T3 --expected N
--progress FILE --group G``. Reads with ``getmany`` (no decoding, no commits) until ``N``
records arrived, writing its progress to ``FILE`` (see ``bench/benchkit.py``).
"""

from __future__ import annotations

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer
from benchkit import Progress, scenario_args


async def consume(args: argparse.Namespace) -> None:
    """Count records in batches until the expected number arrived."""
    progress = Progress(args.progress, args.expected)
    consumer = AIOKafkaConsumer(
        *args.topics.split(","),
        bootstrap_servers=args.broker,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not progress.done:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                progress.add(len(records))
    finally:
        await consumer.stop()


def main() -> int:
    """Run scenario (a); return the exit code."""
    asyncio.run(consume(scenario_args(__doc__ or "").parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
