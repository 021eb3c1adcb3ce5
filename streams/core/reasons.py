"""Top reasons of a score in plain words, ranked by how much each pushed the risk up.

With a learned linear model a reason's weight is the sum of its features' contributions to
the log-odds (relative to the average customer); before anything was learned, fixed
log-odds-sized weights stand in so immediate triggers still read right from the first event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streams.core.records import Reason
from streams.core.state import COUNTER_INDEX, CustomerState

_DAY_S = 86_400.0
_MIN_COUNT = 0.5


@dataclass(frozen=True, slots=True)
class _Facts:
    days_since_order: float | None
    days_since_first_seen: float
    days_since_visit: float | None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _count(state: CustomerState, counter: str) -> int:
    value = state.counters[COUNTER_INDEX[counter]]
    return max(1, round(value)) if value >= _MIN_COUNT else 0


def _facts(state: CustomerState, now_s: float) -> _Facts:
    return _Facts(
        None if state.last_order_s is None else (now_s - state.last_order_s) / _DAY_S,
        (now_s - state.first_seen_s) / _DAY_S,
        None if state.last_visit_s is None else (now_s - state.last_visit_s) / _DAY_S,
    )


def _recency(state: CustomerState, facts: _Facts) -> tuple[str, float] | None:
    if facts.days_since_order is None:
        days = int(facts.days_since_first_seen)
        return f"no order yet, first seen {_plural(days, 'day')} ago", 0.3 + days / 90
    days = int(facts.days_since_order)
    gap = state.order_gap_days
    if gap is not None and days >= max(gap, 1.0):
        ratio = days / max(gap, 1.0)
        return f"no order in {days} days, usually every {max(1, round(gap))}", 0.5 * ratio
    if gap is None and days >= 30:
        return f"no order in {days} days", days / 90
    return None


def _few_orders(state: CustomerState, facts: _Facts) -> tuple[str, float] | None:
    if state.order_count == 1:
        return "only 1 order so far", 0.5
    if state.order_count == 2:
        return "only 2 orders so far", 0.25
    return None


def _no_visit(state: CustomerState, facts: _Facts) -> tuple[str, float] | None:
    days_float = facts.days_since_visit
    if days_float is None or days_float < 7:
        return None
    days = int(days_float)
    gap = state.visit_gap_days
    if gap is not None and days >= 2 * max(gap, 1.0):
        usual = max(gap, 1.0)
        return f"no visit in {days} days (usual: {round(usual)})", 0.25 * days / usual
    return None if gap is not None else (f"no visit in {days} days", days / 180)


def _counted(counter: str, word: str, weight: float) -> _Rule:
    def rule(state: CustomerState, facts: _Facts) -> tuple[str, float] | None:
        count = _count(state, counter)
        return (f"{_plural(count, word)} recently", weight * count) if count else None

    return rule


def _failed_payments(state: CustomerState, facts: _Facts) -> tuple[str, float] | None:
    unrecovered = state.unrecovered_failed_payments
    if unrecovered:
        return f"{_plural(unrecovered, 'failed payment')} since the last order", 0.6 * unrecovered
    return _counted("failed_payments", "failed payment", 0.6)(state, facts)


_Rule = Callable[[CustomerState, _Facts], tuple[str, float] | None]

# code -> (rule, features whose contributions the reason sums)
_RULES: dict[str, tuple[_Rule, tuple[str, ...]]] = {
    "no_recent_order": (
        _recency,
        (
            "log_days_since_last_order",
            "years_since_last_order",
            "silence_to_usual_gap",
            "prior_logit",
        ),
    ),
    "few_orders": (_few_orders, ("log_order_count", "one_time_buyer", "recent_orders")),
    "no_recent_visit": (_no_visit, ("log_days_since_last_visit", "recent_sessions")),
    "failed_payments": (
        _failed_payments,
        ("recent_failed_payments", "unrecovered_failed_payments"),
    ),
    "cancellations": (_counted("cancellations", "cancelled order", 0.5), ("recent_cancellations",)),
    "returns": (_counted("returns", "returned order", 0.4), ("recent_returns",)),
    "refunds": (_counted("refunds", "refund", 0.4), ("recent_refunds",)),
    "low_ratings": (_counted("low_ratings", "low rating", 0.5), ("recent_low_ratings",)),
    "support_chats": (_counted("support_chats", "support chat", 0.3), ("recent_support_chats",)),
    "abandoned_carts": (
        _counted("abandoned_carts", "abandoned cart", 0.2),
        ("recent_abandoned_carts",),
    ),
}


def explain(
    state: CustomerState,
    now_s: float,
    contributions: Mapping[str, float] | None,
    max_reasons: int,
) -> tuple[Reason, ...]:
    """Return up to ``max_reasons`` reasons that push the risk up, strongest first.

    ``contributions`` (feature -> log-odds push) come from a learned model; None means use
    the fixed cold-start weights. A reason whose features pull the risk down is left out.
    """
    facts = _facts(state, now_s)
    found: list[Reason] = []
    for code, (rule, feature_names) in _RULES.items():
        hit = rule(state, facts)
        if hit is None:
            continue
        text, weight = hit
        if contributions is not None:
            weight = sum(contributions.get(name, 0.0) for name in feature_names)
        if weight > 0:
            found.append(Reason(code, text, round(weight, 4)))
    # Ties break on the code so the order never depends on dict or hash order.
    found.sort(key=lambda reason: (-reason.weight, reason.code))
    return tuple(found[:max_reasons])
