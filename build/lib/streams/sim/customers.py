"""Simulated customers: latent traits drawn from ``(seed, index)``, a catalog, mutable state.

A customer's traits and their random stream depend only on the shop's seed and the
customer's index, never on other customers or on the order the shop visits them, so a
customer's story is the same in a shop of 10 or of a million (given the same signup time).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Final

from streams.sim.rng import SimRandom, derive_seed

DAY_MS: Final[int] = 86_400_000
HOUR_MS: Final[int] = 3_600_000
MINUTE_MS: Final[int] = 60_000
# (IANA zone, standard UTC offset in hours, currency, price factor vs EUR, weight). The
# offset ignores DST: it only shapes what hour of the day people shop.
REGIONS: Final[tuple[tuple[str, int, str, float, float], ...]] = (
    ("Europe/Berlin", 1, "EUR", 1.0, 0.22),
    ("Europe/Paris", 1, "EUR", 1.0, 0.12),
    ("Europe/Madrid", 1, "EUR", 1.0, 0.08),
    ("Europe/London", 0, "GBP", 0.85, 0.12),
    ("Europe/Zurich", 1, "CHF", 0.95, 0.04),
    ("America/New_York", -5, "USD", 1.1, 0.16),
    ("America/Chicago", -6, "USD", 1.1, 0.08),
    ("America/Los_Angeles", -8, "USD", 1.1, 0.1),
    ("America/Toronto", -5, "CAD", 1.5, 0.04),
    ("Australia/Sydney", 10, "AUD", 1.65, 0.04),
)
CATEGORIES: Final[tuple[tuple[str, float], ...]] = (
    ("books", 14.0),
    ("music", 12.0),
    ("games", 45.0),
    ("toys", 25.0),
    ("kitchen", 30.0),
    ("garden", 35.0),
    ("fashion", 40.0),
    ("shoes", 70.0),
    ("beauty", 18.0),
    ("sports", 50.0),
    ("electronics", 120.0),
    ("home", 55.0),
)
BRANDS: Final[tuple[str, ...]] = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "tyrell",
    "soylent",
    "cyberdyne",
    "wonka",
    "oscorp",
    "aperture",
    "vandelay",
    "massive",
    "duff",
)
CHANNELS: Final[tuple[str, ...]] = ("chat", "email", "sms", "push")
_PRODUCTS_PER_CATEGORY: Final[int] = 60
# Contacts a month a customer puts up with; past that a contact backfires.
_TOLERANCE: Final[tuple[int, ...]] = (1, 2, 3, 5)
_TOLERANCE_CUMULATIVE: Final[tuple[float, ...]] = (0.15, 0.5, 0.8, 1.0)
_REGION_CUMULATIVE: Final[tuple[float, ...]] = tuple(
    sum(region[4] for region in REGIONS[: i + 1]) for i in range(len(REGIONS))
)


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog item (price in EUR; the customer's currency scales it)."""

    product_id: str
    category: str
    brand: str
    price_eur: float


class Catalog:
    """Products by category, fixed by the seed."""

    def __init__(self, seed: int) -> None:
        rng = SimRandom(derive_seed(seed, "catalog"))
        self.by_category: dict[str, tuple[Product, ...]] = {}
        for number, (category, typical_price) in enumerate(CATEGORIES):
            brands = [rng.choice(BRANDS) for _ in range(5)]
            self.by_category[category] = tuple(
                Product(
                    product_id=f"p{number:02d}-{item:03d}",
                    category=category,
                    brand=rng.choice(brands),
                    price_eur=round(rng.lognormal(typical_price, 0.45), 2),
                )
                for item in range(_PRODUCTS_PER_CATEGORY)
            )
        self.categories: tuple[str, ...] = tuple(name for name, _ in CATEGORIES)


