"""Fixtures: the API app with a fake producer and in-memory dedup, and an httpx client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.api import create_app
from services.api.dedup import MemoryDedup
from tests.unit.api.support import Api, FakeProducer, make_settings


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
async def api(producer: FakeProducer) -> AsyncIterator[Api]:
    app = create_app(make_settings(), producer=producer, dedup=MemoryDedup())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, producer)
