"""``churnstream simulate``: the shop's I/O shell, to an events file or live to Kafka.

- :func:`run_batch` writes the events file as fast as it can (no Kafka, no loop back).
- :func:`run_live` publishes to the input topics at most ``rate`` events per wall second,
  each once the simulated clock, running ``speed`` simulated days per wall second, reaches
  its time. A background consumer of ``interventions`` feeds the shop (the closed loop).

Both write the ground truth beside the stream (JSON Lines, flushed as it goes).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from streams.core.events import Event
from streams.errors import ChurnstreamError, SettingsError, ValidationError
from streams.io.avro import EVENT_SCHEMAS, AvroCodec, default_codec, event_record
from streams.io.events_file import write_events
from streams.settings import Settings
from streams.sim.customers import DAY_MS
from streams.sim.feed import InterventionFeed
from streams.sim.shop import Shop, SimConfig
from streams.sim.truth import TruthWriter

# The worker rejects events more than a day ahead of its wall clock; stop an hour short.
_MAX_AHEAD_MS: Final[int] = 23 * 3_600_000
_TRUTH_FLUSH_S: Final[float] = 0.5
_BATCH: Final[int] = 500


@dataclass(frozen=True, slots=True)
class SimSummary:
    """What a run produced; :meth:`line` is the one-line summary the CLI prints."""

    events: int
    customers: int
    wall_s: float
    sim_days: float
    dropouts: int
    interventions: int
    delivered: int
    revivals: int
    truth_path: Path
    stop_reason: str
    # Wall seconds the shop waited for a followed worker to catch up.
    waited_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Return events produced per wall second."""
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        """Return the one-line summary of the run."""
        return (
            f"simulated {self.events} events of {self.customers} customers over "
            f"{self.sim_days:.1f} days in {self.wall_s:.1f}s ({self.events_per_s:.0f} events/s); "
            f"{self.dropouts} dropouts, {self.interventions} interventions "
            f"({self.delivered} delivered, {self.revivals} revivals); {self.stop_reason}; "
            + (f"waited {self.waited_s:.1f}s for the worker; " if self.waited_s else "")
            + f"truth: {self.truth_path}"
        )


def _summary(
    shop: Shop, started: float, truth_path: Path, reason: str, waited_s: float = 0.0
) -> SimSummary:
    stats = shop.stats
    return SimSummary(
        events=stats["events"],
        customers=stats["customers"],
        wall_s=time.perf_counter() - started,
        sim_days=(shop.released_ms - shop.start_ms) / DAY_MS,
        dropouts=stats["dropouts"],
        interventions=stats["interventions"],
        delivered=stats["delivered"],
        revivals=stats["revivals"],
        truth_path=truth_path,
        stop_reason=reason,
        waited_s=waited_s,
    )


def truth_path_for(out_path: Path) -> Path:
    """Return the default truth file beside an events file.

    >>> str(truth_path_for(Path("data/shop.jsonl.gz")))
    'data/shop.truth.jsonl.gz'
    """
    name = out_path.name
    for suffix in (".jsonl.gz", ".jsonl"):
        if name.endswith(suffix):
            return out_path.with_name(name.removesuffix(suffix) + ".truth" + suffix)
    return out_path.with_name(name + ".truth.jsonl")


def live_truth_path(settings: Settings, config: SimConfig) -> Path:
    """Return the default truth file of a live run: under the data dir, per prefix and seed."""
    return settings.data_dir / "sim" / f"{settings.topic_prefix}truth-seed{config.seed}.jsonl"


def run_batch(config: SimConfig, out_path: Path, truth_path: Path | None = None) -> SimSummary:
    """Write the shop's events to ``out_path`` (JSON Lines, ``.gz`` ok) and its truth.

    The truth goes to ``truth_path`` (default :func:`truth_path_for`). No loop back: no
    interventions reach the customers.
    """
    if config.days is None:
        raise SettingsError("--out needs a bounded run: give --days")
    truth_path = truth_path or truth_path_for(out_path)
    started = time.perf_counter()
    shop = Shop(config)
    writer = TruthWriter(truth_path)
    try:

        def events() -> Iterator[Event]:
            for count, event in enumerate(shop, 1):
                if count % 20_000 == 0:
                    writer.write(shop.drain_truth())
                yield event

        write_events(out_path, events())
        writer.write(shop.drain_truth())
        writer.write([shop.end_record()])
    finally:
        writer.close()
    return _summary(shop, started, truth_path, "end of simulated span")


