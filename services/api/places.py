"""Risk places (二押点, pawn shops, used-car markets, impound lots, scrapyards): read by anyone
signed in, managed by admins.

The places in force are the catalog's (`worker.places_dir`, default the shipped
`rules/catalog/places/`) overridden by the compacted `<prefix>places` topic (services/places.py),
which running workers follow: a change made here reaches them without a restart. Every change is
written with an audit record (actor, time, before/after), listed by `GET /v1/places/audit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.geo import distance_m
from rules.places import (
    Place,
    PlaceError,
    PlaceFileError,
    PlaceIndex,
    PlaceKind,
    load_places,
    make_place,
    parse_places,
)
from rules.spec import CATALOG_DIR
from services.api.auth import Principal
from services.api.deps import AdminPrincipal, SettingsDep, ViewerPrincipal
from services.api.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from services.api.schemas import ErrorBody
from services.places import (
    Action,
    AuditRecord,
    KafkaPlaceStore,
    PlaceRecord,
    PlaceStore,
    audit_id,
    effective_places,
    place_dict,
)
from services.settings import Settings

router = APIRouter(prefix="/v1", tags=["places"])
MAX_RADIUS_M = 50_000.0
MAX_PLACES = 500
START_TIMEOUT_S = 30.0
KINDS = ", ".join(f"`{k.value}`" for k in PlaceKind)


class PlaceOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    kind: str = Field(description=f"One of {KINDS}.")
    name: str
    shape: Literal["circle", "polygon"]
    lat: float = Field(description="The centre (a polygon's centroid).")
    lon: float
    radius_m: float = Field(description="A circle's radius; a polygon's bounding circle.")
    polygon: list[tuple[float, float]] | None = Field(
        None, description="A polygon's [lat, lon] vertices (ring not closed)."
    )
    source: Literal["catalog", "managed"] = Field(
        description="`catalog`: from the shipped place files; `managed`: created or edited "
        "through this API (overrides the catalog's place of the same id)."
    )
    updated_at: AwareDatetime | None = None
    updated_by: str | None = None
    distance_m: float | None = Field(
        None, description="From the query point to the place's centre (with `lat`/`lon`)."
    )

    @classmethod
    def of(
        cls, place: Place, record: PlaceRecord | None, distance: float | None = None
    ) -> PlaceOut:
        return cls(
            id=place.id, kind=place.kind.value, name=place.name,
            shape="polygon" if place.polygon else "circle", lat=place.lat, lon=place.lon,
            radius_m=place.radius_m, polygon=list(place.polygon) if place.polygon else None,
            source="managed" if record is not None else "catalog",
            updated_at=record.updated_at if record else None,
            updated_by=record.updated_by if record else None,
            distance_m=None if distance is None else round(distance, 1),
        )  # fmt: skip


class PlacesOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    items: list[PlaceOut] = Field(description="Nearest first with a point, else by name.")
    total: int = Field(description="Places matching, before `limit`.")
    truncated: bool = Field(description="More places matched than `limit`.")


class PlaceIn(BaseModel):
    """A circle (`lat`, `lon`, `radius_m`) or a polygon (`polygon`), not both."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(
        None, description="Letters, digits, `-`, `_`, `.` (≤ 64); generated when left out."
    )
    kind: str = Field(description=f"One of {KINDS}.")
    name: str
    lat: float | None = None
    lon: float | None = None
    radius_m: float | None = Field(None, description="10 to 50,000 m.")
    polygon: list[list[float]] | None = Field(
        None, description="[lat, lon] vertices, 3 to 500, a valid (non-self-intersecting) ring."
    )


class ImportOut(BaseModel):
    created: list[str]
    updated: list[str]
    unchanged: list[str]


class AuditOut(BaseModel):
    items: list[AuditRecord] = Field(description="Newest first.")


# ---------------------------------------------------------------------------- the book


