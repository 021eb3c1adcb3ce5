"""``churnstream demo``: a local broker, the topics, events flowing, and what arrives shown live."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.core.events import Event
from streams.io import kafka_local
from streams.io.events_file import read_events
from streams.io.kafka_clients import create_topics, iter_topic, produce_events
from streams.settings import Settings
from streams.sim.sample import sample_events

SHARED_SAMPLE = kafka_local.REPO_ROOT.parent / "shared" / "data" / "cdnow_sample_orders.jsonl.gz"


def demo_events() -> tuple[str, Iterator[Event]]:
    """Return a description and the events the demo publishes (real CDNOW data if present)."""
    if SHARED_SAMPLE.is_file():
        return f"real CDNOW orders from {SHARED_SAMPLE}", read_events(SHARED_SAMPLE)
    return "the built-in sample shop", sample_events()


def _line(record: dict[str, Any]) -> str:
    value = record.get("value") or {}
    if not isinstance(value, dict):
        return f"{record.get('key')}: (undecodable) {record.get('error', '')}"
    when = str(value.get("event_time", ""))[:10]
    if "order_id" in value:
        status = value.get("status", "placed")
        amount = f"{value.get('amount', 0):.2f} {value.get('currency', '')}"
        return f"{when}  order  {record.get('key'):<10} {amount:>12}  {status}"
    return f"{when}  {value.get('action', 'event'):<8} {record.get('key')}"


def run_demo(settings: Settings, seconds: float | None = None, data_dir: Path | None = None) -> int:
    """Run the demo until ``seconds`` pass or Ctrl-C; stop everything it started; return 0."""
    kafka_dir = data_dir or settings.data_dir / "kafka"
    was_running, _ = kafka_local.broker_status(kafka_dir)
    started = time.monotonic()
    print(f"starting the local Apache Kafka broker in {kafka_dir} ...", flush=True)
    info = kafka_local.broker_up(kafka_dir)
    print(f"broker ready at {info.bootstrap} after {time.monotonic() - started:.1f}s", flush=True)
    try:
        live = Settings.load({}, {"broker": info.bootstrap, "topic_prefix": settings.topic_prefix})
        created = create_topics(live)
        print(f"topics ready ({len(created)} created)", flush=True)
        description, events = demo_events()
        print(f"publishing {description} ...", flush=True)
        counts: dict[str, int] = {}
        producer = threading.Thread(
            target=lambda: counts.update(produce_events(live, events)), daemon=True
        )
        producer.start()
        deadline = None if seconds is None else started + seconds
        shown = 0
        remaining = None if deadline is None else max(deadline - time.monotonic(), 1.0)
        for record in iter_topic(live, "orders", from_beginning=True, timeout_s=remaining or 3600):
            shown += 1
            if shown <= 20 or shown % 500 == 0:
                print(f"[{shown:>6}] {_line(record)}", flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
        producer.join(timeout=30)
        print(f"shown {shown} records; produced {counts or 'in progress'}", flush=True)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        if not was_running:
            with contextlib.suppress(KeyboardInterrupt):
                kafka_local.broker_down(kafka_dir)
                print("broker stopped", flush=True)
    return 0