def run_live(
    settings: Settings,
    config: SimConfig,
    *,
    rate: float | None = 1000.0,
    speed: float = 1.0,
    duration_s: float | None = 60.0,
    truth_path: Path | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[SimSummary], None] | None = None,
    progress_every_s: float = 5.0,
    follow_group: str | None = None,
    max_lag_events: int = 3000,
) -> SimSummary:
    """Publish the shop live to Kafka with the loop closed; return the summary.

    ``rate`` caps events per wall second (None: no cap); ``speed`` is simulated days per
    wall second; the simulated clock stands still while due events wait for a token. With
    ``follow_group`` (the worker's consumer group, ``<prefix>churnstream``) it also stands
    still while that group is more than ``max_lag_events`` records behind, so interventions
    come back at about the simulated time they were decided. Stops after ``duration_s`` wall
    seconds, when ``stop`` is set, at the end of ``config.days``, or before event times would
    run more than a day past the wall clock (the worker rejects those). The truth goes to
    ``truth_path`` (default :func:`live_truth_path`), flushed every half second.
    ``on_progress`` gets a summary every ``progress_every_s`` seconds.
    """
    if rate is not None and not rate > 0:
        raise SettingsError(f"--rate must be positive, got {rate!r}")
    if not speed > 0:
        raise SettingsError(f"--speed must be positive, got {speed!r}")
    _check_clock(config, speed, duration_s)
    from streams.io.kafka_clients import producer

    truth_path = truth_path or live_truth_path(settings, config)
    codec = default_codec()
    shop = Shop(config)
    if max_lag_events < 1:
        raise SettingsError(f"--max-lag-events must be at least 1, got {max_lag_events!r}")
    feed = InterventionFeed(settings, codec, follow_group=follow_group)
    feed.start()
    client = None
    writer = TruthWriter(truth_path)
    pump = _LivePump(shop, codec, settings, feed, writer, rate, speed, max_lag_events)
    reason = "stopped"
    try:
        client = producer(settings)
        reason = pump.run(client, duration_s, stop, on_progress, progress_every_s)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.flush(timeout=30)
                client.close(timeout=10)
        feed.stop()
        pump.apply_interventions()
        writer.write(shop.drain_truth())
        writer.write([shop.end_record()])
        writer.close()
    return _summary(shop, pump.started, truth_path, reason, pump.waited_s)


def _check_clock(config: SimConfig, speed: float, duration_s: float | None) -> None:
    if duration_s is None:
        return
    last_ms = config.start.timestamp() * 1000 + duration_s * speed * DAY_MS
    wall_ms = datetime.now(UTC).timestamp() * 1000 + duration_s * 1000
    if last_ms > wall_ms + _MAX_AHEAD_MS:
        msg = (
            f"--start {config.start.isoformat()} + --duration {duration_s:g}s x --speed "
            f"{speed:g} days/s runs past the wall clock; the worker rejects events from the "
            "future. Use an earlier --start or a lower --speed / --duration"
        )
        raise SettingsError(msg)


