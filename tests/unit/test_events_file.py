"""JSON Lines events files: the shared CDNOW sample, round trips, and bad lines by number."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.core.events import ClickEvent, Event, OrderEvent, OrderItem, ProfileEvent
from streams.errors import EventsFileError
from streams.io.events_file import MAX_LINE_BYTES, parse_event_line, read_events, write_events

CDNOW = Path("/work/shared/data/cdnow_sample_orders.jsonl.gz")
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
GOOD_ORDER = (
    '{"event_type": "order", "event_id": "o1", "customer_id": "c1", "order_id": "o1", '
    '"event_time": "2024-03-01T12:00:00Z", "amount": 20.5, "currency": "USD"}'
)
GOOD_CLICK = (
    '{"event_type": "click", "event_id": "k1", "customer_id": "c1", "session_id": "s1", '
    '"event_time": "2024-03-01T12:01:00Z", "action": "search"}'
)
EVENTS: list[Event] = [
    OrderEvent(
        "o1",
        "c1",
        "o1",
        T0,
        54.5,
        "EUR",
        status="delivered",
        item_count=2,
        items=(OrderItem("sku-1", 2, 27.25, brand="Acme"),),
    ),
    ClickEvent("k1", "c1", "s1", T0 + timedelta(seconds=1), "review", product_id="p", rating=4),
    ProfileEvent("c1", T0, email_opt_in=False, timezone="Europe/Paris", preferred_channel="sms"),
    OrderEvent("o2", "c2", "o2", T0, 0.0, "JPY"),
]


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.skipif(not CDNOW.exists(), reason="shared CDNOW sample not present")
def test_cdnow_sample_reads_fully() -> None:
    events = list(read_events(CDNOW))
    assert len(events) == 6406
    assert all(isinstance(event, OrderEvent) for event in events)
    assert len({event.event_id for event in events}) == 6406


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_write_then_read_round_trips(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_events(path, EVENTS) == len(EVENTS)
    assert list(read_events(path)) == EVENTS
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            assert json.loads(handle.readline())["event_type"] == "order"


def test_gzip_is_recognised_by_its_magic_bytes_too(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    write_events(path, EVENTS)
    renamed = path.rename(tmp_path / "events.jsonl")
    assert list(read_events(renamed)) == EVENTS


def test_blank_lines_and_a_leading_bom_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl", "\ufeff" + GOOD_ORDER, "", "   ", GOOD_CLICK, "")
    assert [event.event_type for event in read_events(path)] == ["order", "click"]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"event_type": "order", "event_id": ', "not valid JSON"),
        ("[1, 2, 3]", "must be a JSON object, got list"),
        ('"just a string"', "must be a JSON object, got str"),
        (GOOD_ORDER.replace('"amount"', '"coupon": "X", "amount"'), "'coupon'"),
        (GOOD_ORDER.replace(', "currency": "USD"', ""), "'currency'"),
        (GOOD_ORDER.replace("20.5", "-1"), "'amount'"),
        (GOOD_ORDER.replace("20.5", "NaN"), "NaN"),
        (GOOD_ORDER.replace('"USD"', '"usd"'), "'currency'"),
        (GOOD_ORDER.replace('"USD"', '["USD"]'), "'currency'"),
        (GOOD_ORDER.replace('"order",', '{"a": 1},'), "'event_type'"),
        (GOOD_ORDER.replace('"order"', '"refund"'), "'event_type'"),
        (GOOD_ORDER.replace("12:00:00Z", "12:00:00"), "'event_time'"),
        (GOOD_CLICK.replace('"search"', '"teleport"'), "'action'"),
        (GOOD_CLICK.replace('"action"', '"rating": 9, "action"'), "'rating'"),
        (
            GOOD_ORDER.replace(
                '"amount"', '"items": [{"sku": "a", "qty": 0, "price": 1}], "amount"'
            ),
            "'items[0].qty'",
        ),
    ],
)
def test_bad_line_reports_its_number_and_field(
    tmp_path: Path, bad_line: str, fragment: str
) -> None:
    path = _write(tmp_path / "e.jsonl", GOOD_ORDER, "", GOOD_CLICK, bad_line, GOOD_ORDER)
    with pytest.raises(EventsFileError) as caught:
        list(read_events(path))
    assert caught.value.line_number == 4
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}:4: ")
    assert fragment in str(caught.value)


def test_on_error_collects_every_bad_line_and_keeps_the_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                GOOD_ORDER.encode(),
                b"not json",
                b'{"event_type": "order", "amount": "\xff\xfe"}',
                GOOD_CLICK.encode(),
                b"x" * (MAX_LINE_BYTES + 10),
                GOOD_CLICK.encode(),
            ]
        )
    )
    errors: list[EventsFileError] = []
    events = list(read_events(path, on_error=errors.append))
    assert [event.event_type for event in events] == ["order", "click", "click"]
    assert [error.line_number for error in errors] == [2, 3, 5]
    assert "not UTF-8" in str(errors[1])
    assert "longer than" in str(errors[2])


def test_future_events_are_rejected_only_when_now_is_given(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl", GOOD_ORDER.replace("2024-03-01", "2024-06-01"))
    assert len(list(read_events(path))) == 1
    with pytest.raises(EventsFileError, match=r"event_time.*future") as caught:
        list(read_events(path, now=T0))
    assert caught.value.line_number == 1


def test_missing_file_is_line_zero(tmp_path: Path) -> None:
    with pytest.raises(EventsFileError, match="cannot open") as caught:
        list(read_events(tmp_path / "nope.jsonl.gz"))
    assert caught.value.line_number == 0
    with pytest.raises(EventsFileError, match="cannot open"):
        list(read_events(tmp_path))  # a directory


def test_cut_gzip_stream_is_an_events_file_error(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    write_events(path, EVENTS * 50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EventsFileError, match="gzip") as caught:
        list(read_events(path))
    assert caught.value.line_number >= 1


def test_garbage_named_gz_is_an_events_file_error(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(EventsFileError, match="gzip") as caught:
        list(read_events(path))
    assert caught.value.line_number == 1


def test_corrupt_gzip_body_is_an_events_file_error(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    write_events(path, EVENTS * 50)
    data = bytearray(path.read_bytes())
    for index in range(20, len(data) - 8, 7):
        data[index] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(EventsFileError):
        list(read_events(path))


def test_parse_event_line_returns_none_for_blank_lines() -> None:
    assert parse_event_line("  \n") is None
    assert parse_event_line(GOOD_CLICK.encode()) == parse_event_line(GOOD_CLICK)
