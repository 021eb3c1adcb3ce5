"""Reading every stored state of the owned partitions straight from the table's RocksDB.

After a restart or a rebalance the worker rebuilds its timer indexes from every stored
state. Iterating a Faust table goes through its mapping layers and hashes every key to find
its partition; the RocksDB store already keeps one database per partition, so this reads
each owned partition's database in turn and decodes keys and values with Faust's own JSON
codec (orjson when installed), as the table does. Faust internals used (0.15.3):
``Store._dbs`` (partition -> database), ``Store._visible_items`` (skips the offset key),
``app.assignor.assigned_actives()`` and ``Table.changelog_topic_name``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from faust.types import TP
from faust.utils import json as faust_json


def table_scan(table: Any) -> Callable[[], Iterator[tuple[int, str, Any]]] | None:
    """Return a scan of ``table``'s active partitions, or None if its store is not RocksDB."""
    store = table.data
    if not hasattr(store, "_dbs") or not hasattr(store, "_visible_items"):
        return None  # e.g. the memory store: iterate the table itself

    def scan() -> Iterator[tuple[int, str, Any]]:
        actives = table.app.assignor.assigned_actives()
        topic = table.changelog_topic_name
        for partition, db in list(store._dbs.items()):
            if TP(topic, partition) not in actives:
                continue
            for key, value in store._visible_items(db):
                yield partition, faust_json.loads(key), faust_json.loads(value)

    return scan
