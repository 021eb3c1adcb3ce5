"""The score API on live workers: auth, 400/404, and reads answered by the owning worker."""

from __future__ import annotations

from collections.abc import Callable

from kafka.partitioner.default import murmur2

from streams.io.kafka_clients import produce_events
from streams.settings import Settings
from streams.sim.sample import sample_events
from tests.support.processes import WorkerProcess, consumer_caught_up, wait_for

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _partition(customer_id: str, partitions: int) -> int:
    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


def test_two_workers_answer_every_customer_through_the_owner(
    topic_settings: Callable[..., Settings], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = topic_settings(partitions=4)
    events = list(sample_events(customers=30, days=60, seed=5))
    produce_events(settings, events)
    env = {"CHURNSTREAM_TRAIN": "false", "CHURNSTREAM_API_TOKENS": TOKEN}
    first = start_worker(settings, **env)
    second = start_worker(settings, **env)
    group = f"{settings.topic_prefix}churnstream"
    wait_for(lambda: consumer_caught_up(settings, group), 120, "both workers to catch up")

    customers = sorted({event.customer_id for event in events})
    assert {_partition(c, 4) for c in customers} == {0, 1, 2, 3}

    def all_answered() -> bool:
        return all(first.get(f"/v1/customers/{c}/score", AUTH)[0] == 200 for c in customers)

    wait_for(all_answered, 60, "every customer's score via the first worker", poll_s=0.5)
    for customer_id in customers:
        status_1, body_1 = first.get(f"/v1/customers/{customer_id}/score", AUTH)
        status_2, body_2 = second.get(f"/v1/customers/{customer_id}/score", AUTH)
        assert (status_1, status_2) == (200, 200)
        assert body_1 == body_2
        assert body_1["customer_id"] == customer_id
        assert 0.0 <= body_1["score"] <= 1.0
        assert body_1["band"] in {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
        assert body_1["model_version"] == "prior-0"
        assert isinstance(body_1["reasons"], list)
        assert body_1["as_of"]

    assert first.get("/v1/customers/no-such-customer/score", AUTH)[0] == 404
    assert first.get("/v1/customers/" + "x" * 200 + "/score", AUTH)[0] == 400
    assert first.get(f"/v1/customers/{customers[0]}/score")[0] == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert first.get(f"/v1/customers/{customers[0]}/score", wrong)[0] == 401
    assert first.get("/healthz")[0] == 200
    status, exposition = first.get("/metrics")
    assert status == 200
    assert "churnstream_events_consumed_total" in exposition
    # the table views Faust ships would leak state without a token: they must be off
    assert first.get(f"/table/customers/{customers[0]}/")[0] == 404
