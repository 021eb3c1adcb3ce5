"""What a simulated customer does when their next action comes due.

Sessions run a browse -> search -> product view -> cart -> checkout funnel; some carts are
abandoned; a bought cart becomes an order whose whole life :mod:`streams.sim.orders` decides
at once. Dropout is BG/NBD-like: when an order's experience ends (and, less likely, after a
visit without an order) the customer leaves for good with a probability that bad experiences
raise (their log-odds add up, and half lingers as decaying frustration). Only an intervention
brings a customer back.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Final

from streams.core.events import ProfileEvent
from streams.sim.customers import (
    CHANNELS,
    CHECK_ORDER,
    CHECK_VISIT,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    PROFILE,
    RESPOND,
    SESSION,
    Catalog,
    Customer,
    Product,
)
from streams.sim.effects import EffectConfig, EffectPlan
from streams.sim.emit import Sink, Visit, at, iso, order_event
from streams.sim.orders import place_order

PROFILE_CHANGES_PER_DAY: Final[float] = 1.0 / 240.0
# A recovery message can still save a failed payment this long after it failed.
RECOVERABLE_MS: Final[int] = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class World:
    """What every customer shares: the seed, the catalog and the true effects."""

    seed: int
    catalog: Catalog
    effects: EffectConfig


@dataclass(frozen=True, slots=True)
class Response:
    """The agenda payload of a delivered contact's effect."""

    intervention_id: str
    segment: str
    channel: str | None
    plan: EffectPlan


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -40 else 0.0


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def act(customer: Customer, world: World, sink: Sink) -> None:
    """Run the customer's next agenda action (the caller checked one is due)."""
    when_ms, _, kind, payload = heapq.heappop(customer.agenda)
    customer.clock_ms = max(customer.clock_ms, when_ms)
    if kind == SESSION:
        if customer.alive:
            _session(customer, world, sink, when_ms, intent=bool(payload))
    elif kind in (CHECK_ORDER, CHECK_VISIT) and when_ms <= customer.busy_until_ms:
        # Leaving mid-visit would contradict clicks (maybe an order) already emitted.
        customer.schedule(customer.busy_until_ms + 1000, kind, payload)
    elif kind == CHECK_ORDER:
        _check(customer, sink, when_ms, "after_order", customer.traits.p_drop_order, payload)
    elif kind == CHECK_VISIT:
        _check(customer, sink, when_ms, "after_visit", customer.traits.p_drop_visit, 0.0)
    elif kind == PROFILE:
        if customer.alive:
            _profile_change(customer, sink, when_ms)
    elif kind == RESPOND:
        _respond(customer, world, sink, when_ms, payload)


def sign_up(customer: Customer, sink: Sink) -> None:
    """Emit the customer's first profile and plan their first visit."""
    traits = customer.traits
    now = traits.signup_ms
    chat, email, sms, push = traits.consent
    sink.event(
        now,
        ProfileEvent(
            customer_id=traits.customer_id,
            event_time=at(now),
            email_opt_in=email,
            sms_opt_in=sms,
            push_opt_in=push,
            chat_opt_in=chat,
            timezone=traits.timezone,
            preferred_channel=traits.preferred_channel,
            event_id=customer.next_event_id(),
        ),
    )
    customer.schedule(now + int(customer.rng.uniform(2, 40) * MINUTE_MS), SESSION, False)
    customer.schedule(_after_days(customer, now, PROFILE_CHANGES_PER_DAY), PROFILE)


def _after_days(customer: Customer, now: int, rate_per_day: float) -> int:
    return now + int(customer.rng.expovariate(rate_per_day) * DAY_MS) + MINUTE_MS


def schedule_next_session(customer: Customer, now: int) -> None:
    """Plan the next visit: an exponential gap, then an hour the customer usually shops at."""
    traits, rng = customer.traits, customer.rng
    local_days = (now + traits.utc_offset_ms) / DAY_MS + rng.expovariate(traits.sessions_per_day)
    hour = (traits.preferred_hour + 2.5 * rng.gauss()) % 24.0
    when = math.floor(local_days) * DAY_MS + int(hour * HOUR_MS) - traits.utc_offset_ms
    # Never on top of the visit going on now (sessions last minutes, rarely an hour).
    when = max(when, now + HOUR_MS + int(rng.uniform(0, 6) * HOUR_MS))
    customer.schedule(when, SESSION, False)


def _pick_product(customer: Customer, catalog: Catalog) -> Product:
    traits, rng = customer.traits, customer.rng
    favourites = traits.favourite_categories
    category = rng.choice(favourites) if rng.chance(0.75) else rng.choice(catalog.categories)
    products = catalog.by_category[category]
    first, second = rng.choice(products), rng.choice(products)
    first_fav = first.brand in traits.favourite_brands
    second_fav = second.brand in traits.favourite_brands
    if first_fav != second_fav:
        return first if first_fav else second
    level = traits.price_level_eur
    return min(first, second, key=lambda p: abs(math.log(p.price_eur / level)))


