"""``churnstream report uplift``: the retention uplift per segment with a 95 % interval.

Two sources, same method (streams.core.uplift):

- Kafka (``settings``): every record of the ``interventions`` and ``orders`` topics from the
  beginning, read until ``timeout_s`` passes without a new record.
- Files: ``interventions_file`` holds one intervention per line, either the JSON lines
  ``churnstream tail --topic interventions`` prints (``{"key", "value"}``) or bare records;
  ``events_file`` is an events file (only its orders are used). Both may be ``.gz``.

:class:`streams.worker.uplift_gauges.UpliftGauges` exposes the same estimates to Prometheus
from a live tracker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streams.core.events import OrderEvent
from streams.core.uplift import (
    CI_METHOD,
    Decision,
    UpliftEstimate,
    UpliftTracker,
    decision_from_record,
    replay_outcomes,
)
from streams.errors import ChurnstreamError, EventsFileError, ValidationError

if TYPE_CHECKING:
    from streams.settings import Settings


def report_uplift(
    settings: Settings | None = None,
    *,
    interventions_file: Path | None = None,
    events_file: Path | None = None,
    window_days: float = 14.0,
    timeout_s: float = 5.0,
) -> str:
    """Return the uplift table from files (when ``interventions_file`` is given) or Kafka."""
    if interventions_file is not None:
        if events_file is None:
            raise ChurnstreamError("--interventions needs --events (the orders give outcomes)")
        decisions: Iterable[Decision] = list(decisions_from_file(interventions_file))
        orders: Iterable[tuple[str, float, str]] = list(orders_from_events_file(events_file))
    elif settings is not None:
        decisions, orders = _from_kafka(settings, timeout_s)
    else:
        raise ChurnstreamError("give --broker, or --interventions FILE with --events FILE")
    tracker = replay_outcomes(decisions, orders, window_days)
    return format_uplift(tracker, window_days)


def decisions_from_file(path: Path) -> Iterator[Decision]:
    """Yield the uplift decisions of an interventions JSON-lines file (see module doc)."""
    from streams.io.events_file import iter_lines

    for line_number, raw in iter_lines(path):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if isinstance(record, dict) and isinstance(record.get("value"), dict):
                record = record["value"]
            if not isinstance(record, dict):
                raise ValidationError(f"expected a JSON object, got {type(record).__name__}")
            decision = decision_from_record(record)
        except (ValueError, KeyError, ValidationError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EventsFileError(f"not an intervention: {detail}", str(path), line_number) from exc
        if decision is not None:
            yield decision


def orders_from_events_file(path: Path) -> Iterator[tuple[str, float, str]]:
    """Yield ``(customer_id, order_s, status)`` of every order in an events file."""
    from streams.io.events_file import read_events

    for event in read_events(path):
        if isinstance(event, OrderEvent):
            yield event.customer_id, event.event_time.timestamp(), event.status


def _from_kafka(
    settings: Settings, timeout_s: float
) -> tuple[list[Decision], list[tuple[str, float, str]]]:
    from streams.io.kafka_clients import iter_topic

    decisions: list[Decision] = []
    for item in iter_topic(settings, "interventions", from_beginning=True, timeout_s=timeout_s):
        value = item.get("value")
        if isinstance(value, dict):
            decision = decision_from_record(value)
            if decision is not None:
                decisions.append(decision)
    orders: list[tuple[str, float, str]] = []
    for item in iter_topic(settings, "orders", from_beginning=True, timeout_s=timeout_s):
        value = item.get("value")
        if isinstance(value, dict):
            when = datetime.fromisoformat(str(value["event_time"]))
            orders.append((str(value["customer_id"]), when.timestamp(), str(value["status"])))
    return decisions, orders


def format_uplift(tracker: UpliftTracker, window_days: float) -> str:
    """Return the per-segment table: rates of both arms, uplift in points and its 95 % CI."""
    lines = [
        f"uplift = P(order within {window_days:g} days | treated) - P(... | held out); "
        f"95 % CI: {CI_METHOD}",
        "(widened by each arm's design effect, deff, for repeat decisions of one customer)",
        f"{'segment':<20} {'treated':>8} {'ordered':>8} {'rate':>7} "
        f"{'held_out':>8} {'ordered':>8} {'rate':>7} {'deff':>9} {'uplift':>9}  95 % CI",
    ]
    for estimate in tracker.estimates():
        lines.append(_row(estimate))
    lines.append(
        f"open windows (outcome not known yet): {tracker.pending}; decisions inside an open "
        f"window (not counted): {tracker.overlapping}"
    )
    return "\n".join(lines) + "\n"


def _row(estimate: UpliftEstimate) -> str:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    uplift = "-" if estimate.uplift is None else f"{100 * estimate.uplift:+.1f} pp"
    ci = estimate.ci
    interval = "-" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] pp"
    deff = f"{estimate.treated_design_effect:.1f}/{estimate.control_design_effect:.1f}"
    return (
        f"{estimate.segment:<20} {estimate.treated_n:>8} {estimate.treated_ordered:>8} "
        f"{rate(estimate.treated_rate):>7} {estimate.control_n:>8} "
        f"{estimate.control_ordered:>8} {rate(estimate.control_rate):>7} {deff:>9} "
        f"{uplift:>9}  {interval}"
    )
