"""The risk-operations dashboard: one HTML page, one vanilla JS module, one stylesheet, and
Leaflet (vendored from npm under `vendor/leaflet/`, see its VERSION file) for the maps.

No build step: the files in this folder are served as they are, `/` and `/static/<path>`. The
page holds no data and no credential; it asks for a token (kept in sessionStorage, so it dies with
the tab) and calls the `/v1` API with it like any other client. `/static/config.json` carries the
map settings (tile URL template, attribution, datum), which are not secret. A strict
Content-Security-Policy allows only these files, same-origin API calls and images from the
configured tile server.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import orjson
from fastapi import FastAPI, Response

from services.api.errors import NotFound
from services.settings import Settings

_DIR = Path(__file__).resolve().parent
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_ASSETS = (
    "app.js",
    "i18n.js",
    "map.js",
    "places.js",
    "style.css",
    "favicon.svg",
    "vendor/leaflet/leaflet.js",
    "vendor/leaflet/leaflet.css",
    "vendor/leaflet/images/layers.png",
    "vendor/leaflet/images/layers-2x.png",
    "vendor/leaflet/images/marker-icon.png",
    "vendor/leaflet/images/marker-icon-2x.png",
    "vendor/leaflet/images/marker-shadow.png",
)


def _tile_origin(template: str) -> str:
    """`https://{s}.tile.example.com/{z}/{x}/{y}.png` -> `https://*.tile.example.com` (the
    image sources a Content-Security-Policy must allow for the tiles)."""
    if not template:
        return ""
    parts = urlsplit(template.replace("{s}", "subdomain"))
    labels = (parts.hostname or "").split(".")
    if any("subdomain" in label for label in labels[1:]):
        return f"{parts.scheme}:"  # CSP wildcards only cover a whole leftmost label
    if "subdomain" in labels[0]:
        labels[0] = "*"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{'.'.join(labels)}{port}"


def headers_for(settings: Settings) -> dict[str, str]:
    tiles = _tile_origin(settings.api.map_tiles_url)
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src 'self' data:{' ' + tiles if tiles else ''}; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Small files that change with a deploy: revalidate instead of guessing a lifetime.
        "Cache-Control": "no-cache",
    }


def install_dashboard(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard at `/` and its assets under `/static/` (read once, at start)."""
    index = (_DIR / "index.html").read_bytes()
    assets = {name: (_DIR / name).read_bytes() for name in _ASSETS}
    config = orjson.dumps(
        {
            "tiles_url": settings.api.map_tiles_url,
            "tiles_attribution": settings.api.map_tiles_attribution,
            "tiles_crs": settings.api.map_tiles_crs,
        }
    )
    headers = headers_for(settings)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=headers)

    @app.get("/static/config.json", include_in_schema=False)
    async def dashboard_config() -> Response:
        return Response(config, media_type="application/json", headers=headers)

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> Response:
        body = assets.get(name)
        if body is None:
            raise NotFound(f"no dashboard asset {name!r}")
        return Response(body, media_type=_TYPES[Path(name).suffix], headers=headers)
