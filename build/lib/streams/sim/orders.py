"""An order's whole life, decided when it is placed and emitted with its future times.

Payment (sometimes failing; half the failures are retried and paid), maybe a cancellation
and refund, delivery (sometimes late), maybe a review (late deliveries rate lower), maybe a
return and refund, and support chats about the trouble. Each bad experience adds log-odds to
the dropout check at the end of the order's experience.
"""

from __future__ import annotations

from typing import Final

from streams.core.events import OrderItem
from streams.sim.customers import DAY_MS, HOUR_MS, MINUTE_MS, Customer, Product
from streams.sim.emit import Sink, Visit, order_event

BUMP_FAILED_UNRECOVERED: Final[float] = 1.4
BUMP_FAILED_RECOVERED: Final[float] = 0.3
BUMP_CANCELLED: Final[float] = 1.0
BUMP_LATE: Final[float] = 0.8
BUMP_LOW_RATING: Final[float] = 1.2
BUMP_RETURN: Final[float] = 0.6


def place_order(customer: Customer, sink: Sink, now: int, cart: list[Product]) -> tuple[int, float]:
    """Emit the order's whole life; return when its experience ends and its dropout bump."""
    traits, rng = customer.traits, customer.rng
    customer.orders += 1
    order_id = f"{traits.customer_id}-o{customer.orders}"
    items = tuple(
        OrderItem(
            sku=p.product_id,
            qty=1 if rng.chance(0.85) else 2,
            price=round(p.price_eur * traits.currency_factor, 2),
            category=p.category,
            brand=p.brand,
        )
        for p in cart
    )
    amount = round(sum(item.qty * item.price for item in items), 2)
    count = sum(item.qty for item in items)
    sink.event(
        now, order_event(customer, order_id, now, amount, "placed", item_count=count, items=items)
    )
    customer.record_purchase(now)
    aside = Visit(customer, sink, now, f"{traits.customer_id}-h{customer.orders}")
    bump = 0.0
    paid = now + int(rng.uniform(20, 180) * 1000)
    if rng.chance(traits.p_payment_failure):
        sink.event(paid, order_event(customer, order_id, paid, amount, "payment_failed"))
        if not rng.chance(0.5):
            customer.unrecovered = (order_id, amount, paid)
            if rng.chance(0.25):
                aside.now = paid + int(rng.uniform(5, 90) * MINUTE_MS)
                aside.click("support_chat")
            return paid + 2 * DAY_MS, BUMP_FAILED_UNRECOVERED
        paid += int(rng.uniform(5, 360) * MINUTE_MS)
        bump += BUMP_FAILED_RECOVERED
    sink.event(paid, order_event(customer, order_id, paid, amount, "paid"))
    customer.record_purchase(paid)
    if rng.chance(traits.p_cancel):
        cancelled = paid + int(rng.uniform(1, 30) * HOUR_MS)
        refunded = cancelled + int(rng.uniform(1, 3) * DAY_MS)
        sink.event(cancelled, order_event(customer, order_id, cancelled, amount, "cancelled"))
        sink.event(refunded, order_event(customer, order_id, refunded, amount, "refunded"))
        return refunded + DAY_MS, bump + BUMP_CANCELLED
    late = rng.chance(traits.p_late_delivery)
    delivered = paid + int((1.0 + rng.expovariate(1 / 1.5)) * DAY_MS)
    if late:
        bump += BUMP_LATE
        if rng.chance(0.4):
            aside.now = delivered + int(rng.uniform(1, 3) * DAY_MS)
            aside.click("support_chat")
        delivered += int(rng.uniform(4, 12) * DAY_MS)
    sink.event(delivered, order_event(customer, order_id, delivered, amount, "delivered"))
    end = delivered
    rating = None
    if rng.chance(traits.p_review + (0.25 if late else 0.0)):
        mood = traits.mood - (1.5 if late else 0.0) + 0.8 * rng.gauss()
        rating = min(5, max(1, round(mood)))
        review = Visit(customer, sink, delivered, f"{traits.customer_id}-r{customer.orders}")
        review.now = delivered + int(rng.uniform(0.5, 5) * DAY_MS)
        review.click("review", rng.choice(cart), rating=rating)
        end = review.now
        if rating <= 2:
            bump += BUMP_LOW_RATING
    if rng.chance(traits.p_return + (0.3 if rating is not None and rating <= 2 else 0.0)):
        returned = delivered + int(rng.uniform(3, 14) * DAY_MS)
        refunded = returned + int(rng.uniform(2, 5) * DAY_MS)
        sink.event(returned, order_event(customer, order_id, returned, amount, "returned"))
        sink.event(refunded, order_event(customer, order_id, refunded, amount, "refunded"))
        if rng.chance(0.3):
            aside.now = returned + int(rng.uniform(1, 48) * HOUR_MS)
            aside.click("support_chat")
        bump += BUMP_RETURN
        end = max(end, refunded)
    return end + DAY_MS, bump
