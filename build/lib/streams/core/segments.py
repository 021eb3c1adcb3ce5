"""What to offer whom: the retention playbook's segments and immediate triggers as plans.

A :class:`Plan` says what the router would like to do (segment, kind, offer terms, why);
the guard rails (consent, cooldown, caps, quiet hours, holdout) then decide whether and
when it happens. Plans are ordered candidates: the first one with an allowed channel wins,
so a high-value customer who never allowed chat still gets the offer of their segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from streams.core.config import BANDS
from streams.core.events import ClickEvent, OrderEvent
from streams.core.intervention_config import InterventionConfig
from streams.core.records import RiskChange
from streams.core.state import CustomerState

# A review at or below this rating is a complaint: support reaches out.
LOW_RATING: Final[int] = 2
SERVICE_SEGMENTS: Final[frozenset[str]] = frozenset({"payment_recovery", "service_recovery"})
SEGMENTS: Final[tuple[str, ...]] = (
    "high_value_at_risk",
    "never_ordered",
    "low_value_early",
    "early",
    "loyal",
    "payment_recovery",
    "cancellation",
    "service_recovery",
)
# Offer codes start with a readable prefix so support staff can tell them apart.
CODE_PREFIXES: Final[dict[str, str]] = {
    "never_ordered": "FIRST",
    "low_value_early": "SAVE",
    "early": "NEXT",
    "loyal": "MEMBER",
    "cancellation": "BACK",
}


@dataclass(frozen=True, slots=True)
class Offer:
    """A retention offer (``code`` is filled in from the intervention id)."""

    code: str = ""
    discount_percent: float | None = None
    amount_off: float | None = None
    currency: str | None = None
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    member_only: bool = False

    def to_record(self) -> dict[str, Any]:
        """Return the ``Offer`` Avro record."""
        return {
            "code": self.code,
            "discount_percent": self.discount_percent,
            "amount_off": self.amount_off,
            "currency": self.currency,
            "categories": list(self.categories),
            "brands": list(self.brands),
            "member_only": self.member_only,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Offer:
        """Return the offer an ``Offer`` record (or its JSON form) describes."""
        return cls(
            code=str(record["code"]),
            discount_percent=record.get("discount_percent"),
            amount_off=record.get("amount_off"),
            currency=record.get("currency"),
            categories=tuple(record.get("categories") or ()),
            brands=tuple(record.get("brands") or ()),
            member_only=bool(record.get("member_only", False)),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """One candidate action for a customer, before the guard rails."""

    segment: str
    kind: str
    reason: str
    offer: Offer | None = None
    source_id: str = ""
    trigger: str = ""
    risk_change_id: str | None = None
    model_version: str | None = None

    @property
    def is_service(self) -> bool:
        """Whether this is a service message (looser consent, per-kind cooldown)."""
        return self.segment in SERVICE_SEGMENTS


def is_rising_into(change: RiskChange, act_from_band: str, first_band: bool = False) -> bool:
    """Return whether ``change`` moves a customer up into ``act_from_band`` or above
    (a first band counts only with ``first_band``).

    >>> from datetime import UTC, datetime
    >>> change = RiskChange("r", "c", "MEDIUM", "HIGH", 0.7, 0.5, (), "m", datetime.now(UTC), "t")
    >>> is_rising_into(change, "HIGH"), is_rising_into(change, "CRITICAL")
    (True, False)
    """
    if change.from_band is None and not first_band:
        return False
    to_index = BANDS.index(change.to_band)
    from_index = -1 if change.from_band is None else BANDS.index(change.from_band)
    return to_index > from_index and to_index >= BANDS.index(act_from_band)


def plans_for_risk_change(
    customer: CustomerState, change: RiskChange, currency: str | None, config: InterventionConfig
) -> list[Plan]:
    """Return the candidate plans for a risk change, best first (empty: nothing to do)."""
    if not is_rising_into(change, config.act_from_band, config.act_on_first_band):
        return []
    # Timers caught up by an event fire first, so a risk change can be stale by the time it is
    # routed: the customer has since come down a band or ordered. No "we miss you" then.
    if customer.band is not None and BANDS.index(customer.band) < BANDS.index(change.to_band):
        return []
    if customer.last_order_s is not None and customer.last_order_s > change.as_of.timestamp():
        return []
    why = f"risk {change.from_band or 'new'} -> {change.to_band}"
    if change.reasons:
        why += f" ({change.reasons[0].text})"
    common: dict[str, Any] = {
        "source_id": change.event_id,
        "trigger": change.trigger,
        "risk_change_id": change.event_id,
        "model_version": change.model_version,
    }
    plans: list[Plan] = []
    high_risk = BANDS.index(change.to_band) >= BANDS.index("HIGH")
    if high_risk and config.value_tier(customer.spend) == "high":
        reason = f"{why}; high value at high risk: a human agent reaches out on live chat"
        plans.append(Plan("high_value_at_risk", "chat", reason, **common))
    segment, offer, what = _history_offer(customer, currency, config)
    plans.append(Plan(segment, "offer", f"{why}; {what}", offer, **common))
    return plans


def plans_for_event(event: OrderEvent | ClickEvent, config: InterventionConfig) -> list[Plan]:
    """Return the plans an order or click triggers right away (empty: not a trigger)."""
    if isinstance(event, OrderEvent):
        common: dict[str, Any] = {"source_id": f"{event.event_id}:{event.status}"}
        order = f"order {event.order_id}"
        if event.status == "payment_failed":
            reason = f"payment failed for {order}: help the customer complete it"
            return [Plan("payment_recovery", "message", reason, trigger="order", **common)]
        if event.status == "cancelled":
            reason = f"{order} was cancelled: ask why and win the customer back"
            offer = Offer(discount_percent=config.winback_percent)
            return [Plan("cancellation", "offer", reason, offer, trigger="order", **common)]
        if event.status == "returned":
            reason = f"{order} was returned: support reaches out"
            return [Plan("service_recovery", "message", reason, trigger="order", **common)]
        return []
    if event.action == "review" and event.rating is not None and event.rating <= LOW_RATING:
        subject = f"product {event.product_id}" if event.product_id else "a product"
        reason = f"rated {subject} {event.rating}/5: support reaches out"
        return [
            Plan("service_recovery", "message", reason, source_id=event.event_id, trigger="click")
        ]
    return []


def _history_offer(
    customer: CustomerState, currency: str | None, config: InterventionConfig
) -> tuple[str, Offer, str]:
    """Return (segment, offer, plain-words reason) from the customer's purchase history."""
    orders = customer.order_count
    if orders == 0:
        offer = Offer(discount_percent=config.first_order_percent)
        return "never_ordered", offer, "never ordered: strong first-order coupon"
    if orders >= 3:
        offer = Offer(
            discount_percent=config.member_percent,
            categories=favourites(customer.categories, config.favourites),
            brands=favourites(customer.brands, config.favourites),
            member_only=True,
        )
        return "loyal", offer, f"{orders} orders: favourites plus a member-only coupon"
    average = customer.spend / orders
    if average < config.low_order_value:
        what = f"{orders} order(s) averaging {average:.2f}: an offer at their price level"
        if currency is None:
            # Without a currency an amount is meaningless; a percentage scales the same way.
            return "low_value_early", Offer(discount_percent=config.early_percent), what
        amount = max(config.min_amount_off, round(average * config.price_level_share))
        return "low_value_early", Offer(amount_off=float(amount), currency=currency), what
    offer = Offer(discount_percent=config.early_percent)
    return "early", offer, f"{orders} order(s) averaging {average:.2f}: a next-order coupon"


def favourites(weights: dict[str, float], top: int) -> tuple[str, ...]:
    """Return the ``top`` heaviest names, heaviest first (ties by name, so stable).

    >>> favourites({"books": 2.0, "games": 5.0, "art": 2.0}, 2)
    ('games', 'art')
    """
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    return tuple(name for name, _ in ranked[:top])
