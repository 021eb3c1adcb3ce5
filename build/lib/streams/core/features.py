"""The model's inputs: a small flat dict of floats computed from a customer's state.

Recency, frequency and monetary value come first (they carry most of the signal on real
data); clickstream behaviour and service failures are decayed counts; the cold-start prior
enters as its logit so the learned model can correct it instead of starting from nothing.
"""

from __future__ import annotations

import math
from typing import Final

from streams.core.config import ScoringConfig
from streams.core.prior import logit, p_no_order_within
from streams.core.state import DECAYED_COUNTERS, CustomerState

SECONDS_PER_DAY: Final[float] = 86_400.0

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "log_days_since_last_order",
    "years_since_last_order",
    "log_days_since_last_visit",
    "log_order_count",
    "log_tenure_days",
    "log_usual_order_gap_days",
    "silence_to_usual_gap",
    "one_time_buyer",
    "recent_orders",
    "log_avg_order_value",
    "recent_sessions",
    "recent_product_views",
    "recent_searches",
    "recent_cart_adds",
    "recent_abandoned_carts",
    "recent_checkout_starts",
    "recent_support_chats",
    "recent_low_ratings",
    "avg_rating_centered",
    "recent_failed_payments",
    "unrecovered_failed_payments",
    "recent_cancellations",
    "recent_refunds",
    "recent_returns",
    "has_consent",
    "prior_logit",
)
_LOG_2: Final[float] = math.log(2.0)
_MINUS_LOG_2: Final[float] = -_LOG_2
_GROUP_INDEXES: Final[tuple[tuple[str, tuple[int, ...]], ...]] = tuple(
    (group, tuple(i for i, (_, g) in enumerate(DECAYED_COUNTERS) if g == group))
    for group in ("order", "engagement", "service")
)


def decay_to(state: CustomerState, now_s: float, config: ScoringConfig) -> None:
    """Decay every counter of ``state`` (in place) from its anchor to ``now_s``.

    Only forward: a late event is counted at the customer's latest time, never rewinds it.
    """
    elapsed_days = (now_s - state.decay_anchor_s) / SECONDS_PER_DAY
    if elapsed_days <= 0:
        return
    counters = state.counters
    exponent = _MINUS_LOG_2 * elapsed_days
    for group, indexes in _GROUP_INDEXES:
        # Most customers never touch most groups: skip the exp() for all-zero groups.
        if not any(map(counters.__getitem__, indexes)):
            continue
        factor = math.exp(exponent / _half_life(config, group))
        for i in indexes:
            counters[i] *= factor
    if state.categories or state.brands:
        pref_factor = math.exp(exponent / config.engagement_half_life_days)
        for prefs in (state.categories, state.brands):
            for name in prefs:
                prefs[name] *= pref_factor
    state.decay_anchor_s = now_s


def _half_life(config: ScoringConfig, group: str) -> float:
    if group == "order":
        return config.order_half_life_days
    if group == "engagement":
        return config.engagement_half_life_days
    return config.service_half_life_days


def prior_of(state: CustomerState, now_s: float, config: ScoringConfig) -> float:
    """Return the cold-start prior P(no order within H) of ``state`` as of ``now_s``."""
    if state.first_order_s is None or state.last_order_s is None:
        return p_no_order_within(
            0,
            0.0,
            (now_s - state.first_seen_s) / SECONDS_PER_DAY,
            config.horizon_days,
            config.prior,
        )
    return p_no_order_within(
        state.order_count - 1,
        (state.last_order_s - state.first_order_s) / SECONDS_PER_DAY,
        (now_s - state.first_order_s) / SECONDS_PER_DAY,
        config.horizon_days,
        config.prior,
    )


