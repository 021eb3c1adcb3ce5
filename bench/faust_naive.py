"""Scenario (c): the naive Faust design, decode + Table update per event + river predict.

Usage: ``python bench/faust_naive.py --broker B --topics T1,T2,T3 --expected N --progress FILE
--group APP_ID --state-dir DIR [--prefix P]``. One Faust Table (RocksDB, JSON values, a
changelog record per event) keyed by customer id; see ``bench/naive_core.py`` for the work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
from benchkit import Progress, scenario_args
from faust_bare import bench_app, run
from naive_core import NaiveScorer, update


def main() -> int:
    """Run scenario (c) until stopped; return the exit code."""
    parser = scenario_args(__doc__ or "")
    parser.add_argument("--prefix", default="", help="topic prefix to strip from topic names")
    args = parser.parse_args()
    app = bench_app(args, "rocksdb://")
    progress = Progress(args.progress, args.expected)
    scorer = NaiveScorer()
    names = args.topics.split(",")
    unprefixed = {name: name.removeprefix(args.prefix) for name in names}
    inputs = app.topic(*names, key_serializer="raw", value_serializer="raw")
    customers = app.Table(
        "customers",
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        partitions=args.partitions,
    )

    @app.agent(inputs, name="naive")
    async def naive(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            decoded = scorer.decode(message.value, unprefixed[message.topic])
            state = update(customers.get(decoded.customer_id), decoded)
            customers[decoded.customer_id] = state
            scorer.score(state)
            progress.add()
            yield None

    run(app)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
