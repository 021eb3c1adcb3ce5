"""Verdicts of the fault tests: a run's outputs and states against the references.

The invariants every fault test checks (issue 7):

- **outputs**: every record of ``churn-scores``, ``risk-changes``, ``training-examples`` and
  ``interventions`` carries a deterministic id; de-duplicated by that id, a faulted run must
  hold exactly the records of an uninterrupted run (none lost, none extra) and no id may
  carry two different contents ("conflicting duplicates"). Raw duplicates (the same record
  twice) are what at-least-once delivery allows; they are counted and reported.
- **state**: the customers table (read back from its changelog) must equal what a clean
  ``replay`` of the same input computes, once both are brought to a common as-of time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streams.core.config import ScoringConfig
from streams.core.events import Event
from streams.core.model import FrozenLinearModel
from streams.core.records import to_s
from streams.core.scoring import score_as_of
from streams.core.state import CustomerState
from streams.io.avro import AvroCodec, default_codec
from streams.io.kafka_clients import client_config
from streams.replay import ReplayEngine, ReplayOptions, sorted_events
from streams.settings import Settings
from tests.faults.stream import partition_of

# Output topic -> the field holding its deterministic id.
OUTPUT_IDS: dict[str, str] = {
    "churn-scores": "event_id",
    "risk-changes": "event_id",
    "training-examples": "example_id",
    "interventions": "intervention_id",
}


# --- outputs --------------------------------------------------------------------------------


@dataclass
class Outputs:
    """Every output record of a run: topic -> list of (id, canonical JSON of the record)."""

    records: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def unique(self, topic: str) -> dict[str, set[str]]:
        """Return id -> the distinct contents seen under it on ``topic``."""
        found: dict[str, set[str]] = {}
        for record_id, content in self.records.get(topic, []):
            found.setdefault(record_id, set()).add(content)
        return found

    def counts(self) -> dict[str, int]:
        """Return topic -> raw record count."""
        return {topic: len(items) for topic, items in self.records.items()}


def _canonical(record: dict[str, Any]) -> str:
    # repr-exact floats and ISO times: two contents are equal only if every bit is.
    return json.dumps(record, sort_keys=True, default=lambda v: v.isoformat())


def read_all(
    settings: Settings, full_topic: str, isolation_level: str = "read_uncommitted"
) -> list[Any]:
    """Return every record of ``full_topic`` up to its end now (``read_committed``: only
    records of committed transactions, as an exactly-once consumer sees them)."""
    consumer = KafkaConsumer(
        **client_config(settings), enable_auto_commit=False, isolation_level=isolation_level
    )
    try:
        partitions = consumer.partitions_for_topic(full_topic) or set()
        tps = [TopicPartition(full_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        # Positions, not record offsets: transaction markers take offsets but are no records.
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                msg = f"could not read {full_topic} to its end within 60s"
                raise AssertionError(msg)
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_outputs(
    settings: Settings,
    codec: AvroCodec | None = None,
    isolation_level: str = "read_uncommitted",
) -> Outputs:
    """Return every record now on the output topics of ``settings``."""
    codec = codec or default_codec()
    outputs = Outputs()
    for topic, id_field in OUTPUT_IDS.items():
        items: list[tuple[str, str]] = []
        for record in read_all(settings, settings.topic(topic), isolation_level):
            _, value = codec.decode(record.value)
            items.append((str(value[id_field]), _canonical(value)))
        outputs.records[topic] = items
    return outputs


@dataclass(frozen=True)
class OutputCheck:
    """How a run's outputs compare with an uninterrupted run's, per topic and in total."""

    raw: dict[str, int]
    unique: dict[str, int]
    raw_duplicates: dict[str, int]
    conflicting: dict[str, list[str]]
    lost: dict[str, list[str]]
    extra: dict[str, list[str]]
    # topic -> the first conflicting id's contents: what the run holds and what it should
    conflict_example: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total_raw_duplicates(self) -> int:
        """Return the records that repeat an identical earlier record (at-least-once)."""
        return sum(self.raw_duplicates.values())

    @property
    def problems(self) -> dict[str, dict[str, int]]:
        """Return topic -> non-zero counts of conflicting, lost and extra ids."""
        found: dict[str, dict[str, int]] = {}
        for name, by_topic in (
            ("conflicting", self.conflicting),
            ("lost", self.lost),
            ("extra", self.extra),
        ):
            for topic, ids in by_topic.items():
                if ids:
                    found.setdefault(topic, {})[name] = len(ids)
        return found

    def summary(self) -> dict[str, Any]:
        """Return the numbers the fault report prints."""
        return {
            "raw": sum(self.raw.values()),
            "unique": sum(self.unique.values()),
            "raw_duplicates": self.total_raw_duplicates,
            "conflicting": sum(len(v) for v in self.conflicting.values()),
            "lost": sum(len(v) for v in self.lost.values()),
            "extra": sum(len(v) for v in self.extra.values()),
            "by_topic_raw": self.raw,
        }


# Topics where a run may legitimately hold fewer records than the reference: the worker may
# coalesce a customer's scores within a flush window (the topic is compacted: consumers want
# the latest per customer), so only "no unknown id" and "same latest per customer" apply.
COALESCED_TOPICS: frozenset[str] = frozenset({"churn-scores"})


def compare_outputs(expected: Outputs, actual: Outputs) -> OutputCheck:
    """Return how ``actual`` compares with the uninterrupted run's ``expected`` outputs.

    An id is *conflicting* if ``actual`` holds two contents for it, or one that differs from
    ``expected``'s; *lost* if only ``expected`` has it (not counted on coalesced topics, see
    :func:`latest_score_mismatches`); *extra* if only ``actual`` has it.
    """
    raw: dict[str, int] = {}
    unique: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    conflicting: dict[str, list[str]] = {}
    lost: dict[str, list[str]] = {}
    extra: dict[str, list[str]] = {}
    examples: dict[str, dict[str, Any]] = {}
    for topic in OUTPUT_IDS:
        want = expected.unique(topic)
        got = actual.unique(topic)
        raw[topic] = len(actual.records.get(topic, []))
        unique[topic] = len(got)
        duplicates[topic] = raw[topic] - sum(len(contents) for contents in got.values())
        conflicting[topic] = sorted(
            record_id
            for record_id, contents in got.items()
            if len(contents) > 1 or (record_id in want and contents != want[record_id])
        )
        lost[topic] = [] if topic in COALESCED_TOPICS else sorted(set(want) - set(got))
        extra[topic] = sorted(set(got) - set(want))
        if conflicting[topic]:
            first = conflicting[topic][0]
            expected_contents = sorted(want[first]) if first in want else None
            examples[topic] = {"id": first, "got": sorted(got[first]), "want": expected_contents}
    return OutputCheck(raw, unique, duplicates, conflicting, lost, extra, examples)


def latest_score_mismatches(actual: Outputs, reference: Outputs) -> list[str]:
    """Return the customers whose last score record differs from the reference's last one."""
    want = _latest(reference)
    got = _latest(actual)
    return sorted(c for c in set(want) | set(got) if want.get(c) != got.get(c))


