"""Input events of the shop (orders, clicks, profile updates) as plain frozen values.

Everything the edge (Avro codec, events-file reader) accepts is turned into one of these
types by :func:`event_from_dict`, which validates every field and raises
:class:`~streams.errors.ValidationError` naming the bad one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

from streams.core.currencies import CURRENCIES
from streams.errors import ValidationError

OrderStatus: TypeAlias = Literal[
    "placed", "paid", "payment_failed", "cancelled", "refunded", "returned", "delivered"
]
ORDER_STATUSES: Final[frozenset[str]] = frozenset(
    {"placed", "paid", "payment_failed", "cancelled", "refunded", "returned", "delivered"}
)
CLICK_ACTIONS: Final[frozenset[str]] = frozenset(
    {
        "page_view",
        "product_view",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout_start",
        "review",
        "support_chat",
        "login",
        "wishlist_add",
    }
)
CHANNELS: Final[frozenset[str]] = frozenset({"chat", "email", "sms", "push"})
MAX_AMOUNT: Final[float] = 10_000_000.0
MAX_ID_LENGTH: Final[int] = 128
# Producers' clocks drift and time zones get mangled; a day ahead is generous, a year ahead
# is a bug that would otherwise push the watermark (and every timer) into the future.
MAX_FUTURE_SKEW: Final[timedelta] = timedelta(days=1)
MIN_EVENT_TIME: Final[datetime] = datetime(1990, 1, 1, tzinfo=UTC)

EventType: TypeAlias = Literal["order", "click", "profile"]


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One line of an order."""

    sku: str
    qty: int
    price: float
    category: str | None = None
    brand: str | None = None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An order and what happened to it (placed, paid, payment failed, cancelled, ...)."""

    event_id: str
    customer_id: str
    order_id: str
    event_time: datetime
    amount: float
    currency: str
    status: OrderStatus = "placed"
    item_count: int | None = None
    items: tuple[OrderItem, ...] | None = None

    event_type: Literal["order"] = "order"


@dataclass(frozen=True, slots=True)
class ClickEvent:
    """One clickstream action of a customer in a session."""

    event_id: str
    customer_id: str
    session_id: str
    event_time: datetime
    action: str
    product_id: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    rating: int | None = None

    event_type: Literal["click"] = "click"


@dataclass(frozen=True, slots=True)
class ProfileEvent:
    """A change to a customer's consent, time zone or preferred channel (None = unchanged)."""

    customer_id: str
    event_time: datetime
    email_opt_in: bool | None = None
    sms_opt_in: bool | None = None
    push_opt_in: bool | None = None
    chat_opt_in: bool | None = None
    timezone: str | None = None
    preferred_channel: str | None = None
    event_id: str | None = None

    event_type: Literal["profile"] = "profile"

    @property
    def effective_event_id(self) -> str:
        """The event id, or a deterministic one derived from customer and time."""
        if self.event_id is not None:
            return self.event_id
        return f"profile:{self.customer_id}:{int(self.event_time.timestamp() * 1000)}"


Event: TypeAlias = OrderEvent | ClickEvent | ProfileEvent

_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "order": ("event_id", "customer_id", "order_id", "event_time", "amount", "currency"),
    "click": ("event_id", "customer_id", "session_id", "event_time", "action"),
    "profile": ("customer_id", "event_time"),
}
_OPTIONAL: Final[dict[str, tuple[str, ...]]] = {
    "order": ("status", "item_count", "items"),
    "click": ("product_id", "category", "brand", "price", "rating"),
    "profile": (
        "event_id",
        "email_opt_in",
        "sms_opt_in",
        "push_opt_in",
        "chat_opt_in",
        "timezone",
        "preferred_channel",
    ),
}
EVENT_FIELDS: Final[dict[str, frozenset[str]]] = {
    kind: frozenset({"event_type", *_REQUIRED[kind], *_OPTIONAL[kind]}) for kind in _REQUIRED
}
_ITEM_FIELDS: Final[frozenset[str]] = frozenset({"sku", "qty", "price", "category", "brand"})


def event_id_of(event: Event) -> str:
    """Return the id that identifies ``event`` for de-duplication."""
    if isinstance(event, ProfileEvent):
        return event.effective_event_id
    return event.event_id


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"field {field!r}: {message}", field=field)


