"""Risk places (二押点, pawn shops, used-car markets, impound lots, scrapyards) and the spatial
index over them.

A place is a circle (centre + radius, how lenders' GPS platforms list them) or a polygon (a lot's
outline, drawn on the map). The index is a shapely STRtree over each place's lat/lon bounding
box; candidates are then checked exactly: the haversine distance for a circle, the distance to
the outline (in a local metric projection) for a polygon. The index can be replaced in place
(``PlaceIndex.replace``: places managed through Kafka reach a running worker); its
``generation`` (a digest of its content) tells cached clearances computed with another set of
places (LoanState.place_gen). ``locate`` also returns a *clearance*: how far the vehicle can
move before the answer could change, so the engine skips the lookup for the many pings of a
parked car.

``PlaceOccupancy`` is the small cross-loan aggregate behind the "cluster of financed cars at one
lot" rule: which loans are at a place right now. The worker keeps one per place in a table keyed
by place id; backtest keeps them in a dict.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson
import shapely
from shapely import STRtree

from rules.geo import M_PER_DEG, distance_m


class PlaceKind(StrEnum):
    SECOND_PLEDGE_LOT = "second_pledge_lot"  # 二押点: where cars are re-pledged for cash
    PAWN_SHOP = "pawn_shop"
    USED_CAR_MARKET = "used_car_market"
    IMPOUND_LOT = "impound_lot"
    SCRAPYARD = "scrapyard"  # 拆车厂: where a financed car disappears for good


RADIUS_MIN_M = 10.0  # below a GPS fix's accuracy a circle means nothing
RADIUS_MAX_M = 50_000.0
POLYGON_MAX_VERTICES = 500
POLYGON_MAX_SPAN_M = 50_000.0  # a polygon's bounding circle, as for a circle's radius


@dataclass(frozen=True, slots=True)
class Place:
    """A circle (``polygon`` None), or a polygon given by its (lat, lon) vertices, not closed;
    for a polygon ``lat``/``lon`` is its centroid and ``radius_m`` the circle around it that
    holds every vertex (what the index boxes and the near-a-point search use)."""

    id: str
    kind: PlaceKind
    name: str
    lat: float
    lon: float
    radius_m: float
    polygon: tuple[tuple[float, float], ...] | None = None


class PlaceError(ValueError):
    """An invalid place: ``field`` names what is wrong."""

    def __init__(self, field_name: str, why: str) -> None:
        super().__init__(f"field {field_name!r}: {why}")
        self.field = field_name
        self.why = why


class PlaceFileError(ValueError):
    """A place file that cannot be loaded; names the file, the row or feature and the field."""


PLACE_ID_MAX = 64


def make_place(
    *,
    id: str,
    kind: str,
    name: str,
    lat: float | None = None,
    lon: float | None = None,
    radius_m: float | None = None,
    polygon: Iterable[Iterable[float]] | None = None,
) -> Place:
    """A validated place: a circle (lat, lon, radius_m) or a polygon ((lat, lon) vertices)."""
    if not id or len(id) > PLACE_ID_MAX or not all(c.isalnum() or c in "-_." for c in id):
        raise PlaceError("id", f"{id!r}: 1-{PLACE_ID_MAX} letters, digits, '-', '_' or '.'")
    try:
        place_kind = PlaceKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in PlaceKind)
        raise PlaceError("kind", f"{kind!r} is not one of {allowed}") from None
    if not name.strip() or len(name) > 200:
        raise PlaceError("name", "1-200 characters, not blank")
    if polygon is not None:
        if radius_m is not None:
            raise PlaceError("radius_m", "a polygon has no radius (give one or the other)")
        return _polygon_place(id, place_kind, name.strip(), polygon)
    if lat is None or lon is None or radius_m is None:
        missing = [n for n, v in (("lat", lat), ("lon", lon), ("radius_m", radius_m)) if v is None]
        raise PlaceError(missing[0], "missing (a circle needs lat, lon and radius_m)")
    _check_point("", lat, lon)
    if not math.isfinite(radius_m) or not RADIUS_MIN_M <= radius_m <= RADIUS_MAX_M:
        raise PlaceError("radius_m", f"{radius_m} is outside [{RADIUS_MIN_M}, {RADIUS_MAX_M}] m")
    return Place(id, place_kind, name.strip(), float(lat), float(lon), float(radius_m))


def _check_point(where: str, lat: float, lon: float) -> None:
    for field_name, value, bound in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if not isinstance(value, int | float) or not math.isfinite(value) or abs(value) > bound:
            raise PlaceError(where or field_name, f"{field_name} {value!r} is outside ±{bound}")


def _polygon_place(
    id: str, kind: PlaceKind, name: str, vertices: Iterable[Iterable[float]]
) -> Place:
    points: list[tuple[float, float]] = []
    for n, vertex in enumerate(vertices):
        pair = tuple(vertex)
        if len(pair) != 2:
            raise PlaceError("polygon", f"vertex {n}: expected [lat, lon]")
        _check_point("polygon", pair[0], pair[1])
        points.append((float(pair[0]), float(pair[1])))
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()  # a closed ring as GeoJSON writes it
    if len(points) < 3:
        raise PlaceError("polygon", f"{len(points)} distinct vertices; a polygon needs 3 or more")
    if len(points) > POLYGON_MAX_VERTICES:
        raise PlaceError("polygon", f"{len(points)} vertices; at most {POLYGON_MAX_VERTICES}")
    shape = shapely.Polygon([(lon, lat) for lat, lon in points])
    if not shapely.is_valid(shape):
        raise PlaceError("polygon", f"not a valid polygon: {shapely.is_valid_reason(shape)}")
    if shape.area == 0.0:
        raise PlaceError("polygon", "has no area")
    centre = shape.centroid
    lat0, lon0 = float(centre.y), float(centre.x)
    span = max(distance_m(lat0, lon0, lat, lon) for lat, lon in points)
    if span > POLYGON_MAX_SPAN_M:
        raise PlaceError("polygon", f"spans {span:.0f} m from its centre; at most 50000 m")
    return Place(id, kind, name, round(lat0, 7), round(lon0, 7), round(span, 1), tuple(points))


class _Outline:
    """A polygon place in a local metric projection at its centre: signed distance to it."""

    __slots__ = ("kx", "lat0", "lon0", "shape")

    def __init__(self, place: Place) -> None:
        assert place.polygon is not None
        self.lat0, self.lon0 = place.lat, place.lon
        self.kx = M_PER_DEG * math.cos(math.radians(place.lat))
        self.shape = shapely.Polygon([self._xy(lat, lon) for lat, lon in place.polygon])
        shapely.prepare(self.shape)

    def _xy(self, lat: float, lon: float) -> tuple[float, float]:
        return ((lon - self.lon0) * self.kx, (lat - self.lat0) * M_PER_DEG)

    def gap(self, lat: float, lon: float) -> float:
        """Metres to the outline: negative inside."""
        x, y = self._xy(lat, lon)
        edge = float(shapely.distance(self.shape.exterior, shapely.Point(x, y)))
        return -edge if shapely.contains_xy(self.shape, x, y) else edge


@dataclass(frozen=True, slots=True)
class PlaceFix:
    """What ``PlaceIndex.locate`` answers: the place at the point (or None) and the clearance."""

    place: Place | None
    clearance_m: float


class PlaceIndex:
    # How far around a point the index looks; also the largest clearance it reports.
    PROBE_M = 2_000.0

    def __init__(self, places: Iterable[Place]) -> None:
        self.replace(places)

    def replace(self, places: Iterable[Place]) -> None:
        """Index these places instead (in place: the engine holding this index sees them)."""
        listed = tuple(places)
        by_id: dict[str, Place] = {}
        for place in listed:
            if place.id in by_id:
                raise PlaceFileError(f"duplicate place id {place.id!r}")
            by_id[place.id] = place
        self.places: tuple[Place, ...] = listed
        self.by_id = by_id
        self._outlines = {p.id: _Outline(p) for p in listed if p.polygon is not None}
        digest = hashlib.blake2b(digest_size=6)
        for place in sorted(listed, key=attrgetter("id")):
            digest.update(repr(place).encode())
        # Stable across processes (not hash()): a state's clearances name the places they
        # were computed with.
        self.generation = int.from_bytes(digest.digest(), "big")
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

    def gap(self, place: Place, lat: float, lon: float) -> float:
        """Metres from the point to the place's edge, negative inside."""
        outline = self._outlines.get(place.id)
        if outline is not None:
            return outline.gap(lat, lon)
        return distance_m(lat, lon, place.lat, place.lon) - place.radius_m

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
            gap = self.gap(place, lat, lon)
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
IMPORT_MAX_PLACES = 10_000


