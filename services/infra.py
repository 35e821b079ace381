"""Local infrastructure without Docker: a real Kafka (KRaft, Maven jars) and a real redis-server.

Data lives under an ignored project-local folder (.skipwatch/ by default).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.settings import PROJECT_ROOT

KAFKA_SCRIPT = PROJECT_ROOT / "deploy" / "kafka" / "kafka.sh"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".skipwatch"


class InfraError(RuntimeError):
    pass


@dataclass(frozen=True)
class InfraPorts:
    kafka: int = 9092
    kafka_controller: int = 9093
    redis: int = 6379


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
        found = shutil.which("redis-server")
    if not found:
        raise InfraError("redis-server is not installed (Debian: apt-get install redis-server)")
    return found


def kafka_up(data_dir: Path, port: int, controller_port: int) -> None:
    subprocess.run(
        [str(KAFKA_SCRIPT), "start", str(data_dir / "kafka"), str(port), str(controller_port)],
        check=True,
    )


def kafka_down(data_dir: Path) -> None:
    subprocess.run([str(KAFKA_SCRIPT), "stop", str(data_dir / "kafka")], check=True)


def redis_up(data_dir: Path, port: int) -> None:
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    pidfile = folder / "redis.pid"
    if _pid_alive(pidfile):
        return
    if port_open(port):
        raise InfraError(f"port {port} is already in use; choose another with --redis-port")
    subprocess.run(
        [
            _redis_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--pidfile", str(pidfile),
            "--logfile", str(folder / "redis.log"),
            "--daemonize", "yes",
            "--save", "",
            "--appendonly", "no",
        ],
        check=True,
    )  # fmt: skip
    (folder / "redis.port").write_text(str(port))
    for _ in range(100):
        if port_open(port):
            return
        time.sleep(0.1)
    raise InfraError(f"redis-server did not start on port {port}; see {folder / 'redis.log'}")


def redis_down(data_dir: Path) -> None:
    pidfile = data_dir / "redis" / "redis.pid"
    if not _pid_alive(pidfile):
        return
    pid = int(pidfile.read_text().strip())
    os.kill(pid, 15)
    for _ in range(100):
        if not _pid_alive(pidfile):
            return
        time.sleep(0.1)
    os.kill(pid, 9)


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def status(data_dir: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    kafka = subprocess.run(
        [str(KAFKA_SCRIPT), "status", str(data_dir / "kafka")], capture_output=True, text=True
    )
    result["kafka"] = kafka.stdout.strip().removeprefix("kafka: ")
    pidfile = data_dir / "redis" / "redis.pid"
    if _pid_alive(pidfile):
        port = (data_dir / "redis" / "redis.port").read_text().strip()
        result["redis"] = f"running pid {pidfile.read_text().strip()} on 127.0.0.1:{port}"
    else:
        result["redis"] = "stopped"
    return result
