"""Per-customer state: a small mutable record, compact to store and bounded in size.

The worker keeps ``state.to_dict()`` in a Faust table (JSON-able values only) and rebuilds
it with :meth:`CustomerState.from_dict`; the round trip is exact so live and replay agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

from streams.errors import ValidationError

STATE_VERSION: Final[int] = 4

# Counters that decay with event time; the group picks the half-life (see ScoringConfig).
DECAYED_COUNTERS: Final[tuple[tuple[str, str], ...]] = (
    ("orders", "order"),
    ("sessions", "engagement"),
    ("product_views", "engagement"),
    ("searches", "engagement"),
    ("cart_adds", "engagement"),
    ("abandoned_carts", "engagement"),
    ("checkout_starts", "engagement"),
    ("support_chats", "service"),
    ("low_ratings", "engagement"),
    ("rating_sum", "engagement"),
    ("rating_count", "engagement"),
    ("failed_payments", "service"),
    ("cancellations", "service"),
    ("refunds", "service"),
    ("returns", "service"),
)
COUNTER_INDEX: Final[dict[str, int]] = {name: i for i, (name, _) in enumerate(DECAYED_COUNTERS)}


@dataclass(slots=True)
class PendingSnapshot:
    """A score snapshot waiting for its label (resolved exactly one horizon later)."""

    snapshot_s: float
    features: list[float]
    prior: float
    model_version: str
    retained: bool = False

    def to_list(self) -> list[Any]:
        """Return the snapshot as a JSON-able list."""
        return [self.snapshot_s, self.features, self.prior, self.model_version, self.retained]

    @classmethod
    def from_list(cls, raw: list[Any]) -> PendingSnapshot:
        """Return the snapshot that :meth:`to_list` produced."""
        snapshot_s, features, prior, model_version, retained = raw
        return cls(
            float(snapshot_s),
            [float(v) for v in features],
            float(prior),
            str(model_version),
            bool(retained),
        )


@dataclass(slots=True)
class CustomerState:
    """Everything the core remembers about one customer (times in epoch seconds)."""

    customer_id: str
    first_seen_s: float
    clock_s: float
    decay_anchor_s: float
    counters: list[float] = field(default_factory=lambda: [0.0] * len(DECAYED_COUNTERS))
    # Orders: lifetime totals and the customer's own rhythm.
    order_count: int = 0
    spend: float = 0.0
    first_order_s: float | None = None
    last_order_s: float | None = None
    last_order_id: str | None = None
    order_gap_days: float | None = None
    # Visits (sessions) and their rhythm.
    session_count: int = 0
    last_visit_s: float | None = None
    last_session_id: str | None = None
    visit_gap_days: float | None = None
    session_has_cart: bool = False
    session_checked_out: bool = False
    # Bounded top-k preferences: name -> decayed weight.
    categories: dict[str, float] = field(default_factory=dict)
    brands: dict[str, float] = field(default_factory=dict)
    # Consent and channel from profiles (None = never said).
    email_opt_in: bool | None = None
    sms_opt_in: bool | None = None
    push_opt_in: bool | None = None
    chat_opt_in: bool | None = None
    preferred_channel: str | None = None
    timezone: str | None = None
    # Labels, timers and the risk policy.
    pending: list[PendingSnapshot] = field(default_factory=list)
    next_snapshot_s: float = 0.0
    next_wake_s: float | None = None
    band: str | None = None
    band_since_s: float | None = None
    last_score: float | None = None
    # Failed payments since the last successful order: a lost sale nobody recovered yet
    # stays a risk until the customer buys again, however long ago it failed.
    unrecovered_failed_payments: int = 0
    # Offset of the last record applied from each input topic (clickstream, orders,
    # profiles). A record at or below it was applied before a crash and is skipped, which
    # makes the at-least-once stream apply every event to state exactly once.
    input_offsets: list[int] = field(default_factory=lambda: [-1, -1, -1])
    # The intervention router's contact history (a ContactState as a dict), kept in the same
    # record so a crash can never leave the two out of step.
    contacts: dict[str, Any] | None = None

    def counter(self, name: str) -> float:
        """Return the decayed value of counter ``name`` (as of ``decay_anchor_s``)."""
        return self.counters[COUNTER_INDEX[name]]

    def to_dict(self) -> dict[str, Any]:
        """Return the state as a compact JSON-able dict (positional values plus a version).

        The values are the fields in declaration order (``STATE_FIELDS``); written out by
        hand because this runs once per changed customer per flush, and a loop over
        ``dataclasses.fields`` cost several times more.
        """
        contacts = self.contacts
        return {
            "v": STATE_VERSION,
            "values": [
                self.customer_id,
                self.first_seen_s,
                self.clock_s,
                self.decay_anchor_s,
                self.counters.copy(),
                self.order_count,
                self.spend,
                self.first_order_s,
                self.last_order_s,
                self.last_order_id,
                self.order_gap_days,
                self.session_count,
                self.last_visit_s,
                self.last_session_id,
                self.visit_gap_days,
                self.session_has_cart,
                self.session_checked_out,
                self.categories.copy(),
                self.brands.copy(),
                self.email_opt_in,
                self.sms_opt_in,
                self.push_opt_in,
                self.chat_opt_in,
                self.preferred_channel,
                self.timezone,
                [snapshot.to_list() for snapshot in self.pending],
                self.next_snapshot_s,
                self.next_wake_s,
                self.band,
                self.band_since_s,
                self.last_score,
                self.unrecovered_failed_payments,
                self.input_offsets.copy(),
                None if contacts is None else contacts.copy(),
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CustomerState:
        """Return the state that :meth:`to_dict` produced, or raise ``ValidationError``."""
        if raw.get("v") != STATE_VERSION:
            raise ValidationError(f"unknown customer state version {raw.get('v')!r}", field="v")
        values = raw.get("values")
        if not isinstance(values, list) or len(values) != len(STATE_FIELDS):
            raise ValidationError("customer state has the wrong number of values", field="values")
        (
            customer_id,
            first_seen_s,
            clock_s,
            decay_anchor_s,
            counters,
            order_count,
            spend,
            first_order_s,
            last_order_s,
            last_order_id,
            order_gap_days,
            session_count,
            last_visit_s,
            last_session_id,
            visit_gap_days,
            session_has_cart,
            session_checked_out,
            categories,
            brands,
            email_opt_in,
            sms_opt_in,
            push_opt_in,
            chat_opt_in,
            preferred_channel,
            timezone,
            pending,
            next_snapshot_s,
            next_wake_s,
            band,
            band_since_s,
            last_score,
            unrecovered_failed_payments,
            input_offsets,
            contacts,
        ) = values
        return cls(
            customer_id,
            first_seen_s,
            clock_s,
            decay_anchor_s,
            [float(v) for v in counters],
            order_count,
            spend,
            first_order_s,
            last_order_s,
            last_order_id,
            order_gap_days,
            session_count,
            last_visit_s,
            last_session_id,
            visit_gap_days,
            session_has_cart,
            session_checked_out,
            {str(k): float(v) for k, v in categories.items()},
            {str(k): float(v) for k, v in brands.items()},
            email_opt_in,
            sms_opt_in,
            push_opt_in,
            chat_opt_in,
            preferred_channel,
            timezone,
            [PendingSnapshot.from_list(item) for item in pending],
            next_snapshot_s,
            next_wake_s,
            band,
            band_since_s,
            last_score,
            unrecovered_failed_payments,
            input_offsets,
            contacts,
        )


# The order of ``to_dict()["values"]``: a stored state depends on it, so a change to the
# fields of CustomerState needs a new STATE_VERSION (tests check the two agree).
STATE_FIELDS: Final[tuple[str, ...]] = tuple(spec.name for spec in fields(CustomerState))
