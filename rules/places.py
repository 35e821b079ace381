"""Risk places (二押点, pawn shops, used-car markets, impound lots) and the spatial index over them.

A place is a circle (centre + radius, how lenders' GPS platforms list them). The index is a
shapely STRtree over each place's lat/lon bounding box; candidates are then checked exactly with
the haversine distance. ``locate`` also returns a *clearance*: how far the vehicle can move before
the answer could change, so the engine skips the lookup for the many pings of a parked car.

``PlaceOccupancy`` is the small cross-loan aggregate behind the "cluster of financed cars at one
lot" rule: which loans are at a place right now. The worker keeps one per place in a table keyed
by place id; backtest keeps them in a dict.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import orjson
import shapely
from shapely import STRtree

from rules.geo import M_PER_DEG, distance_m


class PlaceKind(StrEnum):
    SECOND_PLEDGE_LOT = "second_pledge_lot"  # 二押点: where cars are re-pledged for cash
    PAWN_SHOP = "pawn_shop"
    USED_CAR_MARKET = "used_car_market"
    IMPOUND_LOT = "impound_lot"


@dataclass(frozen=True, slots=True)
class Place:
    id: str
    kind: PlaceKind
    name: str
    lat: float
    lon: float
    radius_m: float


class PlaceFileError(ValueError):
    """A place file that cannot be loaded; names the file, the row or feature and the field."""


@dataclass(frozen=True, slots=True)
class PlaceFix:
    """What ``PlaceIndex.locate`` answers: the place at the point (or None) and the clearance."""

    place: Place | None
    clearance_m: float


class PlaceIndex:
    # How far around a point the index looks; also the largest clearance it reports.
    PROBE_M = 2_000.0

    def __init__(self, places: Iterable[Place]) -> None:
        self.places: tuple[Place, ...] = tuple(places)
        self.by_id: dict[str, Place] = {}
        for place in self.places:
            if place.id in self.by_id:
                raise PlaceFileError(f"duplicate place id {place.id!r}")
            self.by_id[place.id] = place
        boxes = [_bbox(p.lat, p.lon, p.radius_m) for p in self.places]
        self._boxes = boxes
        self._tree = STRtree([shapely.box(*b) for b in boxes])
        # A grid over the boxes answers the small queries of locate() without shapely's per-call
        # overhead; hits are put in the tree's order, so ties resolve as a tree query would.
        world = (-1e9, -1e9, 1e9, 1e9)
        self._rank = {int(i): n for n, i in enumerate(self._tree.query(shapely.box(*world)))}
        self._grid: dict[tuple[int, int], list[int]] = {}
        self._everywhere: list[int] = []  # boxes too large for the grid: always candidates
        for index, box in enumerate(boxes):
            cells = _cells(box)
            if cells is None:
                self._everywhere.append(index)
                continue
            for cell in cells:
                self._grid.setdefault(cell, []).append(index)

    def __len__(self) -> int:
        return len(self.places)

    def candidates(self, lat: float, lon: float, within_m: float) -> list[Place]:
        """Places whose bounding box meets the box ``within_m`` around the point."""
        query = _bbox(lat, lon, within_m)
        cells = _cells(query)
        if cells is None:  # a huge query: the tree
            hits = self._tree.query(shapely.box(*query))
            return [self.places[int(i)] for i in hits]
        found: set[int] = set(self._everywhere)
        grid = self._grid
        for cell in cells:
            indices = grid.get(cell)
            if indices:
                found.update(indices)
        if not found:
            return []
        minx, miny, maxx, maxy = query
        boxes = self._boxes
        hits = [
            i
            for i in found
            if boxes[i][0] <= maxx
            and boxes[i][2] >= minx
            and boxes[i][1] <= maxy
            and boxes[i][3] >= miny
        ]
        hits.sort(key=self._rank.__getitem__)
        return [self.places[i] for i in hits]

    def locate(
        self, lat: float, lon: float, current: str | None = None, exit_margin_m: float = 0.0
    ) -> PlaceFix:
        """The place at (lat, lon), with hysteresis: the ``current`` place is kept until the point
        is more than ``exit_margin_m`` beyond its radius. Nearest place wins when circles overlap.
        """
        best: Place | None = None
        best_gap = math.inf  # distance to the edge, negative inside
        clearance = self.PROBE_M
        kept: Place | None = None
        for place in self.candidates(lat, lon, self.PROBE_M):
            d = distance_m(lat, lon, place.lat, place.lon)
            gap = d - place.radius_m
            if place.id == current and gap <= exit_margin_m:
                kept = place
                clearance = min(clearance, exit_margin_m - gap)
                continue
            if gap <= 0.0 and gap < best_gap:
                best, best_gap = place, gap
            clearance = min(clearance, abs(gap))
        if kept is not None:
            return PlaceFix(kept, max(0.0, clearance))
        if best is not None:
            # Inside a place: the answer changes when the point leaves it (radius + margin).
            return PlaceFix(best, max(0.0, min(clearance, exit_margin_m - best_gap)))
        return PlaceFix(None, max(0.0, clearance))


_CELL_DEG = 0.05  # grid cell (about 5.5 km of latitude)
_MAX_CELLS = 64


def _cells(box: tuple[float, float, float, float]) -> list[tuple[int, int]] | None:
    """The grid cells a (lon/lat) box touches, or None when that is too many."""
    x0, x1 = math.floor(box[0] / _CELL_DEG), math.floor(box[2] / _CELL_DEG)
    y0, y1 = math.floor(box[1] / _CELL_DEG), math.floor(box[3] / _CELL_DEG)
    if (x1 - x0 + 1) * (y1 - y0 + 1) > _MAX_CELLS:
        return None
    return [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def _bbox(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    dlat = radius_m / M_PER_DEG
    dlon = radius_m / (M_PER_DEG * max(0.01, math.cos(math.radians(lat))))
    return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


# ---------------------------------------------------------------------------- loading

_CSV_FIELDS = ("id", "kind", "name", "lat", "lon", "radius_m")


def load_places(path: Path) -> PlaceIndex:
    """Load a place file (.csv with columns id,kind,name,lat,lon,radius_m, or a GeoJSON
    FeatureCollection of Points with properties id, kind, name, radius_m), or every such file in
    a directory."""
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    places: list[Place] = []
    for file in files:
        if file.suffix == ".csv":
            places.extend(_read_csv(file))
        elif file.suffix in (".geojson", ".json"):
            places.extend(_read_geojson(file))
    return PlaceIndex(places)


def _place(file: Path, where: str, raw: dict[str, object]) -> Place:
    def fail(field_name: str, why: str) -> PlaceFileError:
        return PlaceFileError(f"{file}: {where}: field {field_name!r}: {why}")

    values: dict[str, object] = {}
    for name in _CSV_FIELDS:
        value = raw.get(name)
        if value is None or value == "":
            raise fail(name, "missing")
        values[name] = value
    try:
        kind = PlaceKind(str(values["kind"]))
    except ValueError:
        allowed = ", ".join(k.value for k in PlaceKind)
        raise fail("kind", f"{values['kind']!r} is not one of {allowed}") from None
    numbers: dict[str, float] = {}
    for name, low, high in (("lat", -90.0, 90.0), ("lon", -180.0, 180.0), ("radius_m", 1.0, 5e4)):
        try:
            number = float(str(values[name]))
        except ValueError:
            raise fail(name, f"{values[name]!r} is not a number") from None
        if not low <= number <= high:
            raise fail(name, f"{number} is outside [{low}, {high}]")
        numbers[name] = number
    return Place(
        id=str(values["id"]),
        kind=kind,
        name=str(values["name"]),
        lat=numbers["lat"],
        lon=numbers["lon"],
        radius_m=numbers["radius_m"],
    )


def _read_csv(file: Path) -> list[Place]:
    with file.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in _CSV_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise PlaceFileError(f"{file}: header: missing columns {', '.join(missing)}")
        return [_place(file, f"line {n}", dict(row)) for n, row in enumerate(reader, start=2)]


def _read_geojson(file: Path) -> list[Place]:
    try:
        data = orjson.loads(file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise PlaceFileError(f"{file}: not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise PlaceFileError(f"{file}: type: expected a GeoJSON FeatureCollection")
    places = []
    for n, feature in enumerate(data.get("features", [])):
        where = f"feature {n}"
        geometry = feature.get("geometry") or {}
        if geometry.get("type") != "Point":
            raise PlaceFileError(f"{file}: {where}: field 'geometry': expected a Point")
        lon, lat = geometry.get("coordinates", [None, None])[:2]
        props = dict(feature.get("properties") or {})
        props.setdefault("id", feature.get("id"))
        places.append(_place(file, where, {**props, "lat": lat, "lon": lon}))
    return places


# ---------------------------------------------------------------------------- occupancy


@dataclass
class PlaceOccupancy:
    """Which loans' vehicles are at one place now. Set semantics, so redelivery is harmless.

    Fed by ``PlaceMove``s the engine reports (see ``Engine.place_moves``); the resulting count is
    given back to every loan at the place with ``Engine.apply_place_count``.
    """

    place_id: str
    loans: dict[str, float] = field(default_factory=dict)  # loan_id -> entered at (epoch s)

    def enter(self, loan_id: str, at: float) -> int:
        self.loans.setdefault(loan_id, at)
        return len(self.loans)

    def leave(self, loan_id: str) -> int:
        self.loans.pop(loan_id, None)
        return len(self.loans)

    @property
    def count(self) -> int:
        return len(self.loans)
