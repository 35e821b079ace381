"""CLI for the JT/T 808 part: `skipwatch jt808 decode HEX` and `skipwatch gateway jt808`.

`app` holds the operator tools; `serve` is a plain typer command function, mounted as
`skipwatch gateway jt808` by services/cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from prometheus_client import REGISTRY

from services.jt808.codec import (
    REPAIR_UNESCAPED_FLAG,
    FrameError,
    FrameReader,
    SplitAssembler,
    parse_body,
)
from services.jt808.gateway import GatewayMetrics, GatewayOptions, Jt808Gateway
from services.jt808.mapping import (
    DeviceDirectory,
    VendorConfig,
    VendorProfile,
    describe_message,
    load_vendor_config,
)
from services.ops import Check, Heartbeat, ops_app, serve_ops
from services.runtime import tune_gc

app = typer.Typer(help="JT/T 808 tools.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """JT/T 808 tools (a callback keeps `decode` a subcommand even while it is the only one)."""


VendorConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--vendor-config",
        help="YAML/JSON vendor profiles and device table.",
        exists=True,
        dir_okay=False,
        envvar="SKIPWATCH_GATEWAY__VENDOR_CONFIG",
    ),
]


def decode_hex(text: str, config: VendorConfig) -> list[dict[str, Any]]:
    """Decode every frame in a hex dump (spaces, newlines and `0x` allowed; flags optional)."""
    cleaned = "".join(text.replace("0x", "").split())
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        return [{"error": "bad_hex"}]
    if not data.startswith(b"\x7e"):
        data = b"\x7e" + data + b"\x7e"  # a frame pasted without its flags
    directory = DeviceDirectory(config)
    assembler = SplitAssembler()
    reader = FrameReader()
    out: list[dict[str, Any]] = []
    for read in reader.feed(data + b"\x7e", final=True):
        raw = read.raw
        try:
            if isinstance(read.result, FrameError):
                raise read.result
            frame = read.result
            whole = assembler.add(frame)
            identity = directory.resolve(frame.header.phone)
            if identity is None:  # unknown device with accept_unknown_devices=false
                identity = DeviceDirectory(VendorConfig()).resolve(frame.header.phone)
            assert identity is not None
            if whole is None:
                out.append({**_header_only(frame.header), "device_id": identity.device_id})
                continue
            described = describe_message(whole, parse_body(whole), identity)
            if read.repaired:
                described["repaired"] = REPAIR_UNESCAPED_FLAG
            out.append(described)
        except FrameError as exc:
            out.append({"error": exc.reason, "detail": exc.detail, "frame": raw.hex()})
    if reader.splitter.oversize_discards:
        out.append({"error": "oversize"})
    return out


def _header_only(header: Any) -> dict[str, Any]:
    return {
        "msg_id": header.msg_id,
        "msg_name": header.name,
        "phone": header.phone,
        "serial": header.serial,
        "version_2019": header.version_2019,
        "split": {"total": header.total_packets, "index": header.packet_index},
        "pending": "split message incomplete",
    }


@app.command()
def decode(
    hex_frames: Annotated[str, typer.Argument(metavar="HEX", help="Captured frame(s) as hex.")],
    vendor_config: VendorConfigOption = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Device time zone, e.g. +08:00 or Europe/London."),
    ] = None,
) -> None:
    """Decode captured frames and print one JSON object per message."""
    config = load_vendor_config(vendor_config)
    if tz is not None:
        try:
            profile = VendorProfile(timezone=tz)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tz") from None
        config = config.model_copy(
            update={"profiles": {**config.profiles, "_cli": profile}, "default_profile": "_cli"}
        )
    results = decode_hex(hex_frames, config)
    for result in results:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if any("error" in r for r in results):
        raise typer.Exit(1)


HEARTBEAT_S = 0.5


class GatewayHealth:
    """Live: the event loop runs (`heartbeat`). Ready: the JT/T 808 port accepts trackers and
    the Kafka producer can persist (not while it is started or replaced after a fatal error)."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat
        self.accepting = False
        self.persisting: Callable[[], bool] = lambda: True

    def ready(self) -> Check:
        if not self.accepting:
            return Check(False, "starting: connecting to Kafka")
        if not self.persisting():
            return Check(False, "cannot persist: Kafka producer not connected or being replaced")
        return Check(True, "accepting trackers")


async def run_gateway(
    *,
    host: str,
    port: int,
    config: VendorConfig,
    options: GatewayOptions,
    bootstrap_servers: str,
    topic_prefix: str,
    metrics: GatewayMetrics,
    health: GatewayHealth,
) -> None:
    """Run until SIGINT/SIGTERM, producing to `<topic_prefix>gps.raw`."""
    from services.jt808.sink import KafkaPingSink

    async def beat() -> None:
        while True:
            health.heartbeat.beat()
            await asyncio.sleep(HEARTBEAT_S)

    beating = asyncio.create_task(beat())
    sink = KafkaPingSink(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    await sink.start()
    gateway = Jt808Gateway(sink=sink, config=config, options=options, metrics=metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start(host, port)
        health.persisting = lambda: sink.ready
        health.accepting = True
        await stop.wait()
    finally:
        health.accepting = False
        beating.cancel()
        await gateway.close()
        await sink.stop()


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: settings gateway.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port (default: settings gateway.port).")
    ] = None,
    vendor_config: Annotated[
        Path | None,
        typer.Option(
            "--vendor-config",
            help="Vendor profiles and device table, YAML/JSON (default: settings).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    max_connections: Annotated[int | None, typer.Option(min=1)] = None,
    idle_timeout: Annotated[float | None, typer.Option(min=1, help="Seconds without data.")] = None,
    require_auth: Annotated[
        bool | None,
        typer.Option(help="Accept data only after 0x0102 (default: gateway.require_auth)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="/metrics, /healthz, /readyz port; 0 = off (default: settings)."),
    ] = None,
) -> None:
    """Run the JT/T 808 TCP gateway, producing GpsPing to <prefix>gps.raw."""
    from services.settings import get_settings

    settings = get_settings()
    gateway_settings = settings.gateway
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_vendor_config(vendor_config or gateway_settings.vendor_config)
    except (OSError, ValueError) as exc:
        typer.echo(f"invalid vendor config: {exc}", err=True)
        raise typer.Exit(2) from None
    options = GatewayOptions(
        max_connections=max_connections or gateway_settings.max_connections,
        idle_timeout_s=idle_timeout or gateway_settings.idle_timeout_s,
        require_auth=gateway_settings.require_auth if require_auth is None else require_auth,
        auth_secret=secret.get_secret_value() if (secret := gateway_settings.auth_secret) else None,
        time_window=settings.bounds.window(),
    )
    _raise_fd_limit(options.max_connections + 256)
    metrics_port = gateway_settings.metrics_port if metrics_port is None else metrics_port
    health = GatewayHealth(Heartbeat(gateway_settings.loop_stall_s))
    if metrics_port:
        ops = ops_app(health.heartbeat, health.ready)
        serve_ops(gateway_settings.metrics_host, metrics_port, ops)
    main = run_gateway(
        host=host or gateway_settings.host,
        port=port or gateway_settings.port,
        config=config,
        options=options,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        topic_prefix=settings.kafka.topic_prefix,
        metrics=GatewayMetrics(REGISTRY),
        health=health,
    )
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(main)
    else:
        uvloop.run(main)


def _raise_fd_limit(wanted: int) -> None:
    """Each connection is a file descriptor; the usual soft limit of 1024 is far too low."""
    if sys.platform == "win32":  # pragma: no cover
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