def load_places(path: Path) -> PlaceIndex:
    """Load a place file (.csv with columns id,kind,name,lat,lon,radius_m, or a GeoJSON
    FeatureCollection of Points with properties id, kind, name, radius_m, or of Polygons with
    id, kind, name), or every such file in a directory."""
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    places: list[Place] = []
    for file in files:
        if file.suffix == ".csv":
            places.extend(parse_places(file.read_text(encoding="utf-8"), "csv", str(file)))
        elif file.suffix in (".geojson", ".json"):
            places.extend(parse_places(file.read_bytes(), "geojson", str(file)))
    return PlaceIndex(places)


def parse_places(data: str | bytes, fmt: str, source: str = "upload") -> list[Place]:
    """Places from a CSV text or a GeoJSON FeatureCollection (an import): all valid or a
    PlaceFileError naming the source, the line or feature and the field."""
    if fmt == "csv":
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        places = _read_csv(text, source)
    elif fmt == "geojson":
        places = _read_geojson(data, source)
    else:
        raise PlaceFileError(f"{source}: format {fmt!r}: expected csv or geojson")
    if len(places) > IMPORT_MAX_PLACES:
        raise PlaceFileError(f"{source}: {len(places)} places; at most {IMPORT_MAX_PLACES}")
    seen: set[str] = set()
    for place in places:
        if place.id in seen:
            raise PlaceFileError(f"{source}: duplicate place id {place.id!r}")
        seen.add(place.id)
    return places