def _latest(outputs: Outputs) -> dict[str, str]:
    latest: dict[str, str] = {}
    for _, content in outputs.records.get("churn-scores", []):
        latest[json.loads(content)["customer_id"]] = content
    return latest


def reference_outputs(events: Sequence[Event], partitions: int) -> Outputs:
    """Return every score, risk change and training example a per-partition replay emits.

    Each input partition is replayed on its own (its watermark is the partition's, as in the
    worker), with the model pinned to the prior; records go through the Avro codec so their
    contents compare with what a consumer decodes. Interventions are not part of replay.
    """
    codec = default_codec()
    by_partition: dict[int, list[Event]] = {}
    for event in events:
        by_partition.setdefault(partition_of(event.customer_id, partitions), []).append(event)
    outputs = Outputs({topic: [] for topic in OUTPUT_IDS if topic != "interventions"})
    for partition_events in by_partition.values():
        engine = ReplayEngine(ReplayOptions(snapshot_every=10**9))
        for event in sorted_events(partition_events):
            step = engine.feed(event)
            for topic, schema, items in (
                ("churn-scores", "churn_score", step.scores),
                ("risk-changes", "risk_change", step.risk_changes),
                ("training-examples", "training_example", step.training_examples),
            ):
                for item in items:
                    _, value = codec.decode(codec.encode(schema, item.to_record()))
                    record_id = str(value[OUTPUT_IDS[topic]])
                    outputs.records[topic].append((record_id, _canonical(value)))
    return outputs


# --- state ------------------------------------------------------------------------------------


def changelog_states(
    settings: Settings, isolation_level: str = "read_uncommitted"
) -> dict[str, CustomerState]:
    """Return the customers table as its changelog holds it (last value per key)."""
    changelog = f"{settings.topic_prefix}churnstream-customers-changelog"
    states: dict[str, CustomerState] = {}
    for record in read_all(settings, changelog, isolation_level):
        customer_id = json.loads(record.key)
        if record.value is None:
            states.pop(customer_id, None)
        else:
            states[customer_id] = CustomerState.from_dict(json.loads(record.value))
    return states


def replay_states(events: Iterable[Event]) -> dict[str, CustomerState]:
    """Return the per-customer states a clean in-process replay of ``events`` ends in."""
    engine = ReplayEngine(ReplayOptions(snapshot_every=10**9))
    for event in sorted_events(events):
        engine.feed(event)
    return engine.states


def as_of_after(events: Sequence[Event]) -> datetime:
    """Return a common as-of time a week after the last event."""
    return max(event.event_time for event in events) + timedelta(days=7)


# Bookkeeping only a live worker keeps (the last input offset applied per topic): replay
# reads no Kafka offsets, so these are not compared.
# Offsets and contact histories exist only where records come from Kafka and the router runs.
LIVE_ONLY_STATE_FIELDS: frozenset[str] = frozenset({"input_offsets", "contacts"})


