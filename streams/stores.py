"""The RocksDB table store, writing each key into its own partition's database.

Faust's RocksDB store puts a key into the database of the partition of the event being
processed, and fails (`assert event is not None`) when there is none. The pipeline writes its
tables from batches that mix partitions and from the deadline sweep, outside any Faust event,
and its changelog records go to the key's partition (`use_partitioner`); the local database a
key lives in must be that partition's too, or a restart would recover it from the wrong place.
"""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import Store


class KeyPartitionedRocksDB(Store):
    def _set(self, key: bytes, value: bytes | None) -> None:
        table: Any = self.table
        partition = table.home_partition(key.decode())
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)
