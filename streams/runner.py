"""`skipwatch worker`: create the topics, build the pipeline, serve the operations port (metrics,
liveness, readiness), run Faust."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from services.kafka import ensure_topics_for, wait_for_broker
from services.logs import configure_logging
from services.ops import Heartbeat, ops_app, serve_ops
from services.settings import Settings
from streams.app import build_pipeline
from streams.faust_edge.versions import UntestedVersionError, check_versions
from streams.faust_edge.worker import Worker
from streams.health import worker_ready

log = logging.getLogger(__name__)
HEARTBEAT_S = 0.5  # under 1 s: mode logs every late wake-up of a timer of 1 s or more


def run_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    try:  # before anything of Faust or aiokafka runs: its private hooks hold only on these
        check_versions()
    except UntestedVersionError as exc:
        log.error("worker not started: untested faust-streaming or aiokafka",
                  extra={"detail": str(exc)})  # fmt: skip
        raise SystemExit(f"skipwatch worker: {exc}") from None
    asyncio.run(_prepare(settings))
    pipeline = build_pipeline(settings)
    heartbeat = Heartbeat(settings.worker.loop_stall_s)
    pipeline.app.timer(HEARTBEAT_S)(_beating(heartbeat))
    if settings.worker.metrics_port:
        app = ops_app(
            heartbeat, partial(worker_ready, pipeline.app, heartbeat, pipeline.quarantine)
        )
        serve_ops(settings.worker.metrics_host, settings.worker.metrics_port, app)
    log.info(
        "worker starting",
        extra={
            "broker": settings.kafka.bootstrap_servers,
            "prefix": settings.kafka.topic_prefix,
            "store": settings.worker.store,
            "clock": settings.worker.clock,
            "metrics": f"{settings.worker.metrics_host}:{settings.worker.metrics_port}",
        },
    )
    worker = Worker(
        pipeline.app, loglevel=settings.log_level.lower(), override_logging=False, quiet=True
    )
    worker.execute_from_commandline()


def _beating(heartbeat: Heartbeat) -> Callable[[], Awaitable[None]]:
    async def heartbeat_timer() -> None:  # a Faust timer: it runs only while the event loop does
        heartbeat.beat()

    return heartbeat_timer


async def _prepare(settings: Settings) -> None:
    await wait_for_broker(settings.kafka.bootstrap_servers)
    await ensure_topics_for(settings, worker=True)
