"""R9: a soak at ~70 % of measured capacity; lag must stay bounded and RSS flat after warm-up.

Usage (from the repository root)::

    .venv/bin/python bench/soak.py                  # 10 minutes at 70 % (about 13 minutes)
    .venv/bin/python bench/soak.py --minutes 2 --load 0.5

Starts its own local broker in a temporary directory (always stopped at the end), then:

1. **capacity**: a backlog of ``--capacity-events`` is produced and one worker (the full
   pipeline: scoring, interventions, trainer) works through it; capacity is the rate its
   group commits input offsets at, once it runs;
2. **soak**: on fresh topics a worker runs for ``--minutes`` while a producer sends a steady
   ``--load`` x capacity events/s of a synthetic shop (``--customers`` customers with their
   own rhythm, long absences that wake silence timers, orders and failed payments). Every
   5 s the group's input lag (records produced but not committed) and the worker's RSS are
   sampled.

After ``--warmup-minutes`` (default 4: event time crosses the first 90-day label horizon at a
quarter of the soak, and the trainer's first burst must be behind): lag is *bounded* if it
never exceeds ``--max-lag-s`` seconds of input, and RSS is *flat* if it grew by at most 10 %
(and 30 MiB). The warm-up's own peak lag and RSS are reported too. Prints a table of samples,
then one JSON object (the last line) with the numbers and both verdicts; exit status 1 if
either fails.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streams.core.events import ClickEvent, Event, OrderEvent  # noqa: E402 - after sys.path
from streams.io import kafka_local  # noqa: E402
from streams.io.avro import default_codec  # noqa: E402
from streams.io.kafka_clients import create_topics, producer  # noqa: E402
from streams.settings import INPUT_TOPICS, Settings  # noqa: E402
from tests.faults.harness import EndOffsets, committed_offsets  # noqa: E402
from tests.support.processes import WorkerProcess, wait_for  # noqa: E402

SAMPLE_EVERY_S = 5.0
# Event time the soak covers, whatever its length and rate. Labels resolve one horizon (90
# days) after their snapshots, so the trainer's first burst comes a quarter of the way in:
# the warm-up must cover it.
EVENT_DAYS_SPAN = 360.0


def shop(customers: int, events_per_day: float, seed: int) -> Iterator[Event]:
    """Yield an endless, event-time ordered stream of a shop with a fixed set of customers.

    Each customer visits at their own mean gap (sessions of 3-5 clicks, a quarter of them
    ending in an order, a few in a failed payment); one visit in ten is followed by a long
    absence, so silence timers fire. The mean gap is chosen so the whole shop makes about
    ``events_per_day`` events per event-time day. Times stay more than a day in the past.
    """
    rng = random.Random(seed)
    mean_gap_days = customers * 4.5 / events_per_day
    start = datetime.now(UTC) - timedelta(days=EVENT_DAYS_SPAN + 30)
    queue: list[tuple[float, int]] = [
        (rng.uniform(0, mean_gap_days), number) for number in range(customers)
    ]
    heapq.heapify(queue)
    sessions = [0] * customers
    while True:
        day, number = heapq.heappop(queue)
        customer_id = f"soak-{number:06d}"
        sessions[number] += 1
        session_id = f"{customer_id}-s{sessions[number]}"
        at = start + timedelta(days=day)
        for step, action in enumerate(rng.sample(("page_view", "product_view", "search"), 3)):
            yield ClickEvent(
                f"{session_id}-c{step}",
                customer_id,
                session_id,
                at + timedelta(seconds=30 * step),
                action,
                category=rng.choice(("books", "music", "games")),
                price=round(rng.uniform(5, 60), 2),
            )
        roll = rng.random()
        if roll < 0.25:
            status = "payment_failed" if roll < 0.03 else "paid"
            yield OrderEvent(
                f"{session_id}-o",
                customer_id,
                f"{session_id}-o",
                at + timedelta(minutes=3),
                round(rng.uniform(10, 150), 2),
                "EUR",
                status,  # type: ignore[arg-type] # one of ORDER_STATUSES
            )
        gap = rng.expovariate(1.0 / mean_gap_days)
        if rng.random() < 0.1:
            gap += rng.uniform(5, 10) * mean_gap_days
        heapq.heappush(queue, (day + gap, number))


class Feeder(threading.Thread):
    """Sends ``events`` at ``rate_per_s`` until stopped; counts what it sent."""

    def __init__(self, settings: Settings, events: Iterator[Event], rate_per_s: float) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self.settings = settings
        self.events = events
        self.rate_per_s = rate_per_s
        self.sent = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Produce in small paced bursts until :attr:`stopping` is set."""
        codec = default_codec()
        client = producer(self.settings)
        began = time.monotonic()
        try:
            while not self.stopping.is_set():
                for _ in range(50):
                    event = next(self.events)
                    topic, value = codec.encode_event(event)
                    client.send(
                        self.settings.topic(topic), key=event.customer_id.encode(), value=value
                    )
                    self.sent += 1
                ahead_s = self.sent / self.rate_per_s - (time.monotonic() - began)
                if ahead_s > 0:
                    self.stopping.wait(ahead_s)
            client.flush(timeout=60)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            client.close(timeout=10)