def _session(customer: Customer, world: World, sink: Sink, now: int, intent: bool) -> None:
    rng = customer.rng
    customer.sessions += 1
    visit = Visit(customer, sink, now, f"{customer.traits.customer_id}-s{customer.sessions}")
    if not intent:
        schedule_next_session(customer, now)
    if rng.chance(0.35):
        visit.click("login")
    visit.click("page_view")
    viewed: list[Product] = []
    for step in range(1 + rng.geometric(1.8)):
        product = _pick_product(customer, world.catalog)
        if step == 0 and rng.chance(0.45):
            visit.click("search")
        visit.click("product_view", product)
        viewed.append(product)
        if rng.chance(0.04):
            visit.click("wishlist_add", product)
    buys = intent or rng.chance(customer.traits.conversion)
    cart: list[Product] = []
    if buys or rng.chance(0.2):
        for _ in range(1 + rng.geometric(0.4)):
            product = (
                rng.choice(viewed) if rng.chance(0.7) else _pick_product(customer, world.catalog)
            )
            visit.click("add_to_cart", product)
            cart.append(product)
        if len(cart) > 1 and rng.chance(0.1):
            visit.click("remove_from_cart", cart.pop())
    if rng.chance(0.01 + min(0.3, 0.08 * customer.frustration)):
        visit.click("support_chat")
    end = visit.now
    if cart and (buys or rng.chance(0.3)):
        visit.click("checkout_start")
        # Some checkouts stall (price shock, shipping costs): an abandoned cart, no order.
        if buys and (intent or not rng.chance(0.12)):
            placed = visit.now + 30_000
            customer.busy_until_ms = max(customer.busy_until_ms, placed)
            experience_end, bump = place_order(customer, sink, placed, cart)
            customer.schedule(experience_end, CHECK_ORDER, bump)
            return
        end = visit.now
    customer.busy_until_ms = max(customer.busy_until_ms, end)
    customer.schedule(end + MINUTE_MS, CHECK_VISIT)


def _check(customer: Customer, sink: Sink, now: int, cause: str, p_drop: float, bump: Any) -> None:
    if not customer.alive:
        return
    retained = customer.retained if cause == "after_order" else 0.5 * customer.retained
    logit = _logit(p_drop) + float(bump) + customer.frustration_at(now) - retained
    if cause == "after_order":
        customer.retained = 0.0
        customer.frustration += 0.5 * float(bump)
    if customer.rng.chance(_sigmoid(logit)):
        drop_out(customer, sink, now, cause, logit)


def drop_out(customer: Customer, sink: Sink, now: int, cause: str, logit: float) -> None:
    """Mark the customer gone from ``now``: no more visits or orders unless revived."""
    customer.alive = False
    customer.dropped_ms = now
    # Only effects of contacts already delivered stay planned: they are what can revive.
    customer.agenda = [item for item in customer.agenda if item[2] == RESPOND]
    heapq.heapify(customer.agenda)
    sink.truth(
        {
            "type": "dropout",
            "customer_id": customer.traits.customer_id,
            "at": iso(now),
            "cause": cause,
            "logit": round(logit, 4),
        }
    )


def _profile_change(customer: Customer, sink: Sink, now: int) -> None:
    rng = customer.rng
    customer.schedule(_after_days(customer, now, PROFILE_CHANGES_PER_DAY), PROFILE)
    changes: dict[str, Any] = {}
    allowed = [c for c, ok in zip(CHANNELS, customer.consent, strict=True) if ok]
    if allowed and rng.chance(0.6):
        customer.preferred_channel = rng.choice(allowed)
        changes["preferred_channel"] = customer.preferred_channel
    else:
        which = rng.below(len(CHANNELS))
        # Opting out is more common than opting in once a shop has been writing for a while.
        customer.consent[which] = rng.chance(0.35)
        changes[f"{CHANNELS[which]}_opt_in"] = customer.consent[which]
    _emit_profile(customer, sink, now, changes)


def _emit_profile(customer: Customer, sink: Sink, now: int, changes: dict[str, Any]) -> None:
    sink.event(
        now,
        ProfileEvent(
            customer_id=customer.traits.customer_id,
            event_time=at(now),
            event_id=customer.next_event_id(),
            **changes,
        ),
    )


def _respond(customer: Customer, world: World, sink: Sink, now: int, response: Response) -> None:
    plan = response.plan
    if plan.backfires:
        customer.frustration_at(now)
        customer.frustration += world.effects.backfire_logit
        if plan.opts_out and response.channel in CHANNELS:
            customer.consent[CHANNELS.index(response.channel)] = False
            _emit_profile(customer, sink, now, {f"{response.channel}_opt_in": False})
        return
    if not plan.responds:
        return
    if not customer.alive:
        if not world.effects.revive:
            return
        revive(customer, sink, now, response.intervention_id)
    customer.retained += world.effects.retained_logit
    failed = customer.unrecovered
    if response.segment == "payment_recovery" and failed and now - failed[2] <= RECOVERABLE_MS:
        order_id, amount, _ = failed
        customer.unrecovered = None
        sink.event(now, order_event(customer, order_id, now, amount, "paid"))
        customer.record_purchase(now)
        return
    customer.schedule(now, SESSION, True)


def revive(customer: Customer, sink: Sink, now: int, intervention_id: str) -> None:
    """Bring a dropped-out customer back (an intervention won them back) at ``now``."""
    customer.alive = True
    customer.dropped_ms = None
    customer.frustration = 0.0
    customer.frustration_ms = now
    schedule_next_session(customer, now)
    customer.schedule(_after_days(customer, now, PROFILE_CHANGES_PER_DAY), PROFILE)
    sink.truth(
        {
            "type": "revival",
            "customer_id": customer.traits.customer_id,
            "at": iso(now),
            "intervention_id": intervention_id,
        }
    )
