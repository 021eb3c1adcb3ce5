"""Prometheus gauges of the live uplift estimate (treated vs held-out order rates)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from streams.core.uplift import UpliftTracker


@dataclass(slots=True)
class UpliftGauges:
    """Prometheus gauges of a live :class:`UpliftTracker` (set by :meth:`update`)."""

    uplift: Gauge
    ci_lower: Gauge
    ci_upper: Gauge
    observations: Gauge
    ordered: Gauge
    open_windows: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> UpliftGauges:
        """Return the gauges registered on ``registry``."""

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        return cls(
            uplift=gauge(
                "churnstream_uplift_ratio",
                "Order rate within the window, treated minus held out (NaN without data).",
                ("segment",),
            ),
            ci_lower=gauge(
                "churnstream_uplift_ci_lower_ratio",
                "Lower bound of the 95 % Newcombe interval of the uplift.",
                ("segment",),
            ),
            ci_upper=gauge(
                "churnstream_uplift_ci_upper_ratio",
                "Upper bound of the 95 % Newcombe interval of the uplift.",
                ("segment",),
            ),
            observations=gauge(
                "churnstream_uplift_decisions",
                "Decisions whose outcome window has closed, by segment and arm.",
                ("segment", "arm"),
            ),
            ordered=gauge(
                "churnstream_uplift_ordered",
                "Closed decisions followed by an order within the window, by segment and arm.",
                ("segment", "arm"),
            ),
            open_windows=gauge(
                "churnstream_uplift_open_windows", "Decisions whose outcome is not known yet."
            ),
        )

    def update(self, tracker: UpliftTracker) -> None:
        """Set every gauge from the tracker's current estimates."""
        for estimate in tracker.estimates():
            segment = estimate.segment
            self.uplift.labels(segment=segment).set(_or_nan(estimate.uplift))
            ci = estimate.ci
            self.ci_lower.labels(segment=segment).set(math.nan if ci is None else ci[0])
            self.ci_upper.labels(segment=segment).set(math.nan if ci is None else ci[1])
            for arm, n, ordered in (
                ("treated", estimate.treated_n, estimate.treated_ordered),
                ("held_out", estimate.control_n, estimate.control_ordered),
            ):
                self.observations.labels(segment=segment, arm=arm).set(n)
                self.ordered.labels(segment=segment, arm=arm).set(ordered)
        self.open_windows.set(tracker.pending)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
