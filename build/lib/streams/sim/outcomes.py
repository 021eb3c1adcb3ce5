"""Potential outcomes of intervention decisions, on the uplift estimator's own windows.

``churnstream report uplift`` opens a window of N days at a customer's first decision and
closes it at their first order (or at its end); decisions inside an open window are not
counted, but in the treated arm their contacts still reach the customer and shape the
outcome. So the truth follows the same windows: a decision that opens one gets ``y0`` (the
customer's next N days with no contact) and ``y1`` (with this and every later contact of the
window delivered), each played out on a copy of the customer taken before the decision.
A later contact in the window revises ``y1`` of the decision that opened it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from streams.sim.behaviour import Response, World, act
from streams.sim.customers import DAY_MS, RESPOND, Customer
from streams.sim.effects import EffectPlan, InterventionNotice

ARMS: Final[frozenset[str]] = frozenset({"treated", "held_out"})
PlanFor = Callable[[Customer, InterventionNotice, int], EffectPlan]


class _NullSink:
    """A copy's sink: what a copy does is only read back from its purchases."""

    __slots__ = ()

    def event(self, when_ms: int, event: object) -> None:
        return None

    def truth(self, record: dict[str, Any]) -> None:
        return None


_NULL_SINK: Final[_NullSink] = _NullSink()


def deliver(customer: Customer, response: Response, effective_ms: int) -> None:
    """Put a delivered contact's effect on the customer's agenda (and count the contact)."""
    customer.contacts.append(effective_ms)
    plan = response.plan
    if plan.backfires:
        customer.schedule(effective_ms, RESPOND, response)
    elif plan.responds:
        customer.schedule(effective_ms + plan.response_delay_ms, RESPOND, response)


def ordered_in(copy: Customer, world: World, after_ms: int, until_ms: int) -> int:
    """Return 1 if ``copy``, left alone, buys (``placed`` or ``paid``) in ``(after, until]``."""
    while True:
        if any(after_ms < when <= until_ms for when in copy.purchases):
            return 1
        next_ms = copy.next_ms()
        if next_ms is None or next_ms > until_ms:
            return 0
        act(copy, world, _NULL_SINK)


@dataclass(slots=True)
class _Window:
    created_ms: int
    end_ms: int
    # The customer just before the opening decision: both worlds start from here.
    snapshot: Customer
    truth: dict[str, Any]
    contacts: list[tuple[InterventionNotice, int]] = field(default_factory=list)

    def covers(self, created_ms: int, purchases: list[int]) -> bool:
        """Return whether a decision at ``created_ms`` falls inside this still-open window."""
        # The estimator closes a window at the first order after its decision; an order at
        # the very time of the new decision comes after it (decisions sort first).
        ordered = any(self.created_ms < when < created_ms for when in purchases)
        return created_ms <= self.end_ms and not ordered


class OutcomeBook:
    """Open windows per customer and the potential outcomes of their decisions."""

    def __init__(self, world: World, window_days: float, plan_for: PlanFor) -> None:
        self.world = world
        self.window_ms = int(window_days * DAY_MS)
        self.plan_for = plan_for
        self._windows: dict[int, _Window] = {}
        # (end, customer index) in the order windows opened: decisions arrive roughly in time
        # order, so closed windows (and their customer snapshots) are dropped from the front.
        self._opened: deque[tuple[int, int]] = deque()

    def record(
        self,
        customer: Customer,
        notice: InterventionNotice,
        effective_ms: int,
        expired: bool,
        truth: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Add ``y0``/``y1`` to ``truth``; return the revised truth of the window it joins.

        Call before the contact is delivered to ``customer``. Returns None when the decision
        opens a window (or joins one without a contact that could change anything).
        """
        index = customer.traits.index
        self._forget_before(notice.created_ms - DAY_MS)
        contact = [] if expired else [(notice, effective_ms)]
        window = self._windows.get(index)
        revised = None
        if window is not None and window.covers(notice.created_ms, customer.purchases):
            truth["joins_window_of"] = window.truth["intervention_id"]
            if contact:
                window.contacts.extend(contact)
                _, y1 = self.outcomes(window.snapshot, window.created_ms, window.contacts)
                revised = dict(window.truth, y1=y1, later_contacts=len(window.contacts) - 1)
                window.truth = revised
        else:
            window = _Window(
                notice.created_ms,
                notice.created_ms + self.window_ms,
                customer.fork(),
                truth,
                list(contact),
            )
            self._windows[index] = window
            self._opened.append((window.end_ms, index))
        y0, y1 = self.outcomes(customer, notice.created_ms, contact)
        truth.update(window_days=self.window_ms / DAY_MS, y0=y0, y1=y1)
        return revised

    def _forget_before(self, when_ms: int) -> None:
        opened = self._opened
        while opened and opened[0][0] < when_ms:
            end_ms, index = opened.popleft()
            window = self._windows.get(index)
            if window is not None and window.end_ms == end_ms:
                del self._windows[index]

    def outcomes(
        self, base: Customer, created_ms: int, contacts: list[tuple[InterventionNotice, int]]
    ) -> tuple[int, int]:
        """Return ``(y0, y1)`` from ``base``: buys in the window without / with ``contacts``."""
        end_ms = created_ms + self.window_ms
        # Orders already decided (emitted or waiting to go out) are the same in both worlds.
        if any(created_ms < when <= end_ms for when in base.purchases):
            return 1, 1
        untreated = ordered_in(base.fork(), self.world, created_ms, end_ms)
        if not contacts:
            return untreated, untreated
        twin = base.fork()
        for notice, effective_ms in contacts:
            # Drawn on the copy: an earlier contact delivered there counts towards backfire.
            plan = self.plan_for(twin, notice, effective_ms)
            response = Response(notice.intervention_id, notice.segment, notice.channel, plan)
            deliver(twin, response, effective_ms)
        return untreated, ordered_in(twin, self.world, created_ms, end_ms)
