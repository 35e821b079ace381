"""Place files, the spatial index, PlaceOccupancy, and the risk score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rules.places import Place, PlaceFileError, PlaceIndex, PlaceKind, PlaceOccupancy, load_places
from rules.scoring import risk_score
from rules.spec import CATALOG_DIR
from tests.unit.rules.rules_factories import SECOND_PLEDGE_LOT, default_engine

pytestmark = pytest.mark.unit


def test_shipped_place_file() -> None:
    index = load_places(CATALOG_DIR / "places")
    assert len(index) >= 10
    assert {p.kind for p in index.places} == set(PlaceKind)


def test_locate_with_hysteresis_and_clearance() -> None:
    index = PlaceIndex([Place("p", PlaceKind.PAWN_SHOP, "x", 30.0, 104.0, 100.0)])
    inside = index.locate(30.0, 104.0)
    assert inside.place is not None and inside.clearance_m == pytest.approx(100.0, abs=1)
    edge = 30.0 + 150 / 111_195  # 150 m north: outside the radius, inside the exit margin
    assert index.locate(edge, 104.0).place is None
    assert index.locate(edge, 104.0, current="p", exit_margin_m=100).place is not None
    away = index.locate(30.01, 104.0)
    assert away.place is None and away.clearance_m == pytest.approx(1011.9, abs=2)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("id,kind,name,lat,lon,radius_m\nx,bank,n,30,104,100\n", ".csv", "line 2: field 'kind'"),
        ("id,kind,name,lat,lon,radius_m\nx,pawn_shop,n,95,104,100\n", ".csv", "field 'lat'"),
        ("id,kind,name,lat\n", ".csv", "missing columns lon, radius_m"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
            '{"type": "Point", "coordinates": [104, 30]}, "properties": {"id": "a", '
            '"kind": "pawn_shop", "name": "n"}}]}',
            ".geojson",
            "feature 0: field 'radius_m'",
        ),
    ],
)
def test_bad_place_file_names_the_row_and_field(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"places{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlaceFileError, match=message):
        load_places(path)


def test_geojson_places(tmp_path: Path) -> None:
    path = tmp_path / "p.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "a", "geometry": '
        '{"type": "Point", "coordinates": [104.0335, 30.7142]}, "properties": '
        '{"kind": "second_pledge_lot", "name": "n", "radius_m": 150}}]}',
        encoding="utf-8",
    )
    found = load_places(path).locate(*SECOND_PLEDGE_LOT)
    assert found.place is not None and found.place.id == "a"


def test_occupancy_is_a_set() -> None:
    lot = PlaceOccupancy("p")
    assert lot.enter("A", 1.0) == 1
    assert lot.enter("A", 2.0) == 1  # redelivered
    assert lot.enter("B", 3.0) == 2
    assert lot.leave("A") == 1
    assert lot.leave("A") == 1


def quiet() -> dict[str, Any]:
    from rules.state import LoanState

    engine = default_engine()
    return engine.signals(LoanState("x"), None)


@pytest.mark.parametrize(
    ("changes", "score", "codes"),
    [
        pytest.param({}, 0, set(), id="nothing"),
        pytest.param({"payment.days_past_due": 2}, 10, {"days_past_due"}, id="dpd"),
        pytest.param(
            {
                "payment.days_past_due": 40,
                "payment.first_delinquency": True,
                "payment.failed_debits": 3,
            },
            30,
            {"days_past_due", "first_delinquency", "failed_debits"},
            id="payment-capped-at-30",
        ),
        pytest.param(
            {
                "payment.days_past_due": 40,
                "contact.unreachable_line": 4,
                "contact.consecutive_failures": 8,
                "contact.parties_failed": 3,
                "vehicle.outside_home_region": True,
                "vehicle.outside_home_region_for": 2 * 86400.0,
                "vehicle.risk_place_kind": "second_pledge_lot",
                "device.alarms": ["removal"],
                "device.all_offline": True,
                "devices.separated_km": 3.0,
            },
            100,
            None,
            id="everything-capped-at-100",
        ),
    ],
)
def test_risk_score(changes: dict[str, Any], score: int, codes: set[str] | None) -> None:
    result = risk_score({**quiet(), **changes})
    assert result.score == score
    if codes is not None:
        assert {r.code for r in result.reasons} == codes
    assert all(r.points > 0 and r.detail for r in result.reasons)
