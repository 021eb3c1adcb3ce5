"""What the worker does with risk changes and triggers, with no Faust inside.

After each scoring step, :class:`InterventionShell` routes the step's risk changes and the
event itself through the pure intervention router, keeps each customer's contact history in
a mapping (a Faust table in the worker), releases quiet-hours deferrals as the partition's
watermark passes them, and tracks outcomes for the uplift estimate. It returns what to send:
every decision goes to the ``interventions`` topic; only deliverable ones are pushed to chat
tools (SSE, webhooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streams.core.clock import TimerIndex
from streams.core.events import ClickEvent, Event, OrderEvent
from streams.core.intervention_config import InterventionConfig
from streams.core.interventions import ContactState, Intervention, release_deferred, route
from streams.core.records import RiskChange, to_s
from streams.core.scoring import StepOutput
from streams.core.segments import plans_for_event
from streams.core.state import CustomerState
from streams.core.uplift import UpliftTracker, decision_from_record
from streams.worker.contacts_in_state import ContactsInState
from streams.worker.shell import StateStore


@dataclass(slots=True)
class Routed:
    """What one step asks the worker to send."""

    decisions: list[Intervention] = field(default_factory=list)
    # (intervention, band of its customer) to push to SSE and webhooks now
    deliver: list[tuple[Intervention, str | None]] = field(default_factory=list)
    expired: int = 0

    def extend(self, other: Routed) -> None:
        """Append everything ``other`` holds."""
        self.decisions.extend(other.decisions)
        self.deliver.extend(other.deliver)
        self.expired += other.expired


class InterventionShell:
    """Routes the scoring core's outputs into interventions for the partitions a worker owns."""

    def __init__(
        self,
        contacts: StateStore,
        config: InterventionConfig,
        partition_of: Callable[[str], int],
        timer_bucket_s: float = 600.0,
        uplift_window_days: float = 14.0,
    ) -> None:
        self.contacts = contacts
        self.config = config
        self.partition_of = partition_of
        self.timer_bucket_s = timer_bucket_s
        self.releases: dict[int, TimerIndex] = {}
        # Write-back cache: contact states changed in a batch are written once by flush().
        self.cache: dict[str, ContactState] = {}
        self.dirty: dict[int, set[str]] = {}
        # In memory: after a restart the estimate starts over (the report reads the topics).
        self.uplift = UpliftTracker(window_days=uplift_window_days)

    def forget_partitions(self) -> None:
        """Drop release timers and cache (only between batches, after :meth:`flush`)."""
        self.releases.clear()
        self.cache.clear()
        self.dirty.clear()

    def _timers(self, partition: int) -> TimerIndex:
        timers = self.releases.get(partition)
        if timers is None:
            # One pass over the store rebuilds every partition that has no timers yet
            # (partitions that have them are live and may be ahead of the store).
            fresh: dict[int, TimerIndex] = {partition: TimerIndex(self.timer_bucket_s)}
            if isinstance(self.contacts, ContactsInState):
                # the scoring shell's rebuild read these in its own pass over the store
                timers = fresh[partition]
                for customer_id, raw in self.contacts.shell.partition_contacts(partition):
                    timers.schedule(customer_id, ContactState.from_dict(raw).next_release_s())
                self.releases[partition] = timers
                return timers
            for customer_id, raw in list(self.contacts.items()):
                owner = self.partition_of(customer_id)
                if owner in self.releases:
                    continue
                if owner not in fresh:
                    fresh[owner] = TimerIndex(self.timer_bucket_s)
                fresh[owner].schedule(customer_id, ContactState.from_dict(raw).next_release_s())
            self.releases.update(fresh)
            timers = fresh[partition]
        return timers

    def _load(self, customer_id: str, state: CustomerState | None = None) -> ContactState | None:
        cached = self.cache.get(customer_id)
        if cached is not None:
            return cached
        if state is not None and isinstance(self.contacts, ContactsInState):
            raw = state.contacts  # the history lives in the state the caller holds
        else:
            raw = self.contacts.get(customer_id)
        if raw is None:
            return None
        contacts = ContactState.from_dict(raw)
        self.cache[customer_id] = contacts
        return contacts

    def _save(self, contacts: ContactState, partition: int) -> None:
        self.cache[contacts.customer_id] = contacts
        self.dirty.setdefault(partition, set()).add(contacts.customer_id)
        self._timers(partition).schedule(contacts.customer_id, contacts.next_release_s())

    def flush(self, partition: int, max_cached: int = 50_000) -> int:
        """Write each contact state of ``partition`` changed since the last flush once.

        Run it in the context of an event of ``partition`` (see ScoringShell.flush).
        """
        dirty = self.dirty.pop(partition, set())
        for customer_id in dirty:
            self.contacts[customer_id] = self.cache[customer_id].to_dict()
        if len(self.cache) > max_cached and not self.dirty:
            self.cache.clear()
        return len(dirty)

    def on_step(
        self,
        event: Event,
        out: StepOutput,
        states: Callable[[str], CustomerState | None],
        partition: int,
        route_event: bool = True,
    ) -> Routed:
        """Return the decisions of ``event`` and of the risk changes in ``out``.

        ``states`` returns a customer's state after the step (the scoring table's value).
        ``route_event`` False routes only the risk changes (of timers an event made due
        whose own effect was routed before a crash).
        """
        routed = Routed()
        by_customer: dict[str, list[RiskChange]] = {}
        for change in out.risk_changes:
            by_customer.setdefault(change.customer_id, []).append(change)
        if route_event:
            by_customer.setdefault(event.customer_id, [])
        for customer_id, changes in by_customer.items():
            state = states(customer_id)
            if state is None:
                continue
            contacts = self._load(customer_id, state)
            if contacts is None and not changes and not _may_route(event, self.config):
                continue  # most clicks: nothing deferred, nothing to decide, nothing to store
            known = (None, 0) if contacts is None else (contacts.currency, len(contacts.deferred))
            now_s = state.clock_s
            if contacts is not None:
                contacts, due, expired = release_deferred(contacts, now_s)
                routed.deliver.extend((item, state.band) for item in due)
                routed.expired += len(expired)
            decisions: list[Intervention] = []
            for change in changes:
                # At the risk change's own time, not the state's clock after the step: a
                # timer's risk change is routed in the step of the customer's next event when
                # that event made it due, and alone when the watermark did (which of the two
                # depends on other customers' records, and differs after a restart).
                change_s = to_s(change.as_of)
                contacts, made = route(state, contacts, change, change_s, self.config)
                decisions.extend(made)
            if route_event and customer_id == event.customer_id:
                contacts, made = route(state, contacts, event, now_s, self.config)
                decisions.extend(made)
            # Most steps decide nothing: write the contact state only when it changed.
            if contacts is not None and (
                decisions or known != (contacts.currency, len(contacts.deferred))
            ):
                self._save(contacts, partition)
            for decision in decisions:
                routed.decisions.append(decision)
                recorded = decision_from_record(decision.to_record())
                if recorded is not None:
                    self.uplift.record_decision(recorded)
                if decision.deliver_now:
                    routed.deliver.append((decision, state.band))
        if route_event and isinstance(event, OrderEvent):
            self.uplift.record_order(event.customer_id, to_s(event.event_time), event.status)
        return routed

    def on_watermark(
        self, partition: int, watermark_s: float, band_of: Callable[[str], str | None]
    ) -> Routed:
        """Return the deferred interventions of ``partition`` whose quiet hours ended."""
        routed = Routed()
        for _, customer_id in self._timers(partition).pop_due(watermark_s):
            contacts = self._load(customer_id)
            if contacts is None:
                continue
            contacts, due, expired = release_deferred(contacts, watermark_s)
            self._save(contacts, partition)
            band = band_of(customer_id)
            routed.deliver.extend((item, band) for item in due)
            routed.expired += len(expired)
        self.uplift.advance(watermark_s)
        return routed


def _may_route(event: Event, config: InterventionConfig) -> bool:
    """Return whether routing ``event`` can decide or store anything without risk changes.

    An order always can (it records the customer's currency); a click only if it is a
    trigger (a low rating); a profile change never.
    """
    if isinstance(event, OrderEvent):
        return True
    return isinstance(event, ClickEvent) and bool(plans_for_event(event, config))
