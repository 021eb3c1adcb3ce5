"""R2 with the project's own sample stream: customers whose events span the three topics.

The other fault tests use the aligned known stream (one input topic per partition, see
tests/faults/harness.py). This one spreads every customer's events over clickstream, orders
and customer-profiles and produces them all before the worker starts (a backlog). Faust
consumes the three topics round-robin by fetch, not by event time, and a partition's
watermark is the maximum over all three; without the worker's event-time merge of its input
topics (streams/core/merge.py, as Kafka Streams' PartitionGroup):

- with a backlog (a start, a restart after a crash, a lagging topic) the topic that is read
  faster pushes the watermark ahead; silence timers of customers on the slower topic fire
  early, and their own later-arriving events are then folded in as *late* events;
- a customer's click and the order that followed it can be applied in the other order.

The states (visit counters, sessions, preferences, pending snapshots) then differ from
replay's, and so do intermediate scores and risk changes. With the merge they are equal.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.io.avro import default_codec
from streams.settings import Settings
from streams.sim.sample import sample_events
from tests.faults.harness import produce_all, report, wait_caught_up
from tests.faults.verdict import as_of_after, changelog_states, compare_states, replay_states
from tests.support.processes import WorkerProcess


def test_a_backlog_of_the_sample_stream_ends_in_the_state_replay_computes(
    fault_settings: Callable[..., Settings],
    workers: Callable[..., WorkerProcess],
) -> None:
    settings = fault_settings(partitions=2)
    codec = default_codec()
    # through the wire format and back: event times cut to milliseconds, as the worker sees them
    events = [
        codec.decode_event(codec.encode_event(event)[1])
        for event in sample_events(customers=40, days=150, seed=11)
    ]
    produce_all(settings, events)
    worker = workers(settings)
    worker.start().wait_ready()
    wait_caught_up(settings, worker=worker)
    worker.stop()
    check = compare_states(changelog_states(settings), replay_states(events), as_of_after(events))
    report("R2-mixed-topics", {"events": len(events), **check.summary()})
    assert check.ok, check.summary()