@dataclass(frozen=True)
class StateCheck:
    """How live states compare with replay's, brought to one as-of time (prior-only model)."""

    customers: int
    missing: list[str]
    unexpected: list[str]
    different: dict[str, list[str]]  # customer -> the fields that differ
    score_mismatches: int

    @property
    def ok(self) -> bool:
        """Return whether every customer's state and score equal replay's."""
        return not (self.missing or self.unexpected or self.different or self.score_mismatches)

    def summary(self) -> dict[str, Any]:
        """Return the numbers the fault report prints."""
        fields = Counter(name for names in self.different.values() for name in names)
        return {
            "customers": self.customers,
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "states_different": len(self.different),
            "score_mismatches": self.score_mismatches,
            "fields_different": dict(fields.most_common(8)),
        }


def compare_states(
    live: dict[str, CustomerState], replayed: dict[str, CustomerState], as_of: datetime
) -> StateCheck:
    """Return how ``live`` states compare with ``replayed`` ones at ``as_of``.

    Both sides fire their timers up to ``as_of`` and score once (``score_as_of``), so a
    partition's watermark stopping earlier than replay's global one does not count; what is
    left is what the events did to the state. Every field must be equal, bit for bit.
    """
    from dataclasses import fields as dataclass_fields

    model = FrozenLinearModel.prior_only()
    config = ScoringConfig()
    names = [spec.name for spec in dataclass_fields(CustomerState)]
    different: dict[str, list[str]] = {}
    score_mismatches = 0
    for customer_id in sorted(set(live) & set(replayed)):
        live_state, live_out = score_as_of(_copy(live[customer_id]), to_s(as_of), model, config)
        want_state, want_out = score_as_of(_copy(replayed[customer_id]), to_s(as_of), model, config)
        got_values = live_state.to_dict()["values"]
        want_values = want_state.to_dict()["values"]
        bad = [
            name
            for name, got, want in zip(names, got_values, want_values, strict=True)
            if got != want and name not in LIVE_ONLY_STATE_FIELDS
        ]
        if bad:
            different[customer_id] = bad
        if live_out.scores[-1].score != want_out.scores[-1].score:
            score_mismatches += 1
    return StateCheck(
        customers=len(live),
        missing=sorted(set(replayed) - set(live)),
        unexpected=sorted(set(live) - set(replayed)),
        different=different,
        score_mismatches=score_mismatches,
    )


def _copy(state: CustomerState) -> CustomerState:
    return CustomerState.from_dict(json.loads(json.dumps(state.to_dict())))


# --- one verdict per run ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunCheck:
    """Every invariant of one run: outputs, latest scores and states."""

    outputs: OutputCheck
    latest_score_mismatches: list[str]
    states: StateCheck

    @property
    def ok(self) -> bool:
        """Return whether nothing was lost, extra or conflicting and states equal replay."""
        return not (self.outputs.problems or self.latest_score_mismatches) and self.states.ok

    def summary(self) -> dict[str, Any]:
        """Return the numbers of the run (for the report and for failure messages)."""
        return {
            **self.outputs.summary(),
            "problems_by_topic": self.outputs.problems,
            "latest_score_mismatches": len(self.latest_score_mismatches),
            "state": self.states.summary(),
        }

    def explain(self) -> str:
        """Return a failure message: the numbers and a few example ids of each problem."""
        examples: dict[str, Any] = {}
        for name, by_topic in (
            ("conflicting", self.outputs.conflicting),
            ("lost", self.outputs.lost),
            ("extra", self.outputs.extra),
        ):
            for topic, ids in by_topic.items():
                if ids:
                    examples[f"{name}:{topic}"] = ids[:3]
        for topic, example in self.outputs.conflict_example.items():
            examples[f"conflicting contents:{topic}"] = example
        if self.states.different:
            examples["state"] = dict(list(self.states.different.items())[:3])
        body = json.dumps({"summary": self.summary(), "examples": examples}, default=str)
        return f"fault invariants broken: {body}"


def expected_outputs(reference: Outputs, uninterrupted: Outputs) -> Outputs:
    """Return the outputs a correct run must hold: replay's, plus interventions of a live run."""
    records = dict(reference.records)
    records["interventions"] = list(uninterrupted.records.get("interventions", []))
    return Outputs(records)


def check_run(
    settings: Settings,
    events: Sequence[Event],
    expected: Outputs,
    replayed: dict[str, CustomerState],
    isolation_level: str = "read_uncommitted",
) -> RunCheck:
    """Return every invariant of the run on ``settings`` against the references.

    ``isolation_level="read_committed"`` checks what a consumer of an exactly-once worker
    (``PROCESSING_GUARANTEE=exactly_once``) sees.
    """
    actual = read_outputs(settings, isolation_level=isolation_level)
    states = changelog_states(settings, isolation_level)
    return RunCheck(
        outputs=compare_outputs(expected, actual),
        latest_score_mismatches=latest_score_mismatches(actual, expected),
        states=compare_states(states, replayed, as_of_after(events)),
    )
