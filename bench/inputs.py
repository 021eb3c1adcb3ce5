"""The benchmark's input: shop events (simulator, or a built-in generator), Avro-encoded once.

:func:`shop_events` asks the project's simulator (``streams.sim.runner.run_batch``) for an
events file and falls back to :func:`generate_events` when the simulator is not usable; the
caller is told which source it got. :func:`encode_records` turns events into the exact
records the input topics hold (unprefixed topic, key = customer id, Confluent-framed Avro
value from the project's codec), and :func:`produce_records` writes them with the project's
producer, so every scenario reads byte-identical records.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from kafka.partitioner.default import murmur2

from streams.core.events import ClickEvent, Event, OrderEvent, ProfileEvent
from streams.io.avro import EVENT_SCHEMAS, default_codec, event_record
from streams.settings import Settings

CATEGORIES: Final[tuple[str, ...]] = ("books", "music", "games", "garden", "kitchen", "toys")
BRANDS: Final[tuple[str, ...]] = ("acme", "globex", "initech", "umbrella", "hooli")
CHANNELS: Final[tuple[str, ...]] = ("email", "chat", "push", "sms")
# Mean events of one session of the generator below (page view, product views, ...).
EVENTS_PER_SESSION: Final[float] = 3.4
PROFILE_SHARE: Final[float] = 0.3
BOUNCE_SHARE: Final[float] = 0.3
SIM_DAYS: Final[float] = 1.5


@dataclass(frozen=True, slots=True)
class Record:
    """One input record as it sits in Kafka: unprefixed topic, key and Avro value."""

    topic: str
    key: bytes
    value: bytes
    customer_id: str
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class Input:
    """The encoded input of a run and where it came from."""

    records: list[Record]
    source: str
    customers: int
    counts: dict[str, int]
    end_time: datetime


def _ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class _Customer:
    """Emits one generated customer's sessions: clicks, then sometimes an order."""

    def __init__(self, rng: random.Random, customer_id: str, tag: str = "") -> None:
        self.rng = rng
        self.customer_id = customer_id
        self.tag = tag
        self.sequence = 0
        self.orders = 0

    def _id(self, kind: str) -> str:
        self.sequence += 1
        return f"{self.customer_id}-{self.tag}{kind}{self.sequence}"

    def _click(self, session_id: str, at: datetime, action: str, **fields: Any) -> ClickEvent:
        return ClickEvent(
            event_id=self._id("c"),
            customer_id=self.customer_id,
            session_id=session_id,
            event_time=_ms(at),
            action=action,
            **fields,
        )

    def session(self, at: datetime) -> list[Event]:
        """Return the events of one visit starting at ``at``."""
        rng = self.rng
        session_id = self._id("s")
        events: list[Event] = [self._click(session_id, at, "page_view")]
        if rng.random() < BOUNCE_SHARE:
            return events
        category = rng.choice(CATEGORIES)
        price = 0.0
        views = 1 + min(5, int(rng.expovariate(0.7)))
        for _ in range(views):
            at += timedelta(seconds=rng.uniform(5, 90))
            price = round(rng.uniform(4, 120), 2)
            events.append(
                self._click(
                    session_id,
                    at,
                    "product_view",
                    product_id=f"p{rng.randrange(5000)}",
                    category=category,
                    brand=rng.choice(BRANDS),
                    price=price,
                )
            )
        if rng.random() < 0.35:
            at += timedelta(seconds=rng.uniform(5, 60))
            events.append(self._click(session_id, at, "search", category=category))
        if rng.random() < 0.03:
            at += timedelta(seconds=rng.uniform(5, 60))
            rating = rng.choice((1, 2, 4, 5, 5))
            events.append(self._click(session_id, at, "review", category=category, rating=rating))
        if rng.random() < 0.02:
            at += timedelta(seconds=rng.uniform(5, 60))
            events.append(self._click(session_id, at, "support_chat"))
        if rng.random() < 0.3:
            at += timedelta(seconds=rng.uniform(5, 60))
            events.append(
                self._click(session_id, at, "add_to_cart", category=category, price=price)
            )
            if rng.random() < 0.55:
                at += timedelta(seconds=rng.uniform(10, 120))
                events.append(self._click(session_id, at, "checkout_start"))
                if rng.random() < 0.8:
                    events.extend(self._order(at + timedelta(seconds=rng.uniform(10, 90))))
        return events

    def _order(self, at: datetime) -> list[Event]:
        rng = self.rng
        self.orders += 1
        order_id = f"{self.customer_id}-{self.tag}o{self.orders}"
        roll = rng.random()
        status = "paid" if roll < 0.9 else "payment_failed" if roll < 0.97 else "cancelled"
        amount = round(rng.uniform(8, 250), 2)
        order = OrderEvent(
            event_id=self._id("o"),
            customer_id=self.customer_id,
            order_id=order_id,
            event_time=_ms(at),
            amount=amount,
            currency="EUR",
            status=status,
            item_count=rng.randint(1, 4),
        )
        events: list[Event] = [order]
        if status == "paid" and rng.random() < 0.04:
            events.append(
                OrderEvent(
                    event_id=self._id("o"),
                    customer_id=self.customer_id,
                    order_id=order_id,
                    event_time=_ms(at + timedelta(days=rng.uniform(2, 20))),
                    amount=amount,
                    currency="EUR",
                    status=rng.choice(("refunded", "returned")),
                )
            )
        return events


