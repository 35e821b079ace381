"""The RocksDB table store, with each key in its own partition's database.

Faust's RocksDB store puts a key into the database of the partition of the event being
processed, and fails (`assert event is not None`) when there is none. The pipeline writes its
tables from batches that mix partitions and from the deadline sweep, outside any Faust event,
and its changelog records go to the key's partition (`use_partitioner`); the local database a
key lives in must be that partition's too, or a restart would recover it from the wrong place.

Reads go to that one database as well: Faust's store, not knowing where a key lives, asks every
open partition's database for a key it has not seen (most lookups of a first start miss: a new
loan, a device not bound yet).
"""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import Store


class KeyPartitionedRocksDB(Store):
    def _home(self, key: bytes) -> int:
        table: Any = self.table
        partition: int = table.home_partition(key.decode())
        return partition

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._home(key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        partition = self._home(key)
        db = self._dbs.get(partition)  # open for the partitions this worker holds
        if db is None:
            return None
        value: bytes | None = db.get(key)
        if value is not None:
            self._key_index[key] = partition
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None