def rss_mib(pid: int) -> float:
    """Return the resident set size of ``pid`` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def lag(settings: Settings, inputs: EndOffsets) -> int:
    """Return input records produced but not yet committed by the worker group."""
    ends = inputs.by_partition()
    committed = committed_offsets(settings)
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())


def new_settings(bootstrap: str, name: str) -> Settings:
    """Return settings with fresh topics (4 partitions) named after ``name``."""
    settings = Settings.load(
        {}, {"broker": bootstrap, "topic_prefix": f"{name}-{uuid.uuid4().hex[:6]}-"}
    )
    create_topics(settings)
    return settings


def measure_capacity(bootstrap: str, work: Path, events: int, customers: int) -> float:
    """Return the events/s one worker commits while working through a backlog."""
    settings = new_settings(bootstrap, "capacity")
    feeder = Feeder(settings, shop(customers, 2000.0, seed=1), rate_per_s=1e9)
    feeder.start()
    wait_for(lambda: feeder.sent >= events or feeder.error, 600, "the backlog", poll_s=0.2)
    feeder.stopping.set()
    feeder.join()
    if feeder.error is not None:
        raise feeder.error
    worker = WorkerProcess(settings, work / "capacity")
    inputs = EndOffsets(settings, INPUT_TOPICS)
    try:
        worker.start().wait_ready(timeout_s=180)
        total = inputs.total()
        # Measure between 10 % and 90 % of the backlog: start-up and the tail left out.
        wait_for(lambda: total - lag(settings, inputs) >= 0.1 * total, 600, "10 %", 0.2)
        began, done_at_start = time.monotonic(), total - lag(settings, inputs)
        wait_for(lambda: total - lag(settings, inputs) >= 0.9 * total, 1800, "90 %", 0.2)
        done = total - lag(settings, inputs) - done_at_start
        return done / (time.monotonic() - began)
    finally:
        inputs.close()
        worker.stop()


def soak(args: argparse.Namespace, bootstrap: str, work: Path, rate: float) -> dict[str, Any]:
    """Run the worker for ``args.minutes`` at ``rate`` events/s; return the samples' verdict."""
    settings = new_settings(bootstrap, "soak")
    events_per_day = rate * args.minutes * 60 / EVENT_DAYS_SPAN
    worker = WorkerProcess(settings, work / "soak")
    worker.start().wait_ready(timeout_s=180)
    assert worker.process is not None
    feeder = Feeder(settings, shop(args.customers, events_per_day, seed=2), rate)
    inputs = EndOffsets(settings, INPUT_TOPICS)
    samples: list[dict[str, float]] = []
    began = time.monotonic()
    feeder.start()
    try:
        while time.monotonic() - began < args.minutes * 60:
            time.sleep(SAMPLE_EVERY_S)  # the sampling period, not synchronisation
            if feeder.error is not None:
                raise feeder.error
            if worker.process.poll() is not None:
                msg = f"the worker died during the soak:\n{worker.log_tail()}"
                raise RuntimeError(msg)
            sample = {
                "t_s": round(time.monotonic() - began, 1),
                "sent": feeder.sent,
                "lag": lag(settings, inputs),
                "rss_mib": round(rss_mib(worker.process.pid), 1),
            }
            samples.append(sample)
            print(
                f"{sample['t_s']:7.1f}s sent={sample['sent']:>8} lag={sample['lag']:>6} "
                f"rss={sample['rss_mib']:7.1f} MiB",
                flush=True,
            )
    finally:
        feeder.stopping.set()
        feeder.join()
        inputs.close()
        worker.stop()
    return verdict(args, rate, samples)


