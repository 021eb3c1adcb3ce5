"""Retention uplift: P(order within N days of a decision), treated minus held out, with a CI.

A decision opens an outcome window for its customer: ``ordered`` if the customer places an
order within N days (event time), ``not ordered`` once the window passes without one, like
delayed labels. A customer has at most one open window, so observations do not overlap;
decisions made while one is open are counted as ``overlapping`` and otherwise ignored.

Treated = delivered or deferred (``suppressed_reason`` null); control = ``held_out``.
Decisions suppressed for consent, cap or cooldown took no action in either arm and are left
out. The interval is Newcombe's hybrid score interval (method 10, Newcombe 1998) from two
Wilson intervals: unlike Wald it keeps its coverage for small groups and rates near 0 or 1.

Repeat decisions of one customer are correlated, which makes a plain interval too narrow.
With ``cluster_by_customer`` the tracker keeps per-customer tallies and widens each arm's
interval by its design effect (cluster-robust variance over binomial variance, at least 1):
the Wilson intervals then use the effective sample size ``n / deff`` (Kish).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any, Final

from streams.errors import ValidationError

CI_METHOD: Final[str] = "Newcombe hybrid score (Wilson) interval"
Z_95: Final[float] = NormalDist().inv_cdf(0.975)
ALL_SEGMENTS: Final[str] = "all"
# Statuses that mean the customer bought: the first one in the window closes it as ordered.
ORDER_STATUSES: Final[frozenset[str]] = frozenset({"placed", "paid"})
UPLIFT_STATE_VERSION: Final[int] = 1


@dataclass(frozen=True, slots=True)
class Decision:
    """What uplift needs of one intervention decision."""

    decision_id: str
    customer_id: str
    segment: str
    treated: bool
    decided_s: float


def decision_from_record(record: Mapping[str, Any]) -> Decision | None:
    """Return the uplift decision of an ``intervention`` record, None if it is in no arm.

    Accepts the Avro-decoded record (datetimes) and its JSON form (ISO-8601 strings).
    """
    suppressed = record.get("suppressed_reason")
    if suppressed not in (None, "held_out"):
        return None
    created = record["created_at"]
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    if not isinstance(created, datetime) or created.tzinfo is None:
        msg = f"intervention {record.get('intervention_id')!r}: bad created_at {created!r}"
        raise ValidationError(msg, field="created_at")
    return Decision(
        decision_id=str(record["intervention_id"]),
        customer_id=str(record["customer_id"]),
        segment=str(record["segment"]),
        treated=suppressed is None,
        decided_s=created.timestamp(),
    )


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion (``(0, 1)`` when ``n`` is 0).

    >>> [round(v, 4) for v in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    treated_ordered: float,
    treated_n: float,
    control_ordered: float,
    control_n: float,
    z: float = Z_95,
) -> tuple[float, float]:
    """Return the Newcombe hybrid score interval of ``p_treated - p_control``.

    >>> [round(v, 4) for v in newcombe_interval(56, 70, 48, 80)]  # Newcombe 1998, example (a)
    [0.0524, 0.3339]
    """
    p1, p2 = treated_ordered / treated_n, control_ordered / control_n
    low1, high1 = wilson_interval(treated_ordered, treated_n, z)
    low2, high2 = wilson_interval(control_ordered, control_n, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)
    high = difference + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2)
    return low, high


@dataclass(frozen=True, slots=True)
class UpliftEstimate:
    """The uplift of one segment (or ``all``); rates and bounds are None without data."""

    segment: str
    treated_n: int
    treated_ordered: int
    control_n: int
    control_ordered: int
    treated_design_effect: float = 1.0
    control_design_effect: float = 1.0

    @property
    def treated_rate(self) -> float | None:
        """Share of treated decisions followed by an order within the window."""
        return self.treated_ordered / self.treated_n if self.treated_n else None

    @property
    def control_rate(self) -> float | None:
        """Share of held-out decisions followed by an order within the window."""
        return self.control_ordered / self.control_n if self.control_n else None

    @property
    def uplift(self) -> float | None:
        """Treated rate minus control rate, None until both arms have observations."""
        if self.treated_rate is None or self.control_rate is None:
            return None
        return self.treated_rate - self.control_rate

    @property
    def ci(self) -> tuple[float, float] | None:
        """The 95 % Newcombe interval of the uplift, None until both arms have data."""
        if not self.treated_n or not self.control_n:
            return None
        treated, control = self.treated_design_effect, self.control_design_effect
        return newcombe_interval(
            self.treated_ordered / treated,
            self.treated_n / treated,
            self.control_ordered / control,
            self.control_n / control,
        )


def design_effect(tallies: Iterable[tuple[int, int]]) -> float:
    """Return the design effect of per-customer ``(decisions, ordered)`` tallies (>= 1).

    Cluster-robust (ratio-estimator) variance of the pooled rate over its binomial variance;
    1 when customers are too few or the rate is 0 or 1 to say anything.

    >>> round(design_effect([(1, 1), (1, 0)] * 50), 2)  # one decision each: about 1
    1.01
    >>> round(design_effect([(3, 3), (3, 0), (3, 3), (3, 0)]), 2)
    4.0
    """
    pairs = list(tallies)
    total = sum(n for n, _ in pairs)
    ordered = sum(y for _, y in pairs)
    customers = len(pairs)
    if customers < 2 or total == 0 or ordered in (0, total):
        return 1.0
    rate = ordered / total
    binomial = rate * (1 - rate) / total
    spread = math.fsum((y - rate * n) ** 2 for n, y in pairs)
    clustered = customers / (customers - 1) * spread / (total * total)
    return max(1.0, clustered / binomial)


@dataclass(slots=True)
class _Window:
    decision_id: str
    segment: str
    treated: bool
    decided_s: float


class UpliftTracker:
    """Open outcome windows per customer and resolved counts per segment and arm."""

    def __init__(self, window_days: float = 14.0, cluster_by_customer: bool = False) -> None:
        if not window_days > 0:
            raise ValidationError(f"uplift window must be positive days, got {window_days!r}")
        self.window_s = window_days * 86_400.0
        # Per-customer tallies cost memory per customer ever decided: on for reports, and for
        # live gauges only where that fits.
        self.cluster_by_customer = cluster_by_customer
        # segment -> (customer_id, treated) -> [decisions, ordered]
        self.tallies: dict[str, dict[tuple[str, bool], list[int]]] = {}
        self.windows: dict[str, _Window] = {}
        # segment -> [treated_n, treated_ordered, control_n, control_ordered]
        self.counts: dict[str, list[int]] = {}
        self.overlapping = 0
        self._due: list[tuple[float, str, str]] = []

    def record_decision(self, decision: Decision) -> None:
        """Open an outcome window for ``decision`` unless its customer already has one."""
        current = self.windows.get(decision.customer_id)
        if current is not None and current.decided_s + self.window_s < decision.decided_s:
            self._resolve(decision.customer_id, ordered=False)
            current = None
        if current is not None:
            if current.decision_id != decision.decision_id:
                self.overlapping += 1
            return
        self.windows[decision.customer_id] = _Window(
            decision.decision_id, decision.segment, decision.treated, decision.decided_s
        )
        deadline_s = decision.decided_s + self.window_s
        heapq.heappush(self._due, (deadline_s, decision.customer_id, decision.decision_id))

    def record_order(self, customer_id: str, order_s: float, status: str = "placed") -> None:
        """Close the customer's window as ordered if a purchase falls inside it."""
        window = self.windows.get(customer_id)
        if window is None or status not in ORDER_STATUSES or order_s <= window.decided_s:
            return
        self._resolve(customer_id, ordered=order_s <= window.decided_s + self.window_s)

    def advance(self, now_s: float) -> int:
        """Close every window that ended before ``now_s`` as not ordered; return how many.

        A window is ``(decided, decided + N days]``: an order exactly at its end still counts.
        """
        closed = 0
        while self._due and self._due[0][0] < now_s:
            _, customer_id, decision_id = heapq.heappop(self._due)
            window = self.windows.get(customer_id)
            # Stale heap entries (the window closed earlier or reopened) are skipped.
            if window is not None and window.decision_id == decision_id:
                self._resolve(customer_id, ordered=False)
                closed += 1
        return closed

    def _resolve(self, customer_id: str, ordered: bool) -> None:
        window = self.windows.pop(customer_id)
        self.add_outcome(window.segment, window.treated, ordered)
        if self.cluster_by_customer:
            by_customer = self.tallies.setdefault(window.segment, {})
            tally = by_customer.setdefault((customer_id, window.treated), [0, 0])
            tally[0] += 1
            tally[1] += int(ordered)

    def add_outcome(self, segment: str, treated: bool, ordered: bool) -> None:
        """Count one resolved outcome directly (for outcomes resolved elsewhere)."""
        counts = self.counts.setdefault(segment, [0, 0, 0, 0])
        offset = 0 if treated else 2
        counts[offset] += 1
        counts[offset + 1] += int(ordered)

    @property
    def pending(self) -> int:
        """Return how many windows are still open (their outcome is not known yet)."""
        return len(self.windows)

    def estimates(self) -> list[UpliftEstimate]:
        """Return one estimate per segment (sorted by name), then the pooled ``all``."""
        out = [
            _estimate(segment, counts, self._design_effects(self.tallies.get(segment, {})))
            for segment, counts in sorted(self.counts.items())
        ]
        pooled_counts = [sum(counts[i] for counts in self.counts.values()) for i in range(4)]
        pooled: dict[tuple[str, bool], list[int]] = {}
        for by_customer in self.tallies.values():
            for key, (decisions, ordered) in by_customer.items():
                tally = pooled.setdefault(key, [0, 0])
                tally[0] += decisions
                tally[1] += ordered
        out.append(_estimate(ALL_SEGMENTS, pooled_counts, self._design_effects(pooled)))
        return out

    def _design_effects(self, tallies: Mapping[tuple[str, bool], list[int]]) -> tuple[float, float]:
        if not self.cluster_by_customer:
            return 1.0, 1.0
        treated = [(n, y) for (_, arm), (n, y) in tallies.items() if arm]
        control = [(n, y) for (_, arm), (n, y) in tallies.items() if not arm]
        return design_effect(treated), design_effect(control)

    def to_dict(self) -> dict[str, Any]:
        """Return the tracker as a JSON-able dict."""
        return {
            "v": UPLIFT_STATE_VERSION,
            "window_s": self.window_s,
            "windows": {
                customer_id: [w.decision_id, w.segment, w.treated, w.decided_s]
                for customer_id, w in self.windows.items()
            },
            "counts": {segment: list(counts) for segment, counts in self.counts.items()},
            "overlapping": self.overlapping,
            "cluster_by_customer": self.cluster_by_customer,
            "tallies": [
                [segment, customer_id, treated, decisions, ordered]
                for segment, by_customer in self.tallies.items()
                for (customer_id, treated), (decisions, ordered) in by_customer.items()
            ],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UpliftTracker:
        """Return the tracker :meth:`to_dict` produced, or raise ``ValidationError``."""
        if raw.get("v") != UPLIFT_STATE_VERSION:
            raise ValidationError(f"unknown uplift state version {raw.get('v')!r}", field="v")
        try:
            tracker = cls(float(raw["window_s"]) / 86_400.0, bool(raw["cluster_by_customer"]))
            for customer_id, (decision_id, segment, treated, decided_s) in raw["windows"].items():
                tracker.record_decision(
                    Decision(str(decision_id), customer_id, segment, bool(treated), decided_s)
                )
            tracker.counts = {
                str(k): [int(v) for v in counts] for k, counts in raw["counts"].items()
            }
            tracker.overlapping = int(raw["overlapping"])
            for segment, customer_id, treated, decisions, ordered in raw["tallies"]:
                key = (str(customer_id), bool(treated))
                tracker.tallies.setdefault(str(segment), {})[key] = [int(decisions), int(ordered)]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"uplift state is malformed: {exc!r}") from exc
        return tracker


