"""The FastAPI application: one factory wiring settings, Kafka, the idempotency store and routes.

Production: `create_app()` (settings from the environment, a real producer, Redis dedup).
Tests: `create_app(settings, producer=FakeProducer(), dedup=MemoryDedup())`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from rules.events import ContactAttempt, GpsPing, Loan, PaymentEvent
from services.api import (
    alerts,
    failures,
    health,
    ingest,
    loans,
    overview,
    places,
    rules,
    session,
    silences,
    webhooks,
)
from services.api.auth import Authenticator
from services.api.dedup import DedupStore, RedisDedup
from services.api.deps import ApiContext
from services.api.errors import install_error_handlers
from services.api.failures import close_failures, install_failures
from services.api.metrics import ApiMetrics, RequestMetricsMiddleware
from services.api.notify_state import close_notify, install_notify
from services.api.pipeline import IngestPipeline
from services.api.places import close_places, install_places
from services.api.publisher import ProducerLike, Publisher
from services.api.silence_watch import SilenceWatch, close_silence_watch, install_silence_watch
from services.api.traccar import TraccarForward
from services.dashboard import install_dashboard
from services.kafka import make_producer
from services.places import PlaceStore
from services.projector import Projector, ProjectorMetrics
from services.settings import Settings, get_settings
from services.store import AlertStore, AlertView
from services.track import TrackStore, TrackView

DESCRIPTION = """\
Streaming early warning for auto-loan lenders: GPS pings, payments and contact attempts in,
alerts out when a borrower is about to become unreachable (失联).

**Auth.** Every `/v1` route needs a credential: `Authorization: Bearer <token>` for users
(roles viewer < operator < admin), or a vendor ingest key (`X-Api-Key: <key>` or Bearer) that
may only call `/v1/ingest/gps` and `/v1/ingest/traccar`. Payments, contacts and loans need an
operator or admin token. `/healthz`, `/readyz` and `/metrics` are open.

**Ingest guarantees.** A 2xx means every accepted item is in Kafka (acks=all). Batches are JSON
arrays; each item is validated on its own and rejects are reported per index and dead-lettered.
Items are idempotent on `event_id`. 503 with `Retry-After` when Kafka cannot take the write.

**Errors** are JSON: `{"error": code, "message": ..., "field": ..., "errors": [...]}`.
"""

# Models the hand-read request bodies refer to as #/components/schemas/<name>.
_BODY_MODELS: tuple[type[BaseModel], ...] = (
    GpsPing,
    PaymentEvent,
    ContactAttempt,
    Loan,
    TraccarForward,
)


class SkipwatchAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = get_openapi(
            title=self.title,
            version=self.version,
            description=self.description,
            routes=self.routes,
            tags=self.openapi_tags,
        )
        _, defs = models_json_schema(
            [(model, "validation") for model in _BODY_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        self.openapi_schema = schema
        return schema


def create_app(
    settings: Settings | None = None,
    producer: ProducerLike | None = None,
    *,
    dedup: DedupStore | None = None,
    registry: CollectorRegistry | None = None,
    alert_view: AlertView | None = None,
    projector: bool | None = None,
    track_view: TrackView | None = None,
    place_store: PlaceStore | None = None,
    silence_watch: SilenceWatch | None = None,
) -> FastAPI:
    """The API. `producer` (started and stopped by the app) defaults to `make_producer(settings)`;
    `dedup` defaults to Redis at `settings.redis.url`; metrics go to `registry` (a fresh one by
    default, so several apps in one process do not collide). `alert_view` defaults to the Redis
    view; `projector` (None: `api.projector_enabled`, but off when a producer is injected, i.e.
    there is no real Kafka) runs the Kafka -> Redis projector as a background task.
    `place_store` (managed risk places) defaults to the Kafka topics, read on first use;
    `silence_watch` (which silences mute an alert) to the silences topic, read in the
    background from the first alert request on."""
    settings = settings or get_settings()
    metrics = ApiMetrics(registry)
    projector_metrics = ProjectorMetrics(metrics.registry)
    run_projector = (
        projector if projector is not None else settings.api.projector_enabled and producer is None
    )
    authenticator = Authenticator(settings.auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # aiokafka binds its producer to the running loop, so it is built here, not above.
        publisher = Publisher(
            producer if producer is not None else partial(make_producer, settings),
            timeout_s=settings.kafka.produce_timeout_s,
        )
        store = (
            dedup
            if dedup is not None
            else RedisDedup(settings.redis.url, settings.redis.key_prefix)
        )
        view = alert_view
        if view is None:
            view = AlertStore(
                settings.redis.url,
                settings.redis.key_prefix,
                timeline_cap=settings.api.timeline_cap,
            )
        app.state.alert_view = view
        track: TrackView | None = track_view
        if track is None and isinstance(view, AlertStore):
            track = TrackStore(
                view.redis,
                settings.redis.key_prefix,
                retention_s=settings.api.track_retention_h * 3600,
                max_fixes=settings.api.track_max_fixes,
                parked_interval_s=settings.api.track_parked_interval_s,
            )
        app.state.track_view = track
        runner: Projector | None = None
        if run_projector:
            assert isinstance(view, AlertStore), "the projector writes the Redis view"
            runner = Projector(
                bootstrap_servers=settings.kafka.bootstrap_servers,
                topic_prefix=settings.kafka.topic_prefix,
                store=view,
                metrics=projector_metrics,
                timeline=settings.api.projector_timeline,
                ping_interval_s=settings.api.timeline_ping_interval_s,
                client_id=settings.kafka.client_id,
                track=track
                if settings.api.track_enabled and isinstance(track, TrackStore)
                else None,
            )
            runner.start()
        app.state.projector = runner
        await publisher.start()
        app.state.skipwatch = ApiContext(
            settings=settings,
            metrics=metrics,
            authenticator=authenticator,
            publisher=publisher,
            dedup=store,
            pipeline=IngestPipeline(
                settings=settings, publisher=publisher, dedup=store, metrics=metrics
            ),
        )
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await close_notify(app)
            await close_failures(app)
            await close_places(app)
            await close_silence_watch(app)
            await publisher.stop()
            await store.close()
            await view.close()

    app = SkipwatchAPI(
        title="skipwatch",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "ingest", "description": "Write events; 2xx only after Kafka acknowledged."},
            {"name": "alerts", "description": "The alert view: list, act on, stream."},
            {"name": "loans", "description": "Loan registration and state."},
            {"name": "health", "description": "Probes and Prometheus metrics (no auth)."},
        ],
    )
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(alerts.router)
    app.include_router(loans.router)
    app.include_router(places.router)
    app.include_router(session.router)
    app.include_router(failures.router)
    app.include_router(overview.router)
    app.include_router(rules.router)
    app.include_router(webhooks.router)
    app.include_router(silences.router)
    install_notify(app, settings)
    install_failures(app, settings)
    install_places(app, settings, place_store)
    install_silence_watch(app, settings, silence_watch)
    install_dashboard(app, settings)
    return app
