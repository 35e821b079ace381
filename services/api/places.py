"""Risk places near a point (二押点, pawn shops, used-car markets, impound lots), for the map.

The API reads the same place files as the worker (`worker.places_dir`, default the shipped
`rules/catalog/places/`), once, at the first request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from rules.geo import distance_m
from rules.places import PlaceIndex, load_places
from rules.spec import CATALOG_DIR
from services.api.deps import SettingsDep, ViewerPrincipal
from services.api.schemas import ErrorBody

router = APIRouter(prefix="/v1", tags=["places"])
MAX_RADIUS_M = 50_000.0
MAX_PLACES = 500


class PlaceOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    kind: str = Field(
        description="`second_pledge_lot` (二押点), `pawn_shop`, `used_car_market`, `impound_lot`."
    )
    name: str
    lat: float
    lon: float
    radius_m: float
    distance_m: float = Field(description="From the query point to the place's centre.")


class PlacesOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    items: list[PlaceOut] = Field(description="Nearest first.")
    truncated: bool = Field(description="More places were in range than `limit`.")


def _index(request: Request, settings: SettingsDep) -> PlaceIndex:
    index: PlaceIndex | None = getattr(request.app.state, "place_index", None)
    if index is None:
        index = load_places(settings.worker.places_dir or CATALOG_DIR / "places")
        request.app.state.place_index = index
    return index


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Vendor ingest keys may not read places."},
    422: {"model": ErrorBody, "description": "A bad point or radius."},
}


@router.get(
    "/places",
    summary="Risk places within a radius of a point",
    response_model=PlacesOut,
    responses=_ERRORS,
)
async def places_near(
    who: ViewerPrincipal,
    request: Request,
    settings: SettingsDep,
    lat: Annotated[float, Query(ge=-90, le=90, description="WGS-84 latitude.")],
    lon: Annotated[float, Query(ge=-180, le=180, description="WGS-84 longitude.")],
    radius_m: Annotated[float, Query(gt=0, le=MAX_RADIUS_M)] = 10_000.0,
    limit: Annotated[int, Query(ge=1, le=MAX_PLACES)] = 200,
) -> PlacesOut:
    """Places whose circle comes within `radius_m` of the point, nearest first."""
    index = _index(request, settings)
    found = []
    for place in index.candidates(lat, lon, radius_m):
        d = distance_m(lat, lon, place.lat, place.lon)
        if d - place.radius_m <= radius_m:
            found.append((d, place))
    found.sort(key=lambda item: (item[0], item[1].id))
    return PlacesOut(
        items=[
            PlaceOut(
                id=p.id,
                kind=p.kind.value,
                name=p.name,
                lat=p.lat,
                lon=p.lon,
                radius_m=p.radius_m,
                distance_m=round(d, 1),
            )
            for d, p in found[:limit]
        ],
        truncated=len(found) > limit,
    )
