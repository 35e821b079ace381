"""Probes and metrics: no credential, so orchestrators and Prometheus can call them as they are.

`/metrics` carries only bounded-label counters (routes, sources, reasons), nothing per loan or
vendor, which is what makes serving it unauthenticated acceptable.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from services.api.deps import ContextDep
from services.projector import Projector

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: Kafka (and the idempotency store) reachable; the alert view's state",
    responses={503: {"description": "Kafka or Redis unreachable; do not route ingest here."}},
)
async def readyz(context: ContextDep, request: Request) -> Response:
    kafka_ok, dedup_ok = await asyncio.gather(context.publisher.reachable(), context.dedup.ping())
    ready = kafka_ok and dedup_ok
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "kafka": kafka_ok,
        "dedup": dedup_ok,
        "view": await _view_state(getattr(request.app.state, "projector", None)),
    }
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


async def _view_state(projector: Projector | None) -> str:
    """The alert view: `rebuilding` while the projector reads the topics again after finding it
    empty (first start, a wiped Redis: asked of Redis here, before the projector's own check
    notices), `ok` once caught up, `off` without a projector here. Reported, not a reason for
    503: every API process shares the one Redis view, and taking them all out of service would
    stop ingest too."""
    if projector is None:
        return "off"
    if projector.rebuilding or not projector.caught_up.is_set():
        return "rebuilding"
    try:
        built = await projector.store.generation()
    except RedisError:
        return "unavailable"
    return "ok" if built is not None else "rebuilding"


@router.get("/metrics", summary="Prometheus metrics (text exposition format)")
async def metrics(context: ContextDep) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
