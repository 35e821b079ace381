"""Prometheus metrics of the API process, built on an injected registry.

Labels are bounded: route templates (never raw paths), status codes, ingest sources and a fixed set
of reject reasons. No vendor names, device ids or loan ids.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "skipwatch_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "skipwatch_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.accepted = Counter(
            "skipwatch_ingest_accepted",
            "Ingested items acknowledged by Kafka, by source.",
            ["source"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "skipwatch_ingest_rejected",
            "Ingested items rejected and dead-lettered, by source and reason.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "skipwatch_ingest_duplicates",
            "Ingested items skipped because their event_id was already written.",
            ["source"],
            registry=self.registry,
        )
        self.ignored = Counter(
            "skipwatch_ingest_ignored",
            "Forwarded messages that carry nothing to ingest (e.g. Traccar events without a "
            "position), by source and reason.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.unavailable = Counter(
            "skipwatch_ingest_unavailable",
            "Ingest requests answered 503 because Kafka did not acknowledge in time, by source.",
            ["source"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "skipwatch_ingest_produce_seconds",
            "Time from handing a request's records to the producer until Kafka acknowledged all.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dedup_errors = Counter(
            "skipwatch_ingest_dedup_errors",
            "Failed calls to the idempotency store (ingest continues without dedup).",
            registry=self.registry,
        )


class RequestMetricsMiddleware:
    """Counts and times every request by its route template (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)
