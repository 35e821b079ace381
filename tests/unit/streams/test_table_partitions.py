"""Table writes carry their changelog partition (issue 14 item 7: a fresh worker on a fresh broker
exited 75 in count_places, "'NoneType' object is not iterable": Faust asked aiokafka's
partitioner for a changelog topic the producer had no metadata for yet)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2

from services.settings import Settings
from streams.app import build_pipeline

pytestmark = pytest.mark.unit

TABLES = ("loan-state", "loan-devices", "device-bindings", "pending-pings", "place-occupancy")


def test_every_table_write_names_its_partition_without_broker_metadata(tmp_path: object) -> None:
    settings = Settings.model_validate(
        {"kafka": {"bootstrap_servers": "127.0.0.1:1", "partitions": 6},
         "worker": {"data_dir": str(tmp_path), "metrics_port": 0}}
    )  # fmt: skip
    pipeline = build_pipeline(settings)
    for name in TABLES:
        table = pipeline.app.tables[name]
        for key in ("cd-2p-001", "L-1", "dev-42", "贷款-7"):
            expected = (murmur2(key.encode()) & 0x7FFFFFFF) % 6
            assert table.partition_for_key(key) == expected, (name, key)
    chunks = pipeline.app.tables["pending-ping-chunks"]
    device_partition = pipeline.app.tables["pending-pings"].partition_for_key("dev-42")
    assert chunks.partition_for_key('["dev-42", 3]') == device_partition
