"""Replay: deterministic, event-time ordered, timers fire up to as-of, CSV as documented."""

from __future__ import annotations

import csv
import gzip
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.core.events import Event, OrderEvent, event_to_dict
from streams.replay import ReplayEngine, ReplayOptions, replay_file, run_replay

T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
AS_OF = T0 + timedelta(days=400)


def _events(customers: int = 40, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    for c in range(customers):
        day = rng.uniform(0, 30)
        for n in range(rng.randint(1, 8)):
            events.append(
                OrderEvent(
                    f"o{c}-{n}",
                    f"c{c:03d}",
                    f"o{c}-{n}",
                    T0 + timedelta(days=day),
                    round(rng.uniform(5, 80), 2),
                    "USD",
                )
            )
            day += rng.expovariate(1 / 25)
    return events


OPTIONS = ReplayOptions(snapshot_every=20)


def test_replay_is_deterministic_and_independent_of_input_order() -> None:
    events = _events()
    first = run_replay(events, AS_OF, OPTIONS)
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)
    second = run_replay(shuffled, AS_OF, OPTIONS)
    assert [s.to_record() for s in first] == [s.to_record() for s in second]
    assert first[0].model_version.startswith("m-")  # the trainer learned and models swapped


def test_events_at_or_after_as_of_are_not_seen() -> None:
    events = _events()
    cut = T0 + timedelta(days=60)
    with_future = run_replay(events, cut, OPTIONS)
    without = run_replay([e for e in events if e.event_time < cut], cut, OPTIONS)
    assert [s.to_record() for s in with_future] == [s.to_record() for s in without]


def test_as_of_advance_fires_timers_so_silence_counts() -> None:
    events = _events(customers=5)
    early = {s.customer_id: s.score for s in run_replay(events, AS_OF, OPTIONS)}
    late = {
        s.customer_id: s.score for s in run_replay(events, AS_OF + timedelta(days=300), OPTIONS)
    }
    assert all(late[c] >= early[c] for c in early)
    assert all(s.as_of == AS_OF for s in run_replay(events, AS_OF, OPTIONS))


def test_engine_matches_run_replay_with_state_round_trips() -> None:
    events = sorted(_events(), key=lambda e: e.event_time)
    engine = ReplayEngine(OPTIONS)
    for event in events:
        engine.feed(event)
        # What a Faust table does to the state between events.
        cid = event.customer_id
        engine.states[cid] = type(engine.states[cid]).from_dict(
            json.loads(json.dumps(engine.states[cid].to_dict()))
        )
    assert [s.to_record() for s in engine.final_scores(AS_OF)] == [
        s.to_record() for s in run_replay(events, AS_OF, OPTIONS)
    ]


def test_replay_file_writes_the_documented_csv(tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl.gz"
    with gzip.open(events_path, "wt") as handle:
        for event in _events(customers=6):
            handle.write(json.dumps(event_to_dict(event)) + "\n")
    out = tmp_path / "scores.csv"
    assert replay_file(events_path, AS_OF, out, OPTIONS) == 6
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["customer_id", "score", "band", "model_version"]
    assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
    for _, score, band, _version in rows[1:]:
        assert 0.0 <= float(score) <= 1.0
        assert band in {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
