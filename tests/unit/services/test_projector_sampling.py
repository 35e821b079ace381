"""Ping sampling in the projector: read cheaply, validated when kept, same choices as before."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from rules.events import GpsPing
from services.projector import GPS, Projector, ProjectorMetrics
from services.store import TimelineEntry

pytestmark = pytest.mark.unit


class FakeStore:
    def __init__(self, bound: dict[str, str]) -> None:
        self.bound = bound
        self.timeline: dict[str, list[TimelineEntry]] = {}

    async def loans_of_devices(self, device_ids: Sequence[str]) -> dict[str, str]:
        return {d: self.bound[d] for d in device_ids if d in self.bound}

    async def add_timeline(self, entries: Mapping[str, Sequence[TimelineEntry]]) -> None:
        for loan_id, items in entries.items():
            self.timeline.setdefault(loan_id, []).extend(items)


def record(**fields: Any) -> SimpleNamespace:
    ping = {
        "event_id": "p", "device_id": "dev-1", "vendor": "v", "ts": "2024-05-01T08:00:00+08:00",
        "lat": 30.0, "lon": 120.0, "device_kind": "wired", **fields,
    }  # fmt: skip
    return SimpleNamespace(value=GpsPing.model_validate(ping).model_dump_json().encode())


def raw(value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(value=value)


def count(metrics: ProjectorMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "skipwatch_projector_records_total", {"topic": GPS, "outcome": outcome}
    )
    return value or 0.0


async def test_one_position_per_device_per_interval_every_alarm_and_invalid_counted() -> None:
    store = FakeStore({"dev-1": "L1", "dev-2": "L2"})
    metrics = ProjectorMetrics()
    projector = Projector(
        bootstrap_servers="unused", topic_prefix="t.", store=store,  # type: ignore[arg-type]
        metrics=metrics, ping_interval_s=600,
    )  # fmt: skip
    await projector._project_pings(
        [
            record(event_id="a"),  # first of dev-1: kept
            record(event_id="b", ts="2024-05-01T08:05:00+08:00"),  # 5 min later: sampled out
            record(event_id="c", ts="2024-05-01T08:06:00+08:00", alarms=["sos"]),  # alarm: kept
            record(event_id="d", ts="2024-05-01T00:17:00Z"),  # 11 min after c: kept
            record(event_id="e", device_id="dev-2"),  # another device: kept
            record(event_id="f", device_id="dev-3"),  # kept, but no loan: unbound
            raw(b"not json"),
            raw(orjson.dumps({"device_id": "dev-9", "ts": "2024-05-01T08:00:00+08:00"})),
            raw(orjson.dumps({"device_id": "dev-9", "ts": "2024-05-01T08:00:00"})),
        ]
    )
    assert [e.data["event_id"] for e in store.timeline["L1"]] == ["a", "c", "d"]
    assert [e.data["event_id"] for e in store.timeline["L2"]] == ["e"]
    assert count(metrics, "sampled_out") == 1
    assert count(metrics, "unbound") == 1
    assert count(metrics, "invalid") == 3
    assert count(metrics, "applied") == 4

    # An invalid ping is not remembered: the next valid ping of its device is still kept.
    await projector._project_pings([record(event_id="g", device_id="dev-9")])
    assert count(metrics, "unbound") == 2
