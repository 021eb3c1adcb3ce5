"""R7 and security on one live worker: poison pills, forged model snapshots, what logs leak.

One worker run (module-scoped) is fed, in this order on one partition:

- good orders with poison pills between them: random bytes, a wrong magic byte, an unknown
  schema id, truncated Avro, a click record on the orders topic, and valid Avro with invalid
  values (negative amount, unknown currency, event time a year ahead). Each poison pill must
  land in ``dead-letters`` with its error, nothing may crash, every good record is scored;
- two forged model snapshots on ``churn-models`` (signed with the wrong key; the second
  carries a pickle that would create a file when loaded): refused, counted in /metrics, never
  unpickled; then a genuine snapshot, which the scorer swaps in (the feed is live);
- then the worker's log and /metrics are searched for every customer id: none may appear.

The decoders and the events-file reader are fuzzed in tests/unit/test_fuzz_decoders.py and
tests/faults/test_faults_fuzz.py; the unit tests of signing, tokens and webhooks are in
tests/unit/test_core_snapshot.py, test_score_api.py and test_webhooks.py.
"""

from __future__ import annotations

import pickle
import random
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.core.events import ClickEvent, OrderEvent
from streams.core.features import FEATURE_NAMES
from streams.core.model import OnlineChurnModel
from streams.core.snapshot import sign_snapshot
from streams.errors import DecodeError
from streams.io import kafka_local
from streams.io.avro import default_codec, event_record
from streams.io.kafka_clients import producer
from streams.settings import Settings
from tests.faults.conftest import FAST_REJOIN, make_settings
from tests.faults.harness import PINNED, metric_sum
from tests.support.processes import MODEL_SECRET, TopicWatcher, WorkerProcess, wait_for

TOKEN = "faults-api-token-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)
CODEC = default_codec()


def _order(customer_id: str, **changes: Any) -> OrderEvent:
    values: dict[str, Any] = {
        "event_id": f"{customer_id}-o1",
        "customer_id": customer_id,
        "order_id": f"{customer_id}-o1",
        "event_time": NOW - timedelta(days=3),
        "amount": 42.5,
        "currency": "EUR",
        "status": "paid",
        **changes,
    }
    return OrderEvent(**values)


