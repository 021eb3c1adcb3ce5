"""The synthetic shop is deterministic: same seed, same events, same truth, same ids."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import streams.sim.customers
import streams.sim.effects
import streams.sim.emit
import streams.sim.rng
import streams.sim.runner
from streams.core.events import Event, event_to_dict
from streams.sim.customers import customer_id_of
from streams.sim.emit import iso
from streams.sim.rng import SimRandom
from streams.sim.runner import run_batch
from streams.sim.shop import Shop, SimConfig

DAY_MS = 86_400_000


def _events(config: SimConfig) -> list[dict[str, Any]]:
    return [event_to_dict(event) for event in Shop(config)]


def _until(shop: Shop, until_ms: int) -> list[Event]:
    out = []
    while (when := shop.peek_ms()) is not None and when < until_ms:
        event = shop.next_event()
        assert event is not None
        out.append(event)
    return out


def _offer(intervention_id: str, customer_id: str, at_ms: int) -> dict[str, Any]:
    return {
        "intervention_id": intervention_id,
        "customer_id": customer_id,
        "kind": "offer",
        "channel": "email",
        "segment": "loyal",
        "holdout": False,
        "suppressed_reason": None,
        "created_at": iso(at_ms),
        "expires_at": iso(at_ms + 7 * DAY_MS),
        "deliver_after": None,
    }


def test_the_same_seed_gives_the_same_events() -> None:
    config = SimConfig(customers=150, days=90, seed=11)
    first = _events(config)
    assert len(first) > 2000
    assert first == _events(config)


def test_another_seed_gives_another_shop() -> None:
    assert _events(SimConfig(customers=50, days=30, seed=1)) != _events(
        SimConfig(customers=50, days=30, seed=2)
    )


def test_event_ids_are_unique() -> None:
    ids = [event["event_id"] for event in _events(SimConfig(customers=100, days=120, seed=3))]
    assert len(ids) == len(set(ids))


def test_a_customers_story_does_not_depend_on_what_happens_to_others() -> None:
    config = SimConfig(customers=40, days=120, seed=5, acquisition_days=5)
    plain = Shop(config)
    nudged = Shop(config)
    day_30 = plain.start_ms + 30 * DAY_MS
    before = _until(plain, day_30) + _until(nudged, day_30)
    assert before
    # Every other customer gets a (strongly effective) offer in one of the two shops.
    for index in range(0, 40, 2):
        nudged.apply_intervention(_offer(f"i{index}", customer_id_of(index), day_30), day_30)
    rest_plain = [e for e in plain if e.customer_id == customer_id_of(7)]
    rest_nudged = [e for e in nudged if e.customer_id == customer_id_of(7)]
    assert rest_plain
    assert rest_plain == rest_nudged


def test_batch_files_are_identical_for_the_same_seed(tmp_path: Path) -> None:
    config = SimConfig(customers=80, days=60, seed=9)
    first = run_batch(config, tmp_path / "a.jsonl")
    second = run_batch(config, tmp_path / "b.jsonl.gz")
    assert first.events == second.events > 0
    assert (tmp_path / "a.jsonl").read_bytes() == _gunzip(tmp_path / "b.jsonl.gz")
    assert (tmp_path / "a.truth.jsonl").read_bytes() == _gunzip(tmp_path / "b.truth.jsonl.gz")


def _gunzip(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def test_the_start_is_fixed_by_default_and_can_be_moved() -> None:
    default_start = datetime(2024, 1, 1, tzinfo=UTC)
    default = next(iter(Shop(SimConfig(customers=1, days=10, acquisition_days=1))))
    assert default_start <= default.event_time < default_start + timedelta(days=1)
    start = datetime(2023, 6, 1, tzinfo=UTC)
    moved = next(iter(Shop(SimConfig(customers=1, days=10, acquisition_days=1, start=start))))
    assert moved.event_time - start == default.event_time - default_start


def test_splitmix_copies_draw_the_same_numbers() -> None:
    rng = SimRandom(42)
    for _ in range(5):
        rng.random()
    twin = rng.copy()
    assert [rng.random() for _ in range(10)] == [twin.random() for _ in range(10)]
    draws = [SimRandom(seed).random() for seed in range(2000)]
    assert 0.45 < sum(draws) / len(draws) < 0.55


@pytest.mark.parametrize(
    "module",
    [
        streams.sim.rng,
        streams.sim.customers,
        streams.sim.effects,
        streams.sim.emit,
        streams.sim.runner,
    ],
)
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


def test_simulate_to_a_file_writes_events_truth_and_a_summary(tmp_path: Path) -> None:
    from streams.settings import Settings
    from streams.sim.runner import simulate
    from streams.sim.truth import read_truth

    effects = tmp_path / "effects.json"
    effects.write_text('{"respond": {"loyal": 0.5}}')
    out = tmp_path / "shop.jsonl.gz"
    summary = simulate(
        Settings(), customers=60, seed=4, days=20, acquisition_days=5, effects_path=effects, out=out
    )
    assert summary.customers == 60
    assert summary.sim_days <= 20
    assert f"{summary.events} events of 60 customers" in summary.line()
    truth = read_truth(tmp_path / "shop.truth.jsonl.gz")
    assert len(truth.customers) == 60
    assert truth.meta["effects"]["respond"]["loyal"] == 0.5
    assert truth.end_ms == int(datetime(2024, 1, 21, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [({"customers": 0}, "--customers"), ({"days": -1.0}, "--days")],
)
def test_bad_settings_name_their_flag(overrides: dict[str, Any], flag: str) -> None:
    from streams.errors import SettingsError

    with pytest.raises(SettingsError, match=flag):
        SimConfig(**overrides)
