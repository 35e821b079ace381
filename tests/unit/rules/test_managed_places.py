"""Managed risk places, the pure part: validation (radius bounds, polygon validity, kind), CSV
and GeoJSON import parsing, the index replaced in place and a parked car's cached clearance
invalidated by it (the engine sees a place drawn after the car parked)."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from rules.engine import Engine
from rules.events import GpsPing, Loan
from rules.places import (
    PlaceError,
    PlaceFileError,
    PlaceIndex,
    PlaceKind,
    make_place,
    parse_places,
)
from rules.spec import CATALOG_DIR, load_rules

pytestmark = pytest.mark.unit

LOT = (30.6000, 104.2000)  # no catalog place within kilometres
SQUARE = [(30.5990, 104.1990), (30.5990, 104.2010), (30.6010, 104.2010), (30.6010, 104.1990)]


def test_circle_bounds_and_kind_are_checked() -> None:
    place = make_place(id="p1", kind="pawn_shop", name=" 典当行 ", lat=30.6, lon=104.2, radius_m=80)
    assert (place.name, place.radius_m, place.polygon) == ("典当行", 80.0, None)
    for radius in (5.0, 60_000.0, float("nan")):
        with pytest.raises(PlaceError) as bad:
            make_place(id="p1", kind="pawn_shop", name="x", lat=30.6, lon=104.2, radius_m=radius)
        assert bad.value.field == "radius_m"
    with pytest.raises(PlaceError) as kind:
        make_place(id="p1", kind="car_wash", name="x", lat=30.6, lon=104.2, radius_m=80)
    assert kind.value.field == "kind" and "scrapyard" in str(kind.value)
    with pytest.raises(PlaceError) as lat:
        make_place(id="p1", kind="pawn_shop", name="x", lat=91, lon=104.2, radius_m=80)
    assert lat.value.field == "lat"
    with pytest.raises(PlaceError) as ident:
        make_place(id="a b", kind="pawn_shop", name="x", lat=30.6, lon=104.2, radius_m=80)
    assert ident.value.field == "id"
    with pytest.raises(PlaceError) as missing:
        make_place(id="p1", kind="pawn_shop", name="x", lat=30.6, lon=104.2)
    assert missing.value.field == "radius_m"


def test_polygon_validity() -> None:
    place = make_place(id="sq", kind="scrapyard", name="拆车厂", polygon=[*SQUARE, SQUARE[0]])
    assert place.polygon is not None and len(place.polygon) == 4  # the closing vertex dropped
    assert place.lat == pytest.approx(30.6) and place.lon == pytest.approx(104.2)
    assert 130 < place.radius_m < 150  # the half diagonal of a ~220 m x ~190 m box
    bowtie = [SQUARE[0], SQUARE[2], SQUARE[1], SQUARE[3]]
    with pytest.raises(PlaceError, match="Self-intersection") as bad:
        make_place(id="bt", kind="scrapyard", name="x", polygon=bowtie)
    assert bad.value.field == "polygon"
    with pytest.raises(PlaceError, match="3 or more"):
        make_place(id="ln", kind="scrapyard", name="x", polygon=SQUARE[:2])
    with pytest.raises(PlaceError, match="no radius"):
        make_place(id="x", kind="scrapyard", name="x", polygon=SQUARE, radius_m=10)


def test_polygon_locate_uses_the_outline_not_the_bounding_circle() -> None:
    # An L-shaped lot: the notch is inside the bounding circle but not in the place.
    ell = [(30.600, 104.200), (30.600, 104.204), (30.602, 104.204), (30.602, 104.202),
           (30.604, 104.202), (30.604, 104.200)]  # fmt: skip
    index = PlaceIndex([make_place(id="L", kind="used_car_market", name="L", polygon=ell)])
    assert index.locate(30.601, 104.201).place is not None
    notch = index.locate(30.603, 104.203)
    assert notch.place is None
    assert 80 < notch.clearance_m < 120  # ~96 m to the inner corner (0.001° lon, 0.001° lat)
    inside = index.locate(30.6005, 104.2035)
    assert inside.place is not None and 40 < inside.clearance_m < 60  # ~55 m to the south edge


def test_csv_and_geojson_import_with_errors_naming_line_and_field() -> None:
    csv_text = "id,kind,name,lat,lon,radius_m\nc1,pawn_shop,典当行,30.6,104.2,80\n"
    assert [p.id for p in parse_places(csv_text.encode("utf-8-sig"), "csv")] == ["c1"]
    bad_row = csv_text + "c2,pawn_shop,x,30.6,104.2,2\n"
    with pytest.raises(PlaceFileError, match=r"body: line 3: field 'radius_m'"):
        parse_places(bad_row, "csv", source="body")
    with pytest.raises(PlaceFileError, match="missing columns radius_m"):
        parse_places("id,kind,name,lat,lon\n", "csv")
    with pytest.raises(PlaceFileError, match="duplicate place id 'c1'"):
        parse_places(csv_text + "c1,pawn_shop,y,30.7,104.2,80\n", "csv")
    geo = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [104.2, 30.6]},
             "properties": {"id": "g1", "kind": "impound_lot", "name": "扣车场", "radius_m": 120}},
            {"type": "Feature", "id": "g2",
             "geometry": {"type": "Polygon", "coordinates": [[[lo, la] for la, lo in SQUARE]]},
             "properties": {"kind": "scrapyard", "name": "拆车厂"}},
        ],
    }  # fmt: skip
    places = parse_places(orjson.dumps(geo), "geojson")
    assert [(p.id, p.kind, p.polygon is not None) for p in places] == [
        ("g1", PlaceKind.IMPOUND_LOT, False),
        ("g2", PlaceKind.SCRAPYARD, True),
    ]
    geo["features"][1]["geometry"]["type"] = "LineString"  # type: ignore[index]
    with pytest.raises(PlaceFileError, match="feature 1: field 'geometry'"):
        parse_places(orjson.dumps(geo), "geojson")
    with pytest.raises(PlaceFileError, match="not JSON"):
        parse_places(b"{", "geojson")


def test_replace_changes_the_generation_and_the_engine_sees_a_new_place() -> None:
    """A car parked (clearance cached) when a place is drawn around it: its next fix finds it."""
    index = PlaceIndex([])
    engine = Engine(load_rules(CATALOG_DIR), index)
    t0 = dt.datetime(2024, 5, 1, 8, tzinfo=dt.UTC)
    state = engine.new_state("L1")
    loan = Loan.model_validate({
        "loan_id": "L1", "borrower": {"name": "n", "phone": "+8613800138000"},
        "vehicle": {"vin": "LSVAU2180N2183294", "plate": "川A1"}, "devices": [{"device_id": "d1", "kind": "wired"}],
    })  # fmt: skip
    engine.apply(state, loan, t0)

    def ping(minutes: int) -> None:
        at = t0 + dt.timedelta(minutes=minutes)
        engine.apply(state, GpsPing(event_id=f"p{minutes}", device_id="d1", vendor="t", ts=at, lat=LOT[0],
                                    lon=LOT[1], device_kind="wired"), at)  # fmt: skip

    for minute in range(0, 30, 5):
        ping(minute)
    assert engine.signals(state)["vehicle.at_risk_place"] is False
    empty = index.generation
    index.replace([make_place(id="new", kind="second_pledge_lot", name="n", polygon=SQUARE)])
    assert index.generation != empty
    ping(30)
    signals = engine.signals(state)
    assert signals["vehicle.risk_place_id"] == "new"
    assert state.place_gen == index.generation
    index.replace([])
    ping(35)
    assert engine.signals(state)["vehicle.at_risk_place"] is False
