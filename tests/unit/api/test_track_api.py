"""The track and places routes on fakes: window defaults and checks, auth, the place search."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from services.api import create_app
from services.api.dedup import MemoryDedup
from services.places import MemoryPlaceStore
from services.track import Track, TrackFix
from tests.unit.api.support import VENDOR_KEY, VIEWER, FakeProducer, bearer, make_settings
from tests.unit.api.test_alerts_api import FakeView

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def fix(minutes: int, device: str = "dev-1") -> TrackFix:
    return TrackFix(
        event_id=f"{device}-{minutes}", device_id=device, device_kind="wired",
        ts=T0 + dt.timedelta(minutes=minutes), lat=30.6, lon=104.0, speed_kmh=30.0,
        heading=None, fix="gps", acc_on=True, alarms=(),
    )  # fmt: skip


@dataclass
class FakeTracks:
    fixes: dict[str, list[TrackFix]] = field(default_factory=dict)
    asked: list[tuple[dt.datetime, dt.datetime, int]] = field(default_factory=list)

    async def newest(self, loan_id: str) -> dt.datetime | None:
        fixes = self.fixes.get(loan_id)
        return max(f.ts for f in fixes) if fixes else None

    async def track(
        self, loan_id: str, start: dt.datetime, end: dt.datetime, *, limit: int
    ) -> Track:
        self.asked.append((start, end, limit))
        window = [f for f in self.fixes.get(loan_id, []) if start <= f.ts <= end]
        return Track(fixes=window[-limit:], latest=window[-1:], truncated=len(window) > limit)


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, FakeTracks]]:
    tracks = FakeTracks({"L1": [fix(m) for m in range(0, 6000, 60)]})
    app = create_app(
        make_settings(),
        producer=FakeProducer(),
        dedup=MemoryDedup(),
        alert_view=FakeView(),
        track_view=tracks,
        place_store=MemoryPlaceStore(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http, tracks


async def test_default_window_is_72h_up_to_the_newest_fix(
    client: tuple[httpx.AsyncClient, FakeTracks],
) -> None:
    http, tracks = client
    body = (await http.get("/v1/loans/L1/track", headers=bearer(VIEWER))).json()
    newest = T0 + dt.timedelta(minutes=5940)
    assert tracks.asked == [(newest - dt.timedelta(hours=72), newest, 10_000)]
    assert body["to"] == newest.isoformat().replace("+00:00", "Z")
    assert [f["event_id"] for f in body["fixes"]][-1] == "dev-1-5940"
    assert len(body["fixes"]) == 73  # one an hour, both ends inclusive
    assert body["latest"][0]["device_kind"] == "wired"


async def test_window_checks(client: tuple[httpx.AsyncClient, FakeTracks]) -> None:
    http, _ = client
    get = lambda **p: http.get("/v1/loans/L1/track", params=p, headers=bearer(VIEWER))  # noqa: E731
    naive = await get(to="2024-05-02T08:00:00")
    assert naive.status_code == 422 and naive.json()["field"] == "to"
    backwards = await get(**{"from": "2024-05-02T08:00:00Z", "to": "2024-05-01T08:00:00Z"})
    assert backwards.status_code == 422 and backwards.json()["field"] == "from"
    too_long = await get(**{"from": "2024-01-01T00:00:00Z", "to": "2024-05-01T08:00:00Z"})
    assert too_long.status_code == 422
    assert (await get(limit=0)).status_code == 422
    assert (await http.get("/v1/loans/nope/track", headers=bearer(VIEWER))).status_code == 404
    assert (await http.get("/v1/loans/L1/track")).status_code == 401
    vendor = await http.get("/v1/loans/L1/track", headers={"X-Api-Key": VENDOR_KEY})
    assert vendor.status_code == 403


async def test_places_near_a_point_nearest_first(
    client: tuple[httpx.AsyncClient, FakeTracks],
) -> None:
    http, _ = client
    # cd-2p-001 (示例二押停车场 A) is at 30.7142, 104.0335 in the shipped Chengdu catalogue.
    params = {"lat": 30.7142, "lon": 104.0335, "radius_m": 3000}
    body = (await http.get("/v1/places", params=params, headers=bearer(VIEWER))).json()
    assert body["items"][0]["id"] == "cd-2p-001"
    assert body["items"][0]["kind"] == "second_pledge_lot"
    assert body["items"][0]["distance_m"] == 0.0
    distances = [p["distance_m"] for p in body["items"]]
    assert distances == sorted(distances)
    assert all(p["distance_m"] - p["radius_m"] <= 3000 for p in body["items"])
    far = await http.get("/v1/places", params={"lat": -45.0, "lon": 170.0}, headers=bearer(VIEWER))
    assert far.json() == {"items": [], "total": 0, "truncated": False}
    bad = await http.get("/v1/places", params={"lat": 95, "lon": 0}, headers=bearer(VIEWER))
    assert bad.status_code == 422
    assert (await http.get("/v1/places", params={"lat": 0, "lon": 0})).status_code == 401


async def test_dashboard_config_and_tile_origin_in_csp(
    client: tuple[httpx.AsyncClient, FakeTracks],
) -> None:
    http, _ = client
    config = (await http.get("/static/config.json")).json()
    assert config["tiles_url"] == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert config["tiles_crs"] == "wgs84"
    page = await http.get("/")
    assert (
        "img-src 'self' data: https://tile.openstreetmap.org;"
        in page.headers["content-security-policy"]
    )
    leaflet = await http.get("/static/vendor/leaflet/leaflet.js")
    assert leaflet.status_code == 200 and b"Leaflet 1.9.4" in leaflet.content
    icon = await http.get("/static/vendor/leaflet/images/marker-icon.png")
    assert icon.headers["content-type"] == "image/png"
    assert (await http.get("/static/vendor/../../api/app.py")).status_code == 404


def test_tile_settings_are_checked_and_subdomains_allowed_in_csp() -> None:
    from pydantic import ValidationError

    from services.dashboard import headers_for
    from services.settings import Settings

    with pytest.raises(ValidationError, match=r"\{z\}, \{x\} and \{y\}"):
        Settings.model_validate({"api": {"map_tiles_url": "https://tiles.example.com/a.png"}})
    with pytest.raises(ValidationError):
        Settings.model_validate({"api": {"map_tiles_crs": "bd09"}})
    gaode = "https://{s}.is.autonavi.com/appmaptile?x={x}&y={y}&z={z}&style=8"
    settings = Settings.model_validate({"api": {"map_tiles_url": gaode, "map_tiles_crs": "gcj02"}})
    assert (
        "img-src 'self' data: https://*.is.autonavi.com;"
        in headers_for(settings)["Content-Security-Policy"]
    )
    none = Settings.model_validate({"api": {"map_tiles_url": ""}})
    assert "img-src 'self' data:;" in headers_for(none)["Content-Security-Policy"]


async def test_whoami_tells_the_role(client: tuple[httpx.AsyncClient, FakeTracks]) -> None:
    from tests.unit.api.support import ADMIN, OPERATOR

    http, _ = client
    for token, role, masked in ((VIEWER, "viewer", True), (OPERATOR, "operator", False)):
        body = (await http.get("/v1/whoami", headers=bearer(token))).json()
        assert body == {"role": role, "masked": masked}
    assert (await http.get("/v1/whoami", headers=bearer(ADMIN))).json()["role"] == "admin"
    assert (await http.get("/v1/whoami")).status_code == 401
    assert (await http.get("/v1/whoami", headers={"X-Api-Key": VENDOR_KEY})).status_code == 403