def _place(source: str, where: str, raw: dict[str, Any], polygon: Any = None) -> Place:
    def fail(field_name: str, why: str) -> PlaceFileError:
        return PlaceFileError(f"{source}: {where}: field {field_name!r}: {why}")

    wanted = ("id", "kind", "name") if polygon is not None else _CSV_FIELDS
    for name in wanted:
        if raw.get(name) is None or raw.get(name) == "":
            raise fail(name, "missing")
    numbers: dict[str, float | None] = {"lat": None, "lon": None, "radius_m": None}
    if polygon is None:
        for name in numbers:
            try:
                numbers[name] = float(str(raw[name]))
            except ValueError:
                raise fail(name, f"{raw[name]!r} is not a number") from None
    try:
        return make_place(
            id=str(raw["id"]), kind=str(raw["kind"]), name=str(raw["name"]), polygon=polygon,
            **numbers,
        )  # fmt: skip
    except PlaceError as exc:
        raise fail(exc.field, exc.why) from None


def _read_csv(text: str, source: str) -> list[Place]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in _CSV_FIELDS if f not in (reader.fieldnames or [])]
    if missing:
        raise PlaceFileError(f"{source}: header: missing columns {', '.join(missing)}")
    return [_place(source, f"line {n}", dict(row)) for n, row in enumerate(reader, start=2)]


def _read_geojson(data: str | bytes, source: str) -> list[Place]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PlaceFileError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "FeatureCollection":
        raise PlaceFileError(f"{source}: type: expected a GeoJSON FeatureCollection")
    features = parsed.get("features")
    if not isinstance(features, list):
        raise PlaceFileError(f"{source}: features: expected a list")
    places = []
    for n, feature in enumerate(features):
        where = f"feature {n}"
        if not isinstance(feature, dict):
            raise PlaceFileError(f"{source}: {where}: expected a Feature object")
        geometry = feature.get("geometry") or {}
        props = dict(feature.get("properties") or {})
        props.setdefault("id", feature.get("id"))
        coordinates = geometry.get("coordinates")
        if geometry.get("type") == "Point" and isinstance(coordinates, list):
            lon, lat = [*coordinates, None, None][:2]
            places.append(_place(source, where, {**props, "lat": lat, "lon": lon}))
        elif geometry.get("type") == "Polygon" and isinstance(coordinates, list) and coordinates:
            if len(coordinates) > 1:
                raise PlaceFileError(f"{source}: {where}: field 'geometry': holes not supported")
            ring = coordinates[0]
            if not isinstance(ring, list) or not all(
                isinstance(p, list) and len(p) >= 2 for p in ring
            ):
                raise PlaceFileError(f"{source}: {where}: field 'geometry': bad ring")
            vertices = [(p[1], p[0]) for p in ring]  # GeoJSON is [lon, lat]
            places.append(_place(source, where, props, polygon=vertices))
        else:
            raise PlaceFileError(
                f"{source}: {where}: field 'geometry': expected a Point or a Polygon"
            )
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
