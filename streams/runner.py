"""`skipwatch worker`: create the topics, build the pipeline, serve metrics, run Faust."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import faust
import uvloop
from prometheus_client import start_http_server

from services.kafka import ensure_topics_for, wait_for_broker
from services.logs import configure_logging
from services.settings import Settings
from streams.app import build_pipeline

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    # libuv's event loop: Faust and aiokafka run many small tasks and socket writes per record
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_prepare(settings))
    pipeline = build_pipeline(settings)
    if settings.worker.metrics_port:
        start_http_server(settings.worker.metrics_port, addr="0.0.0.0")
    log.info(
        "worker starting",
        extra={
            "broker": settings.kafka.bootstrap_servers,
            "prefix": settings.kafka.topic_prefix,
            "store": settings.worker.store,
            "clock": settings.worker.clock,
            "metrics_port": settings.worker.metrics_port,
        },
    )
    signal.signal(signal.SIGUSR1, _dump_tasks)
    worker = faust.Worker(
        pipeline.app, loglevel=settings.log_level.lower(), override_logging=False, quiet=True
    )
    worker.execute_from_commandline()


def _dump_tasks(signum: int, frame: object) -> None:
    """`kill -USR1 <pid>`: print every asyncio task's stack to stderr (what is it doing?)."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        return
    for task in asyncio.all_tasks(loop):
        task.print_stack(limit=12, file=sys.stderr)


async def _prepare(settings: Settings) -> None:
    await wait_for_broker(settings.kafka.bootstrap_servers)
    await ensure_topics_for(settings, worker=True)