@dataclass(frozen=True, slots=True)
class Traits:
    """The latent, fixed traits of one customer (what the model has to infer)."""

    index: int
    customer_id: str
    signup_ms: int
    timezone: str
    utc_offset_ms: int
    currency: str
    currency_factor: float
    sessions_per_day: float
    conversion: float
    price_level_eur: float
    favourite_categories: tuple[str, ...]
    favourite_brands: tuple[str, ...]
    p_drop_order: float
    p_drop_visit: float
    p_payment_failure: float
    p_late_delivery: float
    p_cancel: float
    p_return: float
    p_review: float
    mood: float
    preferred_hour: float
    # Opt-ins in the order of CHANNELS: chat, email, sms, push.
    consent: tuple[bool, bool, bool, bool]
    preferred_channel: str | None
    # Offers never move customers whose draw is below the effects' offer_immune_share.
    offer_immunity: float
    contact_tolerance: int

    def to_dict(self) -> dict[str, Any]:
        """Return the traits as JSON-ready values (for the truth file)."""
        return {
            "timezone": self.timezone,
            "currency": self.currency,
            "sessions_per_day": round(self.sessions_per_day, 5),
            "conversion": round(self.conversion, 4),
            "orders_per_year": round(365.0 * self.sessions_per_day * self.conversion, 3),
            "price_level_eur": round(self.price_level_eur, 2),
            "favourite_categories": list(self.favourite_categories),
            "favourite_brands": list(self.favourite_brands),
            "p_drop_order": round(self.p_drop_order, 4),
            "p_drop_visit": round(self.p_drop_visit, 4),
            "p_payment_failure": round(self.p_payment_failure, 4),
            "p_late_delivery": round(self.p_late_delivery, 4),
            "offer_immunity": round(self.offer_immunity, 4),
            "contact_tolerance": self.contact_tolerance,
        }


def customer_id_of(index: int) -> str:
    """Return the id of customer ``index``.

    >>> customer_id_of(42)
    'cust-000042'
    """
    return f"cust-{index:06d}"


def index_of(customer_id: str) -> int | None:
    """Return the index in ``customer_id``, None if it is not a simulated customer's id.

    >>> index_of("cust-000042"), index_of("someone-else")
    (42, None)
    """
    head, _, number = customer_id.partition("-")
    if head != "cust" or not number.isdigit():
        return None
    return int(number)


def draw_traits(
    seed: int, index: int, customers: int, start_ms: int, acquisition_days: float, catalog: Catalog
) -> Traits:
    """Return customer ``index``'s traits; signups spread evenly over ``acquisition_days``."""
    rng = SimRandom(derive_seed(seed, "traits", index))
    timezone, offset_h, currency, factor, _ = rng.weighted(REGIONS, _REGION_CUMULATIVE)
    # index + jitter keeps signups in index order, so the shop can create customers lazily.
    signup_ms = start_ms + int(acquisition_days * DAY_MS * (index + rng.random()) / customers)
    sessions_per_day = min(rng.gamma(1.6, 1.0 / 16.0), 1.5)
    conversion = 0.04 + 0.5 * rng.beta(2.0, 5.0)
    favourites: list[str] = []
    while len(favourites) < 1 + rng.below(3):
        category = rng.choice(catalog.categories)
        if category not in favourites:
            favourites.append(category)
    brands = tuple({rng.choice(catalog.by_category[c]).brand for c in favourites for _ in range(2)})
    consent = (rng.chance(0.55), rng.chance(0.75), rng.chance(0.3), rng.chance(0.5))
    allowed = [name for name, ok in zip(CHANNELS, consent, strict=True) if ok]
    p_drop_order = rng.beta(1.2, 9.0)
    return Traits(
        index=index,
        customer_id=customer_id_of(index),
        signup_ms=signup_ms,
        timezone=timezone,
        utc_offset_ms=offset_h * HOUR_MS,
        currency=currency,
        currency_factor=factor,
        sessions_per_day=sessions_per_day,
        conversion=conversion,
        price_level_eur=rng.lognormal(30.0, 0.6),
        favourite_categories=tuple(favourites),
        favourite_brands=tuple(sorted(brands)),
        p_drop_order=p_drop_order,
        p_drop_visit=p_drop_order * rng.uniform(0.15, 0.45),
        p_payment_failure=rng.beta(1.0, 14.0),
        p_late_delivery=rng.beta(1.0, 12.0),
        p_cancel=rng.beta(1.0, 30.0),
        p_return=rng.beta(1.0, 18.0),
        p_review=rng.uniform(0.05, 0.45),
        mood=rng.uniform(3.3, 4.9),
        preferred_hour=rng.uniform(8.0, 22.5),
        consent=consent,
        preferred_channel=rng.choice(allowed) if allowed and rng.chance(0.7) else None,
        offer_immunity=rng.random(),
        contact_tolerance=rng.weighted(_TOLERANCE, _TOLERANCE_CUMULATIVE),
    )


