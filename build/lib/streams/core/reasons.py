"""Top reasons of a score in plain words, ranked by how much each pushed the risk up.

With a learned linear model a reason's weight is the sum of its features' contributions to
the log-odds (relative to the average customer); before anything was learned, fixed
log-odds-sized weights stand in so immediate triggers still read right from the first event.

Most scores are never sent (a flush window sends only each customer's latest), so the scoring
step hands out :class:`DeferredReasons`: the facts the rules read, copied at score time, and
the reasons worked out from them the first time anyone reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, overload

from streams.core.records import Reason
from streams.core.state import COUNTER_INDEX, CustomerState

_DAY_S = 86_400.0
_MIN_COUNT = 0.5
_ZEROS = repeat(0.0)  # the default of each contributions.get in a weight's sum


class _Facts:
    """What the rules read of a customer's state, copied (the state changes afterwards)."""

    __slots__ = (
        "counters",
        "first_seen_s",
        "last_order_s",
        "last_visit_s",
        "order_count",
        "order_gap_days",
        "unrecovered_failed_payments",
        "visit_gap_days",
    )

    def __init__(self, state: CustomerState) -> None:
        # a tuple of floats: the garbage collector stops tracking it (scores wait in a window)
        self.counters = tuple(state.counters)
        self.first_seen_s = state.first_seen_s
        self.last_order_s = state.last_order_s
        self.last_visit_s = state.last_visit_s
        self.order_count = state.order_count
        self.order_gap_days = state.order_gap_days
        self.unrecovered_failed_payments = state.unrecovered_failed_payments
        self.visit_gap_days = state.visit_gap_days


# A rule returns (text, weight) when its reason applies, else None.
_Rule = Callable[[_Facts, float], tuple[str, float] | None]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _recency(state: _Facts, now_s: float) -> tuple[str, float] | None:
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


def _few_orders(state: _Facts, now_s: float) -> tuple[str, float] | None:
    if state.order_count == 1:
        return "only 1 order so far", 0.5
    if state.order_count == 2:
        return "only 2 orders so far", 0.25
    return None


def _no_visit(state: _Facts, now_s: float) -> tuple[str, float] | None:
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


def _failed_payments(state: _Facts, now_s: float) -> tuple[str, float] | None:
    unrecovered = state.unrecovered_failed_payments
    if unrecovered:
        return f"{_plural(unrecovered, 'failed payment')} since the last order", 0.6 * unrecovered
    return _counted(state, _FAILED_PAYMENTS, "failed payment", 0.6)


def _counted(state: _Facts, index: int, word: str, weight: float) -> tuple[str, float] | None:
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
    return _explain(_Facts(state), now_s, contributions, max_reasons)


def _explain(
    facts: _Facts,
    now_s: float,
    contributions: Mapping[str, float] | None,
    max_reasons: int,
) -> tuple[Reason, ...]:
    found: list[Reason] = []
    for code, rule, feature_names in _RULE_LIST:
        hit = rule(facts, now_s)
        if hit is not None:
            _add(found, code, hit, feature_names, contributions)
    counters = facts.counters
    for code, index, word, per_count, feature_names in _COUNTED_LIST:
        if counters[index] >= _MIN_COUNT:
            hit = _counted(facts, index, word, per_count)
            if hit is not None:
                _add(found, code, hit, feature_names, contributions)
    if len(found) > 1:
        # Ties break on the code so the order never depends on dict or hash order.
        found.sort(key=lambda reason: (-reason.weight, reason.code))
    return tuple(found[:max_reasons])


class DeferredReasons(Sequence[Reason]):
    """The reasons of one score, worked out from facts copied at score time when first read.

    It reads like the tuple :func:`explain` returns (and equals it). ``contributions`` is
    the mapping, or a function returning it that is called only then (for read-only models).

    >>> from streams.core.state import CustomerState
    >>> state = CustomerState("c1", 0.0, 0.0, 0.0)
    >>> reasons = DeferredReasons(state, 45 * 86_400.0, None, 3)
    >>> state.first_seen_s = 40 * 86_400.0  # later changes to the state do not matter
    >>> reasons == explain(CustomerState("c1", 0.0, 0.0, 0.0), 45 * 86_400.0, None, 3)
    True
    >>> reasons[0].text
    'no order yet, first seen 45 days ago'
    """

    __slots__ = ("_contributions", "_facts", "_max_reasons", "_now_s", "_reasons")

    def __init__(
        self,
        state: CustomerState,
        now_s: float,
        contributions: Mapping[str, float] | Callable[[], Mapping[str, float]] | None,
        max_reasons: int,
    ) -> None:
        self._facts: _Facts | None = _Facts(state)
        self._now_s = now_s
        self._contributions = contributions
        self._max_reasons = max_reasons
        self._reasons: tuple[Reason, ...] | None = None

    def resolve(self) -> tuple[Reason, ...]:
        """Return the reasons as a tuple (worked out on the first call)."""
        reasons = self._reasons
        if reasons is None:
            assert self._facts is not None
            contributions = self._contributions
            if callable(contributions):
                contributions = contributions()
            reasons = _explain(self._facts, self._now_s, contributions, self._max_reasons)
            self._reasons = reasons
            self._facts = self._contributions = None  # let go of what is not needed any more
        return reasons

    @overload
    def __getitem__(self, index: int) -> Reason: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Reason, ...]: ...

    def __getitem__(self, index: int | slice) -> Reason | tuple[Reason, ...]:
        return self.resolve()[index]

    def __len__(self) -> int:
        return len(self.resolve())

    def __iter__(self) -> Iterator[Reason]:
        return iter(self.resolve())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DeferredReasons):
            return self.resolve() == other.resolve()
        if isinstance(other, tuple):
            return self.resolve() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.resolve())

    def __repr__(self) -> str:
        return repr(self.resolve())

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles (and copies) as the plain tuple
        return (tuple, (self.resolve(),))


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
