"""Scenario (b): a bare Faust agent that only counts the input records, the framework's ceiling.

Usage: ``python bench/faust_bare.py --broker B --topics T1,T2,T3 --expected N --progress FILE
--group APP_ID --state-dir DIR``. The app uses the worker's app class and consumer settings
(streams/worker/tuning.py: short fetch waits, quiet monitor, uvloop; raw serializers, commit
every 1000 records or 1 s) so the difference to the worker is the work done per event, not
configuration.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from benchkit import Progress, scenario_args

from streams.worker.gc_policy import calm_gc
from streams.worker.tuning import TunedApp, use_uvloop


def bench_app(args: argparse.Namespace, store: str) -> faust.App:
    """Return a Faust app configured like the churnstream worker, without its web server."""
    use_uvloop()  # before the app exists, as the worker does
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    return TunedApp(
        args.group,
        broker=f"kafka://{args.broker}",
        store=store,
        datadir=str(state_dir),
        web_enabled=False,
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )


def run(app: faust.App) -> None:
    """Run ``app`` as a worker until it is stopped (SIGTERM), with the worker's GC set-up."""
    calm_gc()
    faust.Worker(app, loglevel="warning").execute_from_commandline()


def main() -> int:
    """Run scenario (b) until stopped; return the exit code."""
    args = scenario_args(__doc__ or "").parse_args()
    app = bench_app(args, "memory://")
    progress = Progress(args.progress, args.expected)
    inputs = app.topic(*args.topics.split(","), key_serializer="raw", value_serializer="raw")

    @app.agent(inputs, name="count")
    async def count(stream: Any) -> AsyncIterator[None]:
        async for _ in stream.events():
            progress.add()
            yield None

    run(app)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
