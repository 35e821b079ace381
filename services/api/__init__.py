"""The HTTP API: ingest now; alert, loan, rule and webhook routes join `create_app` later."""

from services.api.app import create_app

__all__ = ["create_app"]
