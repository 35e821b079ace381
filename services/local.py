"""`skipwatch up`: the whole system on one machine, no Docker.

Starts Kafka and Redis (services/infra.py), creates the topics, then runs the worker, the API
with the dashboard, the JT/T 808 gateway and a live simulator as child processes, prefixing
their output. Ctrl-C stops the children; `skipwatch infra down` stops Kafka and Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from services import infra
from services.settings import EXIT_RESTART

DEV_RECEIVER_PORT = 9009

COMPONENTS: dict[str, list[str]] = {
    "worker": ["worker"],
    "api": ["api"],
    "gateway": ["gateway", "jt808"],
    # Notifications: the dispatcher, and a local receiver that prints each signed webhook.
    "dispatcher": ["dispatcher"],
    "receiver": ["notify-receiver", "--port", str(DEV_RECEIVER_PORT)],
    # A 100-loan portfolio (20 % of them skip) whose simulated month ends now: the past 30 days
    # are replayed at 400 records/s (the worker runs on event time, so their alerts show up
    # within a few minutes), then the next 30 days go on at the wall clock, so ages and "last
    # seen" read as in a live system.
    "simulator": [
        "simulate",
        "--kafka",
        "--live",
        "--history",
        "30",
        "--loans",
        "100",
        "--days",
        "60",
        "--skip-fraction",
        "0.2",
        "--rate",
        "400",
    ],
}


def dev_credentials(data_dir: Path) -> dict[str, str]:
    """Random local credentials, made once and kept in .skipwatch/dev-credentials.json."""
    from cryptography.fernet import Fernet

    path = data_dir / "dev-credentials.json"
    made: dict[str, Callable[[], str]] = {
        "admin": lambda: secrets.token_urlsafe(24),
        "operator": lambda: secrets.token_urlsafe(24),
        "viewer": lambda: secrets.token_urlsafe(24),
        "ingest_simulator": lambda: secrets.token_urlsafe(24),
        # encrypts webhook secrets at rest (notify.secret_keys)
        "notify_secret_key": lambda: Fernet.generate_key().decode(),
    }
    creds: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if all(name in creds for name in made):
        return creds
    creds = {name: creds.get(name) or make() for name, make in made.items()}
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds, indent=2))
    path.chmod(0o600)
    return creds


def dev_routing(data_dir: Path) -> tuple[Path, str]:
    """A routing config sending every alert to the local receiver, and its signing secret."""
    from services.notify.signing import new_secret

    secret_path = data_dir / "dev-webhook-secret"
    if not secret_path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        secret_path.write_text(new_secret())
        secret_path.chmod(0o600)
    secret = secret_path.read_text().strip()
    config = data_dir / "notify-routing.yaml"
    config.write_text(
        "# Written by `skipwatch up`: every alert to the local receiver (notify-receiver).\n"
        "route:\n  receiver: local\n  group_wait: 10s\n  group_interval: 1m\n"
        "receivers:\n  - name: local\n    webhook_configs:\n"
        f'      - url: "http://127.0.0.1:{DEV_RECEIVER_PORT}/hook"\n        secret: "{secret}"\n'
    )
    return config, secret


def _pump(name: str, stream: object) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sys.stderr.write(f"{name:>9} | {line}")


def run_local_stack(
    data_dir: Path, components: list[str], kafka_port: int = 9092, redis_port: int = 6379
) -> int:
    infra.kafka_up(data_dir, kafka_port, kafka_port + 1)
    infra.redis_up(data_dir, redis_port)
    creds = dev_credentials(data_dir)
    env = {
        **os.environ,
        "SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "SKIPWATCH_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
        "SKIPWATCH_AUTH__TOKENS": json.dumps(
            {creds["admin"]: "admin", creds["operator"]: "operator", creds["viewer"]: "viewer"}
        ),
        "SKIPWATCH_AUTH__INGEST_KEYS": json.dumps({creds["ingest_simulator"]: "simulator"}),
        "SKIPWATCH_NOTIFY__SECRET_KEYS": json.dumps([creds["notify_secret_key"]]),
        "SKIPWATCH_WORKER__DATA_DIR": str(data_dir / "worker"),
        "SKIPWATCH_WORKER__CLOCK": "event",
        "SKIPWATCH_LOG_FORMAT": os.environ.get("SKIPWATCH_LOG_FORMAT", "console"),
    }
    if "dispatcher" in components or "receiver" in components:
        routing, secret = dev_routing(data_dir)
        env.update(
            SKIPWATCH_NOTIFY__ROUTING_CONFIG=str(routing),
            SKIPWATCH_NOTIFY__ALLOW_LIST='["127.0.0.1"]',
            SKIPWATCH_DEV_RECEIVER_SECRET=secret,
        )
    exe = [sys.executable, "-m", "services.cli"]
    subprocess.run([*exe, "topics", "create"], env=env, check=True)
    children: dict[str, subprocess.Popen[str]] = {}

    def start(name: str) -> None:
        proc = subprocess.Popen(
            [*exe, *COMPONENTS[name]], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        children[name] = proc
        threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True).start()

    for name in components:
        start(name)

    api_port = os.environ.get("SKIPWATCH_API__PORT", "8000")
    sys.stderr.write(
        "\n"
        f"  skipwatch is running. Dashboard: http://127.0.0.1:{api_port}/  API docs: "
        f"http://127.0.0.1:{api_port}/docs\n"
        f"  Tokens (Bearer), also in {data_dir / 'dev-credentials.json'}:\n"
        f"    admin    {creds['admin']}\n    operator {creds['operator']}\n"
        f"    viewer   {creds['viewer']}\n"
        "  Ctrl-C stops the processes; `skipwatch infra down` stops Kafka and Redis.\n\n"
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, proc in list(children.items()):
            if proc.poll() is None or name == "simulator":
                continue
            if proc.returncode == EXIT_RESTART:  # the worker's own watchdog asks for a restart
                sys.stderr.write(f"{name} asked for a restart; restarting\n")
                start(name)
                continue
            sys.stderr.write(f"{name} exited with code {proc.returncode}; stopping\n")
            exit_code, stopping = 1, True
        time.sleep(0.5)
    for proc in children.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in children.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code