class PlaceBook:
    """The catalog plus the managed store, for the routes. Started on first use."""

    def __init__(self, settings: Settings, store: PlaceStore | None) -> None:
        self.settings = settings
        self._store = store
        self._started: PlaceStore | None = None
        self._lock = asyncio.Lock()  # one change at a time (before/after are exact)
        self.catalog = {
            p.id: p
            for p in load_places(settings.worker.places_dir or CATALOG_DIR / "places").places
        }
        self._cache: tuple[int, dict[str, tuple[Place, PlaceRecord | None]], PlaceIndex] | None
        self._cache = None

    async def store(self) -> PlaceStore:
        async with self._lock:
            if self._started is None:
                store = self._store or KafkaPlaceStore(self.settings)
                try:
                    await asyncio.wait_for(store.start(), START_TIMEOUT_S)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await store.stop()
                    raise ServiceUnavailable(
                        f"risk places not readable from Kafka: {exc!r}"
                    ) from None
                self._started = store
            return self._started

    async def current(self) -> tuple[dict[str, tuple[Place, PlaceRecord | None]], PlaceIndex]:
        store = await self.store()
        # every write stamps updated_at: equal stamps, equal places
        key = hash(tuple(sorted((k, r.updated_at, r.deleted) for k, r in store.places.items())))
        if self._cache is None or self._cache[0] != key:
            places = effective_places(self.catalog, store.places)
            self._cache = (key, places, PlaceIndex(p for p, _ in places.values()))
        return self._cache[1], self._cache[2]

    async def change(
        self, who: Principal, action: Action, places: list[Place], delete: bool = False
    ) -> list[tuple[str, PlaceOut | None]]:
        """Write the places (or delete them) with one audit record each; returns what changed."""
        store = await self.store()
        now = dt.datetime.now(dt.UTC)
        async with self._lock:
            current = effective_places(self.catalog, store.places)
            changes: list[tuple[str, PlaceRecord | None]] = []
            audits: list[AuditRecord] = []
            out: list[tuple[str, PlaceOut | None]] = []
            for place in places:
                held = current.get(place.id)
                before = place_dict(held[0]) if held else None
                if delete:
                    record: PlaceRecord | None = None
                    if place.id in self.catalog:  # a tombstone would bring it back
                        record = PlaceRecord.of(place, now, who.name).model_copy(
                            update={"deleted": True}
                        )
                    after = None
                else:
                    record = PlaceRecord.of(place, now, who.name)
                    after = place_dict(place)
                    if before == after:
                        continue
                changes.append((place.id, record))
                audits.append(AuditRecord(
                    id=audit_id(now), place_id=place.id, action=action, actor=who.name,
                    role=who.role.name.lower() if who.role else "", at=now, before=before,
                    after=after,
                ))  # fmt: skip
                out.append((place.id, PlaceOut.of(place, record) if after else None))
            if changes:
                try:
                    await store.write(changes, audits)
                except Exception as exc:
                    raise ServiceUnavailable(f"Kafka did not take the change: {exc!r}") from None
            return out

    async def close(self) -> None:
        if self._started is not None:
            await self._started.stop()
            self._started = None


def install_places(app: FastAPI, settings: Settings, store: PlaceStore | None) -> None:
    app.state.places = PlaceBook(settings, store)


async def close_places(app: FastAPI) -> None:
    book: PlaceBook | None = getattr(app.state, "places", None)
    if book is not None:
        await book.close()


def place_book(request: Request) -> PlaceBook:
    book: PlaceBook = request.app.state.places
    return book


PlaceBookDep = Annotated[PlaceBook, Depends(place_book)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Reading needs a viewer, changing an admin."},
    404: {"model": ErrorBody, "description": "No such place."},
    409: {"model": ErrorBody, "description": "A place with this id exists."},
    422: {"model": ErrorBody, "description": "An invalid place: `field` names what."},
    503: {"model": ErrorBody, "description": "Kafka cannot be read or written now."},
}
PlaceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


def _validated(place_id: str, body: PlaceIn) -> Place:
    try:
        return make_place(
            id=place_id, kind=body.kind, name=body.name, lat=body.lat, lon=body.lon,
            radius_m=body.radius_m, polygon=body.polygon,
        )  # fmt: skip
    except PlaceError as exc:
        raise InvalidRequest(f"invalid place: {exc}", field=exc.field) from None


@router.get("/places", summary="List, search or find risk places near a point",
            response_model=PlacesOut, responses=_ERRORS)  # fmt: skip
async def list_places(
    who: ViewerPrincipal,
    book: PlaceBookDep,
    lat: Annotated[float | None, Query(ge=-90, le=90, description="WGS-84 latitude.")] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180, description="WGS-84 longitude.")] = None,
    radius_m: Annotated[float, Query(gt=0, le=MAX_RADIUS_M)] = 10_000.0,
    q: Annotated[str | None, Query(max_length=100, description="In the id or name.")] = None,
    kind: Annotated[PlaceKind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PLACES)] = 200,
) -> PlacesOut:
    """With `lat`/`lon`: the places whose extent comes within `radius_m` of the point, nearest
    first. Without: every place, by name. `q` and `kind` filter either."""
    if (lat is None) != (lon is None):
        raise InvalidRequest(
            "give both lat and lon, or neither", field="lon" if lon is None else "lat"
        )
    places, index = await book.current()
    if lat is not None and lon is not None:
        found = []
        for place in index.candidates(lat, lon, radius_m):
            if index.gap(place, lat, lon) <= radius_m:
                found.append((distance_m(lat, lon, place.lat, place.lon), place))
        found.sort(key=lambda item: (item[0], item[1].id))
        ranked: list[tuple[float | None, Place]] = list(found)
    else:
        ranked = [(None, p) for p, _ in sorted(places.values(), key=lambda e: (e[0].name, e[0].id))]
    needle = (q or "").strip().lower()
    ranked = [
        (d, p)
        for d, p in ranked
        if (kind is None or p.kind == kind)
        and (not needle or needle in p.id.lower() or needle in p.name.lower())
    ]
    return PlacesOut(
        items=[PlaceOut.of(p, places[p.id][1], d) for d, p in ranked[:limit]],
        total=len(ranked),
        truncated=len(ranked) > limit,
    )