def compute_features(state: CustomerState, now_s: float, prior: float) -> dict[str, float]:
    """Return the feature dict of ``state`` as of ``now_s`` (counters must be decayed to it).

    Customers who never ordered count their silence from when they were first seen.
    """
    # Runs for every score: "b if b > a else a" is max(a, b) (ties and NaN alike) without
    # the cost of a builtin call.
    last_order_s = state.last_order_s if state.last_order_s is not None else state.first_seen_s
    days_since_order = (now_s - last_order_s) / SECONDS_PER_DAY
    days_since_order = days_since_order if days_since_order > 0.0 else 0.0
    last_visit_s = state.last_visit_s if state.last_visit_s is not None else last_order_s
    last_activity_s = last_order_s if last_order_s > last_visit_s else last_visit_s
    days_since_visit = (now_s - last_activity_s) / SECONDS_PER_DAY
    days_since_visit = days_since_visit if days_since_visit > 0.0 else 0.0
    start_s = state.first_order_s if state.first_order_s is not None else state.first_seen_s
    tenure_days = (now_s - start_s) / SECONDS_PER_DAY
    tenure_days = tenure_days if tenure_days > 0.0 else 0.0
    gap = state.order_gap_days
    order_count = state.order_count
    # Unpacked in DECAYED_COUNTERS order (checked below the function): one step, not 15 lookups.
    (
        recent_orders,
        recent_sessions,
        recent_product_views,
        recent_searches,
        recent_cart_adds,
        recent_abandoned_carts,
        recent_checkout_starts,
        recent_support_chats,
        recent_low_ratings,
        rating_sum,
        rating_count,
        recent_failed_payments,
        recent_cancellations,
        recent_refunds,
        recent_returns,
    ) = state.counters
    avg_rating = rating_sum / rating_count if rating_count > 0.05 else 3.0
    consent = state.email_opt_in or state.sms_opt_in or state.push_opt_in or state.chat_opt_in
    return {
        "log_days_since_last_order": math.log1p(days_since_order),
        "years_since_last_order": days_since_order / 365.0,
        "log_days_since_last_visit": math.log1p(days_since_visit),
        "log_order_count": math.log1p(order_count),
        "log_tenure_days": math.log1p(tenure_days),
        "log_usual_order_gap_days": math.log1p(gap) if gap is not None else 0.0,
        "silence_to_usual_gap": min(days_since_order / max(gap, 1.0), 10.0) if gap else 0.0,
        "one_time_buyer": 1.0 if order_count <= 1 else 0.0,
        "recent_orders": recent_orders,
        "log_avg_order_value": math.log1p(state.spend / order_count) if order_count else 0.0,
        "recent_sessions": recent_sessions,
        "recent_product_views": recent_product_views,
        "recent_searches": recent_searches,
        "recent_cart_adds": recent_cart_adds,
        "recent_abandoned_carts": recent_abandoned_carts,
        "recent_checkout_starts": recent_checkout_starts,
        "recent_support_chats": recent_support_chats,
        "recent_low_ratings": recent_low_ratings,
        "avg_rating_centered": avg_rating - 3.0,
        "recent_failed_payments": recent_failed_payments,
        "unrecovered_failed_payments": float(min(state.unrecovered_failed_payments, 5)),
        "recent_cancellations": recent_cancellations,
        "recent_refunds": recent_refunds,
        "recent_returns": recent_returns,
        "has_consent": 1.0 if consent else 0.0,
        "prior_logit": logit(prior),
    }


_UNPACKED_COUNTERS: Final[tuple[str, ...]] = (
    "orders",
    "sessions",
    "product_views",
    "searches",
    "cart_adds",
    "abandoned_carts",
    "checkout_starts",
    "support_chats",
    "low_ratings",
    "rating_sum",
    "rating_count",
    "failed_payments",
    "cancellations",
    "refunds",
    "returns",
)
if tuple(name for name, _ in DECAYED_COUNTERS) != _UNPACKED_COUNTERS:
    raise ImportError("compute_features unpacks the counters in an order DECAYED_COUNTERS broke")
