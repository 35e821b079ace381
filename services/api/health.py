"""Probes and metrics: no credential, so orchestrators and Prometheus can call them as they are.

`/metrics` carries only bounded-label counters (routes, sources, reasons), nothing per loan or
vendor, which is what makes serving it unauthenticated acceptable.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import ContextDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: Kafka (and the idempotency store) reachable",
    responses={503: {"description": "Kafka or Redis unreachable; do not route ingest here."}},
)
async def readyz(context: ContextDep) -> Response:
    kafka_ok, dedup_ok = await asyncio.gather(context.publisher.reachable(), context.dedup.ping())
    ready = kafka_ok and dedup_ok
    body = {"status": "ready" if ready else "unavailable", "kafka": kafka_ok, "dedup": dedup_ok}
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


@router.get("/metrics", summary="Prometheus metrics (text exposition format)")
async def metrics(context: ContextDep) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