class _LivePump:
    """Releases the shop's events to Kafka as the clocks allow, feeding it interventions.

    The simulated clock runs ``speed`` days per wall second, but stands still while an event
    it has reached is held back: by the token bucket (``rate`` a second, a twentieth of a
    second of burst) or by a followed worker's lag. So rate, speed and the worker all bound
    the stream, and the clock never runs ahead of what was published. Interventions are
    applied at the simulated clock.
    """

    def __init__(
        self,
        shop: Shop,
        codec: AvroCodec,
        settings: Settings,
        feed: InterventionFeed,
        writer: TruthWriter,
        rate: float | None,
        speed: float,
        max_lag_events: int,
    ) -> None:
        self.shop, self.codec, self.feed, self.writer = shop, codec, feed, writer
        self.rate, self.speed, self.max_lag_events = rate, speed, max_lag_events
        # event type -> (Avro schema, full topic name)
        self.routes = {
            kind: (schema, settings.topic(codec.registry.topic_of(schema)))
            for kind, schema in EVENT_SCHEMAS.items()
        }
        self.broker = settings.broker
        self.capacity = 1.0 if rate is None else max(1.0, rate / 20)
        self.tokens = self.capacity
        self.clock_ms = shop.start_ms
        self.started = time.perf_counter()
        self.waited_s = 0.0

    def apply_interventions(self, now_ms: int | None = None) -> None:
        """Apply every intervention the feed has read so far."""
        shop = self.shop
        while True:
            try:
                record = self.feed.records.get_nowait()
            except queue.Empty:
                return
            # A malformed record from another producer must not stop the shop: skipped.
            with contextlib.suppress(ValidationError):
                shop.apply_intervention(record, shop.released_ms if now_ms is None else now_ms)

    def run(
        self,
        client: Any,
        duration_s: float | None,
        stop: threading.Event | None,
        on_progress: Callable[[SimSummary], None] | None,
        progress_every_s: float,
    ) -> str:
        """Release events until a stop condition; return which one."""
        from kafka.errors import KafkaError

        shop = self.shop
        self.started = last = flushed = reported = time.perf_counter()
        while True:
            now = time.perf_counter()
            if duration_s is not None and now - self.started >= duration_s:
                return f"--duration {duration_s:g}s reached"
            if stop is not None and stop.is_set():
                return "stopped"
            elapsed, last = now - last, now
            if self.rate is not None:
                self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            peek = shop.peek_ms()
            if peek is None:
                return "end of simulated span"
            lag = self.feed.lag
            waiting = lag is not None and lag > self.max_lag_events
            held = peek <= self.clock_ms and (
                waiting or (self.rate is not None and self.tokens < 1)
            )
            if not held:
                self.clock_ms += int(elapsed * self.speed * DAY_MS)
            elif waiting:
                self.waited_s += elapsed
            self.apply_interventions(max(shop.released_ms, min(self.clock_ms, peek)))
            if now - flushed >= _TRUTH_FLUSH_S:
                self.writer.write(shop.drain_truth())
                self.writer.flush()
                flushed = now
            if on_progress is not None and now - reported >= progress_every_s:
                on_progress(self._progress())
                reported = now
            peek = shop.peek_ms()
            if peek is None:
                return "end of simulated span"
            if peek > datetime.now(UTC).timestamp() * 1000 + _MAX_AHEAD_MS:
                return "simulated clock caught up with the wall clock"
            if peek > self.clock_ms:
                time.sleep(min(0.05, (peek - self.clock_ms) / (self.speed * DAY_MS)))
            elif waiting:
                time.sleep(0.05)
            elif self.rate is not None and self.tokens < 1:
                time.sleep(min(0.05, (1 - self.tokens) / self.rate))
            else:
                try:
                    self._send(client)
                except KafkaError as exc:
                    msg = (
                        f"Kafka at {self.broker} failed while publishing "
                        f"({type(exc).__name__}: {exc}). Operator action: check the broker "
                        "(`churnstream kafka status`) and the topics"
                    )
                    raise ChurnstreamError(msg) from exc

    def _progress(self) -> SimSummary:
        lag = self.feed.lag
        state = "running" if lag is None else f"running, worker lag {lag} records"
        return _summary(self.shop, self.started, self.writer.path, state, self.waited_s)

    def _send(self, client: Any) -> None:
        shop, codec = self.shop, self.codec
        budget = _BATCH if self.rate is None else min(_BATCH, int(self.tokens))
        for _ in range(budget):
            peek = shop.peek_ms()
            if peek is None or peek > self.clock_ms:
                return
            event = shop.next_event()
            if event is None:
                return
            schema, topic = self.routes[event.event_type]
            # The shop's events are valid by construction (tests validate every kind), so the
            # codec's trusted path skips the validation pass that is most of an encode.
            value = codec.encode(schema, event_record(event), trusted=True)
            client.send(topic, key=event.customer_id.encode("utf-8"), value=value)
            self.tokens -= 1


def simulate(
    settings: Settings,
    *,
    customers: int = 10_000,
    seed: int = 7,
    rate: float | None = 1000.0,
    speed: float = 1.0,
    duration_s: float | None = None,
    days: float | None = None,
    acquisition_days: float | None = None,
    start: datetime | None = None,
    effects_path: Path | None = None,
    out: Path | None = None,
    truth: Path | None = None,
    follow_group: str | None = None,
    max_lag_events: int = 3000,
    on_progress: Callable[[SimSummary], None] | None = None,
) -> SimSummary:
    """Run ``churnstream simulate``: to the events file ``out`` if given, else live to Kafka.

    A file run covers ``days`` (default 365) as fast as it can; a live run goes on until
    ``duration_s`` wall seconds, ``days`` simulated days, or Ctrl-C, never ahead of the
    consumer group ``follow_group`` by more than ``max_lag_events`` (see :func:`run_live`).
    ``truth`` defaults to beside ``out`` (file) or under the data dir (live).
    """
    from streams.sim.effects import EffectConfig

    defaults = SimConfig()
    config = SimConfig(
        customers=customers,
        seed=seed,
        start=start or defaults.start,
        days=days if days is not None or out is None else defaults.days,
        acquisition_days=acquisition_days or defaults.acquisition_days,
        effects=EffectConfig.from_file(effects_path) if effects_path else defaults.effects,
    )
    if out is not None:
        return run_batch(config, out, truth)
    return run_live(
        settings,
        config,
        rate=rate,
        speed=speed,
        duration_s=duration_s,
        truth_path=truth,
        on_progress=on_progress,
        follow_group=follow_group,
        max_lag_events=max_lag_events,
    )
