"""Score API: bearer auth, id validation, the payload, and the Faust/aiohttp views without Kafka."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry

from streams.core.config import ScoringConfig
from streams.core.events import OrderEvent
from streams.core.model import FrozenLinearModel
from streams.core.scoring import process_event
from streams.errors import ValidationError
from streams.io.avro import default_codec
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.models import ModelHolder
from streams.worker.partitioning import partitioner
from streams.worker.shell import ScoringShell
from streams.worker.web import (
    SCORE_PATH,
    TableSizeProbe,
    check_bearer,
    readiness,
    register_views,
    score_payload,
    validate_customer_id,
)

TOKEN = "token-for-tests-0123456789"
OTHER_TOKEN = "second-token-abcdefghijkl"
CONFIG = ScoringConfig()
MODEL = FrozenLinearModel.prior_only()
T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


def _stored_state(customer_id: str = "c-1") -> tuple[dict[str, Any], float]:
    """Return a customer's stored state after one order, and the score the pipeline emitted."""
    order = OrderEvent("e1", customer_id, "o1", T0, 42.0, "EUR")
    state, out = process_event(None, order, MODEL, CONFIG)
    return state.to_dict(), out.scores[-1].score


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"  Bearer   {OTHER_TOKEN}  ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        ("", False),
        (None, False),
        ("Bearer tökén", False),
    ],
)
def test_check_bearer_accepts_exactly_the_configured_tokens(
    header: str | None, expected: bool
) -> None:
    assert check_bearer(header, (TOKEN, OTHER_TOKEN)) is expected


def test_check_bearer_is_open_without_tokens() -> None:
    assert check_bearer(None, ()) is True
    assert check_bearer("Bearer anything", ()) is True


