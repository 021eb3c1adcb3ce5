"""The known stream of the fault tests: deterministic, and one input topic per partition.

Buyers send orders (paid, failed payments, cancellations, returns), browsers sessions of
clicks, every tenth customer only profile updates; they come and go at their own rhythm and
some go quiet, so silence timers raise risk and interventions follow.

Each kind of customer gets its own input partition (ids are picked by their murmur2
partition). Faust consumes the three input topics round-robin, not in event-time order, and
a partition's watermark is the maximum over all three: with two topics on one partition, a
backlog on one topic makes the other's events late and fires silence timers early, so even
an uninterrupted live run differs from replay (``test_faults_state.py`` shows it with a
mixed stream). With one topic per partition Kafka's per-partition order is the event-time
order, every run has exactly one right answer, and a fault shows up as a difference from it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from kafka.partitioner.default import murmur2

from streams.core.events import ClickEvent, Event, OrderEvent, OrderItem, ProfileEvent

START = datetime(2024, 1, 1, tzinfo=UTC)
_CATEGORIES = ("books", "music", "games", "garden", "kitchen")
_BRANDS = ("acme", "globex", "initech", "umbrella")


def partition_of(customer_id: str, partitions: int) -> int:
    """Return the partition Kafka's default partitioner gives ``customer_id``."""
    return int((murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions)


# Which input partition each kind of customer lives on in the aligned stream (3 partitions).
ALIGNED_PARTITIONS: dict[str, int] = {"buyer": 0, "browser": 1, "profile": 2}


def aligned_id(kind: str, number: int, seed: int, partitions: int) -> str:
    """Return the first id ``k<seed>-<kind letter><number>-<j>`` on its kind's partition."""
    want = ALIGNED_PARTITIONS[kind] % partitions
    for suffix in range(10_000):
        customer_id = f"k{seed}-{kind[0]}{number:04d}-{suffix}"
        if partition_of(customer_id, partitions) == want:
            return customer_id
    raise AssertionError(f"no id of kind {kind!r} hashes to partition {want}")


def known_stream(
    customers: int = 60, days: int = 240, seed: int = 7, partitions: int | None = 3
) -> list[Event]:
    """Return a deterministic, event-time ordered stream where each customer uses one topic.

    With ``partitions`` set, customer ids are picked so buyers (orders) hash to partition 0,
    browsers (clicks) to 1 and profile-only customers to 2 (modulo ``partitions``); with
    None they are plain ``k<seed>-<number>`` and land wherever murmur2 puts them.

    Buyers (orders: paid, failed payments, cancellations, returns) and browsers (sessions of
    clicks, some low ratings and support chats) come and go at their own rhythm and some go
    quiet, so silence timers raise risk and interventions follow; every tenth customer only
    updates their profile. Times are whole seconds, so the Avro millisecond cut changes
    nothing.

    >>> events = known_stream(customers=4, days=30)
    >>> events == sorted(events, key=lambda event: event.event_time)
    True
    """
    rng = random.Random(seed)
    events: list[Event] = []
    for number in range(customers):
        kind = "profile" if number % 10 == 9 else ("buyer" if number % 2 == 0 else "browser")
        customer_id = (
            f"k{seed}-{number:04d}"
            if partitions is None
            else aligned_id(kind, number, seed, partitions)
        )
        if kind == "profile":
            events.extend(_profile_updates(customer_id, rng, days))
        elif kind == "buyer":
            events.extend(_buyer(customer_id, rng, days))
        else:
            events.extend(_browser(customer_id, rng, days))
    events.sort(key=lambda event: (event.event_time, _id_of(event)))
    return events


def _id_of(event: Event) -> str:
    return event.effective_event_id if isinstance(event, ProfileEvent) else event.event_id


def _at(rng: random.Random, day: float) -> datetime:
    return START + timedelta(seconds=int(day * 86_400) + rng.randrange(0, 3600))


def _buyer(customer_id: str, rng: random.Random, days: int) -> list[Event]:
    events: list[Event] = []
    gap_days = rng.uniform(6, 35)
    quits_at = rng.uniform(20, days * 1.4)
    day = rng.uniform(0, gap_days)
    number = 0
    while day < min(days, quits_at):
        number += 1
        order_id = f"{customer_id}-o{number}"
        amount = round(rng.uniform(8, 220), 2)
        roll = rng.random()
        items = (OrderItem(f"sku-{rng.randrange(50)}", 1, amount, rng.choice(_CATEGORIES)),)
        if roll < 0.12:
            events.append(_order(customer_id, order_id, _at(rng, day), amount, "payment_failed"))
            if rng.random() < 0.5:  # recovered a day later
                events.append(_order(customer_id, order_id, _at(rng, day + 1), amount, "paid"))
        else:
            events.append(_order(customer_id, order_id, _at(rng, day), amount, "paid", items))
            if roll > 0.93:
                status = rng.choice(("cancelled", "returned", "refunded"))
                events.append(_order(customer_id, order_id, _at(rng, day + 2), amount, status))
        day += rng.expovariate(1.0 / gap_days)
    return events


def _order(
    customer_id: str,
    order_id: str,
    at: datetime,
    amount: float,
    status: str,
    items: tuple[OrderItem, ...] | None = None,
) -> OrderEvent:
    return OrderEvent(
        event_id=f"{order_id}-{status}",
        customer_id=customer_id,
        order_id=order_id,
        event_time=at,
        amount=amount,
        currency="EUR",
        status=status,  # type: ignore[arg-type] # test data: statuses are from ORDER_STATUSES
        item_count=None if items is None else len(items),
        items=items,
    )


def _browser(customer_id: str, rng: random.Random, days: int) -> list[Event]:
    events: list[Event] = []
    gap_days = rng.uniform(3, 25)
    quits_at = rng.uniform(15, days * 1.4)
    day = rng.uniform(0, gap_days)
    session = 0
    while day < min(days, quits_at):
        session += 1
        session_id = f"{customer_id}-s{session}"
        start = _at(rng, day)
        actions = ["page_view", "product_view", "product_view", "add_to_cart"]
        if rng.random() < 0.5:
            actions.append("checkout_start")
        if rng.random() < 0.15:
            actions.append(rng.choice(("review", "support_chat", "search")))
        for step, action in enumerate(actions):
            rating = rng.randint(1, 5) if action == "review" else None
            events.append(
                ClickEvent(
                    event_id=f"{session_id}-c{step}",
                    customer_id=customer_id,
                    session_id=session_id,
                    event_time=start + timedelta(minutes=2 * step),
                    action=action,
                    product_id=f"p{rng.randrange(40)}",
                    category=rng.choice(_CATEGORIES),
                    brand=rng.choice(_BRANDS),
                    price=round(rng.uniform(5, 90), 2),
                    rating=rating,
                )
            )
        day += rng.expovariate(1.0 / gap_days)
    return events


def _profile_updates(customer_id: str, rng: random.Random, days: int) -> list[Event]:
    events: list[Event] = []
    for update in range(rng.randint(2, 5)):
        events.append(
            ProfileEvent(
                customer_id=customer_id,
                event_time=_at(rng, rng.uniform(0, days)),
                email_opt_in=rng.random() < 0.7,
                chat_opt_in=rng.random() < 0.5,
                timezone=rng.choice(("Europe/Berlin", "America/New_York", "UTC")),
                preferred_channel=rng.choice(("email", "chat", "push")),
                event_id=f"{customer_id}-p{update}",
            )
        )
    return events
