"""The risk-operations dashboard: one HTML page, one vanilla JS module, one stylesheet.

No build step: the files in this folder are served as they are, `/` and `/static/<name>`. The
page holds no data and no credential; it asks for a token (kept in sessionStorage, so it dies with
the tab) and calls the `/v1` API with it like any other client. A strict Content-Security-Policy
allows only these files and same-origin API calls.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Response

from services.api.errors import NotFound

_DIR = Path(__file__).resolve().parent
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with a deploy: revalidate instead of guessing a lifetime.
    "Cache-Control": "no-cache",
}


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at `/` and its assets under `/static/` (read once, at start)."""
    index = (_DIR / "index.html").read_bytes()
    assets = {name: (_DIR / name).read_bytes() for name in _ASSETS}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        body = assets.get(name)
        if body is None:
            raise NotFound(f"no dashboard asset {name!r}")
        return Response(body, media_type=_ASSETS[name], headers=_HEADERS)
