"""Top reasons of a score in plain words, ranked by how much each pushed the risk up.

With a learned linear model a reason's weight is the sum of its features' contributions to
the log-odds (relative to the average customer); before anything was learned, fixed
log-odds-sized weights stand in so immediate triggers still read right from the first event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import repeat

from streams.core.records import Reason
from streams.core.state import COUNTER_INDEX, CustomerState

_DAY_S = 86_400.0
_MIN_COUNT = 0.5
_ZEROS = repeat(0.0)  # the default of each contributions.get in a weight's sum

# A rule returns (text, weight) when its reason applies, else None.
_Rule = Callable[[CustomerState, float], tuple[str, float] | None]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _recency(state: CustomerState, now_s: float) -> tuple[str, float] | None:
    if state.last_order_s is None:
        days = int((now_s - state.first_seen_s) / _DAY_S)
        return f"no order yet, first seen {_plural(days, 'day')} ago", 0.3 + days / 90
    days = int((now_s - state.last_order_s) / _DAY_S)
    gap = state.order_gap_days
    if gap is not None and days >= max(gap, 1.0):
        ratio = days / max(gap, 1.0)
        return f"no order in {days} days, usually every {max(1, round(gap))}", 0.5 * ratio
    if gap is None and days >= 30:
        return f"no order in {days} days", days / 90
    return None


def _few_orders(state: CustomerState, now_s: float) -> tuple[str, float] | None:
    if state.order_count == 1:
        return "only 1 order so far", 0.5
    if state.order_count == 2:
        return "only 2 orders so far", 0.25
    return None


def _no_visit(state: CustomerState, now_s: float) -> tuple[str, float] | None:
    if state.last_visit_s is None:
        return None
    days_float = (now_s - state.last_visit_s) / _DAY_S
    if days_float < 7:
        return None
    days = int(days_float)
    gap = state.visit_gap_days
    if gap is not None and days >= 2 * max(gap, 1.0):
        usual = max(gap, 1.0)
        return f"no visit in {days} days (usual: {round(usual)})", 0.25 * days / usual
    return None if gap is not None else (f"no visit in {days} days", days / 180)


def _failed_payments(state: CustomerState, now_s: float) -> tuple[str, float] | None:
    unrecovered = state.unrecovered_failed_payments
    if unrecovered:
        return f"{_plural(unrecovered, 'failed payment')} since the last order", 0.6 * unrecovered
    return _counted(state, _FAILED_PAYMENTS, "failed payment", 0.6)


def _counted(
    state: CustomerState, index: int, word: str, weight: float
) -> tuple[str, float] | None:
    value = state.counters[index]
    if value < _MIN_COUNT:
        return None
    count = max(1, round(value))
    return f"{_plural(count, word)} recently", weight * count


_FAILED_PAYMENTS = COUNTER_INDEX["failed_payments"]

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
}
# Reasons that are a recent decayed count: code -> (counter, word, weight per count, features).
# Kept as data rather than rules: most customers have none of them, and checking a counter
# inline is far cheaper than calling a rule that says "no".
_COUNTED: dict[str, tuple[str, str, float, tuple[str, ...]]] = {
    "cancellations": ("cancellations", "cancelled order", 0.5, ("recent_cancellations",)),
    "returns": ("returns", "returned order", 0.4, ("recent_returns",)),
    "refunds": ("refunds", "refund", 0.4, ("recent_refunds",)),
    "low_ratings": ("low_ratings", "low rating", 0.5, ("recent_low_ratings",)),
    "support_chats": ("support_chats", "support chat", 0.3, ("recent_support_chats",)),
    "abandoned_carts": ("abandoned_carts", "abandoned cart", 0.2, ("recent_abandoned_carts",)),
}
_RULE_LIST: tuple[tuple[str, _Rule, tuple[str, ...]], ...] = tuple(
    (code, rule, names) for code, (rule, names) in _RULES.items()
)
_COUNTED_LIST: tuple[tuple[str, int, str, float, tuple[str, ...]], ...] = tuple(
    (code, COUNTER_INDEX[counter], word, weight, names)
    for code, (counter, word, weight, names) in _COUNTED.items()
)


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
    found: list[Reason] = []
    for code, rule, feature_names in _RULE_LIST:
        hit = rule(state, now_s)
        if hit is not None:
            _add(found, code, hit, feature_names, contributions)
    counters = state.counters
    for code, index, word, per_count, feature_names in _COUNTED_LIST:
        if counters[index] >= _MIN_COUNT:
            hit = _counted(state, index, word, per_count)
            if hit is not None:
                _add(found, code, hit, feature_names, contributions)
    if len(found) > 1:
        # Ties break on the code so the order never depends on dict or hash order.
        found.sort(key=lambda reason: (-reason.weight, reason.code))
    return tuple(found[:max_reasons])


def _add(
    found: list[Reason],
    code: str,
    hit: tuple[str, float],
    feature_names: tuple[str, ...],
    contributions: Mapping[str, float] | None,
) -> None:
    text, weight = hit
    if contributions is not None:
        weight = sum(map(contributions.get, feature_names, _ZEROS))
    if weight > 0:
        found.append(Reason(code, text, round(weight, 4)))
