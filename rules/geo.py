"""Geometry on the Earth's surface: distances and the home-region test with hysteresis.

Hot paths (a ping per vehicle every few seconds) stay in plain float maths; shapely is used
only for polygons, and only when a vehicle has moved far enough that its classification could
have changed (see ``clearance`` below), so most pings never touch it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from math import asin, cos, sin, sqrt

import shapely
from shapely.geometry import MultiPolygon, Point, Polygon

EARTH_RADIUS_M = 6_371_008.8
_DEG = math.pi / 180.0
# Metres per degree of latitude on the mean sphere (longitude scales by cos(lat)).
M_PER_DEG = EARTH_RADIUS_M * _DEG


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1 = lat1 * _DEG
    p2 = lat2 * _DEG
    dp = p2 - p1
    dl = (lon2 - lon1) * _DEG
    a = sin(dp * 0.5) ** 2 + cos(p1) * cos(p2) * sin(dl * 0.5) ** 2
    root = sqrt(a)
    # (min(1.0, root) without the builtin's call: a few pings call this twice or more)
    return 2.0 * EARTH_RADIUS_M * asin(root if root < 1.0 else 1.0)


@dataclass(frozen=True, slots=True)
class RegionReading:
    """Where a point is relative to a region.

    ``outside_m`` is 0 inside the region, else the distance to it; ``inside_m`` is the distance to
    the border from inside (0 outside). Both in metres.
    """

    outside_m: float
    inside_m: float


class HomeRegion:
    """A loan's home region: a circle, or a (multi)polygon projected to a local metric plane.

    Polygons are simplified to ``simplify_m`` at construction: the hysteresis band (hundreds of
    metres) is far wider than the simplification error, and a simplified outline keeps per-loan
    state small.
    """

    __slots__ = ("_boundary", "_circle", "_kx", "_lat0", "_lon0", "_polygon", "compact")

    def __init__(self, compact: tuple[object, ...]) -> None:
        """``compact`` is the stored form: ("c", lat, lon, radius_m) or ("p", [[ring...]...])."""
        self.compact = compact
        self._circle: tuple[float, float, float] | None = None
        self._polygon: Polygon | MultiPolygon | None = None
        self._boundary: object = None
        self._lat0 = 0.0
        self._lon0 = 0.0
        self._kx = 1.0
        if compact[0] == "c":
            _, lat, lon, radius = compact
            self._circle = (float(lat), float(lon), float(radius))  # type: ignore[arg-type]
            return
        polygons: list[list[list[list[float]]]] = compact[1]  # type: ignore[assignment]
        lons = [p[0] for poly in polygons for p in poly[0]]
        lats = [p[1] for poly in polygons for p in poly[0]]
        self._lat0 = (min(lats) + max(lats)) / 2.0
        self._lon0 = (min(lons) + max(lons)) / 2.0
        self._kx = math.cos(self._lat0 * _DEG) * M_PER_DEG
        shapes = [
            Polygon(
                [self._project(lat, lon) for lon, lat in poly[0]],
                [[self._project(lat, lon) for lon, lat in hole] for hole in poly[1:]],
            )
            for poly in polygons
        ]
        geometry = shapes[0] if len(shapes) == 1 else MultiPolygon(shapes)
        self._polygon = shapely.make_valid(geometry) if not geometry.is_valid else geometry
        self._boundary = self._polygon.boundary
        shapely.prepare(self._polygon)

    def _project(self, lat: float, lon: float) -> tuple[float, float]:
        return ((lon - self._lon0) * self._kx, (lat - self._lat0) * M_PER_DEG)

    def read(self, lat: float, lon: float) -> RegionReading:
        if self._circle is not None:
            c_lat, c_lon, radius = self._circle
            d = distance_m(lat, lon, c_lat, c_lon)
            return RegionReading(max(0.0, d - radius), max(0.0, radius - d))
        assert self._polygon is not None
        x, y = self._project(lat, lon)
        point = Point(x, y)
        to_border = float(shapely.distance(self._boundary, point))
        if shapely.contains_xy(self._polygon, x, y):
            return RegionReading(0.0, to_border)
        return RegionReading(to_border, 0.0)


def compact_region(region: object, simplify_m: float) -> tuple[object, ...]:
    """The stored form of a Loan's ``home_region`` (circle kept exact; polygons simplified)."""
    from rules.events.loan import CircleRegion, MultiPolygonRegion, PolygonRegion

    if isinstance(region, CircleRegion):
        return ("c", region.center[0], region.center[1], region.radius_km * 1000.0)
    if isinstance(region, PolygonRegion):
        polygons = [region.coordinates]
    elif isinstance(region, MultiPolygonRegion):
        polygons = region.coordinates
    else:
        raise TypeError(f"unsupported home region {type(region).__name__}")
    out: list[list[list[list[float]]]] = []
    for polygon in polygons:
        rings = []
        for ring in polygon:
            rings.append(_simplify_ring([(lon, lat) for lon, lat in ring], simplify_m))
        out.append(rings)
    return ("p", out)


def _simplify_ring(ring: list[tuple[float, float]], simplify_m: float) -> list[list[float]]:
    lat0 = sum(p[1] for p in ring) / len(ring)
    tolerance_deg = simplify_m / M_PER_DEG / max(0.2, math.cos(lat0 * _DEG))
    line = shapely.LineString(ring)
    simple = shapely.simplify(line, tolerance_deg, preserve_topology=True)
    coords = [[round(x, 5), round(y, 5)] for x, y in simple.coords]
    if len(coords) < 4:  # a tiny ring collapsed: keep the original
        coords = [[round(x, 5), round(y, 5)] for x, y in ring]
    return coords


@lru_cache(maxsize=4096)
def _region_from_key(key: str) -> HomeRegion:
    import orjson

    return HomeRegion(tuple(orjson.loads(key)))


def home_region(compact: tuple[object, ...]) -> HomeRegion:
    """A cached HomeRegion for a stored region: many loans share a city's outline."""
    import orjson

    return _region_from_key(orjson.dumps(compact).decode())
