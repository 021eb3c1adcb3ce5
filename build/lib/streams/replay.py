"""Replay: the scoring core over an events file, in one process, in event-time order.

The same steps as the live worker: events advance a watermark, due timers fire, training
examples feed a trainer, and every ``snapshot_every`` learned examples the trainer's model is
signed, verified and swapped in. Everything is driven by event time and example counts, so
the same file always gives the same scores.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from streams.core.clock import TimerIndex, Watermark
from streams.core.config import ScoringConfig
from streams.core.events import Event
from streams.core.merge import source_of
from streams.core.model import ChurnModel, FrozenLinearModel, OnlineChurnModel, Trainer
from streams.core.records import ChurnScore, from_s, to_s
from streams.core.scoring import StepOutput, process_event, process_timer, score_as_of
from streams.core.snapshot import load_snapshot, sign_snapshot
from streams.core.state import CustomerState
from streams.settings import Settings

CSV_HEADER = ("customer_id", "score", "band", "model_version")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How replay learns and swaps models (the scoring knobs live in ``config``)."""

    config: ScoringConfig = field(default_factory=ScoringConfig)
    snapshot_every: int = 500
    learning_rate: float = 0.05
    l2: float = 1e-4
    # Replay signs and verifies its own snapshots exactly like the worker, so a broken
    # signing path shows up here too; the key never leaves the process.
    model_secret: bytes = b"churnstream-replay"
    timer_bucket_s: float = 3600.0


class ReplayEngine:
    """The core over events fed in event-time order, with its own trainer and model swaps."""

    def __init__(self, options: ReplayOptions | None = None) -> None:
        self.options = options if options is not None else ReplayOptions()
        self.config = self.options.config
        self.states: dict[str, CustomerState] = {}
        self.watermark = Watermark()
        self.timers = TimerIndex(self.options.timer_bucket_s)
        self.trainer = Trainer(
            OnlineChurnModel(self.options.learning_rate, self.options.l2),
            snapshot_every=self.options.snapshot_every,
        )
        self.model: ChurnModel = FrozenLinearModel.prior_only()
        self.events_seen = 0
        self.timer_wakes = 0
        self.model_swaps = 0

    def feed(self, event: Event) -> StepOutput:
        """Return the outputs of the timers ``event`` makes due and of ``event`` itself."""
        out = self.advance_to(to_s(event.event_time))
        state, step = process_event(
            self.states.get(event.customer_id), event, self.model, self.config
        )
        self.states[event.customer_id] = state
        self.timers.schedule(event.customer_id, state.next_wake_s)
        self.events_seen += 1
        self._learn(step)
        out.extend(step)
        return out

    def advance_to(self, when_s: float) -> StepOutput:
        """Return the outputs of every timer due once the watermark reaches ``when_s``."""
        watermark_s = self.watermark.observe(when_s)
        out = StepOutput()
        for _, customer_id in self.timers.pop_due(watermark_s):
            state, step = process_timer(
                self.states[customer_id], watermark_s, self.model, self.config
            )
            self.timers.schedule(customer_id, state.next_wake_s)
            self.timer_wakes += 1
            self._learn(step)
            out.extend(step)
        return out

    def final_scores(self, as_of: datetime) -> list[ChurnScore]:
        """Return every customer's score as of ``as_of`` (timers up to it fire first)."""
        as_of_s = to_s(as_of)
        self.advance_to(as_of_s)
        scores: list[ChurnScore] = []
        for customer_id in sorted(self.states):
            state, step = score_as_of(self.states[customer_id], as_of_s, self.model, self.config)
            self.timers.schedule(customer_id, state.next_wake_s)
            scores.append(step.scores[-1])
        return scores

    def _learn(self, step: StepOutput) -> None:
        for example in step.training_examples:
            if self.trainer.learn(example):
                self._swap_model(to_s(example.label_time))

    def _swap_model(self, now_s: float) -> None:
        record = sign_snapshot(self.trainer.model, self.options.model_secret, from_s(now_s))
        self.model = load_snapshot(record, self.options.model_secret).freeze()
        self.trainer.mark_snapshot()
        self.model_swaps += 1


def run_replay(
    events: Iterable[Event], as_of: datetime, options: ReplayOptions | None = None
) -> list[ChurnScore]:
    """Return each customer's score as of ``as_of`` after replaying the events before it.

    Events are sorted by event time (ties: see :func:`sorted_events`); events at or after
    ``as_of`` are not seen, as if the replay had stopped there.
    """
    engine = ReplayEngine(options)
    for event in sorted_events(events, before=as_of):
        engine.feed(event)
    return engine.final_scores(as_of)


def sorted_events(events: Iterable[Event], before: datetime | None = None) -> list[Event]:
    """Return ``events`` (those before ``before``, if given) in stable event-time order.

    Events at the same time go in input-topic order (clicks, orders, profiles; see
    :func:`streams.core.merge.source_of`), as a live worker merges its topics; within a
    topic they keep their input order.
    """
    kept = [e for e in events if before is None or e.event_time < before]
    kept.sort(key=lambda event: (event.event_time, source_of(event)))
    return kept


def write_scores_csv(scores: Iterable[ChurnScore], out_path: str | Path) -> int:
    """Write ``customer_id,score,band,model_version`` rows to ``out_path``; return the count."""
    rows = 0
    with Path(out_path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for score in scores:
            writer.writerow(
                (score.customer_id, f"{score.score:.6f}", score.band, score.model_version)
            )
            rows += 1
    return rows


def replay_file(
    events_path: str | Path,
    as_of: datetime,
    out_path: str | Path,
    options: ReplayOptions | None = None,
) -> int:
    """Replay the events file at ``events_path`` up to ``as_of`` into a scores CSV.

    Returns the number of customers written. This is what ``churnstream replay`` calls.
    """
    # Imported here so that the library part of replay never needs file I/O.
    from streams.io.events_file import read_events

    return write_scores_csv(run_replay(read_events(events_path), as_of, options), out_path)


def options_from_settings(settings: Settings | None) -> ReplayOptions:
    """Return replay options with the horizon (and model secret, if set) of ``settings``."""
    if settings is None:
        return ReplayOptions()
    defaults = ReplayOptions()
    return ReplayOptions(
        config=ScoringConfig(horizon_days=float(settings.horizon_days)),
        model_secret=settings.model_secret.encode() or defaults.model_secret,
    )


def replay_file_to_csv(
    events_path: str | Path, as_of: datetime, out_path: str | Path, settings: Settings | None
) -> int:
    """Return the rows written by :func:`replay_file` with options taken from ``settings``."""
    return replay_file(events_path, as_of, out_path, options_from_settings(settings))