def _id(raw: Mapping[str, Any], field: str) -> str:
    value = raw[field]
    # "empty or only whitespace", as ``not value.strip()`` but without building a copy
    if not isinstance(value, str) or not value or value.isspace():
        raise _fail(field, f"must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise _fail(field, f"longer than {MAX_ID_LENGTH} characters")
    return value


def _opt_str(raw: Mapping[str, Any], field: str, max_len: int = 256) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(field, f"must be a string or null, got {value!r}")
    if len(value) > max_len:
        raise _fail(field, f"longer than {max_len} characters")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(field, f"must be finite, got {value!r}")
    return number


def _opt_bool(raw: Mapping[str, Any], field: str) -> bool | None:
    value = raw.get(field)
    if value is None or isinstance(value, bool):
        return value
    raise _fail(field, f"must be true, false or null, got {value!r}")


def parse_event_time(value: Any, field: str = "event_time") -> datetime:
    """Return ``value`` (ISO-8601 string with offset, or aware datetime) as aware UTC, in ms.

    Times are cut to the millisecond, the precision of the Avro contract, so an event read
    from a file (replay) and the same event read from Kafka (live) are the same event.

    >>> parse_event_time("2024-03-01T12:00:00Z").isoformat()
    '2024-03-01T12:00:00+00:00'
    """
    if isinstance(value, datetime):
        if value.tzinfo is UTC and not value.microsecond % 1000:
            return value  # already aware UTC in whole ms (what the Avro decoder gives)
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise _fail(field, f"not an ISO-8601 time: {value!r}") from exc
    else:
        raise _fail(field, f"must be an ISO-8601 string, got {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _fail(field, f"needs a time zone (use 'Z' for UTC): {value!r}")
    utc = parsed.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def _check_time(when: datetime, now: datetime | None, field: str = "event_time") -> datetime:
    if when < MIN_EVENT_TIME:
        raise _fail(field, f"{when.isoformat()} is before {MIN_EVENT_TIME.date()}")
    if now is not None and when > now + MAX_FUTURE_SKEW:
        raise _fail(field, f"{when.isoformat()} is in the future (now {now.isoformat()})")
    return when


def _items(value: Any) -> tuple[OrderItem, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _fail("items", f"must be a list or null, got {value!r}")
    items: list[OrderItem] = []
    for index, raw_item in enumerate(value):
        field = f"items[{index}]"
        if not isinstance(raw_item, Mapping):
            raise _fail(field, f"must be an object, got {raw_item!r}")
        unknown = set(raw_item) - _ITEM_FIELDS
        if unknown:
            raise _fail(field, f"unknown fields {sorted(unknown)}")
        for required in ("sku", "qty", "price"):
            if raw_item.get(required) is None:
                raise _fail(f"{field}.{required}", "is required")
        qty = raw_item["qty"]
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise _fail(f"{field}.qty", f"must be a positive integer, got {qty!r}")
        price = _number(raw_item["price"], f"{field}.price")
        if price < 0:
            raise _fail(f"{field}.price", f"must not be negative, got {price!r}")
        items.append(
            OrderItem(
                sku=_id(raw_item, "sku"),
                qty=qty,
                price=price,
                category=_opt_str(raw_item, "category"),
                brand=_opt_str(raw_item, "brand"),
            )
        )
    return tuple(items)


def _order(raw: Mapping[str, Any], now: datetime | None) -> OrderEvent:
    amount = _number(raw["amount"], "amount")
    if amount < 0 or amount > MAX_AMOUNT:
        raise _fail("amount", f"must be between 0 and {MAX_AMOUNT:.0f}, got {amount!r}")
    currency = raw["currency"]
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise _fail("currency", f"unknown ISO 4217 currency code {currency!r}")
    status: OrderStatus = raw.get("status") or "placed"
    if not isinstance(status, str) or status not in ORDER_STATUSES:
        raise _fail("status", f"must be one of {sorted(ORDER_STATUSES)}, got {status!r}")
    item_count = raw.get("item_count")
    if item_count is not None and (
        isinstance(item_count, bool) or not isinstance(item_count, int) or item_count < 0
    ):
        raise _fail("item_count", f"must be a non-negative integer, got {item_count!r}")
    return OrderEvent(
        event_id=_id(raw, "event_id"),
        customer_id=_id(raw, "customer_id"),
        order_id=_id(raw, "order_id"),
        event_time=_check_time(parse_event_time(raw["event_time"]), now),
        amount=amount,
        currency=currency,
        status=status,
        item_count=item_count,
        items=_items(raw.get("items")),
    )


def _click(raw: Mapping[str, Any], now: datetime | None) -> ClickEvent:
    action = raw["action"]
    if not isinstance(action, str) or action not in CLICK_ACTIONS:
        raise _fail("action", f"must be one of {sorted(CLICK_ACTIONS)}, got {action!r}")
    price_raw = raw.get("price")
    price = None if price_raw is None else _number(price_raw, "price")
    if price is not None and price < 0:
        raise _fail("price", f"must not be negative, got {price!r}")
    rating = raw.get("rating")
    if rating is not None and (
        isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5
    ):
        raise _fail("rating", f"must be an integer from 1 to 5, got {rating!r}")
    return ClickEvent(
        event_id=_id(raw, "event_id"),
        customer_id=_id(raw, "customer_id"),
        session_id=_id(raw, "session_id"),
        event_time=_check_time(parse_event_time(raw["event_time"]), now),
        action=action,
        product_id=_opt_str(raw, "product_id"),
        category=_opt_str(raw, "category"),
        brand=_opt_str(raw, "brand"),
        price=price,
        rating=rating,
    )


def _profile(raw: Mapping[str, Any], now: datetime | None) -> ProfileEvent:
    channel = raw.get("preferred_channel")
    if channel is not None and (not isinstance(channel, str) or channel not in CHANNELS):
        raise _fail("preferred_channel", f"must be one of {sorted(CHANNELS)}, got {channel!r}")
    timezone = _opt_str(raw, "timezone", max_len=64)
    return ProfileEvent(
        customer_id=_id(raw, "customer_id"),
        event_time=_check_time(parse_event_time(raw["event_time"]), now),
        email_opt_in=_opt_bool(raw, "email_opt_in"),
        sms_opt_in=_opt_bool(raw, "sms_opt_in"),
        push_opt_in=_opt_bool(raw, "push_opt_in"),
        chat_opt_in=_opt_bool(raw, "chat_opt_in"),
        timezone=timezone,
        preferred_channel=channel,
        event_id=None if raw.get("event_id") is None else _id(raw, "event_id"),
    )


def event_from_dict(
    raw: Mapping[str, Any], event_type: str | None = None, now: datetime | None = None
) -> Event:
    """Return the validated event that ``raw`` describes, or raise ``ValidationError``.

    ``event_type`` defaults to ``raw["event_type"]``. ``now`` (aware UTC), when given,
    rejects event times more than a day in the future.

    >>> event_from_dict({"event_type": "click", "event_id": "e1", "customer_id": "c1",
    ...     "session_id": "s1", "event_time": "2024-01-01T00:00:00Z", "action": "search"}).action
    'search'
    """
    kind = event_type if event_type is not None else raw.get("event_type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        raise _fail("event_type", f"must be one of {sorted(_REQUIRED)}, got {kind!r}")
    allowed = EVENT_FIELDS[kind]
    if not allowed.issuperset(raw):
        unknown = set(raw) - allowed
        raise _fail(sorted(unknown)[0], f"is not a field of a {kind} event")
    required = _REQUIRED[kind]
    if None in map(raw.get, required):  # one C-level pass; name the field only on failure
        for field in required:
            if raw.get(field) is None:
                raise _fail(field, f"is required for a {kind} event")
    if kind == "order":
        return _order(raw, now)
    if kind == "click":
        return _click(raw, now)
    return _profile(raw, now)


def event_to_dict(event: Event) -> dict[str, Any]:
    """Return ``event`` as a JSON-ready dict (the events-file form), omitting null optionals."""
    out: dict[str, Any] = {"event_type": event.event_type}
    for field in (*_REQUIRED[event.event_type], *_OPTIONAL[event.event_type]):
        value = getattr(event, field)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        elif field == "items":
            value = [{k: v for k, v in _item_dict(item).items() if v is not None} for item in value]
        out[field] = value
    return out


def _item_dict(item: OrderItem) -> dict[str, Any]:
    return {
        "sku": item.sku,
        "qty": item.qty,
        "price": item.price,
        "category": item.category,
        "brand": item.brand,
    }