def generate_events(
    customers: int,
    target_events: int,
    seed: int,
    start: datetime,
    span_days: float,
    id_prefix: str = "c",
    customer_ids: Sequence[str] | None = None,
    tag: str = "",
) -> list[Event]:
    """Return at least ``target_events`` events of exactly ``customers`` customers, time-sorted.

    Activity is heavy-tailed (log-normal weights): many customers visit once, a few often.
    About 30 % send a profile event when they sign up. Event times are in milliseconds.
    Customers are ``<id_prefix><number>`` unless ``customer_ids`` names them; ``tag`` keeps
    event, session and order ids apart from those of another call for the same customers.

    >>> events = generate_events(20, 100, 1, datetime(2024, 1, 1, tzinfo=UTC), 30)
    >>> len({e.customer_id for e in events}), len(events) >= 100
    (20, True)
    """
    rng = random.Random(seed)
    if customer_ids is not None:
        customers = len(customer_ids)
    span = timedelta(days=span_days)
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(customers)]
    # Everyone visits once; the sessions still missing for the target go by activity weight.
    base_events = customers * (EVENTS_PER_SESSION + PROFILE_SHARE)
    scale = max(0.0, target_events - base_events) / EVENTS_PER_SESSION / sum(weights or [1.0])
    people: list[_Customer] = []
    signups: list[datetime] = []
    events: list[Event] = []
    ids = list(customer_ids) if customer_ids is not None else []
    for number, weight in enumerate(weights):
        person = _Customer(rng, ids[number] if ids else f"{id_prefix}{number:07d}", tag)
        signup = start + span * rng.random() * 0.5
        people.append(person)
        signups.append(signup)
        if rng.random() < PROFILE_SHARE:
            events.append(
                ProfileEvent(
                    customer_id=person.customer_id,
                    event_time=_ms(signup),
                    email_opt_in=rng.random() < 0.8,
                    chat_opt_in=rng.random() < 0.5,
                    preferred_channel=rng.choice(CHANNELS),
                    timezone="Europe/Berlin",
                )
            )
        extra = weight * scale
        sessions = 1 + int(extra) + (rng.random() < extra - int(extra))
        for _ in range(sessions):
            events.extend(person.session(signup + (start + span - signup) * rng.random()))
    while len(events) < target_events:
        number = rng.randrange(customers)
        at = signups[number] + (start + span - signups[number]) * rng.random()
        events.extend(people[number].session(at))
    events.sort(key=lambda event: (event.event_time, event.customer_id))
    return events


