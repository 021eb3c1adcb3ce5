"""The live worker on the real broker: risk changes with reasons, dead letters, model swaps,
and the same final state as replay."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.core.config import ScoringConfig
from streams.core.events import OrderEvent
from streams.core.model import FrozenLinearModel
from streams.core.records import to_s
from streams.core.scoring import score_as_of
from streams.core.state import CustomerState
from streams.io.avro import default_codec
from streams.io.events_file import read_events, write_events
from streams.io.kafka_clients import produce_events, producer
from streams.replay import ReplayOptions, run_replay
from streams.settings import Settings
from streams.sim.sample import sample_events
from tests.support.processes import (
    TopicWatcher,
    WorkerProcess,
    consumer_caught_up,
    read_topic,
    wait_for,
)
from tests.support.scenarios import START, failed_payments_then_silence

PINNED = {"CHURNSTREAM_TRAIN": "false"}


def test_failed_payments_and_silence_raise_a_high_risk_change_naming_both(
    topic_settings: Callable[..., Settings], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = topic_settings(partitions=1)
    produce_events(settings, failed_payments_then_silence("risky"))
    start_worker(settings, **PINNED)
    changes = TopicWatcher(settings, "risk-changes")
    try:
        high = changes.wait_until(
            lambda values: [
                v
                for v in values
                if v["customer_id"] == "risky"
                and v["to_band"] in {"HIGH", "CRITICAL"}
                and v["as_of"] > START + timedelta(days=100)
            ],
            timeout_s=90,
            what="a HIGH/CRITICAL risk change for 'risky' after its failed payments",
        )
    finally:
        changes.close()
    first = high[0]
    codes = [reason["code"] for reason in first["reasons"]]
    assert "failed_payments" in codes
    assert {"no_recent_order", "no_recent_visit"} & set(codes)
    texts = " | ".join(reason["text"] for reason in first["reasons"])
    assert "2 failed payments" in texts
    assert first["trigger"] == "timer"
    assert first["model_version"] == "prior-0"


def test_poison_records_go_to_dead_letters_and_the_next_good_record_is_scored(
    topic_settings: Callable[..., Settings], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = topic_settings(partitions=1)
    codec = default_codec()
    good = next(e for e in sample_events(customers=1, days=30) if e.event_type == "order")
    _, good_value = codec.encode_event(good)
    client = producer(settings)
    orders = settings.topic("orders")
    client.send(orders, key=b"poison-1", value=b"\x13\x37 not avro at all")
    client.send(orders, key=b"poison-2", value=b"\x00\x00\x00\x03\xe7" + good_value[5:])
    client.send(orders, key=b"poison-3", value=good_value[:8])
    # a good record keyed by something else than its customer is re-keyed, not lost
    client.send(orders, key=b"keyed-by-order", value=good_value)
    client.flush()
    client.close()
    start_worker(settings, **PINNED)

    dead = TopicWatcher(settings, "dead-letters")
    scores = TopicWatcher(settings, "churn-scores")
    try:
        wait_for(lambda: len(dead.poll()) >= 3, 90, "three dead letters")
        scored = scores.wait_until(
            lambda values: [v for v in values if v["customer_id"] == good.customer_id],
            timeout_s=60,
            what="a score of the good record after the poison ones",
        )
    finally:
        dead.close()
        scores.close()
    assert scored[0]["trigger"] == "order"
    headers = [dict(record.headers) for record in dead.records]
    reasons = [h["churnstream.errors.reason"].decode() for h in headers]
    assert reasons == ["wrong_magic_byte", "unknown_schema_id", "truncated"]
    for h, record in zip(headers, dead.records, strict=True):
        assert h["churnstream.errors.topic"].decode() == orders
        assert h["churnstream.errors.partition"] == b"0"
        assert h["churnstream.errors.class.name"] == b"DecodeError"
        assert h["churnstream.errors.exception.message"]
        assert record.key.startswith(b"poison-")
    offsets = [int(h["churnstream.errors.offset"]) for h in headers]
    assert offsets == [0, 1, 2]


def test_the_trainers_new_model_version_reaches_the_scorer(
    topic_settings: Callable[..., Settings], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = topic_settings(partitions=2)
    produce_events(settings, sample_events(customers=60, days=360, seed=3))
    start_worker(settings, CHURNSTREAM_SNAPSHOT_EVERY="20")
    models = TopicWatcher(settings, "churn-models")
    scores = TopicWatcher(settings, "churn-scores")
    probes: list[str] = []

    def probe_scored_with_a_trained_model() -> list[dict[str, Any]]:
        # Each probe is a new customer's order, sent after a snapshot was published: once the
        # scorer swapped the snapshot in, the probe's score names the trained version.
        customer_id = f"probe-{len(probes)}"
        probes.append(customer_id)
        produce_events(settings, [_probe_order(customer_id)])
        scores.poll()
        return [
            v
            for v in scores.values()
            if v["customer_id"] in probes and v["model_version"].startswith("m-")
        ]

    try:
        models.wait_until(lambda values: values, timeout_s=120, what="a model snapshot")
        learned = wait_for(
            probe_scored_with_a_trained_model, 60, "a probe scored with a trained model", 0.5
        )
        models.poll()
    finally:
        scores.close()
        models.close()
    published = {value["model_version"] for value in models.values()}
    assert learned[0]["model_version"] in published
    assert all(len(value["signature"]) == 64 for value in models.values())


def _probe_order(customer_id: str) -> OrderEvent:
    return OrderEvent(
        event_id=f"{customer_id}-order",
        customer_id=customer_id,
        order_id=f"{customer_id}-order",
        event_time=START + timedelta(days=400),
        amount=25.0,
        currency="EUR",
    )


def _live_states(settings: Settings) -> dict[str, CustomerState]:
    changelog = f"{settings.topic_prefix}churnstream-customers-changelog"
    states: dict[str, CustomerState] = {}
    for record in read_topic(settings, changelog, timeout_s=10):
        customer_id = json.loads(record.key)
        if record.value is None:
            states.pop(customer_id, None)
        else:
            states[customer_id] = CustomerState.from_dict(json.loads(record.value))
    return states


def test_the_live_worker_ends_in_the_state_replay_computes(
    tmp_path: Path,
    topic_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = topic_settings(partitions=2)
    events_file = tmp_path / "events.jsonl.gz"
    write_events(events_file, sample_events(customers=40, days=150, seed=11))
    events = list(read_events(events_file))
    produce_events(settings, read_events(events_file))
    worker = start_worker(settings, **PINNED)
    wait_for(
        lambda: consumer_caught_up(settings, f"{settings.topic_prefix}churnstream"),
        120,
        "the worker to commit every input record",
        poll_s=0.5,
    )
    worker.stop()
    as_of = max(event.event_time for event in events) + timedelta(days=7)
    replayed = {
        s.customer_id: s for s in run_replay(events, as_of, ReplayOptions(snapshot_every=10**9))
    }
    live_states = _live_states(settings)
    assert set(live_states) == set(replayed)

    model = FrozenLinearModel.prior_only()
    mismatches: list[Any] = []
    for customer_id, state in sorted(live_states.items()):
        _, out = score_as_of(state, to_s(as_of), model, ScoringConfig())
        live = out.scores[-1]
        expected = replayed[customer_id]
        if (live.score, live.band, live.model_version) != (
            expected.score,
            expected.band,
            expected.model_version,
        ):
            mismatches.append((customer_id, live.score, expected.score, live.band, expected.band))
    assert mismatches == []


def test_in_live_mode_silence_rescores_without_any_new_record(
    topic_settings: Callable[..., Settings], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = topic_settings(partitions=1)
    grace = timedelta(days=1)
    now = datetime.now(UTC).replace(microsecond=0)
    # The 30-days-of-silence milestone falls ~10 s after the watermark (wall clock minus
    # grace) of the moment the records arrive: only the idle wall-clock tick can fire it.
    last_order = now - grace - timedelta(days=30) + timedelta(seconds=10)
    orders = [
        OrderEvent(
            f"live-o{n}",
            "live",
            f"live-o{n}",
            last_order - timedelta(days=7 * n),
            30.0,
            "EUR",
            "paid",
            1,
        )
        for n in range(10)
    ]
    produce_events(settings, sorted(orders, key=lambda order: order.event_time))
    start_worker(
        settings, CHURNSTREAM_TRAIN="false", CHURNSTREAM_WALL_GRACE_S=str(grace.total_seconds())
    )
    milestone = last_order + timedelta(days=30)
    scores = TopicWatcher(settings, "churn-scores")
    try:
        woken = scores.wait_until(
            lambda values: [
                v
                for v in values
                if v["customer_id"] == "live"
                and v["trigger"] == "timer"
                and v["as_of"] >= milestone
            ],
            timeout_s=60,
            what="a score woken by the wall clock after the records stopped",
        )
    finally:
        scores.close()
    assert woken[0]["as_of"] <= datetime.now(UTC) - grace
