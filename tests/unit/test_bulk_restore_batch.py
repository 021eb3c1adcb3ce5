"""The bulk restore's batch write and store URL, without a broker (see also
tests/integration/test_bulk_restore.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
from faust import stores as faust_stores
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksStore
from yarl import URL

from streams.errors import ChurnstreamError
from streams.worker.bulk_restore import (
    BulkRestoreStore,
    bulk_restore_store_url,
    write_changelog_batch,
)

OFFSET_KEY = RocksStore.offset_key


class Record(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


def open_db(path: Path) -> Any:
    """Return a partition database opened as Faust opens it (raw mode, its options)."""
    return RocksDBOptions().open(path)


def rows(db: Any) -> dict[bytes, bytes]:
    return dict(db.items())


def test_a_batch_puts_values_deletes_tombstones_and_records_its_last_offset(
    tmp_path: Path,
) -> None:
    db = open_db(tmp_path / "p0.db")
    records = [
        Record(0, b'"a"', b'{"n":1}'),
        Record(1, b'"b"', b'{"n":2}'),
        Record(2, b'"a"', None),
        Record(3, b'"c"', b'{"n":3}'),
        Record(4, b'"b"', b'{"n":4}'),
        Record(5, b'"c"', b'{"n":5}'),  # at the end offset: not written
    ]
    assert write_changelog_batch(db, records, 5, OFFSET_KEY) == (5, 4)
    assert rows(db) == {b'"b"': b'{"n":4}', b'"c"': b'{"n":3}', OFFSET_KEY: b"4"}


def test_a_batch_with_nothing_below_the_end_writes_nothing(tmp_path: Path) -> None:
    db = open_db(tmp_path / "p0.db")
    assert write_changelog_batch(db, [Record(7, b'"a"', b"1")], 7, OFFSET_KEY) == (0, None)
    assert write_changelog_batch(db, [], 7, OFFSET_KEY) == (0, None)
    assert rows(db) == {}


def test_a_record_without_a_key_fails_the_whole_batch(tmp_path: Path) -> None:
    db = open_db(tmp_path / "p0.db")
    records = [Record(0, b'"a"', b"1"), Record(1, None, b"2")]
    with pytest.raises(ChurnstreamError, match="offset 1 has no key"):
        write_changelog_batch(db, records, 10, OFFSET_KEY)
    assert rows(db) == {}


def test_the_store_url_names_the_bulk_store_and_faust_s_file_name() -> None:
    url = bulk_restore_store_url("customers")
    assert faust_stores.by_url(url) is BulkRestoreStore
    assert issubclass(BulkRestoreStore, RocksStore)
    # Faust's own store names the table's files after URL("rocksdb://") / table name
    assert URL(url).path == (URL("rocksdb://") / "customers").path == "customers"
    assert bool(URL(url))  # a false URL would make the table fall back to the app's store
