"""Per-event CPU cost of the worker's pure path, in one process with no Kafka and no Faust.

Usage: ``python bench/core_speed.py [--customers N] [--events N] [--model prior|learned|both]
[--window N] [--profile] [--save PATH] [--compare PATH]``

Builds the input the way ``make bench`` does (the project's simulator, Avro-encoded with the
project's codec; cached under ``bench/out/cache``), then replays the scoring agent's loop
(``streams/worker/agents.py``, ``windows.py``) over it, timing each stage per record: decode,
the shell's step (``process_event`` and the timers it makes due), the records sent at once
(risk changes, training examples, interventions), the intervention routing, the Prometheus
observations, and per window of ``--window`` records the coalesced state writes (``to_dict``
and the table's JSON) and the encoded latest score per customer. The store is a plain dict of
JSON values written with Faust's own ``json`` codec (orjson when it is installed), as the
worker's table serializes them.

Every output (encoded bytes and stored JSON) goes into a digest printed with the timings:
two runs of different code over the same input must print the same digest. The last line is
one JSON object; ``--save`` writes it to a file and ``--compare`` prints a before/after table
against such a file. ``--profile`` runs the loop once under cProfile and prints the top 25
functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import math
import pstats
import random
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from faust.serializers.codecs import get_codec
from input_cache import load, save
from inputs import Input, describe, encode_records, partition_of, shop_events
from prometheus_client import CollectorRegistry

from streams.core.config import ScoringConfig
from streams.core.events import Event
from streams.core.features import FEATURE_NAMES
from streams.core.intervention_config import InterventionConfig
from streams.core.model import ChurnModel, FrozenLinearModel, OnlineChurnModel
from streams.core.records import ChurnScore
from streams.core.state import CustomerState
from streams.io.avro import AvroCodec, default_codec
from streams.metrics import Metrics
from streams.settings import INPUT_TOPICS
from streams.worker.contacts_in_state import ContactsInState
from streams.worker.intervene import InterventionShell
from streams.worker.partitioning import partitioner
from streams.worker.shell import ScoringShell

OUT_DIR: Final[Path] = Path(__file__).resolve().parent / "out"
CACHE_DIR: Final[Path] = OUT_DIR / "cache"
REPO: Final[Path] = Path(__file__).resolve().parents[1]
STAGES: Final[tuple[tuple[str, str], ...]] = (
    ("decode", "decode (bytes -> Event)"),
    ("step", "step (on_event + due timers)"),
    ("send_now", "send now (risk/example/intervention encode)"),
    ("route", "interventions (on_step + on_watermark)"),
    ("metrics", "metrics (observe_score/risk_change)"),
    ("flush_states", "flush: states (to_dict + table JSON)"),
    ("flush_scores", "flush: latest scores (encode)"),
)
SCORING_PATH: Final[tuple[str, ...]] = (
    "decode",
    "step",
    "send_now",
    "flush_states",
    "flush_scores",
)


class JsonStore(MutableMapping[str, Any]):
    """A dict of JSON values, written and read with the codec of the worker's Faust table."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.codec = get_codec("json")  # orjson when installed, as in the worker

    def __getitem__(self, key: str) -> Any:
        return self.codec.loads(self.data[key])

    def get(self, key: str, default: Any = None) -> Any:
        """Return the decoded value of ``key``, or ``default``."""
        raw = self.data.get(key)
        return default if raw is None else self.codec.loads(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = self.codec.dumps(value)

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@dataclass(slots=True)
class Run:
    """Seconds spent per stage, and what the run produced."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(dict(STAGES), 0.0))
    records: int = 0
    scores: int = 0
    risk_changes: int = 0
    training_examples: int = 0
    interventions: int = 0
    state_writes: int = 0
    score_writes: int = 0
    digest: str = ""
    restore_us_per_state: float = 0.0
    cpu_seconds: float = 0.0


def input_of(customers: int, events: int, seed: int, log: Callable[[str], None]) -> Input:
    """Return the encoded simulator input (from ``bench/out/cache`` when it is there)."""
    digest = hashlib.sha256(json.dumps(["core_speed", 1, customers, events, seed]).encode())
    for path in [REPO / "bench" / "inputs.py", *sorted((REPO / "streams" / "sim").glob("*.py"))]:
        digest.update(path.read_bytes())
    for path in sorted((REPO / "schemas").glob("**/*")):
        if path.is_file():
            digest.update(path.read_bytes())
    # Not "input-*": bench/input_cache.py deletes those it does not own.
    path = CACHE_DIR / f"core-speed-{digest.hexdigest()[:16]}.bin"
    if path.exists():
        loaded = load(path)
        log(f"input: {len(loaded.records):,} records from {path.name} ({loaded.source})")
        return loaded
    started = time.perf_counter()
    made, source = shop_events(customers, events, seed, use_simulator=True)
    loaded = describe(encode_records(made), source, made)
    log(f"input: {len(made):,} events from {source} in {time.perf_counter() - started:.1f}s")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob("core-speed-*.bin"):
        stale.unlink()
    save(path, loaded)
    return loaded


def learned_model(seed: int, examples: int = 1500) -> FrozenLinearModel:
    """Return a frozen model learned from synthetic examples (past the prior's blend)."""
    rng = random.Random(seed)
    model = OnlineChurnModel()
    for _ in range(examples):
        features = {name: rng.gauss(0.0, 1.0) for name in FEATURE_NAMES}
        label = int(features["prior_logit"] + 0.5 * features["log_days_since_last_order"] > 0)
        model.learn(features, label)
    return model.freeze()


def run_pipeline(loaded: Input, model: ChurnModel, window_records: int, partitions: int) -> Run:
    """Return the stage timings of the scoring agent's loop over ``loaded``."""
    codec: AvroCodec = default_codec()
    store = JsonStore()
    customer_partition = partitioner(partitions)  # the worker's own (murmur2, memoized)
    shell = ScoringShell(
        store, ScoringConfig(), model=lambda: model, partition_of=customer_partition
    )
    interventions = InterventionShell(
        ContactsInState(shell), InterventionConfig(), partition_of=customer_partition
    )
    metrics = Metrics.create(CollectorRegistry())
    source_index = {name: index for index, name in enumerate(INPUT_TOPICS)}
    offsets: dict[tuple[str, int], int] = {}
    run = Run()
    seconds = run.seconds
    digest = hashlib.sha256()
    clock = time.perf_counter

    def band_of(customer_id: str) -> str | None:
        state = shell.state_of(customer_id)
        return None if state is None else state.band

    window_scores: dict[str, ChurnScore] = {}
    window_partitions: set[int] = set()
    in_window = 0

    def flush() -> None:
        started = clock()
        encoded = [
            codec.encode("churn_score", score.to_record(), trusted=True)
            for score in window_scores.values()
        ]
        between = clock()
        for partition in window_partitions:
            interventions.flush(partition)
            run.state_writes += shell.flush(partition)
        seconds["flush_scores"] += between - started
        seconds["flush_states"] += clock() - between
        run.score_writes += len(encoded)
        for value in encoded:
            digest.update(value)
        window_scores.clear()
        window_partitions.clear()

    # The worker gets the partition with the message: not part of its per-record work.
    partition_of_record = [partition_of(record.key, partitions) for record in loaded.records]
    # CPU time of the whole loop: unlike the wall-clock stages, it leaves out the time other
    # processes had the core (the stage clocks and the digest are in it, a few percent).
    cpu_started = time.process_time()
    for record, partition in zip(loaded.records, partition_of_record, strict=True):
        t0 = clock()
        event: Event = codec.decode_event(record.value, topic=record.topic, now=datetime.now(UTC))
        t1 = clock()
        where = (record.topic, partition)
        offset = offsets.get(where, -1) + 1
        offsets[where] = offset
        out = shell.on_event(event, partition, source_index[record.topic], offset)
        t2 = clock()
        routed = interventions.on_step(event, out, shell.state_of, partition)
        routed.extend(interventions.on_watermark(partition, shell.watermark_of(partition), band_of))
        t3 = clock()
        sent = [
            codec.encode("risk_change", change.to_record(), trusted=True)
            for change in out.risk_changes
        ]
        sent += [
            codec.encode("training_example", example.to_record(), trusted=True)
            for example in out.training_examples
        ]
        sent += [
            codec.encode("intervention", decision.to_record(), trusted=True)
            for decision in routed.decisions
        ]
        t4 = clock()
        now_s = time.time()
        event_s = event.event_time.timestamp()
        for score in out.scores:
            window_scores[score.customer_id] = score
            latency_s = None if score.trigger == "timer" else now_s - event_s
            metrics.observe_score(score.band, latency_s)
        for change in out.risk_changes:
            metrics.observe_risk_change(change.from_band, change.to_band, clock() - t0)
        t5 = clock()
        seconds["decode"] += t1 - t0
        seconds["step"] += t2 - t1
        seconds["route"] += t3 - t2
        seconds["send_now"] += t4 - t3
        seconds["metrics"] += t5 - t4
        for value in sent:
            digest.update(value)
        run.scores += len(out.scores)
        run.risk_changes += len(out.risk_changes)
        run.training_examples += len(out.training_examples)
        run.interventions += len(routed.decisions)
        window_partitions.add(partition)
        in_window += 1
        if in_window >= window_records:
            flush()
            in_window = 0
    flush()
    run.cpu_seconds = time.process_time() - cpu_started
    run.records = len(loaded.records)
    for customer_id in sorted(store.data):
        digest.update(customer_id.encode())
        digest.update(store.data[customer_id])
    run.digest = digest.hexdigest()[:16]
    started = clock()
    for customer_id in store.data:
        CustomerState.from_dict(store[customer_id])
    run.restore_us_per_state = (clock() - started) / max(1, len(store.data)) * 1e6
    return run


def summary_of(run: Run) -> dict[str, Any]:
    """Return the run as µs per record per stage plus totals (JSON-able)."""
    us = {name: seconds / run.records * 1e6 for name, seconds in run.seconds.items()}
    scoring_us = sum(us[name] for name in SCORING_PATH)
    total_us = sum(us.values())
    return {
        "us_per_event": {name: round(value, 2) for name, value in us.items()},
        "scoring_path_us": round(scoring_us, 2),
        "total_us": round(total_us, 2),
        "cpu_us": round(run.cpu_seconds / run.records * 1e6, 2),
        "events_per_s": round(1e6 / total_us) if total_us else 0,
        "restore_us_per_state": round(run.restore_us_per_state, 2),
        "records": run.records,
        "scores": run.scores,
        "risk_changes": run.risk_changes,
        "training_examples": run.training_examples,
        "interventions": run.interventions,
        "state_writes": run.state_writes,
        "score_writes": run.score_writes,
        "digest": run.digest,
    }


def print_table(results: dict[str, dict[str, Any]], before: dict[str, Any] | None) -> None:
    """Print µs per event per stage for each model (and the ``before`` run, when given)."""
    columns: list[tuple[str, dict[str, Any]]] = []
    for model_name, result in results.items():
        if before is not None and model_name in before.get("models", {}):
            columns.append((f"{model_name} before", before["models"][model_name]))
        columns.append((model_name if before is None else f"{model_name} after", result))
    header = f"{'stage (µs/event)':<46}" + "".join(f"{name:>18}" for name, _ in columns)
    print(header)
    print("-" * len(header))
    for key, label in STAGES:
        cells = "".join(f"{result['us_per_event'][key]:>18.2f}" for _, result in columns)
        print(f"{label:<46}{cells}")
    print("-" * len(header))
    for key, label in (
        ("scoring_path_us", "scoring path (decode+step+send+flush)"),
        ("total_us", "total"),
        ("cpu_us", "CPU time of the whole loop"),
        ("events_per_s", "events/s (total)"),
        ("restore_us_per_state", "restore: from_dict(JSON) µs/state"),
    ):
        cells = "".join(f"{result.get(key, math.nan):>18,.2f}" for _, result in columns)
        print(f"{label:<46}{cells}")
    cells = "".join(f"{result['digest']:>18}" for _, result in columns)
    print(f"{'output digest':<46}{cells}")


def profile(loaded: Input, model: ChurnModel, window_records: int, partitions: int) -> None:
    """Run the loop once under cProfile; print the top 25 functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_pipeline(loaded, model, window_records, partitions)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    print(text.getvalue())


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build the input, run the stages and print the table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--window", type=int, default=2000, help="records per flush window")
    parser.add_argument("--model", choices=("prior", "learned", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per model; the fastest wins")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N records")
    parser.add_argument("--profile", action="store_true", help="cProfile one run instead")
    parser.add_argument("--save", type=Path, help="also write the JSON result here")
    parser.add_argument("--compare", type=Path, help="a saved result to print a before column of")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    loaded = input_of(args.customers, args.events, args.seed, log)
    if args.limit:
        loaded = replace(loaded, records=loaded.records[: args.limit])
    names = ("prior", "learned") if args.model == "both" else (args.model,)
    models: dict[str, ChurnModel] = {}
    for name in names:
        models[name] = FrozenLinearModel.prior_only() if name == "prior" else learned_model(7)
    if args.profile:
        for name in names:
            print(f"== cProfile, {name} model, {len(loaded.records):,} records ==")
            profile(loaded, models[name], args.window, args.partitions)
        return 0
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        best: dict[str, Any] | None = None
        for _ in range(max(1, args.repeat)):
            gc.collect()
            summary = summary_of(run_pipeline(loaded, models[name], args.window, args.partitions))
            log(f"{name}: {summary['total_us']:.1f} µs/event, digest {summary['digest']}")
            if best is None or summary["total_us"] < best["total_us"]:
                best = summary
        assert best is not None
        results[name] = best
    before = json.loads(args.compare.read_text()) if args.compare else None
    print(f"input: {len(loaded.records):,} records of {loaded.customers:,} customers")
    print(f"source: {loaded.source}")
    print_table(results, before)
    if before is not None:
        for name, result in results.items():
            old = before.get("models", {}).get(name)
            if old is not None and old["digest"] != result["digest"]:
                print(f"WARNING: {name} outputs differ from the saved run ({old['digest']})")
    outcome = {
        "bench": "core_speed",
        "records": len(loaded.records),
        "customers": loaded.customers,
        "window": args.window,
        "partitions": args.partitions,
        "python": sys.version.split()[0],
        "models": results,
    }
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(outcome, indent=1) + "\n")
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
