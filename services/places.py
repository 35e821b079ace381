"""Managed risk places: the compacted `<prefix>places` topic (key place id) and its audit trail.

The shipped place files (`worker.places_dir`, default rules/catalog/places/) are the seed; the
topic overrides them by id. A managed place deleted is a tombstone; a catalog place deleted is a
record with `deleted: true` (a tombstone would bring the catalog's place back). Every change also
writes an `AuditRecord` (who, when, before/after) to the compacted `<prefix>places.audit` topic
under a unique key, so compaction never drops one.

Readers: the worker (`PlaceFeed`: replays the topic before it evaluates, then replaces its
PlaceIndex in place on every change, no restart) and the API (`PlaceBook` over a `PlaceStore`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict

from rules.places import Place, PlaceIndex, make_place
from services.notify.state import Table, Writer
from services.settings import Settings

log = logging.getLogger(__name__)

PLACES = "places"
PLACE_AUDIT = "places.audit"  # both in services.kafka.TOPICS


class PlaceRecord(BaseModel):
    """A managed place as the topic holds it (a circle, or a polygon of [lat, lon] vertices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: str
    name: str
    lat: float
    lon: float
    radius_m: float
    polygon: list[tuple[float, float]] | None = None
    deleted: bool = False  # hides the catalog place of this id
    updated_at: AwareDatetime
    updated_by: str

    @classmethod
    def of(cls, place: Place, at: dt.datetime, by: str) -> PlaceRecord:
        return cls(
            id=place.id, kind=place.kind.value, name=place.name, lat=place.lat, lon=place.lon,
            radius_m=place.radius_m, polygon=list(place.polygon) if place.polygon else None,
            updated_at=at, updated_by=by,
        )  # fmt: skip

    def place(self) -> Place:
        if self.polygon is not None:
            return make_place(id=self.id, kind=self.kind, name=self.name, polygon=self.polygon)
        return make_place(
            id=self.id, kind=self.kind, name=self.name, lat=self.lat, lon=self.lon,
            radius_m=self.radius_m,
        )  # fmt: skip


Action = Literal["create", "update", "delete", "import"]


class AuditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    place_id: str
    action: Action
    actor: str
    role: str
    at: AwareDatetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def place_dict(place: Place) -> dict[str, Any]:
    return {
        "id": place.id, "kind": place.kind.value, "name": place.name, "lat": place.lat,
        "lon": place.lon, "radius_m": place.radius_m,
        "polygon": [list(v) for v in place.polygon] if place.polygon else None,
    }  # fmt: skip


def audit_id(at: dt.datetime) -> str:
    """Sortable by time (microseconds), unique (random tail)."""
    return f"aud_{int(at.timestamp() * 1e6):016x}{secrets.token_hex(4)}"


def effective_places(
    catalog: dict[str, Place], managed: dict[str, PlaceRecord]
) -> dict[str, tuple[Place, PlaceRecord | None]]:
    """The places in force: the catalog's, overridden or hidden by the managed records."""
    out: dict[str, tuple[Place, PlaceRecord | None]] = {
        pid: (place, None) for pid, place in catalog.items()
    }
    for pid, record in managed.items():
        if record.deleted:
            out.pop(pid, None)
            continue
        try:
            out[pid] = (record.place(), record)
        except ValueError as exc:  # written by an older or foreign writer: not applied
            log.warning("skipping an invalid managed place", extra={"id": pid, "error": str(exc)})
    return out


class PlaceFeed:
    """The worker's reader: keeps `index` (the engine's PlaceIndex) equal to the catalog plus
    the topic, replacing it in place after each batch of changes."""

    def __init__(
        self,
        settings: Settings,
        index: PlaceIndex,
        on_update: Callable[[int], object] | None = None,
    ) -> None:
        self.index = index
        self._on_update = on_update
        self.catalog = {p.id: p for p in index.places}
        self.table = Table(settings, PLACES, PlaceRecord, self._changed)
        self._scheduled = False
        self.updates = 0

    @property
    def replayed(self) -> asyncio.Event:
        return self.table.replayed

    def _changed(self, key: str, record: PlaceRecord | None) -> None:
        if not self._scheduled:  # once per batch read: a replay rebuilds the index once
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.rebuild)

    def rebuild(self) -> None:
        self._scheduled = False
        places = [place for place, _ in effective_places(self.catalog, self.table.items).values()]
        self.index.replace(places)
        self.updates += 1
        if self._on_update is not None:
            self._on_update(len(places))
        log.info("risk places updated",
                 extra={"places": len(places), "generation": self.index.generation})  # fmt: skip

    async def start(self) -> None:
        await self.table.start()
        self.rebuild()

    async def stop(self) -> None:
        await self.table.stop()


class PlaceStore(Protocol):
    """Where the API keeps managed places and their audit: Kafka, or memory in unit tests."""

    places: dict[str, PlaceRecord]
    audit: dict[str, AuditRecord]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(
        self, changes: list[tuple[str, PlaceRecord | None]], audits: list[AuditRecord]
    ) -> None: ...


class KafkaPlaceStore:
    def __init__(self, settings: Settings) -> None:
        self._places = Table(settings, PLACES, PlaceRecord)
        self._audit = Table(settings, PLACE_AUDIT, AuditRecord)
        self._writer = Writer(settings)
        self.places = self._places.items
        self.audit = self._audit.items

    async def start(self) -> None:
        await self._writer.start()
        await asyncio.gather(self._places.start(), self._audit.start())

    async def stop(self) -> None:
        await self._places.stop()
        await self._audit.stop()
        await self._writer.stop()

    async def write(
        self, changes: list[tuple[str, PlaceRecord | None]], audits: list[AuditRecord]
    ) -> None:
        """Returns once Kafka acknowledged every record; then the change is visible here at
        once (the tail reads the same records back later, idempotently)."""
        sent = [await self._writer.send(PLACES, key, record) for key, record in changes]
        sent += [await self._writer.send(PLACE_AUDIT, a.id, a) for a in audits]
        await asyncio.gather(*sent)
        for key, record in changes:
            if record is None:
                self.places.pop(key, None)
            else:
                self.places[key] = record
        for audit in audits:
            self.audit[audit.id] = audit


class MemoryPlaceStore:
    """For unit tests of the API (no Kafka): the same contract, kept in dicts."""

    def __init__(self) -> None:
        self.places: dict[str, PlaceRecord] = {}
        self.audit: dict[str, AuditRecord] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def write(
        self, changes: list[tuple[str, PlaceRecord | None]], audits: list[AuditRecord]
    ) -> None:
        for key, record in changes:
            if record is None:
                self.places.pop(key, None)
            else:
                self.places[key] = record
        for audit in audits:
            self.audit[audit.id] = audit