def verdict(
    args: argparse.Namespace, rate: float, samples: list[dict[str, float]]
) -> dict[str, Any]:
    """Return lag and RSS numbers after warm-up and whether they are bounded and flat."""
    warm = [s for s in samples if s["t_s"] >= args.warmup_minutes * 60]
    cold = [s for s in samples if s["t_s"] < args.warmup_minutes * 60]
    if len(warm) < 2:
        msg = "the soak ended before the warm-up did: use more --minutes"
        raise RuntimeError(msg)
    lags = [s["lag"] for s in warm]
    rss = [s["rss_mib"] for s in warm]
    minutes = (warm[-1]["t_s"] - warm[0]["t_s"]) / 60
    first_rss = statistics.mean(rss[: max(1, len(rss) // 10)])
    last_rss = statistics.mean(rss[-max(1, len(rss) // 10) :])
    growth = last_rss - first_rss
    sent_rate = (samples[-1]["sent"] - samples[0]["sent"]) / (
        samples[-1]["t_s"] - samples[0]["t_s"]
    )
    max_lag = args.max_lag_s * rate
    return {
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "target_events_per_s": round(rate, 1),
        "sent_events_per_s": round(sent_rate, 1),
        "events_sent": int(samples[-1]["sent"]),
        "lag_after_warmup": {
            "max": max(lags),
            "p95": sorted(lags)[int(0.95 * (len(lags) - 1))],
            "median": statistics.median(lags),
            "last": lags[-1],
        },
        "lag_bound": max_lag,
        "during_warmup": {
            "lag_max": max((s["lag"] for s in cold), default=0),
            "rss_mib_max": max((s["rss_mib"] for s in cold), default=0.0),
        },
        "rss_mib_after_warmup": {
            "first": round(first_rss, 1),
            "last": round(last_rss, 1),
            "max": max(rss),
            "growth": round(growth, 1),
            "growth_mib_per_min": round(growth / minutes, 2) if minutes else 0.0,
        },
        "lag_bounded": max(lags) <= max_lag,
        "rss_flat": growth <= max(0.1 * first_rss, 0.0) and growth <= 30.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure capacity, soak at ``--load`` of it, print the verdict; 1 if it failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=4.0)
    parser.add_argument("--load", type=float, default=0.7, help="share of measured capacity")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--capacity-events", type=int, default=40_000)
    parser.add_argument("--max-lag-s", type=float, default=10.0, help="lag bound, seconds of input")
    parser.add_argument("--rate", type=float, help="skip the capacity run: soak at this rate")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="churnstream-soak-") as tmp:
        work = Path(tmp)
        info = kafka_local.broker_up(work / "kafka")
        try:
            capacity = (
                args.rate / args.load
                if args.rate
                else measure_capacity(info.bootstrap, work, args.capacity_events, args.customers)
            )
            print(f"capacity: {capacity:.0f} events/s; soak at {args.load:.0%}", flush=True)
            result = soak(args, info.bootstrap, work, capacity * args.load)
        finally:
            kafka_local.broker_down(work / "kafka")
    result = {"capacity_events_per_s": round(capacity, 1), "load": args.load, **result}
    print(json.dumps({"soak": result}, sort_keys=True))
    return 0 if result["lag_bounded"] and result["rss_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
