"""Table classes: raw UTF-8 keys, the changelog partition of each key, the RocksDB store per
key's partition. Hooks listed in `streams/faust_edge/__init__.py`."""

from __future__ import annotations

from typing import Any

import faust

from rules.pipeline.pending import device_of
from services.kafka import key_partition


class RawKeyTable(faust.Table):  # type: ignore[type-arg]
    """A table whose `str` keys are written as raw UTF-8, the bytes the input topics are keyed by.

    Faust writes `str` keys as JSON strings, and `"L1"` hashes to another partition than `L1`:
    the changelog record would not be on the key's input partition, and after a rebalance the
    worker owning that partition would not recover the key's state. The serializer must be set
    before the table's changelog topic is made (the app's table class), so that recovery
    decodes the keys the way they were written.
    """

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is str else super()._serializer_from_type(typ)

    def home_partition(self, key: str) -> int:
        """The partition a key's changelog records go to (the producer's partitioner)."""
        assert self.partitions, "the pipeline's tables are made with their partition count"
        return key_partition(key, self.partitions)

    def partition_for_key(self, key: Any) -> int | None:
        """The changelog partition, computed here rather than by Faust's producer: with
        `use_partitioner` Faust asks aiokafka's partitioner eagerly, which needs the producer to
        hold metadata for the changelog topic and fails ('NoneType' object is not iterable) for
        a topic just created (a fresh worker on a fresh broker, issue 14 item 7). With the
        partition given, aiokafka's send waits for the topic's metadata (bounded by its
        request timeout) instead."""
        return self.home_partition(key)

    def _new_store_by_url(self, url: Any) -> Any:
        if str(url).startswith("rocksdb:"):
            from streams.faust_edge.stores import KeyPartitionedRocksDB

            return KeyPartitionedRocksDB(
                url, self.app, self, table_name=self.name, key_type=self.key_type,
                key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                value_type=self.value_type, loop=self.loop, options=self.options,
            )  # fmt: skip
        return super()._new_store_by_url(url)


class DeviceChunkTable(RawKeyTable):
    """Pending-ping chunks (rules/pipeline/pending.py): each on its device's partition, next to the
    device's index, so the worker owning the device's pings recovers its chunks."""

    def home_partition(self, key: str) -> int:
        return super().home_partition(device_of(key))
