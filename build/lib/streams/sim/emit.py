"""How simulated customers emit: the sink they write to, exact times, clicks and orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from streams.core.events import ClickEvent, Event, OrderEvent, OrderStatus
from streams.sim.customers import Customer, Product

EPOCH: Final[datetime] = datetime(1970, 1, 1, tzinfo=UTC)


class Sink(Protocol):
    """Where a customer's actions go: events (with their times) and ground-truth records."""

    def event(self, when_ms: int, event: Event) -> None:
        """Take one event that happens at ``when_ms``."""

    def truth(self, record: dict[str, Any]) -> None:
        """Take one ground-truth record (dropout, revival)."""


def at(when_ms: int) -> datetime:
    """Return epoch milliseconds as an exact aware UTC datetime.

    >>> at(1_704_067_200_123).isoformat()
    '2024-01-01T00:00:00.123000+00:00'
    """
    return EPOCH + timedelta(milliseconds=when_ms)


def iso(when_ms: int) -> str:
    """Return epoch milliseconds as ISO-8601 with a ``Z`` (the events-file form)."""
    return at(when_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Visit:
    """Emits the clicks of one visit, each a little after the previous one."""

    def __init__(self, customer: Customer, sink: Sink, now: int, session_id: str) -> None:
        self.customer, self.sink, self.now, self.session_id = customer, sink, now, session_id

    def click(self, action: str, product: Product | None = None, rating: int | None = None) -> None:
        """Emit one click now and move the visit's clock on by a human pause."""
        customer = self.customer
        price = None
        if product is not None:
            price = round(product.price_eur * customer.traits.currency_factor, 2)
        self.sink.event(
            self.now,
            ClickEvent(
                event_id=customer.next_event_id(),
                customer_id=customer.traits.customer_id,
                session_id=self.session_id,
                event_time=at(self.now),
                action=action,
                product_id=None if product is None else product.product_id,
                category=None if product is None else product.category,
                brand=None if product is None else product.brand,
                price=price,
                rating=rating,
            ),
        )
        self.now += 3_000 + int(customer.rng.expovariate(1.0 / 40.0) * 1000)


def order_event(
    customer: Customer, order_id: str, when: int, amount: float, status: OrderStatus, **extra: Any
) -> OrderEvent:
    """Return an order event of ``customer`` with a fresh id, in their currency."""
    return OrderEvent(
        event_id=customer.next_event_id(),
        customer_id=customer.traits.customer_id,
        order_id=order_id,
        event_time=at(when),
        amount=amount,
        currency=customer.traits.currency,
        status=status,
        **extra,
    )
