"""`skipwatch api`: serve the HTTP API with uvicorn (mounted by services/cli.py)."""

from __future__ import annotations

import importlib.util

import uvicorn

from services.logs import configure_logging
from services.runtime import tune_gc
from services.settings import get_settings


def serve_api(host: str | None = None, port: int | None = None) -> None:
    """Run the API in this process until interrupted; host/port default to settings.api."""
    from services.api import create_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    tune_gc()
    uvicorn.run(
        app,
        host=host or settings.api.host,
        port=port or settings.api.port,
        # uvloop and httptools are the fast paths; fall back to asyncio/h11 if not installed.
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_config=None,  # keep our structured logging
        access_log=False,  # per-request lines cost throughput; metrics count requests instead
        proxy_headers=True,
    )
