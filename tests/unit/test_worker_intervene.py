"""The worker's intervention shell: routing a step's risk changes and event, without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core.events import ClickEvent
from streams.core.interventions import InterventionConfig
from streams.core.records import Reason, RiskChange, to_s
from streams.core.scoring import StepOutput
from streams.core.state import CustomerState
from streams.worker.intervene import InterventionShell

T_TIMER = datetime(2024, 1, 15, 12, tzinfo=UTC)  # noon UTC: no quiet hours
T_EVENT = T_TIMER + timedelta(hours=3)


def _state(clock: datetime) -> CustomerState:
    state = CustomerState("c1", to_s(clock) - 86_400 * 60, to_s(clock), to_s(clock))
    state.timezone = "UTC"
    state.email_opt_in = True
    return state


def _timer_change() -> RiskChange:
    reasons = (Reason("silence", "no visit in 41 days (usual: 9)", 0.4),)
    return RiskChange(
        "rc-c1-timer", "c1", "LOW", "HIGH", 0.7, 0.3, reasons, "m-7", T_TIMER, "timer"
    )


def _shell() -> InterventionShell:
    store: dict[str, Any] = {}
    return InterventionShell(
        store, InterventionConfig(holdout_percent=0.0), partition_of=lambda _: 0
    )


def test_a_timers_risk_change_is_decided_alike_alone_or_in_the_customers_next_step() -> None:
    """Which step routes a timer's risk change depends on other customers' records.

    The watermark (another customer's record) fires it alone, at the timer's time; or the
    customer's own next event makes it due and it is routed in that event's step, with the
    state after the event. After a restart the records delivered again decide which, so the
    decision (same id) must not depend on it.
    """
    change = _timer_change()
    other = ClickEvent("e-c2", "c2", "s-c2", T_TIMER, "page_view")
    alone = _shell().on_step(
        other, StepOutput(risk_changes=[change]), lambda _: _state(T_TIMER), partition=0
    )
    click = ClickEvent("e-c1", "c1", "s-c1", T_EVENT, "page_view")
    with_event = _shell().on_step(
        click, StepOutput(risk_changes=[change]), lambda _: _state(T_EVENT), partition=0
    )

    assert len(alone.decisions) == 1
    assert [d.to_record() for d in with_event.decisions] == [alone.decisions[0].to_record()]
    assert alone.decisions[0].created_at == T_TIMER