@router.get("/places/audit", summary="Who changed which place (admin)",
            response_model=AuditOut, responses=_ERRORS)  # fmt: skip
async def place_audit(
    who: AdminPrincipal,
    book: PlaceBookDep,
    place_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditOut:
    store = await book.store()
    items = [a for a in store.audit.values() if place_id is None or a.place_id == place_id]
    items.sort(key=lambda a: a.id, reverse=True)
    return AuditOut(items=items[:limit])


@router.post(
    "/places/import",
    summary="Import places from CSV or GeoJSON (admin)",
    response_model=ImportOut,
    responses={**_ERRORS, 413: {"model": ErrorBody, "description": "Body too large."}},
)
async def import_places(
    who: AdminPrincipal,
    book: PlaceBookDep,
    request: Request,
    settings: SettingsDep,
    format: Annotated[Literal["csv", "geojson"], Query(description="The body's format.")],
) -> ImportOut:
    """The body is the file: CSV with columns `id,kind,name,lat,lon,radius_m` (circles), or a
    GeoJSON FeatureCollection of Points (properties `id`, `kind`, `name`, `radius_m`) and
    Polygons (`id`, `kind`, `name`). All or nothing: one bad row rejects the file (422 naming the
    line or feature and the field). Places with an existing id are updated."""
    body = await request.body()
    if len(body) > settings.api.max_body_bytes:
        raise PayloadTooLarge(f"body over {settings.api.max_body_bytes} bytes", field="body")
    try:
        places = parse_places(body, format, source="body")
    except PlaceFileError as exc:
        raise InvalidRequest(str(exc), field="body") from None
    except UnicodeDecodeError:
        raise InvalidRequest("body is not UTF-8 text", field="body") from None
    if not places:
        raise InvalidRequest("the file holds no place", field="body")
    current, _ = await book.current()
    changed = {pid for pid, _ in await book.change(who, "import", places)}
    return ImportOut(
        created=[p.id for p in places if p.id in changed and p.id not in current],
        updated=[p.id for p in places if p.id in changed and p.id in current],
        unchanged=[p.id for p in places if p.id not in changed],
    )


@router.get("/places/{place_id}", summary="One risk place", response_model=PlaceOut,
            responses=_ERRORS)  # fmt: skip
async def get_place(place_id: PlaceId, who: ViewerPrincipal, book: PlaceBookDep) -> PlaceOut:
    places, _ = await book.current()
    if place_id not in places:
        raise NotFound(f"no place {place_id!r}", field="place_id")
    place, record = places[place_id]
    return PlaceOut.of(place, record)


@router.post("/places", summary="Create a risk place (admin)", status_code=201,
             response_model=PlaceOut, responses=_ERRORS)  # fmt: skip
async def create_place(body: PlaceIn, who: AdminPrincipal, book: PlaceBookDep) -> PlaceOut:
    place_id = body.id or f"pl-{secrets.token_hex(5)}"
    place = _validated(place_id, body)
    places, _ = await book.current()
    if place.id in places:
        raise Conflict(f"place {place.id!r} exists (PUT /v1/places/{place.id} edits it)",
                       field="id")  # fmt: skip
    changed = await book.change(who, "create", [place])
    return changed[0][1] or PlaceOut.of(place, None)


@router.put("/places/{place_id}", summary="Edit a risk place (admin)", response_model=PlaceOut,
            responses=_ERRORS)  # fmt: skip
async def edit_place(
    place_id: PlaceId, body: PlaceIn, who: AdminPrincipal, book: PlaceBookDep
) -> PlaceOut:
    if body.id is not None and body.id != place_id:
        raise InvalidRequest("the id in the body differs from the path", field="id")
    place = _validated(place_id, body)
    places, _ = await book.current()
    if place_id not in places:
        raise NotFound(f"no place {place_id!r}", field="place_id")
    changed = await book.change(who, "update", [place])
    if not changed:  # nothing to change
        return PlaceOut.of(*places[place_id])
    out = changed[0][1]
    assert out is not None
    return out


@router.delete("/places/{place_id}", summary="Delete a risk place (admin)",
               response_model=PlaceOut, responses=_ERRORS)  # fmt: skip
async def delete_place(place_id: PlaceId, who: AdminPrincipal, book: PlaceBookDep) -> PlaceOut:
    """Returns the place as it was. A catalog place stays hidden until re-created."""
    places, _ = await book.current()
    if place_id not in places:
        raise NotFound(f"no place {place_id!r}", field="place_id")
    place, record = places[place_id]
    await book.change(who, "delete", [place], delete=True)
    return PlaceOut.of(place, record)
