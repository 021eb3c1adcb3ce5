"""A small built-in events sample, for the demo when no real data file is at hand."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from streams.core.events import ClickEvent, Event, OrderEvent, ProfileEvent

_CATEGORIES = ("books", "music", "games", "garden", "kitchen")
_BRANDS = ("acme", "globex", "initech", "umbrella")


def sample_events(customers: int = 50, days: int = 120, seed: int = 7) -> Iterator[Event]:
    """Yield a deterministic, event-time ordered mix of profiles, clicks and orders.

    >>> events = list(sample_events(customers=3, days=10))
    >>> events == sorted(events, key=lambda event: event.event_time)
    True
    """
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events: list[Event] = []
    for number in range(customers):
        customer_id = f"sample-{number:04d}"
        events.append(
            ProfileEvent(
                customer_id=customer_id,
                event_time=start,
                email_opt_in=rng.random() < 0.8,
                chat_opt_in=rng.random() < 0.6,
                preferred_channel=rng.choice(("email", "chat", "push")),
                timezone="Europe/Berlin",
            )
        )
        gap_days = rng.uniform(5, 40)
        quits_at = rng.uniform(10, days * 1.5)
        at = start + timedelta(days=rng.uniform(0, gap_days))
        sequence = 0
        while (at - start).days < min(days, quits_at):
            session_id = f"{customer_id}-s{sequence}"
            category = rng.choice(_CATEGORIES)
            for action in ("page_view", "product_view", "add_to_cart", "checkout_start"):
                sequence += 1
                events.append(
                    ClickEvent(
                        event_id=f"{customer_id}-c{sequence}",
                        customer_id=customer_id,
                        session_id=session_id,
                        event_time=at + timedelta(minutes=sequence % 60),
                        action=action,
                        category=category,
                        brand=rng.choice(_BRANDS),
                        price=round(rng.uniform(5, 80), 2),
                    )
                )
            failed = rng.random() < 0.08
            events.append(
                OrderEvent(
                    event_id=f"{customer_id}-o{sequence}",
                    customer_id=customer_id,
                    order_id=f"{customer_id}-o{sequence}",
                    event_time=at + timedelta(hours=1),
                    amount=round(rng.uniform(10, 120), 2),
                    currency="EUR",
                    status="payment_failed" if failed else "paid",
                    item_count=rng.randint(1, 4),
                )
            )
            at += timedelta(days=rng.expovariate(1 / gap_days))
    # Milliseconds, as on the wire: the sample is the same whether read from a file or Kafka.
    events = [
        replace(
            e, event_time=e.event_time.replace(microsecond=e.event_time.microsecond // 1000 * 1000)
        )
        for e in events
    ]
    events.sort(key=lambda event: (event.event_time, event.customer_id))
    yield from events
