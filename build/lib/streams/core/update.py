"""Folding one input event into a customer's state (counts, rhythm, preferences, consent)."""

from __future__ import annotations

from streams.core.config import ScoringConfig
from streams.core.events import ClickEvent, Event, OrderEvent, ProfileEvent
from streams.core.state import COUNTER_INDEX, CustomerState

_SECONDS_PER_DAY = 86_400.0
# The usual gap is an exponentially weighted mean: recent rhythm matters more than the
# first months, but one odd gap should not swing it.
_GAP_WEIGHT = 0.3
_COUNTED_ORDER_STATUSES = frozenset({"placed", "paid", "delivered"})
_FAILURE_COUNTERS = {
    "payment_failed": "failed_payments",
    "cancelled": "cancellations",
    "refunded": "refunds",
    "returned": "returns",
}
_CLICK_COUNTERS = {
    "product_view": "product_views",
    "search": "searches",
    "add_to_cart": "cart_adds",
    "checkout_start": "checkout_starts",
    "support_chat": "support_chats",
}
_LOW_RATING = 2


def apply_event(state: CustomerState, event: Event, now_s: float, config: ScoringConfig) -> None:
    """Fold ``event`` into ``state`` in place, as of ``now_s`` (counters already decayed)."""
    if isinstance(event, OrderEvent):
        _apply_order(state, event, now_s, config)
    elif isinstance(event, ClickEvent):
        _apply_click(state, event, now_s, config)
    else:
        _apply_profile(state, event)


def is_new_order(state: CustomerState, event: OrderEvent) -> bool:
    """Return whether ``event`` is a purchase not counted yet.

    Status updates of one order (placed, paid, delivered) usually arrive close together, so
    remembering only the last order id counts each order once without an unbounded id set.
    """
    return event.status in _COUNTED_ORDER_STATUSES and event.order_id != state.last_order_id


def _ewma(previous: float | None, value: float) -> float:
    return value if previous is None else previous + _GAP_WEIGHT * (value - previous)


def _apply_order(
    state: CustomerState, event: OrderEvent, now_s: float, config: ScoringConfig
) -> None:
    failure = _FAILURE_COUNTERS.get(event.status)
    if failure is not None:
        state.counters[COUNTER_INDEX[failure]] += 1.0
        if event.status == "payment_failed":
            state.unrecovered_failed_payments = min(state.unrecovered_failed_payments + 1, 99)
        return
    if not is_new_order(state, event):
        return
    if state.last_order_s is not None:
        gap_days = max(0.0, (now_s - state.last_order_s) / _SECONDS_PER_DAY)
        state.order_gap_days = _ewma(state.order_gap_days, gap_days)
    if state.first_order_s is None:
        state.first_order_s = now_s
    state.last_order_s = now_s
    state.last_order_id = event.order_id
    state.unrecovered_failed_payments = 0
    state.order_count += 1
    state.spend += event.amount
    state.counters[COUNTER_INDEX["orders"]] += 1.0
    state.session_checked_out = True
    for item in event.items or ():
        _prefer(state.categories, item.category, float(item.qty), config.top_k_preferences)
        _prefer(state.brands, item.brand, float(item.qty), config.top_k_preferences)


def _apply_click(
    state: CustomerState, event: ClickEvent, now_s: float, config: ScoringConfig
) -> None:
    counters = state.counters
    timed_out = (
        state.last_visit_s is not None and now_s - state.last_visit_s > config.session_timeout_s
    )
    if event.session_id != state.last_session_id or timed_out:
        if state.session_has_cart and not state.session_checked_out:
            counters[COUNTER_INDEX["abandoned_carts"]] += 1.0
        if state.last_visit_s is not None:
            gap_days = max(0.0, (now_s - state.last_visit_s) / _SECONDS_PER_DAY)
            state.visit_gap_days = _ewma(state.visit_gap_days, gap_days)
        state.session_count += 1
        state.last_session_id = event.session_id
        state.session_has_cart = False
        state.session_checked_out = False
        counters[COUNTER_INDEX["sessions"]] += 1.0
    state.last_visit_s = now_s
    counter = _CLICK_COUNTERS.get(event.action)
    if counter is not None:
        counters[COUNTER_INDEX[counter]] += 1.0
    if event.action == "add_to_cart":
        state.session_has_cart = True
    elif event.action == "checkout_start":
        state.session_checked_out = True
    elif event.action == "review" and event.rating is not None:
        counters[COUNTER_INDEX["rating_sum"]] += float(event.rating)
        counters[COUNTER_INDEX["rating_count"]] += 1.0
        if event.rating <= _LOW_RATING:
            counters[COUNTER_INDEX["low_ratings"]] += 1.0
    if event.action in ("product_view", "add_to_cart"):
        weight = 2.0 if event.action == "add_to_cart" else 1.0
        _prefer(state.categories, event.category, weight, config.top_k_preferences)
        _prefer(state.brands, event.brand, weight, config.top_k_preferences)


def _apply_profile(state: CustomerState, event: ProfileEvent) -> None:
    if event.email_opt_in is not None:
        state.email_opt_in = event.email_opt_in
    if event.sms_opt_in is not None:
        state.sms_opt_in = event.sms_opt_in
    if event.push_opt_in is not None:
        state.push_opt_in = event.push_opt_in
    if event.chat_opt_in is not None:
        state.chat_opt_in = event.chat_opt_in
    if event.preferred_channel is not None:
        state.preferred_channel = event.preferred_channel
    if event.timezone is not None:
        state.timezone = event.timezone


def _prefer(prefs: dict[str, float], name: str | None, weight: float, top_k: int) -> None:
    """Add ``weight`` to ``name`` keeping at most ``top_k`` entries (the lightest is evicted).

    >>> prefs = {"jazz": 3.0, "rock": 1.0}
    >>> _prefer(prefs, "pop", 2.0, top_k=2); sorted(prefs)
    ['jazz', 'pop']
    """
    if not name:
        return
    if name in prefs:
        prefs[name] += weight
        return
    if len(prefs) >= top_k:
        # Ties evict the alphabetically first name, so the outcome never depends on order.
        lightest = min(prefs, key=lambda key: (prefs[key], key))
        if prefs[lightest] > weight:
            return
        del prefs[lightest]
    prefs[name] = weight