def _poison_pills() -> list[tuple[str, bytes, str, str]]:
    """Return (customer id, value, expected reason, word the error must contain)."""
    good = CODEC.encode_event(_order("r7-template"))[1]
    click = ClickEvent("r7-c1", "r7-poison-click", "s1", NOW, "page_view")
    noise = bytes(random.Random(7).randrange(256) for _ in range(48))
    try:
        CODEC.decode_event(noise, topic="orders", now=NOW)
    except DecodeError as exc:
        noise_reason = exc.reason
    else:  # pragma: no cover - 48 random bytes are not an order
        raise AssertionError("random bytes decoded as an order")
    far_future = NOW + timedelta(days=365)
    return [
        ("r7-poison-noise", noise, noise_reason, ""),
        ("r7-poison-magic", b"\x01" + good[1:], "wrong_magic_byte", "magic"),
        (
            "r7-poison-schema",
            good[:1] + struct.pack(">I", 999) + good[5:],
            "unknown_schema_id",
            "999",
        ),
        ("r7-poison-truncated", good[: len(good) // 2], "truncated", ""),
        ("r7-poison-click", CODEC.encode_event(click)[1], "schema_mismatch", "click_event"),
        _bad_value("r7-poison-amount", "amount", -5.0),
        _bad_value("r7-poison-currency", "currency", "XQZ"),
        _bad_value("r7-poison-future", "event_time", far_future),
    ]


def _bad_value(customer_id: str, name: str, value: Any) -> tuple[str, bytes, str, str]:
    """Return a pill of valid Avro whose ``name`` breaks the events rules."""
    record = {**event_record(_order(customer_id)), name: value}
    return customer_id, CODEC.encode("order_event", record), "invalid_field", name


class _CreatesAFile:
    """Unpickling this creates ``path``: proof a payload was (not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _snapshot(secret: str, examples: int, payload: bytes | None = None) -> bytes:
    model = OnlineChurnModel()
    for number in range(examples):
        features = {name: float((number + i) % 7) for i, name in enumerate(FEATURE_NAMES)}
        model.learn(features, number % 2)
    record = sign_snapshot(model, secret, NOW).to_record()
    if payload is not None:
        record["payload"] = payload
    return CODEC.encode("model_snapshot", record)


@dataclass
class EdgeRun:
    """What the module's one worker run produced."""

    settings: Settings
    poison: list[tuple[str, bytes, str, str]]
    good_ids: list[str]
    dead_letters: list[Any] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    metrics_after_poison: str = ""
    metrics_after_forged: str = ""
    version_after_forged: str = ""
    version_after_genuine: str = ""
    genuine_version: str = ""
    marker: Path = Path()
    log_text: str = ""
    final_metrics: str = ""
    api: dict[str, int] = field(default_factory=dict)
    alive: bool = False


@pytest.fixture(scope="module")
def edge_run(
    kafka_broker: kafka_local.BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> EdgeRun:
    """Run one worker through poison pills and forged snapshots; collect what it did."""
    settings = make_settings(kafka_broker.bootstrap, partitions=1)
    run = EdgeRun(settings, _poison_pills(), [f"r7-good-{n}" for n in range(9)])
    run.marker = tmp_path_factory.mktemp("forged") / "unpickled"
    client = producer(settings)
    orders = settings.topic("orders")
    for number, good_id in enumerate(run.good_ids):
        client.send(orders, key=good_id.encode(), value=CODEC.encode_event(_order(good_id))[1])
        if number < len(run.poison):
            customer_id, value, _, _ = run.poison[number]
            client.send(orders, key=customer_id.encode(), value=value)
    client.flush()
    worker = WorkerProcess(
        settings,
        tmp_path_factory.mktemp("edges"),
        CHURNSTREAM_API_TOKENS=TOKEN,
        **PINNED,
        **FAST_REJOIN,
    )
    dead = TopicWatcher(settings, "dead-letters")
    scores = TopicWatcher(settings, "churn-scores")
    try:
        worker.start().wait_ready()
        wait_for(lambda: len(dead.poll()) >= len(run.poison), 60, "a dead letter per poison pill")
        scores.wait_until(
            lambda values: {v["customer_id"] for v in values} >= set(run.good_ids),
            60,
            "a score of every good order",
        )
        run.metrics_after_poison = worker.get("/metrics")[1]
        models = settings.topic("churn-models")
        client.send(models, key=b"model", value=_snapshot("an-attackers-own-key-000", 30))
        evil = pickle.dumps(_CreatesAFile(run.marker))
        client.send(models, key=b"model", value=_snapshot("another-wrong-key-0000", 40, evil))
        client.flush()
        wait_for(lambda: _refused(worker) >= 2, 60, "both forged snapshots refused", poll_s=0.3)
        run.metrics_after_forged = worker.get("/metrics")[1]
        run.version_after_forged = _score_of_new_order(client, scores, orders, "r7-after-forged")
        genuine = _snapshot(MODEL_SECRET, 50)
        run.genuine_version = str(CODEC.decode(genuine)[1]["model_version"])
        client.send(models, key=b"model", value=genuine)
        client.flush()
        wait_for(
            lambda: metric_sum(worker.get("/metrics")[1], "churnstream_model_snapshots_total") >= 3,
            60,
            "the genuine snapshot read",
            poll_s=0.3,
        )
        run.version_after_genuine = _score_of_new_order(client, scores, orders, "r7-after-genuine")
        run.dead_letters = list(dead.records)
        run.scores = scores.values()
        run.api = {
            "no_token": worker.get("/v1/customers/r7-good-0/score")[0],
            "wrong_token": worker.get(
                "/v1/customers/r7-good-0/score", {"Authorization": "Bearer wrong-token-0000000"}
            )[0],
            "token": worker.get(
                "/v1/customers/r7-good-0/score", {"Authorization": f"Bearer {TOKEN}"}
            )[0],
        }
        run.final_metrics = worker.get("/metrics")[1]
        assert worker.process is not None
        run.alive = worker.process.poll() is None
    finally:
        dead.close()
        scores.close()
        client.close()
        worker.stop()
    run.log_text = worker.log_path.read_text(errors="replace")
    return run


def _refused(worker: WorkerProcess) -> float:
    exposition = worker.get("/metrics")[1]
    lines = [line for line in exposition.splitlines() if 'outcome="refused"' in line]
    return metric_sum("\n".join(lines), "churnstream_model_snapshots_total")


def _score_of_new_order(client: Any, scores: TopicWatcher, orders: str, customer_id: str) -> str:
    client.send(orders, key=customer_id.encode(), value=CODEC.encode_event(_order(customer_id))[1])
    client.flush()
    found = scores.wait_until(
        lambda values: [v for v in values if v["customer_id"] == customer_id],
        60,
        f"a score of {customer_id}",
    )
    return str(found[-1]["model_version"])


def test_every_poison_pill_lands_in_dead_letters_with_its_error(edge_run: EdgeRun) -> None:
    """R7: one dead letter per pill, in order, naming the reason and what was wrong."""
    assert len(edge_run.dead_letters) == len(edge_run.poison)
    for record, (customer_id, value, reason, word) in zip(
        edge_run.dead_letters, edge_run.poison, strict=True
    ):
        headers = {name: raw.decode() for name, raw in record.headers}
        assert record.key == customer_id.encode()
        assert record.value == value  # the original bytes, for a later replay
        assert headers["churnstream.errors.reason"] == reason, customer_id
        assert headers["churnstream.errors.topic"] == edge_run.settings.topic("orders")
        assert headers["churnstream.errors.class.name"] == "DecodeError"
        assert word in headers["churnstream.errors.exception.message"], customer_id
    offsets = [int(dict(r.headers)["churnstream.errors.offset"]) for r in edge_run.dead_letters]
    assert offsets == [2 * n + 1 for n in range(len(edge_run.poison))]
    counted = metric_sum(edge_run.metrics_after_poison, "churnstream_dead_letters_total")
    assert counted == len(edge_run.poison)


def test_the_good_records_around_the_poison_are_scored_and_nothing_crashed(
    edge_run: EdgeRun,
) -> None:
    """R7: every good order between the pills got a score; the worker is still running."""
    scored = {value["customer_id"] for value in edge_run.scores}
    assert set(edge_run.good_ids) <= scored
    assert not {customer_id for customer_id, *_ in edge_run.poison} & scored
    assert edge_run.alive
    assert "Traceback" not in edge_run.log_text


def test_forged_snapshots_are_refused_counted_and_never_unpickled(edge_run: EdgeRun) -> None:
    """Security: a snapshot signed with another key is refused before pickle.loads."""
    refused = [
        line
        for line in edge_run.metrics_after_forged.splitlines()
        if line.startswith("churnstream_model_snapshots_total") and 'outcome="refused"' in line
    ]
    assert metric_sum("\n".join(refused), "churnstream_model_snapshots_total") == 2
    assert not edge_run.marker.exists(), "the forged payload was unpickled"
    assert edge_run.version_after_forged == "prior-0"
    # the feed was live all along: the genuine snapshot is swapped in
    assert edge_run.version_after_genuine == edge_run.genuine_version != "prior-0"


def test_the_score_api_needs_one_of_the_bearer_tokens(edge_run: EdgeRun) -> None:
    """Security: no token and a wrong token are 401; the right one reads the score."""
    assert edge_run.api == {"no_token": 401, "wrong_token": 401, "token": 200}


def test_no_customer_id_appears_in_logs_or_metrics(edge_run: EdgeRun) -> None:
    """Security: ids are redacted in logs by default and never used as metric labels."""
    ids = [
        *edge_run.good_ids,
        *(customer_id for customer_id, *_ in edge_run.poison),
        "r7-after-forged",
        "r7-after-genuine",
    ]
    assert edge_run.log_text.strip(), "the worker wrote no log to scan"
    in_logs = [customer_id for customer_id in ids if customer_id in edge_run.log_text]
    assert in_logs == []
    for exposition in (edge_run.metrics_after_poison, edge_run.final_metrics):
        assert [customer_id for customer_id in ids if customer_id in exposition] == []
        assert "r7-" not in exposition