def half_load_events(
    known_ids: Sequence[str],
    count: int,
    after: datetime,
    rate: float,
    seed: int,
    new_prefix: str = "h",
) -> list[Event]:
    """Return ``count`` events to send at ``rate`` per second, timed as if live from ``after``.

    Half come from customers already seen, half from new ones (whose first event always
    makes a first risk band). Event ``i`` is stamped ``after + i / rate`` seconds, so event
    time advances like wall time and no burst of timers fires.
    """
    rng = random.Random(seed)
    people = max(1, count // 8)
    known = rng.sample(list(known_ids), min(len(known_ids), people))
    new = [f"{new_prefix}{number:07d}" for number in range(people)]
    start = after + timedelta(seconds=1)
    events = generate_events(0, count, seed, start, 1.0, customer_ids=known + new, tag="h")
    return [
        replace(event, event_time=_ms(start + timedelta(seconds=index / rate)))
        for index, event in enumerate(events[:count])
    ]


def _simulator_events(customers: int, target_events: int, seed: int) -> list[Event]:
    """Return the simulator's events of ``customers`` customers (at least the target).

    Every customer signs up within the first simulated day and the run lasts a day and a
    half: the simulator's sign-up session alone is ~7 events, so 50k customers already give
    ~360k events, and a longer span would only add events the 10-minute budget cannot
    afford. :class:`~streams.sim.shop.Shop` is iterated directly (the pure core of
    ``run_batch``), with no events or truth file written.
    """
    from streams.sim.shop import Shop, SimConfig

    days = SIM_DAYS
    for _ in range(4):
        config = SimConfig(customers=customers, seed=seed, days=days, acquisition_days=1.0)
        events = list(Shop(config))
        seen = len({event.customer_id for event in events})
        if len(events) >= target_events and seen >= customers * 0.95:
            return events
        days *= 2
    msg = f"the simulator gave {len(events)} events of {seen} customers"
    raise RuntimeError(msg)


def shop_events(
    customers: int, target_events: int, seed: int, use_simulator: bool
) -> tuple[list[Event], str]:
    """Return the input events and a one-line description of where they came from."""
    if use_simulator:
        try:
            events = _simulator_events(customers, target_events, seed)
            source = (
                f"streams.sim simulator ({customers:,} customers signing up over 1 day, "
                f"{SIM_DAYS:g} days simulated, seed {seed})"
            )
            return events, source
        # The simulator is another module in progress: any failure means "use the fallback".
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:160]
            fallback = f"bench generator (simulator not usable: {reason})"
    else:
        fallback = "bench generator (--no-simulator)"
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    start = end - timedelta(days=60)
    return generate_events(customers, target_events, seed, start, 60.0), fallback


def encode_records(events: Iterable[Event]) -> list[Record]:
    """Return ``events`` as input records, in order, encoded by the project's Avro codec.

    The events are valid by construction, so the codec's ``trusted`` path (no validation
    pass; the writer still checks types) is used where the codec has one.
    """
    codec = default_codec()
    trusted = "trusted" in inspect.signature(codec.encode).parameters
    records = []
    for event in events:
        if trusted:
            schema = EVENT_SCHEMAS[event.event_type]
            topic = codec.registry.topic_of(schema)
            value = codec.encode(schema, event_record(event), trusted=True)
        else:
            topic, value = codec.encode_event(event)
        records.append(
            Record(
                topic=topic,
                key=event.customer_id.encode("utf-8"),
                value=value,
                customer_id=event.customer_id,
                event_time_ms=int(event.event_time.timestamp() * 1000),
            )
        )
    return records


def describe(records: Sequence[Record], source: str, events: Sequence[Event]) -> Input:
    """Return the run's input with its customer and per-topic counts."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.topic] = counts.get(record.topic, 0) + 1
    customers = len({record.customer_id for record in records})
    end_time = max(event.event_time for event in events)
    return Input(list(records), source, customers, counts, end_time)


def partition_of(key: bytes, partitions: int) -> int:
    """Return the partition Kafka's default partitioner (murmur2) gives ``key``, as the worker."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


async def _produce(
    bootstrap: str, topics: dict[str, str], partitions: int, records: Iterable[Record]
) -> None:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await client.start()
    try:
        batches: dict[tuple[str, int], Any] = {}
        sent = []
        for record in records:
            target = (topics[record.topic], partition_of(record.key, partitions))
            batch = batches.get(target)
            if batch is None:
                batch = batches[target] = client.create_batch()
            if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                sent.append(await client.send_batch(batch, target[0], partition=target[1]))
                batch = batches[target] = client.create_batch()
                batch.append(key=record.key, value=record.value, timestamp=None)
        for (topic, partition), batch in batches.items():
            if batch.record_count():
                sent.append(await client.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await client.stop()


def produce_records(settings: Settings, records: Sequence[Record], partitions: int) -> float:
    """Write ``records`` to the input topics of ``settings``' prefix; return the seconds taken.

    Each record goes to the partition of its key under murmur2 (Kafka's default partitioner,
    which the worker assumes), in batches through aiokafka: kafka-python's per-record
    producer manages only ~12k records/s here, too slow for the 10-minute budget.
    """
    started = time.perf_counter()
    topics = {name: settings.topic(name) for name in {record.topic for record in records}}
    asyncio.run(_produce(settings.broker, topics, partitions, records))
    return time.perf_counter() - started
