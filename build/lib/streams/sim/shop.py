"""The synthetic shop: customers' events in event-time order, a closed loop, ground truth.

Pure and deterministic: no wall clock, no global random state. Each customer keeps a small
agenda of what they will do next; the shop holds one heap entry per customer (the time of
their next action), so an event costs O(log customers) and customers are created only when
they sign up. Events an action decides (a session's clicks, an order's whole life) wait in
a second heap until no earlier action is left, then come out in time order.

:meth:`Shop.apply_intervention` closes the loop. A delivered contact changes the customer's
future as :mod:`streams.sim.effects` says; a held-out or suppressed one changes nothing. For
every decision in either arm the shop also plays the customer's next ``window_days`` on
copies, with and without the contact (:mod:`streams.sim.outcomes`): whether each copy buys
in the window are the decision's potential outcomes ``y1`` and ``y0``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from streams.core.events import Event
from streams.errors import SettingsError, ValidationError
from streams.sim.behaviour import Response, World, act, sign_up
from streams.sim.customers import DAY_MS, Catalog, Customer, draw_traits, index_of
from streams.sim.effects import (
    EffectConfig,
    EffectPlan,
    InterventionNotice,
    notice_from_record,
    plan_effect,
)
from streams.sim.emit import iso
from streams.sim.outcomes import ARMS, OutcomeBook, deliver

TRUTH_VERSION: Final[int] = 1
DEFAULT_START: Final[datetime] = datetime(2024, 1, 1, tzinfo=UTC)
_NEVER: Final[int] = 1 << 62


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What shop to simulate: how many customers, from when, for how long, with what effects."""

    customers: int = 10_000
    seed: int = 7
    start: datetime = DEFAULT_START
    # Simulated span; None runs until the caller stops (live mode).
    days: float | None = 365.0
    # Customers sign up evenly over this many days from the start.
    acquisition_days: float = 90.0
    # The window of the potential outcomes, as in `churnstream report uplift` (14 days).
    window_days: float = 14.0
    effects: EffectConfig = field(default_factory=EffectConfig)
    # An accelerated clock turns pipeline latency into simulated days (2 s at 1 day/s is two
    # days, longer than a message lives): by default a late contact still works, just late.
    # True drops contacts that reach the shop after their expires_at.
    honour_expiry: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.customers <= 100_000_000:
            raise SettingsError(f"--customers must be 1-100000000, got {self.customers!r}")
        if self.start.tzinfo is None:
            raise SettingsError(f"--start needs a time zone, got {self.start.isoformat()!r}")
        if self.days is not None and not self.days > 0:
            raise SettingsError(f"--days must be positive, got {self.days!r}")
        if not self.acquisition_days > 0:
            raise SettingsError(f"acquisition_days must be positive, got {self.acquisition_days!r}")
        if not 0 < self.window_days <= 365:
            raise SettingsError(f"window_days must be in (0, 365], got {self.window_days!r}")


