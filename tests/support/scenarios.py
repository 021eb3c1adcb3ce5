"""Crafted event streams with a known story, shared by unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.core.events import ClickEvent, Event, OrderEvent

START = datetime(2024, 1, 1, 12, tzinfo=UTC)


def _order(customer_id: str, number: int, at: datetime, status: str = "paid") -> OrderEvent:
    return OrderEvent(
        event_id=f"{customer_id}-o{number}-{status}",
        customer_id=customer_id,
        order_id=f"{customer_id}-o{number}",
        event_time=at,
        amount=40.0,
        currency="EUR",
        status=status,  # type: ignore[arg-type] # test data: statuses are from ORDER_STATUSES
        item_count=2,
    )


def _visit(customer_id: str, number: int, at: datetime) -> ClickEvent:
    return ClickEvent(
        event_id=f"{customer_id}-v{number}",
        customer_id=customer_id,
        session_id=f"{customer_id}-s{number}",
        event_time=at,
        action="product_view",
        category="music",
        price=20.0,
    )


def failed_payments_then_silence(customer_id: str = "risky") -> list[Event]:
    """Return a regular buyer who has two failed payments and goes quiet, while others go on.

    ``customer_id`` orders every 10 days for 120 days (visiting in between), then two
    payments fail within a week and nothing follows. A steady customer keeps ordering for
    another 120 days, which moves the partition's watermark through the silence.
    """
    events: list[Event] = []
    for number in range(13):
        at = START + timedelta(days=10 * number)
        events.append(_visit(customer_id, number, at - timedelta(hours=1)))
        events.append(_order(customer_id, number, at))
    quiet_from = START + timedelta(days=125)
    events.append(_order(customer_id, 100, quiet_from, "payment_failed"))
    events.append(_order(customer_id, 101, quiet_from + timedelta(days=3), "payment_failed"))
    for number in range(26):
        at = START + timedelta(days=10 * number)
        events.append(_visit("steady", number, at - timedelta(hours=2)))
        events.append(_order("steady", number, at))
    events.sort(key=lambda event: (event.event_time, event.event_id))
    return events
