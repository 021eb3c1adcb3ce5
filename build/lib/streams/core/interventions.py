"""The intervention router: ``(customer, contacts, trigger, now) -> (contacts, interventions)``.

Risk changes and immediate triggers (failed payment, cancellation, return, low rating) become
plans (streams.core.segments); the guard rails (streams.core.guardrails) then decide, in this
order: consent and channel -> cooldown -> frequency cap -> holdout -> quiet hours. Every
decision is emitted, suppressed ones with ``suppressed_reason`` set, so they are counted.

Held-out customers go through exactly the same rules and their would-be contacts are
remembered, so both arms of the uplift comparison see the same caps and cooldowns; only the
delivery differs. Event time (``now_s``) drives everything; nothing reads the wall clock.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeAlias

from streams.core.events import ClickEvent, Event, OrderEvent
from streams.core.guardrails import (
    choose_channel,
    in_cooldown,
    in_holdout,
    is_capped,
    quiet_until_s,
)
from streams.core.intervention_config import DAY_S, HOUR_S, InterventionConfig
from streams.core.records import RiskChange, from_s, stable_id, to_s
from streams.core.segments import CODE_PREFIXES, Offer, Plan, plans_for_event, plans_for_risk_change
from streams.core.state import CustomerState
from streams.errors import ValidationError

__all__ = [
    "CAPPED",
    "COOLDOWN",
    "HELD_OUT",
    "NO_CONSENT",
    "ContactState",
    "Intervention",
    "InterventionConfig",
    "Offer",
    "Trigger",
    "release_deferred",
    "route",
]

HELD_OUT: Final[str] = "held_out"
NO_CONSENT: Final[str] = "no_consent"
CAPPED: Final[str] = "capped"
COOLDOWN: Final[str] = "cooldown"
CONTACT_STATE_VERSION: Final[int] = 1
Trigger: TypeAlias = RiskChange | Event


@dataclass(frozen=True, slots=True)
class Intervention:
    """One decision of the router (delivered, deferred, or suppressed with a reason)."""

    intervention_id: str
    customer_id: str
    kind: str
    channel: str | None
    segment: str
    reason: str
    offer: Offer | None
    holdout: bool
    suppressed_reason: str | None
    created_at: datetime
    expires_at: datetime
    deliver_after: datetime | None
    risk_change_id: str | None
    trigger: str
    model_version: str | None

    @property
    def deliver_now(self) -> bool:
        """Whether push channels (SSE, webhooks) should get it now: not suppressed, not deferred."""
        return self.suppressed_reason is None and self.deliver_after is None

    @property
    def deferred(self) -> bool:
        """Whether it will be delivered when the customer's quiet hours end."""
        return self.suppressed_reason is None and self.deliver_after is not None

    def to_record(self) -> dict[str, Any]:
        """Return the ``intervention`` Avro record (times as aware UTC datetimes)."""
        return {
            "intervention_id": self.intervention_id,
            "customer_id": self.customer_id,
            "kind": self.kind,
            "channel": self.channel,
            "segment": self.segment,
            "reason": self.reason,
            "offer": None if self.offer is None else self.offer.to_record(),
            "holdout": self.holdout,
            "suppressed_reason": self.suppressed_reason,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "deliver_after": self.deliver_after,
            "risk_change_id": self.risk_change_id,
            "trigger": self.trigger,
            "model_version": self.model_version,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the record as JSON-ready values (times as ISO-8601 strings ending in Z)."""
        record = self.to_record()
        for name in ("created_at", "expires_at", "deliver_after"):
            if record[name] is not None:
                record[name] = record[name].isoformat().replace("+00:00", "Z")
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Intervention:
        """Return the intervention a record (Avro-decoded or :meth:`to_json` form) describes."""

        def when(value: Any) -> datetime:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
            if not isinstance(parsed, datetime) or parsed.tzinfo is None:
                raise ValidationError(f"intervention time {value!r} is not an aware time")
            return from_s(to_s(parsed))

        deliver_after = record.get("deliver_after")
        offer = record.get("offer")
        return cls(
            intervention_id=str(record["intervention_id"]),
            customer_id=str(record["customer_id"]),
            kind=str(record["kind"]),
            channel=record.get("channel"),
            segment=str(record["segment"]),
            reason=str(record["reason"]),
            offer=None if offer is None else Offer.from_record(offer),
            holdout=bool(record["holdout"]),
            suppressed_reason=record.get("suppressed_reason"),
            created_at=when(record["created_at"]),
            expires_at=when(record["expires_at"]),
            deliver_after=None if deliver_after is None else when(deliver_after),
            risk_change_id=record.get("risk_change_id"),
            trigger=str(record["trigger"]),
            model_version=record.get("model_version"),
        )


@dataclass(slots=True)
class ContactState:
    """A customer's contact history, kept in its own table keyed by customer id.

    ``contacts`` holds ``(time_s, segment)`` of contacts made or, for held-out customers,
    that would have been made; it is pruned to what caps and cooldowns can still see.
    """

    customer_id: str
    contacts: list[tuple[float, str]] = field(default_factory=list)
    deferred: list[Intervention] = field(default_factory=list)
    currency: str | None = None
    last_decision_s: float | None = None
    last_outcome: str | None = None

    def next_release_s(self) -> float | None:
        """Return when the earliest deferred intervention becomes deliverable, if any."""
        times = [to_s(item.deliver_after) for item in self.deferred if item.deliver_after]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        """Return the state as a JSON-able dict."""
        return {
            "v": CONTACT_STATE_VERSION,
            "customer_id": self.customer_id,
            "contacts": [[when_s, segment] for when_s, segment in self.contacts],
            "deferred": [item.to_json() for item in self.deferred],
            "currency": self.currency,
            "last_decision_s": self.last_decision_s,
            "last_outcome": self.last_outcome,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ContactState:
        """Return the state :meth:`to_dict` produced, or raise ``ValidationError``."""
        if raw.get("v") != CONTACT_STATE_VERSION:
            raise ValidationError(f"unknown contact state version {raw.get('v')!r}", field="v")
        try:
            return cls(
                customer_id=str(raw["customer_id"]),
                contacts=[(float(when_s), str(segment)) for when_s, segment in raw["contacts"]],
                deferred=[Intervention.from_record(item) for item in raw["deferred"]],
                currency=raw.get("currency"),
                last_decision_s=raw.get("last_decision_s"),
                last_outcome=raw.get("last_outcome"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"contact state of {raw.get('customer_id')!r} is malformed: {exc!r}"
            raise ValidationError(msg) from exc


def route(
    customer: CustomerState,
    contacts: ContactState | None,
    trigger: Trigger,
    now_s: float,
    config: InterventionConfig,
) -> tuple[ContactState, list[Intervention]]:
    """Return the customer's contact state after ``trigger`` and the decisions it caused.

    ``customer`` is the state after the scoring step; ``now_s`` the event-time watermark.
    Triggers that call for nothing (a falling risk, a page view, a profile) return ``[]``.
    """
    if trigger.customer_id != customer.customer_id:
        msg = (
            f"trigger of {trigger.customer_id!r} routed with the state of {customer.customer_id!r}"
        )
        raise ValidationError(msg, field="customer_id")
    state = contacts if contacts is not None else ContactState(customer.customer_id)
    if isinstance(trigger, OrderEvent):
        # Risk changes carry no currency; amount-off offers use the customer's last one.
        state.currency = trigger.currency
    if isinstance(trigger, RiskChange):
        plans = plans_for_risk_change(customer, trigger, state.currency, config)
    elif isinstance(trigger, OrderEvent | ClickEvent):
        plans = plans_for_event(trigger, config)
    else:
        plans = []
    if not plans:
        return state, []
    _prune(state, now_s, config)
    plan, channel = _first_reachable(customer, plans, config)
    decision = _decide(customer, state, plan, channel, now_s, config)
    _remember(state, decision, now_s, config)
    return state, [decision]


def release_deferred(
    contacts: ContactState, now_s: float
) -> tuple[ContactState, list[Intervention], list[Intervention]]:
    """Return ``(state, due, expired)``: deferred interventions whose quiet hours ended by
    ``now_s`` (deliver them now) and those that expired first (counted, not delivered).
    """
    due: list[Intervention] = []
    expired: list[Intervention] = []
    waiting: list[Intervention] = []
    for item in contacts.deferred:
        if item.deliver_after is not None and to_s(item.deliver_after) > now_s:
            waiting.append(item)
        elif to_s(item.expires_at) <= now_s:
            expired.append(item)
        else:
            due.append(item)
    contacts.deferred = waiting
    return contacts, due, expired


def _first_reachable(
    customer: CustomerState, plans: list[Plan], config: InterventionConfig
) -> tuple[Plan, str | None]:
    """Return the first plan the customer can be reached for, with its channel."""
    for plan in plans:
        channel = choose_channel(customer, plan.kind, plan.is_service, config)
        if channel is None:
            continue
        if plan is plans[0]:
            return plan, channel
        reason = f"{plan.reason} (no consent for {plans[0].kind})"
        return dataclasses.replace(plan, reason=reason), channel
    return plans[0], None


def _decide(
    customer: CustomerState,
    state: ContactState,
    plan: Plan,
    channel: str | None,
    now_s: float,
    config: InterventionConfig,
) -> Intervention:
    held_out = in_holdout(customer.customer_id, config)
    suppressed: str | None = None
    if channel is None:
        suppressed = NO_CONSENT
    elif in_cooldown(state.contacts, plan.segment, plan.is_service, now_s, config):
        suppressed = COOLDOWN
    elif is_capped(state.contacts, customer, now_s, config):
        suppressed = CAPPED
    elif held_out:
        suppressed = HELD_OUT
    elif len(state.deferred) >= config.max_deferred:
        # More queued contacts than the caps allow means a burst of late events: hold back.
        suppressed = CAPPED
    deliver_after_s = None
    if suppressed in (None, HELD_OUT):
        deliver_after_s = quiet_until_s(now_s, customer.timezone, channel, config)
    intervention_id = stable_id("intervention", customer.customer_id, plan.source_id, plan.segment)
    offer = plan.offer
    if offer is not None:
        prefix = CODE_PREFIXES.get(plan.segment, "OFFER")
        offer = dataclasses.replace(offer, code=f"{prefix}-{intervention_id[:10].upper()}")
    return Intervention(
        intervention_id=intervention_id,
        customer_id=customer.customer_id,
        kind=plan.kind,
        channel=channel,
        segment=plan.segment,
        reason=plan.reason,
        offer=offer,
        holdout=held_out,
        suppressed_reason=suppressed,
        created_at=from_s(now_s),
        expires_at=from_s(now_s + config.expiries_s[plan.kind]),
        deliver_after=None if deliver_after_s is None else from_s(deliver_after_s),
        risk_change_id=plan.risk_change_id,
        trigger=plan.trigger,
        model_version=plan.model_version,
    )


def _remember(
    state: ContactState, decision: Intervention, now_s: float, config: InterventionConfig
) -> None:
    suppressed = decision.suppressed_reason
    if suppressed in (None, HELD_OUT):
        bisect.insort(state.contacts, (now_s, decision.segment))
        _prune(state, now_s, config)
    if decision.deferred:
        state.deferred.append(decision)
    state.last_decision_s = now_s
    state.last_outcome = suppressed or ("deferred" if decision.deferred else "sent")


def _prune(state: ContactState, now_s: float, config: InterventionConfig) -> None:
    """Drop contacts no cap or cooldown can see any more, and keep the list bounded.

    Keeping the newest ``max cap + 1`` is enough: with that many newer contacts inside the
    window the customer is capped whatever older contacts there were.
    """
    horizon_s = max(
        config.cap_window_days * DAY_S,
        config.cooldown_hours * HOUR_S,
        config.trigger_cooldown_hours * HOUR_S,
    )
    newest_s = max([now_s, *(when_s for when_s, _ in state.contacts)])
    kept = [item for item in state.contacts if item[0] > newest_s - horizon_s]
    limit = max(config.cap_low, config.cap_mid, config.cap_high) + 1
    state.contacts = kept[-limit:]