@pytest.mark.parametrize("customer_id", ["c1", "C-000042", "a.b_c~d", "x" * 128, "12345"])
def test_validate_customer_id_accepts_url_safe_ids(customer_id: str) -> None:
    assert validate_customer_id(customer_id) == customer_id


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("", "non-empty"),
        (None, "non-empty"),
        (42, "non-empty"),
        ("x" * 129, "longer than 128"),
        ("c1\n", "control"),
        ("c\x00", "control"),
        ("c\x7f", "control"),
        ("a b", "only contain"),
        ("a/b", "only contain"),
        ("a%2Fb", "only contain"),
        ("ö1", "only contain"),
        ("c1?x=1", "only contain"),
    ],
)
def test_validate_customer_id_rejects_malformed_ids(raw: object, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as caught:
        validate_customer_id(raw)
    assert caught.value.field == "customer_id"


def test_score_payload_matches_the_last_emitted_score_and_leaves_the_state_alone() -> None:
    raw, emitted = _stored_state()
    before = json.dumps(raw, sort_keys=True)
    payload = score_payload("c-1", raw, MODEL, CONFIG)
    assert payload is not None
    assert set(payload) == {"customer_id", "score", "band", "reasons", "model_version", "as_of"}
    assert payload["customer_id"] == "c-1"
    assert payload["score"] == pytest.approx(emitted)
    assert 0.0 <= payload["score"] <= 1.0
    assert payload["band"] in {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
    assert payload["model_version"] == MODEL.version
    assert payload["as_of"] == T0.isoformat()
    assert all(set(reason) == {"code", "text", "weight"} for reason in payload["reasons"])
    json.dumps(payload)  # the body must be JSON as it stands
    assert json.dumps(raw, sort_keys=True) == before


def test_score_payload_of_an_unknown_customer_is_none() -> None:
    assert score_payload("c-unknown", None, MODEL, CONFIG) is None


class FakeWorker:
    """The attributes register_views reads, around a real Faust app that never connects."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self.settings = Settings.load(
            {}, {"api_tokens": tokens, "topic_prefix": "t-", "model_secret": "x" * 16}
        )
        # Any: the test pokes at Faust internals (router, recovery) its stubs do not declare.
        self.app: Any = faust.App(
            "score-api-test", broker="kafka://127.0.0.1:1", web_port=1, store="memory://"
        )
        self.store: dict[str, Any] = {}
        self.shell = ScoringShell(self.store, CONFIG, lambda: MODEL, partitioner(4))
        self.models = ModelHolder("x" * 16, default_codec())
        self.metrics = Metrics.create(CollectorRegistry())
        self.caught_up = False

    @property
    def models_caught_up(self) -> bool:
        return self.caught_up


Router = Callable[[Any, Any, Any, Any], Awaitable[Any]]


def _serve(
    worker: FakeWorker, route: Router | None, scenario: Callable[[TestClient[Any, Any]], Any]
) -> None:
    """Run ``scenario`` against the worker's aiohttp app; ``route`` stands in for Faust's router."""

    async def same_node(topic: Any, key: Any, web: Any, request: Any) -> Any:
        raise SameNode()

    worker.app.router.route_topic_req = route or same_node

    async def main() -> None:
        async with TestClient(TestServer(worker.app.web.web_app)) as client:
            await scenario(client)

    asyncio.run(main())


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_views_answer_auth_validation_404_and_200() -> None:
    worker = FakeWorker((TOKEN,))
    register_views(worker)
    worker.store["c-1"], emitted = _stored_state("c-1")

    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.get("/v1/customers/c-1/score")
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"] == "unauthorized"
        response = await client.get("/v1/customers/c-1/score", headers=_auth(OTHER_TOKEN))
        assert response.status == 401
        for bad in ("a%20b", "x" * 129, "%C3%B6", "c%0A1"):
            response = await client.get(f"/v1/customers/{bad}/score", headers=_auth())
            assert response.status == 400, bad
            assert (await response.json())["error"] == "bad_customer_id"
        response = await client.get("/v1/customers/c-404/score", headers=_auth())
        assert response.status == 404
        assert (await response.json())["error"] == "unknown_customer"
        response = await client.get("/v1/customers/c-1/score", headers=_auth())
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        assert body["customer_id"] == "c-1"
        assert body["score"] == pytest.approx(emitted)
        metrics = await client.get("/metrics")  # open: no token needed
        assert metrics.status == 200
        assert metrics.headers["Content-Type"].startswith("text/plain")
        text = await metrics.text()
        assert 'churnstream_api_requests_total{code="200"} 1.0' in text
        assert 'churnstream_api_requests_total{code="401"} 2.0' in text
        assert 'churnstream_api_requests_total{code="400"} 4.0' in text
        assert 'churnstream_api_requests_total{code="404"} 1.0' in text
        assert "c-1" not in text  # no customer id in any label
        assert (await client.get("/healthz")).status == 200

    _serve(worker, None, scenario)


def test_readyz_is_false_until_tables_recovered_and_models_caught_up() -> None:
    worker = FakeWorker(())
    register_views(worker)

    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["ready"] is False
        assert body["tables_recovered"] is False
        worker.app.tables.recovery.completed.set()
        worker.caught_up = True
        response = await client.get("/readyz")
        assert response.status == 200
        assert (await response.json())["ready"] is True
        assert "churnstream_worker_ready 1.0" in await (await client.get("/metrics")).text()
        worker.app.in_recovery = True  # a later rebalance restores tables again
        assert (await client.get("/readyz")).status == 503
        assert "churnstream_worker_ready 0.0" in await (await client.get("/metrics")).text()

    _serve(worker, None, scenario)


def test_requests_are_checked_before_routing_and_routed_by_raw_key() -> None:
    worker = FakeWorker((TOKEN,))
    register_views(worker)
    routed: list[tuple[str, bytes]] = []

    async def route(topic: Any, key: Any, web: Any, request: Any) -> Any:
        routed.append((topic.get_topic_name(), topic.prepare_key(key, None)[0]))
        if key == "c-elsewhere":
            return web.json({"forwarded": True}, status=200)
        raise ServiceUnavailable()

    async def scenario(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/v1/customers/c-elsewhere/score")).status == 401
        assert (await client.get("/v1/customers/a%20b/score", headers=_auth())).status == 400
        assert routed == []  # nothing forwarded before auth and validation passed
        response = await client.get("/v1/customers/c-elsewhere/score", headers=_auth())
        assert (await response.json()) == {"forwarded": True}
        response = await client.get("/v1/customers/c-nowhere/score", headers=_auth())
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"

    _serve(worker, route, scenario)
    assert routed[0] == ("t-orders", b"c-elsewhere")


def test_routing_key_hashes_like_the_producers_but_the_table_key_would_not() -> None:
    """Why the view routes by an input topic: the table's JSON key hashes to other partitions."""
    worker = FakeWorker(())
    table = worker.app.Table(
        "customers",
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        partitions=4,
    )
    topic = worker.app.topic("t-orders", key_serializer="raw", value_serializer="raw")
    partition_of = partitioner(4)
    ids = [f"c{i}" for i in range(200)]

    def hashed(key: bytes) -> int:
        return int((murmur2(key) & 0x7FFFFFFF) % 4)

    assert all(hashed(topic.prepare_key(i, None)[0]) == partition_of(i) for i in ids)
    table_keys = [table.changelog_topic.prepare_key(i, None)[0] for i in ids]
    assert sum(hashed(key) != partition_of(i) for key, i in zip(table_keys, ids, strict=True)) > 50


def test_openapi_document_matches_the_views() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) parses docs/openapi.yaml")
    document = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "docs/openapi.yaml").read_text()
    )
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    assert set(paths) == {SCORE_PATH, "/v1/alerts/stream", "/healthz", "/readyz", "/metrics"}
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert all(paths[path]["get"]["security"] == [] for path in ("/healthz", "/readyz", "/metrics"))
    score = paths[SCORE_PATH]["get"]
    assert set(score["responses"]) == {"200", "400", "401", "404", "503"}
    (parameter,) = score["parameters"]
    # JSON Schema patterns are ECMA-262: "$" is the very end, which is \Z in Python.
    pattern = re.compile(parameter["schema"]["pattern"].removesuffix("$") + r"\Z")
    for candidate in ("c1", "a.b_c~d-e", "x" * 128, "x" * 129, "a b", "ö", "", "c\n"):
        try:
            validate_customer_id(candidate)
            valid = True
        except ValidationError:
            valid = False
        assert bool(pattern.search(candidate)) is valid, candidate
    schemas = document["components"]["schemas"]
    raw, _ = _stored_state()
    payload = score_payload("c-1", raw, MODEL, CONFIG)
    assert payload is not None
    assert set(schemas["Score"]["required"]) == set(payload)
    assert set(schemas["Readiness"]["required"]) == set(readiness(_NeverStarted(), False))


class _NeverStarted:
    """An app whose tables never started recovering."""

    tables = object()


def test_table_size_is_counted_off_the_loop_and_at_most_once_per_interval() -> None:
    probe = TableSizeProbe(every_s=3600.0)
    reported: list[int] = []

    async def scenario() -> None:
        table: dict[str, dict[str, Any]] = {"c1": {}, "c2": {}}
        probe.maybe_count(table, reported.append)
        probe.maybe_count(table, reported.append)  # one count at a time
        deadline = asyncio.get_running_loop().time() + 10.0
        while not reported and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # polling the condition the thread sets
        table["c3"] = {}
        probe.maybe_count(table, reported.append)  # within the interval: no new count
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert reported == [2]


def test_metrics_view_reports_the_table_size_after_the_first_scrape() -> None:
    worker = FakeWorker(())
    register_views(worker)
    worker.store["c-1"], _ = _stored_state("c-1")

    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.get("/metrics")  # starts the count
        deadline = asyncio.get_running_loop().time() + 10.0
        line = 'churnstream_table_entries{table="customers"} 1.0'
        while asyncio.get_running_loop().time() < deadline:
            if line in await (await client.get("/metrics")).text():
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"{line!r} never appeared on /metrics")

    _serve(worker, None, scenario)
