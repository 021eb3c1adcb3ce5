"""The simulator's ground truth as JSON Lines: written as it happens, read back as one value.

One record per line, ``type`` first:

- ``meta``: seed, customer count, start, span, outcome window, the true effects;
- ``customer``: id, ``signup_at`` and the latent ``traits`` (purchase rate, dropout odds...);
- ``dropout``: id, ``at``, ``cause`` (``after_order`` / ``after_visit``), the check's log-odds;
- ``revival``: id, ``at``, the ``intervention_id`` that brought the customer back;
- ``intervention``: one per intervention record the shop received: its ``arm`` (treated,
  held_out, suppressed, unknown_customer), whether it was ``delivered``, the drawn effect
  (``respond_p``, ``responds``, ``backfires``), and for both arms the potential outcomes
  ``y0`` / ``y1`` (an order within ``window_days`` of ``created_at`` without / with it; see
  :mod:`streams.sim.outcomes`). A later record with the same id revises the earlier one;
- ``end``: the truth is complete up to ``at`` (without it, up to the last dropout or
  revival it records).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from streams.errors import EventsFileError
from streams.io.events_file import iter_lines


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@dataclass(slots=True)
class CustomerTruth:
    """One customer's signup and the spans they were gone (``[dropped, revived or None]``)."""

    customer_id: str
    signup_ms: int
    traits: dict[str, Any]
    gone: list[list[int | None]] = field(default_factory=list)

    def dropped_at(self, when_ms: int) -> bool:
        """Return whether the customer had dropped out (and not come back) at ``when_ms``."""
        for start, end in self.gone:
            if start is not None and start <= when_ms and (end is None or when_ms < end):
                return True
        return False

    @property
    def first_dropout_ms(self) -> int | None:
        """Return the time of the first dropout, None for a customer who never left."""
        return self.gone[0][0] if self.gone else None


@dataclass(frozen=True, slots=True)
class InterventionTruth:
    """What one intervention record truly did (see the module doc)."""

    intervention_id: str
    customer_id: str
    segment: str
    arm: str
    created_ms: int
    delivered: bool
    responds: bool
    backfires: bool
    y0: int | None
    y1: int | None

    @property
    def effect(self) -> int | None:
        """Return ``y1 - y0``: did this contact make the order happen (or prevent it)?"""
        return None if self.y0 is None or self.y1 is None else self.y1 - self.y0


@dataclass(slots=True)
class Truth:
    """The whole ground truth of one simulation run."""

    meta: dict[str, Any]
    customers: dict[str, CustomerTruth]
    interventions: dict[str, InterventionTruth]
    end_ms: int | None
    revived_by: dict[str, str] = field(default_factory=dict)

    @property
    def window_days(self) -> float:
        """Return the outcome window the potential outcomes were computed for."""
        return float(self.meta.get("window_days", 14.0))


def read_truth(path: str | Path) -> Truth:
    """Return the truth in the JSON Lines file at ``path`` (``.gz`` allowed).

    Raises ``EventsFileError`` (``path:line``) for a line that is not a truth record.
    """
    meta: dict[str, Any] = {}
    customers: dict[str, CustomerTruth] = {}
    interventions: dict[str, InterventionTruth] = {}
    revived_by: dict[str, str] = {}
    end_ms: int | None = None
    # A run killed before its `end` record is complete up to the last time it mentions.
    last_ms: int | None = None
    for number, raw in iter_lines(path):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            kind = record["type"]
            if kind == "meta":
                meta = record
            elif kind == "customer":
                customer_id = record["customer_id"]
                customers[customer_id] = CustomerTruth(
                    customer_id, _ms(record["signup_at"]), record.get("traits", {})
                )
            elif kind == "dropout":
                last_ms = _ms(record["at"])
                customers[record["customer_id"]].gone.append([last_ms, None])
            elif kind == "revival":
                spans = customers[record["customer_id"]].gone
                last_ms = _ms(record["at"])
                if spans and spans[-1][1] is None:
                    spans[-1][1] = last_ms
                revived_by[record["intervention_id"]] = record["customer_id"]
            elif kind == "intervention":
                interventions[record["intervention_id"]] = InterventionTruth(
                    intervention_id=record["intervention_id"],
                    customer_id=record["customer_id"],
                    segment=record["segment"],
                    arm=record["arm"],
                    created_ms=_ms(record["created_at"]),
                    delivered=bool(record.get("delivered", False)),
                    responds=bool(record.get("responds", False)),
                    backfires=bool(record.get("backfires", False)),
                    y0=record.get("y0"),
                    y1=record.get("y1"),
                )
            elif kind == "end":
                end_ms = _ms(record["at"])
            else:
                raise ValueError(f"unknown record type {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EventsFileError(f"not a truth record: {detail}", str(path), number) from exc
    return Truth(meta, customers, interventions, end_ms or last_ms, revived_by)


class TruthWriter:
    """Appends truth records to a JSON Lines file (gzip for ``.gz``), flushing on request."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str]
        # The writer owns the handle across write() calls until close(): no `with` here.
        if self.path.name.endswith(".gz"):
            self._handle = gzip.open(self.path, "wt", encoding="utf-8")  # noqa: SIM115 - see above
        else:
            self._handle = self.path.open("w", encoding="utf-8")
        self.records = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records``, one JSON object a line."""
        for record in records:
            self._handle.write(json.dumps(record, separators=(",", ":")))
            self._handle.write("\n")
            self.records += 1

    def flush(self) -> None:
        """Push what was written to the file, so readers see it while the run goes on."""
        self._handle.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._handle.close()
