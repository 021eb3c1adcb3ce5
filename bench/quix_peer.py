"""Scenario (e): the peer, Quix Streams doing (c)'s work with per-key state and a changelog.

Usage: ``python bench/quix_peer.py --broker B --topics T1,T2,T3 --expected N --progress FILE
--group GROUP --state-dir DIR [--prefix P]``. The three input topics are concatenated into
one StreamingDataFrame whose stateful ``update`` decodes each record, reads and writes the
customer's state (RocksDB, changelog topic) and scores it: the same per-event work as the
naive Faust design (``bench/naive_core.py``), on another framework.
"""

from __future__ import annotations

import logging
from typing import Any

from benchkit import Progress, scenario_args
from naive_core import NaiveScorer, update
from quixstreams import Application, message_context
from quixstreams.state import State


def main() -> int:
    """Run scenario (e) until the expected records were processed; return the exit code."""
    parser = scenario_args(__doc__ or "")
    parser.add_argument("--prefix", default="", help="topic prefix to strip from topic names")
    args = parser.parse_args()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=str(args.state_dir),
        use_changelog_topics=True,
        commit_interval=1.0,
        loglevel=logging.WARNING,
    )
    progress = Progress(args.progress, args.expected)
    scorer = NaiveScorer()
    names = args.topics.split(",")
    unprefixed = {name: name.removeprefix(args.prefix) for name in names}
    frames = [
        app.dataframe(app.topic(name, key_deserializer="str", value_deserializer="bytes"))
        for name in names
    ]
    stream = frames[0]
    for frame in frames[1:]:
        stream = stream.concat(frame)

    def naive(value: bytes, state: State[Any, Any]) -> Any:
        decoded = scorer.decode(value, unprefixed[message_context().topic])
        customer = update(state.get("customer"), decoded)
        state.set("customer", customer)
        scorer.score(customer)
        if progress.add():
            app.stop()
        return None

    stream.update(naive, stateful=True)
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
