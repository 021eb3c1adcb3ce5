"""The shop live on the real broker: rate-limited events out, interventions in, truth beside."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from streams.core.events import event_from_dict
from streams.io.avro import default_codec
from streams.io.kafka_clients import iter_topic, producer
from streams.settings import Settings
from streams.sim.customers import customer_id_of
from streams.sim.effects import EffectConfig
from streams.sim.emit import at
from streams.sim.runner import run_live
from streams.sim.shop import SimConfig
from streams.sim.truth import read_truth

DAY_MS = 86_400_000


def _send_offer(settings: Settings, start_ms: int, delay_s: float) -> None:
    time.sleep(delay_s)
    record = {
        "intervention_id": "live-offer-1",
        "customer_id": customer_id_of(0),
        "kind": "offer",
        "channel": "email",
        "segment": "loyal",
        "reason": "integration test",
        "offer": None,
        "holdout": False,
        "suppressed_reason": None,
        "created_at": at(start_ms + 2 * DAY_MS),
        "expires_at": at(start_ms + 9 * DAY_MS),
        "deliver_after": None,
        "risk_change_id": None,
        "trigger": "timer",
        "model_version": None,
    }
    client = producer(settings)
    try:
        value = default_codec().encode("intervention", record)
        client.send(settings.topic("interventions"), key=b"cust-000000", value=value)
        client.flush(timeout=30)
    finally:
        client.close(timeout=10)


def test_live_mode_publishes_at_the_rate_and_applies_interventions(
    topic_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = topic_settings(partitions=2)
    effects = EffectConfig(respond={"loyal": 1.0}, channel_factor={"email": 1.0})
    config = SimConfig(customers=200, seed=3, days=None, acquisition_days=2, effects=effects)
    start_ms = int(config.start.timestamp() * 1000)
    sender = threading.Thread(target=_send_offer, args=(settings, start_ms, 2.0))
    sender.start()
    truth_path = tmp_path / "truth.jsonl"
    summary = run_live(settings, config, rate=400, speed=1.0, duration_s=6.0, truth_path=truth_path)
    sender.join()
    assert summary.events > 300
    # 400 events/s with a burst of a twentieth of a second: never much above the rate.
    assert summary.events <= 400 * summary.wall_s + 25
    published = 0
    kinds = {"clickstream": "click", "orders": "order", "customer-profiles": "profile"}
    for topic, kind in kinds.items():
        for record in iter_topic(settings, topic, from_beginning=True, timeout_s=2):
            # Published with the codec's trusted path: what landed must still be valid.
            value = {k: v for k, v in record["value"].items() if v is not None}
            event = event_from_dict(value, kind)
            assert record["key"] == event.customer_id
            published += 1
    assert published == summary.events
    truth = read_truth(truth_path)
    assert truth.end_ms is not None
    offer = truth.interventions["live-offer-1"]
    assert offer.delivered
    assert offer.responds
    assert summary.interventions == 1
