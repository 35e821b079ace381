"""The risk-place routes on an in-memory place store: admin-only writes, reads for everyone
signed in, validation errors naming the field, import, the catalog hidden by a delete, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from services.api import create_app
from services.api.dedup import MemoryDedup
from services.places import MemoryPlaceStore
from tests.unit.api.support import (
    ADMIN,
    OPERATOR,
    VENDOR_KEY,
    VIEWER,
    FakeProducer,
    bearer,
    make_settings,
)
from tests.unit.api.test_alerts_api import FakeView

pytestmark = pytest.mark.unit

CIRCLE = {"id": "pw-1", "kind": "pawn_shop", "name": "典当行", "lat": 30.6, "lon": 104.2,
          "radius_m": 80}  # fmt: skip
SQUARE = [[30.599, 104.199], [30.599, 104.201], [30.601, 104.201], [30.601, 104.199]]


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, MemoryPlaceStore]]:
    store = MemoryPlaceStore()
    app = create_app(
        make_settings(), producer=FakeProducer(), dedup=MemoryDedup(), alert_view=FakeView(),
        place_store=store,
    )  # fmt: skip
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client, store


async def test_admin_creates_edits_deletes_and_everyone_reads(
    http: tuple[httpx.AsyncClient, MemoryPlaceStore],
) -> None:
    client, store = http
    for token in (VIEWER, OPERATOR):
        denied = await client.post("/v1/places", json=CIRCLE, headers=bearer(token))
        assert denied.status_code == 403
    assert (await client.post("/v1/places", json=CIRCLE)).status_code == 401
    vendor = await client.get("/v1/places", headers={"X-Api-Key": VENDOR_KEY})
    assert vendor.status_code == 403
    created = await client.post("/v1/places", json=CIRCLE, headers=bearer(ADMIN))
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["source"], body["shape"], body["updated_by"]) == ("managed", "circle", "admin")
    again = await client.post("/v1/places", json=CIRCLE, headers=bearer(ADMIN))
    assert again.status_code == 409 and again.json()["field"] == "id"
    got = (await client.get("/v1/places/pw-1", headers=bearer(VIEWER))).json()
    assert got["name"] == "典当行"
    edit = {**{k: v for k, v in CIRCLE.items() if k not in ("lat", "lon", "radius_m")},
            "kind": "scrapyard", "polygon": SQUARE}  # fmt: skip
    edited = await client.put("/v1/places/pw-1", json=edit, headers=bearer(ADMIN))
    assert edited.status_code == 200, edited.text
    assert edited.json()["shape"] == "polygon" and edited.json()["kind"] == "scrapyard"
    near = await client.get("/v1/places", params={"lat": 30.6, "lon": 104.2, "radius_m": 50},
                            headers=bearer(VIEWER))  # fmt: skip
    assert [p["id"] for p in near.json()["items"]] == ["pw-1"]
    deleted = await client.delete("/v1/places/pw-1", headers=bearer(ADMIN))
    assert deleted.status_code == 200
    assert (await client.get("/v1/places/pw-1", headers=bearer(VIEWER))).status_code == 404
    assert "pw-1" not in store.places  # a managed place: a tombstone
    audit = (await client.get("/v1/places/audit", headers=bearer(ADMIN))).json()["items"]
    assert [a["action"] for a in audit] == ["delete", "update", "create"]
    assert audit[1]["before"]["kind"] == "pawn_shop" and audit[1]["after"]["kind"] == "scrapyard"
    assert audit[0]["after"] is None and all(a["actor"] == "admin" for a in audit)
    assert (await client.get("/v1/places/audit", headers=bearer(OPERATOR))).status_code == 403


async def test_validation_errors_name_the_field(
    http: tuple[httpx.AsyncClient, MemoryPlaceStore],
) -> None:
    client, _ = http

    async def post(**changes: object) -> httpx.Response:
        return await client.post("/v1/places", json={**CIRCLE, **changes}, headers=bearer(ADMIN))

    for changes, field in (
        ({"radius_m": 5}, "radius_m"),
        ({"radius_m": 60_000}, "radius_m"),
        ({"kind": "car_wash"}, "kind"),
        ({"lat": 95}, "lat"),
        ({"radius_m": None, "polygon": [SQUARE[0], SQUARE[2], SQUARE[1], SQUARE[3]]}, "polygon"),
        ({"radius_m": None, "polygon": SQUARE[:2]}, "polygon"),
        ({"id": "has space"}, "id"),
    ):
        answer = await post(**changes)
        assert answer.status_code == 422, (changes, answer.text)
        assert answer.json()["field"] == field, answer.json()
    assert (await post(extra=1)).status_code == 422
    missing = await client.put("/v1/places/nope", json=CIRCLE | {"id": None},
                               headers=bearer(ADMIN))  # fmt: skip
    assert missing.status_code == 404


async def test_search_list_and_catalog_delete_hides_the_seed(
    http: tuple[httpx.AsyncClient, MemoryPlaceStore],
) -> None:
    client, store = http
    listed = (await client.get("/v1/places", headers=bearer(VIEWER))).json()
    assert listed["total"] == 13 and all(p["source"] == "catalog" for p in listed["items"])
    found = await client.get("/v1/places", params={"q": "二手车", "kind": "used_car_market"},
                             headers=bearer(VIEWER))  # fmt: skip
    assert {p["kind"] for p in found.json()["items"]} == {"used_car_market"}
    assert found.json()["total"] == 3
    half = await client.get("/v1/places", params={"lat": 30.6}, headers=bearer(VIEWER))
    assert half.status_code == 422 and half.json()["field"] == "lon"
    gone = await client.delete("/v1/places/cd-2p-001", headers=bearer(ADMIN))
    assert gone.status_code == 200 and gone.json()["source"] == "catalog"
    assert store.places["cd-2p-001"].deleted  # a marker: a tombstone would bring it back
    after = (await client.get("/v1/places", headers=bearer(VIEWER))).json()
    assert after["total"] == listed["total"] - 1


async def test_import_csv_and_geojson_all_or_nothing(
    http: tuple[httpx.AsyncClient, MemoryPlaceStore],
) -> None:
    client, store = http
    csv_text = ("id,kind,name,lat,lon,radius_m\n"
                "im-1,impound_lot,扣车场,30.61,104.21,120\n"
                "cd-2p-001,second_pledge_lot,改名,30.7142,104.0335,150\n")  # fmt: skip

    async def upload(body: bytes, fmt: str) -> httpx.Response:
        return await client.post("/v1/places/import", params={"format": fmt}, content=body,
                                 headers=bearer(ADMIN))  # fmt: skip

    first = await upload(csv_text.encode(), "csv")
    assert first.json() == {"created": ["im-1"], "updated": ["cd-2p-001"], "unchanged": []}
    assert (await upload(csv_text.encode(), "csv")).json()["unchanged"] == ["im-1", "cd-2p-001"]
    bad = await upload((csv_text + "im-2,impound_lot,x,30.6,104.2,abc\n").encode(), "csv")
    assert bad.status_code == 422
    assert "line 4: field 'radius_m'" in bad.json()["message"]
    assert "im-2" not in store.places
    geo = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "sy-1",
                "properties": {"kind": "scrapyard", "name": "拆车厂"},
                "geometry": {"type": "Polygon", "coordinates": [[[lo, la] for la, lo in SQUARE]]},
            }
        ],
    }
    second = await upload(orjson.dumps(geo), "geojson")
    assert second.json()["created"] == ["sy-1"]
    assert store.places["sy-1"].polygon is not None
    actions = [a.action for a in store.audit.values()]
    assert actions.count("import") == 3
    forbidden = await client.post("/v1/places/import", params={"format": "csv"},
                                  content=csv_text.encode(), headers=bearer(OPERATOR))  # fmt: skip
    assert forbidden.status_code == 403