class _ShopSink:
    """The shop's own sink: events to the release heap, truth records to the outbox."""

    __slots__ = ("shop",)

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def event(self, when_ms: int, event: Event) -> None:
        shop = self.shop
        shop.seq += 1
        heapq.heappush(shop.pending, (when_ms, shop.seq, event))

    def truth(self, record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "dropout":
            self.shop.stats["dropouts"] += 1
        elif kind == "revival":
            self.shop.stats["revivals"] += 1
        self.shop.truth.append(record)


class Shop:
    """A deterministic shop that yields events in event-time order (see the module doc)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.start_ms = int(config.start.timestamp() * 1000)
        self.end_ms = _NEVER if config.days is None else self.start_ms + int(config.days * DAY_MS)
        self.world = World(config.seed, Catalog(config.seed), config.effects)
        self.customers: dict[int, Customer] = {}
        self.pending: list[tuple[int, int, Event]] = []
        self.seq = 0
        self.released_ms = self.start_ms
        # Set once the simulated span is over: the truth is then complete up to its end.
        self.finished = False
        self.truth: list[dict[str, Any]] = [self._meta()]
        self.stats: dict[str, int] = {
            "events": 0,
            "customers": 0,
            "dropouts": 0,
            "revivals": 0,
            "interventions": 0,
            "delivered": 0,
            "duplicates": 0,
            "unknown_customers": 0,
        }
        self._actions: list[tuple[int, int]] = []
        self._sink = _ShopSink(self)
        self._next_index = 0
        self._next_customer: Customer | None = self._make_customer(0)
        self._seen_interventions: set[str] = set()
        self._outcomes = OutcomeBook(self.world, config.window_days, self._plan)

    def _meta(self) -> dict[str, Any]:
        config = self.config
        return {
            "type": "meta",
            "version": TRUTH_VERSION,
            "seed": config.seed,
            "customers": config.customers,
            "start": iso(self.start_ms),
            "days": config.days,
            "acquisition_days": config.acquisition_days,
            "window_days": config.window_days,
            "honour_expiry": config.honour_expiry,
            "effects": config.effects.to_dict(),
        }

    def _make_customer(self, index: int) -> Customer | None:
        config = self.config
        if index >= config.customers:
            return None
        traits = draw_traits(
            config.seed,
            index,
            config.customers,
            self.start_ms,
            config.acquisition_days,
            self.world.catalog,
        )
        return Customer(traits, config.seed)

    def __iter__(self) -> Shop:
        return self

    def __next__(self) -> Event:
        event = self.next_event()
        if event is None:
            raise StopIteration
        return event

    def next_event(self) -> Event | None:
        """Return the next event in event-time order, None once the simulated span is over."""
        if not self._fill():
            return None
        when_ms, _, event = heapq.heappop(self.pending)
        self.released_ms = max(self.released_ms, when_ms)
        self.stats["events"] += 1
        return event

    def peek_ms(self) -> int | None:
        """Return the time of the next event (epoch ms) without taking it; None at the end."""
        return self.pending[0][0] if self._fill() else None

    def _fill(self) -> bool:
        """Run due actions until the earliest pending event can go out; False at the end."""
        while True:
            next_action = self._actions[0][0] if self._actions else _NEVER
            signup = self._next_customer
            next_signup = signup.traits.signup_ms if signup is not None else _NEVER
            upcoming = min(next_action, next_signup)
            if self.pending and self.pending[0][0] <= upcoming:
                return self._open(self.pending[0][0] < self.end_ms)
            if upcoming >= self.end_ms:
                return self._open(bool(self.pending) and self.pending[0][0] < self.end_ms)
            if next_signup <= next_action and signup is not None:
                self._sign_up(signup)
            else:
                self._act()

    def _open(self, more: bool) -> bool:
        self.finished = self.finished or not more
        return more

    def _sign_up(self, customer: Customer) -> None:
        index = customer.traits.index
        self.customers[index] = customer
        self.stats["customers"] += 1
        sign_up(customer, self._sink)
        self.truth.append(
            {
                "type": "customer",
                "customer_id": customer.traits.customer_id,
                "signup_at": iso(customer.traits.signup_ms),
                "traits": customer.traits.to_dict(),
            }
        )
        self._push(customer)
        self._next_index = index + 1
        self._next_customer = self._make_customer(self._next_index)

    def _act(self) -> None:
        when_ms, index = heapq.heappop(self._actions)
        customer = self.customers[index]
        # Entries go stale when an intervention puts an earlier action first; skip them.
        if customer.next_ms() != when_ms:
            return
        act(customer, self.world, self._sink)
        self._push(customer)

    def _push(self, customer: Customer) -> None:
        next_ms = customer.next_ms()
        if next_ms is not None:
            heapq.heappush(self._actions, (next_ms, customer.traits.index))

    def drain_truth(self) -> list[dict[str, Any]]:
        """Return the truth records produced since the last call (and forget them)."""
        records, self.truth = self.truth, []
        return records

    def end_record(self) -> dict[str, Any]:
        """Return the closing truth record: the truth is complete up to ``at``."""
        end_ms = self.end_ms if self.finished else self.released_ms
        return {"type": "end", "at": iso(end_ms), "stats": dict(self.stats)}

    def apply_intervention(self, record: dict[str, Any], now_ms: int) -> dict[str, Any] | None:
        """Apply one ``intervention`` record at simulated time ``now_ms``; return its truth.

        ``record`` is the Avro-decoded record or its JSON form. A delivered (or deferred)
        decision takes effect at ``max(now, created_at, deliver_after)``, never before the
        customer's or the stream's current time (past ``expires_at`` it does nothing if the
        config honours expiry; the truth records the lag either way). Held
        out and suppressed decisions change nothing. Duplicates (same id) return None. The
        truth record is also queued for :meth:`drain_truth`. Raises ``ValidationError`` for
        a record without the fields an intervention must have.
        """
        notice = notice_from_record(record)
        if notice.intervention_id in self._seen_interventions:
            self.stats["duplicates"] += 1
            return None
        self._seen_interventions.add(notice.intervention_id)
        self.stats["interventions"] += 1
        index = index_of(notice.customer_id)
        customer = None if index is None else self.customers.get(index)
        truth: dict[str, Any] = {
            "type": "intervention",
            "intervention_id": notice.intervention_id,
            "customer_id": notice.customer_id,
            "segment": notice.segment,
            "kind": notice.kind,
            "channel": notice.channel,
            "arm": notice.arm,
            "created_at": iso(notice.created_ms),
        }
        if customer is None:
            self.stats["unknown_customers"] += 1
            truth["arm"] = "unknown_customer"
            self.truth.append(truth)
            return truth
        effective = max(
            now_ms,
            notice.created_ms,
            notice.deliver_after_ms or 0,
            customer.clock_ms,
            self.released_ms,
        )
        expired = self.config.honour_expiry and effective > notice.expires_ms
        plan = self._plan(customer, notice, effective)
        truth.update(
            effective_at=iso(effective),
            lag_hours=round(
                (effective - max(notice.created_ms, notice.deliver_after_ms or 0)) / 3_600_000, 3
            ),
            expired=expired,
            alive=customer.alive,
            respond_p=plan.respond_p,
            responds=plan.responds,
            backfires=plan.backfires,
            opts_out=plan.opts_out,
        )
        revised = None
        if notice.arm in ARMS:
            revised = self._outcomes.record(customer, notice, effective, expired, truth)
        delivered = notice.arm == "treated" and not expired
        truth["delivered"] = delivered
        if delivered:
            self.stats["delivered"] += 1
            response = Response(notice.intervention_id, notice.segment, notice.channel, plan)
            deliver(customer, response, effective)
            self._push(customer)
        self.truth.append(truth)
        if revised is not None:
            self.truth.append(revised)
        return truth

    def _plan(self, customer: Customer, notice: InterventionNotice, effective: int) -> EffectPlan:
        effects = self.config.effects
        return plan_effect(
            effects,
            self.config.seed,
            notice,
            customer.traits.offer_immunity < effects.offer_immune_share,
            customer.recent_contacts(effective),
            customer.traits.contact_tolerance,
        )


def parse_start(text: str) -> datetime:
    """Return ``--start`` (ISO-8601 with a zone) as aware UTC, or raise naming the flag."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(f"--start: not an ISO-8601 time: {text!r}", field="start") from exc
    if parsed.tzinfo is None:
        raise ValidationError(f"--start needs a time zone ('Z' for UTC): {text!r}", field="start")
    return parsed.astimezone(UTC)
