"""The worker's plain parts without Kafka: the model holder and the per-partition shell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.core.config import ScoringConfig
from streams.core.events import OrderEvent
from streams.core.model import FrozenLinearModel, OnlineChurnModel
from streams.core.snapshot import sign_snapshot
from streams.errors import ValidationError
from streams.io.avro import default_codec
from streams.worker.models import ModelHolder, TrainerShell
from streams.worker.shell import ScoringShell

SECRET = "unit-test-secret-0123456789"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _trained(examples: int) -> OnlineChurnModel:
    model = OnlineChurnModel()
    for i in range(examples):
        model.learn({"prior_logit": float(i % 3), "log_order_count": 1.0}, i % 2)
    return model


def _encoded(model: OnlineChurnModel, secret: str = SECRET) -> bytes:
    record = sign_snapshot(model, secret, T0).to_record()
    return default_codec().encode("model_snapshot", record)


def test_holder_swaps_in_a_verified_snapshot_and_refuses_a_tampered_one() -> None:
    holder = ModelHolder(SECRET, default_codec())
    assert holder.version == "prior-0"

    forged = _encoded(_trained(10), secret="someone-elses-secret-000")
    assert holder.offer(forged) == "refused"
    assert holder.counters.refused == 1
    assert holder.version == "prior-0"

    assert holder.offer(b"\x00\x00\x00\x00\x07garbage") == "undecodable"
    assert holder.counters.undecodable == 1

    assert holder.offer(_encoded(_trained(20))) == "swapped"
    assert holder.version == "m-20"
    assert holder.counters.swaps == 1
    # an older snapshot (e.g. re-read from the compacted topic) never replaces a newer one
    assert holder.offer(_encoded(_trained(10))) == "stale"
    assert holder.version == "m-20"


def test_trainer_publishes_a_signed_snapshot_every_n_examples() -> None:
    codec = default_codec()
    trainer = TrainerShell(SECRET, codec, snapshot_every=3)
    example = {
        "example_id": "x",
        "customer_id": "c1",
        "snapshot_time": T0,
        "label_time": T0 + timedelta(days=90),
        "label": 1,
        "features": {"prior_logit": 0.5},
        "prior": 0.6,
        "model_version": "prior-0",
    }
    value = codec.encode("training_example", example)
    published = [trainer.learn(value, T0) for _ in range(6)]
    assert [p is not None for p in published] == [False, False, True, False, False, True]
    holder = ModelHolder(SECRET, codec)
    last = published[-1]
    assert last is not None
    assert holder.offer(last) == "swapped"
    assert holder.version == "m-6"


def _order(customer_id: str, day: float) -> OrderEvent:
    return OrderEvent(
        event_id=f"{customer_id}-{day}",
        customer_id=customer_id,
        order_id=f"{customer_id}-{day}",
        event_time=T0 + timedelta(days=day),
        amount=30.0,
        currency="EUR",
    )


def test_timers_are_rebuilt_from_the_store_after_a_rebalance() -> None:
    store: dict[str, Any] = {}
    model = FrozenLinearModel.prior_only()
    shell = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=lambda _: 0)
    for day in range(0, 50, 10):
        shell.on_event(_order("quiet", day), partition=0)
    assert store == {}, "states are written once per flush window, not per event"
    assert shell.flush(0) == 1
    shell.forget_partitions()  # as after a rebalance: in-memory timers are gone
    rebuilt = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=lambda _: 0)
    out = rebuilt.on_event(_order("other", 200), partition=0)
    assert rebuilt.stats.rebuilt_customers == 1
    quiet_timer_scores = [s for s in out.scores if s.customer_id == "quiet"]
    assert quiet_timer_scores, "the silent customer's timers must fire after the rebuild"
    assert all(s.trigger == "timer" for s in quiet_timer_scores)
    assert quiet_timer_scores[-1].score > quiet_timer_scores[0].score


def test_a_partitions_watermark_wakes_only_its_own_customers() -> None:
    store: dict[str, Any] = {}
    model = FrozenLinearModel.prior_only()
    owner = {"a": 0, "b": 1, "late": 1}
    shell = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=owner.__getitem__)
    shell.on_event(_order("a", 0), partition=0)
    shell.on_event(_order("b", 0), partition=1)
    out = shell.on_event(_order("late", 300), partition=1)
    woken = {s.customer_id for s in out.scores if s.trigger == "timer"}
    assert woken == {"b"}


def test_a_redelivered_record_changes_nothing() -> None:
    store: dict[str, Any] = {}
    model = FrozenLinearModel.prior_only()
    shell = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=lambda _: 0)
    first = shell.on_event(_order("c", 0), partition=0, source=1, offset=7)
    shell.flush(0)
    before = dict(store)
    again = shell.on_event(_order("c", 0), partition=0, source=1, offset=7)
    shell.flush(0)
    assert first.scores
    assert again.scores == []
    assert store == before
    assert shell.stats.replayed_skipped == 1
    later = shell.on_event(_order("c", 3), partition=0, source=1, offset=8)
    assert later.scores


def test_a_small_cache_evicts_flushed_states_and_gives_the_same_results() -> None:
    model = FrozenLinearModel.prior_only()
    customers = [f"c{i}" for i in range(30)]
    events = [_order(customer, day) for day in range(0, 120, 7) for customer in customers]
    results = []
    for max_cached in (1_000_000, 10):
        store: dict[str, Any] = {}
        shell = ScoringShell(
            store, ScoringConfig(), lambda: model, partition_of=lambda _: 0, max_cached=max_cached
        )
        outputs = []
        for index, event in enumerate(events):
            outputs.append(shell.on_event(event, partition=0, source=1, offset=index))
            if index % 7 == 6:
                shell.flush(0)
                assert len(shell.clocks[0].cache) <= max_cached
        shell.flush(0)
        results.append((outputs, dict(store)))
    assert results[0] == results[1]


def test_eviction_drops_the_least_recently_changed_clean_states() -> None:
    model = FrozenLinearModel.prior_only()
    store: dict[str, Any] = {}
    shell = ScoringShell(
        store, ScoringConfig(), lambda: model, partition_of=lambda _: 0, max_cached=1_000
    )
    for i in range(1_500):
        shell.on_event(_order(f"c{i}", 0), partition=0)
    shell.on_event(_order("c0", 1), partition=0)  # c0 changed last: it stays
    shell.flush(0)
    cache = shell.clocks[0].cache
    assert len(cache) == 1_000
    assert "c0" in cache
    assert "c1" not in cache
    assert "c1499" in cache
    assert len(store) == 1_500


def test_eviction_with_a_limit_drops_that_many_a_call_and_ends_where_one_call_would() -> None:
    def filled() -> ScoringShell:
        shell = ScoringShell(
            {},
            ScoringConfig(),
            FrozenLinearModel.prior_only,
            partition_of=lambda _: 0,
            max_cached=1_000,
        )
        for i in range(1_500):
            shell.on_event(_order(f"c{i}", 0), partition=0)
        shell.on_event(_order("c0", 1), partition=0)
        shell.write(0, shell.take_dirty(0))  # written, not evicted yet (flush() would)
        return shell

    at_once, in_steps = filled(), filled()
    assert at_once.evict(0)
    done = [in_steps.evict(0, limit=200) for _ in range(3)]
    assert done == [False, False, True]  # 200 + 200 + the last 100 of the 500 beyond
    assert list(in_steps.clocks[0].cache) == list(at_once.clocks[0].cache)
    assert len(at_once.clocks[0].cache) == 1_000
    assert in_steps.evict(0, limit=200)  # nothing beyond the share: done at once


def test_the_rebuild_reads_the_stored_fields_a_full_decode_would_give() -> None:
    from streams.core.state import CustomerState
    from streams.worker.shell import CLOCK, CONTACTS, NEXT_WAKE, stored_field

    model = FrozenLinearModel.prior_only()
    store: dict[str, Any] = {}
    shell = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=lambda _: 0)
    for day in range(0, 60, 9):
        shell.on_event(_order("c", day), partition=0)
    shell.flush(0)
    shell.set_contacts("c", {"currency": "EUR"})
    shell.flush(0)
    raw = store["c"]
    state = CustomerState.from_dict(raw)
    assert stored_field(raw, NEXT_WAKE) == state.next_wake_s
    assert stored_field(raw, CLOCK) == state.clock_s
    assert stored_field(raw, CONTACTS) == state.contacts == {"currency": "EUR"}
    old = {"v": 3, "values": []}
    with pytest.raises(ValidationError):
        stored_field(old, CLOCK)


def test_a_scan_of_the_stored_states_rebuilds_the_same_timers_as_the_store() -> None:
    model = FrozenLinearModel.prior_only()
    store: dict[str, Any] = {}
    owner = {"a": 0, "b": 1}
    writer = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=owner.__getitem__)
    for day in range(0, 40, 10):
        writer.on_event(_order("a", day), partition=0)
        writer.on_event(_order("b", day), partition=1)
    writer.flush(0)
    writer.flush(1)
    scanned: list[int] = []

    def scan() -> Any:
        scanned.append(1)
        return [(owner[cid], cid, raw) for cid, raw in store.items()]

    def unknown_partition(customer_id: str) -> int:
        raise AssertionError("a scan says the partition: no hashing")

    rebuilt = ScoringShell(
        store, ScoringConfig(), lambda: model, partition_of=unknown_partition, scan=scan
    )
    plain = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=owner.__getitem__)
    assert rebuilt.watermark_of(1) == plain.watermark_of(1)
    assert scanned == [1], "one pass rebuilds every partition"
    for shell in (rebuilt, plain):
        assert shell.stats.rebuilt_customers == 2
    assert rebuilt.clocks[0].timers.pop_due(1e12) == plain.clocks[0].timers.pop_due(1e12)


def test_the_rebuild_pass_also_serves_the_contact_histories_of_a_partition() -> None:
    model = FrozenLinearModel.prior_only()
    store: dict[str, Any] = {}
    owner = {"a": 0, "b": 0, "c": 1}
    writer = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=owner.__getitem__)
    for cid, partition in owner.items():
        writer.on_event(_order(cid, 0), partition=partition)
    writer.set_contacts("a", {"currency": "EUR"})
    writer.set_contacts("c", {"currency": "USD"})
    writer.flush(0)
    writer.flush(1)
    reader = ScoringShell(store, ScoringConfig(), lambda: model, partition_of=owner.__getitem__)
    reader.on_event(_order("b", 5), partition=0)  # rebuilds both partitions in one pass
    reader.set_contacts("b", {"currency": "GBP"})  # newer than the store: the cache wins
    assert sorted(reader.partition_contacts(0)) == [
        ("a", {"currency": "EUR"}),
        ("b", {"currency": "GBP"}),
    ]
    assert reader.partition_contacts(1) == [("c", {"currency": "USD"})]
    # asked again (no rebuild in between): a pass of its own gives the same answer
    assert sorted(reader.partition_contacts(0)) == [
        ("a", {"currency": "EUR"}),
        ("b", {"currency": "GBP"}),
    ]


def test_after_a_crash_records_delivered_again_give_the_uninterrupted_states() -> None:
    """States stored past the committed offset must not move the watermark ahead.

    A crash leaves the committed offset at ``committed`` while one customer's state was
    already stored with later records. The restarted shell reads from the committed offset:
    the records whose effect is stored are skipped, yet the watermark must follow every one of
    them, so the other customers' timers fire where they fired the first time.
    """
    model = FrozenLinearModel.prior_only()
    customers = ["x", "y", "z"]
    # irregular gaps: silence timers fall between a customer's orders
    events = [
        _order(customers[i % 3], day)
        for i, day in enumerate([0, 1, 2, 5, 9, 10, 30, 31, 33, 60, 61, 70, 95, 120, 121, 160])
    ]

    def shell_on(store: dict[str, Any]) -> ScoringShell:
        return ScoringShell(store, ScoringConfig(), lambda: model, partition_of=lambda _: 0)

    uninterrupted: dict[str, Any] = {}
    clean = shell_on(uninterrupted)
    for offset, event in enumerate(events):
        clean.on_event(event, partition=0, source=1, offset=offset)
    clean.flush(0)

    committed, ahead = 6, 13  # the offsets the group committed, and one stored state reached
    store: dict[str, Any] = {}
    crashed = shell_on(store)
    for offset, event in enumerate(events[:ahead]):
        crashed.on_event(event, partition=0, source=1, offset=offset)
        if offset == committed - 1:
            crashed.flush(0)  # everything up to the committed offset is stored
    stored_ahead = events[ahead - 1].customer_id
    store[stored_ahead] = crashed.states_to_write(0, [stored_ahead])[0][1]  # then one more

    restarted = shell_on(store)
    for offset in range(committed, len(events)):
        restarted.on_event(events[offset], partition=0, source=1, offset=offset)
    restarted.flush(0)
    assert restarted.stats.replayed_skipped > 0
    assert store == uninterrupted