# Agenda kinds: what a customer will do next, kept in the customer's own small heap.
SESSION: Final[int] = 0
CHECK_ORDER: Final[int] = 1
CHECK_VISIT: Final[int] = 2
PROFILE: Final[int] = 3
RESPOND: Final[int] = 4

AgendaItem = tuple[int, int, int, Any]


class Customer:
    """The mutable state of one simulated customer, with their own agenda and random stream."""

    __slots__ = (
        "agenda",
        "alive",
        "busy_until_ms",
        "clock_ms",
        "consent",
        "contacts",
        "dropped_ms",
        "events",
        "frustration",
        "frustration_ms",
        "orders",
        "preferred_channel",
        "purchases",
        "retained",
        "rng",
        "seq",
        "sessions",
        "traits",
        "unrecovered",
    )

    def __init__(self, traits: Traits, seed: int) -> None:
        self.traits = traits
        self.rng = SimRandom(derive_seed(seed, "life", traits.index))
        self.agenda: list[AgendaItem] = []
        self.seq = 0
        self.alive = True
        self.dropped_ms: int | None = None
        self.clock_ms = traits.signup_ms
        # The end of the visit whose clicks are already out: a dropout waits for it to end.
        self.busy_until_ms = traits.signup_ms
        # Bad experiences linger: log-odds added to every dropout check, decaying with time.
        self.frustration = 0.0
        self.frustration_ms = traits.signup_ms
        self.retained = 0.0
        self.events = 0
        self.sessions = 0
        self.orders = 0
        self.purchases: list[int] = []
        self.contacts: list[int] = []
        self.unrecovered: tuple[str, float, int] | None = None
        self.consent = list(traits.consent)
        self.preferred_channel = traits.preferred_channel

    def schedule(self, when_ms: int, kind: int, payload: Any = None) -> None:
        """Add an action to the agenda (ties keep the order they were scheduled in)."""
        self.seq += 1
        heapq.heappush(self.agenda, (when_ms, self.seq, kind, payload))

    def next_ms(self) -> int | None:
        """Return the time of the next action, None when nothing is planned."""
        return self.agenda[0][0] if self.agenda else None

    def next_event_id(self) -> str:
        """Return a fresh event id, unique within the shop and the same on every run."""
        self.events += 1
        return f"{self.traits.customer_id}-e{self.events}"

    def frustration_at(self, now_ms: int, half_life_days: float = 90.0) -> float:
        """Return the lingering log-odds of bad experiences, decayed to ``now_ms``."""
        elapsed_days = max(0, now_ms - self.frustration_ms) / DAY_MS
        self.frustration *= math.exp(-math.log(2.0) * elapsed_days / half_life_days)
        self.frustration_ms = max(self.frustration_ms, now_ms)
        return self.frustration

    def record_purchase(self, when_ms: int) -> None:
        """Remember a ``placed``/``paid`` time (the last few; potential outcomes need them)."""
        self.purchases.append(when_ms)
        if len(self.purchases) > 8:
            del self.purchases[0]

    def recent_contacts(self, now_ms: int, window_days: float = 30.0) -> int:
        """Return how many delivered contacts fell in the ``window_days`` before ``now_ms``."""
        floor = now_ms - int(window_days * DAY_MS)
        self.contacts = [when for when in self.contacts if when > floor]
        return sum(1 for when in self.contacts if when <= now_ms)

    def fork(self) -> Customer:
        """Return an independent copy whose future, left alone, is exactly this one's."""
        twin = Customer.__new__(Customer)
        for name in Customer.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.rng = self.rng.copy()
        twin.agenda = list(self.agenda)
        twin.purchases = list(self.purchases)
        twin.contacts = list(self.contacts)
        twin.consent = list(self.consent)
        return twin