def _estimate(segment: str, counts: list[int], effects: tuple[float, float]) -> UpliftEstimate:
    treated_n, treated_ordered, control_n, control_ordered = counts
    return UpliftEstimate(segment, treated_n, treated_ordered, control_n, control_ordered, *effects)


def replay_outcomes(
    decisions: Iterable[Decision],
    orders: Iterable[tuple[str, float, str]],
    window_days: float,
    as_of_s: float | None = None,
    cluster_by_customer: bool = True,
) -> UpliftTracker:
    """Return a tracker fed ``decisions`` and ``(customer_id, order_s, status)`` in time order.

    Duplicate decision ids (at-least-once delivery) count once. Windows still open at
    ``as_of_s`` (default: the latest time seen) stay pending: their outcome is not known.
    """
    timeline: list[tuple[float, int, Any]] = []
    seen: set[str] = set()
    for decision in decisions:
        if decision.decision_id not in seen:
            seen.add(decision.decision_id)
            timeline.append((decision.decided_s, 0, decision))
    timeline.extend(
        (order_s, 1, (customer_id, order_s, status)) for customer_id, order_s, status in orders
    )
    timeline.sort(key=lambda item: (item[0], item[1]))
    tracker = UpliftTracker(window_days, cluster_by_customer)
    for when_s, kind, item in timeline:
        tracker.advance(when_s)
        if kind == 0:
            tracker.record_decision(item)
        else:
            tracker.record_order(*item)
    last_s = timeline[-1][0] if timeline else 0.0
    tracker.advance(last_s if as_of_s is None else as_of_s)
    return tracker
