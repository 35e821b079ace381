"""The `skipwatch` command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from services import cli_rules as rules_cli
from services import infra
from services.cli_evaluate import evaluate_command
from services.cli_notify import notify_receiver, routes_app, run_dispatcher
from services.cli_rules import backtest_command
from services.cli_simulate import simulate_command
from services.jt808 import cli as jt808_cli
from services.settings import SettingsError, get_settings

app = typer.Typer(no_args_is_help=True, help="skipwatch: early warning for auto-loan lenders.")
infra_app = typer.Typer(no_args_is_help=True, help="Local Kafka (KRaft) and Redis, no Docker.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics of DESIGN §3.")
gateway_app = typer.Typer(no_args_is_help=True, help="Tracker gateways.")
app.add_typer(infra_app, name="infra")
app.add_typer(topics_app, name="topics")
app.add_typer(gateway_app, name="gateway")
app.add_typer(jt808_cli.app, name="jt808", help="JT/T 808 tools (decode captured frames).")
gateway_app.command("jt808")(jt808_cli.serve)
app.command("simulate")(simulate_command)
app.command("backtest")(backtest_command)
app.command("evaluate")(evaluate_command)
app.add_typer(rules_cli.app, name="rules", help="Rule files: check them.")
app.add_typer(routes_app, name="routes", help="Notification routing: where alerts go.")
app.command("notify-receiver")(notify_receiver)

DataDir = Annotated[Path, typer.Option(help="Where Kafka and Redis keep their data.")]


@infra_app.command("up")
def infra_up(
    data_dir: DataDir = infra.DEFAULT_DATA_DIR,
    kafka_port: int = 9092,
    kafka_controller_port: int = 9093,
    redis_port: int = 6379,
) -> None:
    """Start Kafka and Redis (idempotent) and wait until both accept clients."""
    typer.echo(f"starting Kafka on 127.0.0.1:{kafka_port} (data in {data_dir / 'kafka'})", err=True)
    infra.kafka_up(data_dir, kafka_port, kafka_controller_port)
    typer.echo(f"starting Redis on 127.0.0.1:{redis_port}", err=True)
    infra.redis_up(data_dir, redis_port)
    _print_status(data_dir)


@infra_app.command("status")
def infra_status(data_dir: DataDir = infra.DEFAULT_DATA_DIR) -> None:
    """Report whether Kafka and Redis are running; exit 1 when either is not."""
    if not _print_status(data_dir):
        raise typer.Exit(1)


@infra_app.command("down")
def infra_down(data_dir: DataDir = infra.DEFAULT_DATA_DIR) -> None:
    """Stop Kafka and Redis cleanly."""
    infra.redis_down(data_dir)
    infra.kafka_down(data_dir)
    _print_status(data_dir)


def _print_status(data_dir: Path) -> bool:
    state = infra.status(data_dir)
    for name, text in state.items():
        typer.echo(f"{name}: {text}")
    return all(text.startswith("running") for text in state.values())


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None, typer.Option(help="Default: SKIPWATCH_KAFKA__PARTITIONS")
    ] = None,
) -> None:
    """Create the skipwatch topics (co-partitioned), idempotently."""
    from services.kafka import ensure_topics

    settings = get_settings()
    created = asyncio.run(
        ensure_topics(
            settings.kafka.bootstrap_servers,
            settings.kafka.topic_prefix,
            partitions or settings.kafka.partitions,
            settings.kafka.replication_factor,
        )
    )
    typer.echo(f"created: {', '.join(created) if created else 'none (all exist)'}")


@app.command()
def up(
    data_dir: DataDir = infra.DEFAULT_DATA_DIR,
    without: Annotated[list[str] | None, typer.Option(help="Components not to start.")] = None,
) -> None:
    """Run everything locally: Kafka, Redis, worker, API + dashboard, gateway, dispatcher with a
    local webhook receiver that prints what it gets, live simulator."""
    from services.local import COMPONENTS, run_local_stack

    components = [c for c in COMPONENTS if c not in (without or [])]
    raise typer.Exit(run_local_stack(data_dir, components))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: SKIPWATCH_API__HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SKIPWATCH_API__PORT")] = None,
) -> None:
    """Run the HTTP API: ingest, alerts, dashboard, /docs, /healthz, /readyz, /metrics."""
    from services.cli_api import serve_api

    serve_api(host, port)


@app.command()
def dispatcher() -> None:
    """Run the notification dispatcher: alerts to webhooks, WeCom and DingTalk robots."""
    run_dispatcher()


@app.command()
def worker() -> None:
    """Run a stream worker (Faust): per-loan state, rules, deadlines, alerts to Kafka."""
    from streams.runner import run_worker

    run_worker(get_settings())


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
