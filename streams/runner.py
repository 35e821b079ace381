"""`skipwatch worker`: create the topics, build the pipeline, serve metrics, run Faust."""

from __future__ import annotations

import asyncio
import logging
import sys

import faust
from prometheus_client import start_http_server

from services.kafka import ensure_topics_for, wait_for_broker
from services.logs import configure_logging
from services.settings import Settings
from streams.app import build_pipeline
from streams.intake import LaneConsumer

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
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
    worker = Worker(
        pipeline.app, loglevel=settings.log_level.lower(), override_logging=False, quiet=True
    )
    worker.execute_from_commandline()


class Worker(faust.Worker):
    """`kill -USR1 <pid>` prints where fetching stands, then (mode's own) every thread's and
    task's stack, to stderr: what is the worker doing?"""

    def _on_sigusr1(self) -> None:
        consumer = self.app.consumer
        if isinstance(consumer, LaneConsumer):
            print(f"consumer: {consumer.describe()}", file=sys.stderr, flush=True)
        super()._on_sigusr1()


async def _prepare(settings: Settings) -> None:
    await wait_for_broker(settings.kafka.bootstrap_servers)
    await ensure_topics_for(settings, worker=True)
