"""CLI: `skipwatch routes test --labels ...` (and, mounted beside it, `skipwatch dispatcher`).

Mounted by services/cli.py; routing itself is services/notify/routing.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Annotated

import typer

from services.notify.config import ConfigError, load_config
from services.notify.routing import describe, parse_labels
from services.settings import get_settings

routes_app = typer.Typer(help="Notification routing: check where alerts go.", no_args_is_help=True)


@routes_app.callback()
def routes_group() -> None:
    """Notification routing tools."""


@routes_app.command("test")
def routes_test(
    labels: Annotated[str, typer.Option(help="Alert labels: severity=critical,team=collections")],
    config: Annotated[
        Path | None, typer.Option(help="Routing file (default: SKIPWATCH_NOTIFY__ROUTING_CONFIG)")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Instant to judge time intervals at (ISO 8601; default now)")
    ] = None,
) -> None:
    """Print the receivers an alert with these labels reaches (and whether a time interval mutes
    the route at that instant). Exit 1 on a bad config or bad labels."""
    path = config or get_settings().notify.routing_config
    if path is None:
        typer.echo(
            "error: no routing config (--config or SKIPWATCH_NOTIFY__ROUTING_CONFIG)", err=True
        )
        raise typer.Exit(1)
    try:
        routing = load_config(path)
        parsed = parse_labels(labels)
        instant = dt.datetime.fromisoformat(at) if at else dt.datetime.now(dt.UTC)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if instant.tzinfo is None:
        typer.echo("error: --at needs a time zone offset, e.g. 2026-12-07T23:00+08:00", err=True)
        raise typer.Exit(1)
    for item in describe(routing.routes_for(parsed), routing, instant):
        muted = "  (muted now by a time interval)" if item["muted"] else ""
        typer.echo(
            f"{item['receiver']}{muted}\n    route {item['route']}, group_by {item['group_by']}"
        )


def run_dispatcher() -> None:
    """`skipwatch dispatcher`: run until SIGTERM/SIGINT."""
    import asyncio
    import signal

    from services.logs import configure_logging
    from services.notify.config import ConfigHolder
    from services.notify.dispatcher import Dispatcher, DispatcherMetrics
    from services.ops import Check, Heartbeat, ops_app, serve_ops

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # One line per request is httpx's INFO; the dispatcher logs what matters (finished deliveries).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    notify = settings.notify
    try:
        holder = ConfigHolder(notify.routing_config) if notify.routing_config else None
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def main() -> None:
        metrics = DispatcherMetrics()
        dispatcher = Dispatcher(settings, config=holder, metrics=metrics)
        if holder is not None:
            holder.on_change = dispatcher.on_config_change
        heartbeat = Heartbeat(60.0)
        if notify.metrics_port:

            def ready() -> Check:
                ok = dispatcher.ready.is_set()
                return Check(ok, "consuming alerts" if ok else "starting")

            serve_ops(
                notify.metrics_host,
                notify.metrics_port,
                ops_app(heartbeat, ready, metrics.registry),
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await dispatcher.start()
        try:
            while not stop.is_set():
                heartbeat.beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await dispatcher.stop()

    asyncio.run(main())


def notify_receiver(
    secret: Annotated[str, typer.Option(envvar="SKIPWATCH_DEV_RECEIVER_SECRET", help="whsec_...")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9009,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")
    ] = "127.0.0.1",
) -> None:
    """A local webhook receiver that verifies signatures and prints what it gets (development)."""
    from services.notify.devreceiver import serve

    serve(host, port, secret)
