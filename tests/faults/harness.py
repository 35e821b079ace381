"""The whole stack as separate processes for the fault-and-load suite: worker, API (projector
included) and JT/T 808 gateway, each `python -m services.cli ...` as operators run them, fed
through the real front doors (HTTP ingest and JT/T 808 over TCP). Nothing here restarts or wipes
a broker or Redis: tests that do start their own (services/infra.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from rules.events import ContactAttempt, GpsPing, InputEvent, Loan
from services import infra
from services.jt808 import codec
from services.settings import EXIT_RESTART
from tests.integration.conftest import REPO_ROOT, Stack, stop_process

ADMIN = "faults-admin-token-0000000001"
GATEWAY_SECRET = "faults-gateway-secret"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
CST = dt.timezone(dt.timedelta(hours=8))
HOME_LAT, HOME_LON = 30.66, 104.06  # Chengdu, the centre of every home region here


@dataclass
class Service:
    """One process of the stack: started, SIGKILLed, restarted, its memory read."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    restarts: int = 0  # restarts asked by the process (exit 75), as a supervisor would
    down: bool = False  # killed by the test, not started again yet

    def start(self) -> None:
        self.down = False
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *self.args],
            env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no clean shutdown."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.kills += 1
        self.down = True

    def stop(self) -> None:
        stop_process(self.proc)

    def supervise(self) -> None:
        """Restart after exit 75 (what compose or Kubernetes do); fail on any other exit."""
        if self.proc is None or self.proc.poll() is None or self.down:
            return
        if self.proc.returncode == EXIT_RESTART:
            self.restarts += 1
            self.start()
            return
        raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")

    def rss_mib(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class FaultStack(Stack):
    """Kafka and Redis given (shared, or a test's own); worker, API and gateway processes."""

    redis_url: str = ""
    redis_prefix: str = ""
    clock: str = "event"
    services: dict[str, Service] = field(default_factory=dict)
    api_port: int = 0
    gateway_port: int = 0
    gateway_ops_port: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = self.worker_env("worker", SKIPWATCH_WORKER__CLOCK=self.clock)
        if self.clock == "wall":  # live: an event is late 300 s after its time, as deployed
            env["SKIPWATCH_WORKER__ALLOWED_LATENESS_S"] = "300"
        env.update(
            SKIPWATCH_REDIS__URL=self.redis_url,
            SKIPWATCH_REDIS__KEY_PREFIX=self.redis_prefix,
            SKIPWATCH_AUTH__TOKENS=orjson.dumps({ADMIN: "admin"}).decode(),
            SKIPWATCH_API__PORT=str(self.api_port),
            SKIPWATCH_GATEWAY__PORT=str(self.gateway_port),
            SKIPWATCH_GATEWAY__METRICS_PORT=str(self.gateway_ops_port),
            SKIPWATCH_GATEWAY__AUTH_SECRET=GATEWAY_SECRET,
            SKIPWATCH_WORKER__INSTANCE_ID="w",
        )
        env.update(extra)
        return env

    def start(self, name: str, **extra: str) -> Service:
        args = {"worker": ["worker"], "api": ["api"], "gateway": ["gateway", "jt808"]}[name]
        if not self.api_port:
            self.api_port, self.gateway_port = infra.free_port(), infra.free_port()
            self.gateway_ops_port = infra.free_port()
        service = self.services.get(name)
        if service is None:
            service = Service(name, args, self.env(**extra), self.tmp / f"{name}.log")
            self.services[name] = service
        service.start()
        return service

    def supervise(self) -> None:
        for service in self.services.values():
            service.supervise()

    def check_workers(self) -> None:  # Stack's readers call it while they wait
        self.supervise()

    def stop_all(self) -> None:
        for service in self.services.values():
            service.stop()

    async def wait_ready(self, name: str, timeout_s: float = 120) -> float:
        """Seconds until the service's /readyz answers 200 (the worker: until it consumes)."""
        started = time.monotonic()
        port = {"api": self.api_port, "gateway": self.gateway_ops_port}[name]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            async with asyncio.timeout(timeout_s):
                while True:
                    self.supervise()
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/readyz")).status_code == 200:
                            return time.monotonic() - started
                    await asyncio.sleep(0.2)

    def rss(self) -> dict[str, float | None]:
        return {name: service.rss_mib() for name, service in self.services.items()}


def client(base_url: str) -> httpx.AsyncClient:
    """An API client that drops idle connections before uvicorn does (5 s), so that a request
    never goes out on a connection the server is closing."""
    return httpx.AsyncClient(
        base_url=base_url, timeout=60, headers=HEADERS, limits=httpx.Limits(keepalive_expiry=2)
    )


def item(event: InputEvent) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=True)


@dataclass
class HttpDoor:
    """HTTP ingest as a sender does it: a batch is accepted when the API answered 200; on a 5xx
    or a broken connection (the API killed) the batch is sent again after a pause."""

    base_url: str
    accepted: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    retries: int = 0

    def __post_init__(self) -> None:
        self.client = client(self.base_url)

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, route: str, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        while True:
            try:
                response = await self.client.post(f"/v1/ingest/{route}", json=list(items))
            except httpx.TransportError:
                self.statuses[0] = self.statuses.get(0, 0) + 1
                self.retries += 1
                await asyncio.sleep(0.5)
                continue
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                rejected = {r["index"] for r in answer["rejected"]}
                self.accepted.update(
                    i["event_id"] for n, i in enumerate(items) if n not in rejected
                )
                return answer
            assert response.status_code in (502, 503, 504), (response.status_code, response.text)
            self.retries += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "0.5")))

    async def put_loan(self, loan: Loan) -> None:
        body = item(loan)
        while True:
            try:
                response = await self.client.put(f"/v1/loans/{loan.loan_id}", json=body)
            except httpx.TransportError:
                self.retries += 1
                await asyncio.sleep(0.5)
                continue
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                self.accepted.add(f"loan:{loan.loan_id}")
                return
            assert response.status_code in (502, 503, 504), (response.status_code, response.text)
            self.retries += 1
            await asyncio.sleep(0.5)


def phone_of(n: int) -> str:
    return f"0139{n:08d}"


def jt808_device(n: int) -> str:
    """The device id the gateway gives terminal `n` (unknown terminals are accepted)."""
    return f"jt808:{phone_of(n).lstrip('0')}"  # the gateway drops the BCD's left padding


@dataclass
class Location:
    lat: float
    lon: float
    when: dt.datetime  # aware
    speed_kmh: float = 0.0


class Terminal:
    """A JT/T 808 terminal as trackers in the field behave: registers once, authenticates on
    every connection, sends each location and waits for the platform's answer; without one
    (connection lost: the gateway killed) it reconnects and sends the same frame again. A
    location is accepted when the gateway answered it OK (the gateway answers after Kafka
    acknowledged the ping)."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.phone = port, phone_of(n)
        self.phone_raw = codec.phone_bcd(self.phone)
        self.auth_code: bytes | None = None
        self.serial = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.splitter = codec.FrameSplitter()
        self.frames: list[bytes] = []
        self.accepted = 0
        self.resent = 0
        self.reconnects = 0

    async def _request(self, msg_id: int, body: bytes) -> codec.Frame:
        assert self.writer is not None and self.reader is not None
        serial = self.serial = (self.serial + 1) & 0xFFFF
        self.writer.write(
            codec.encode_frame(msg_id=msg_id, phone_raw=self.phone_raw, serial=serial, body=body)
        )
        await self.writer.drain()
        while True:
            while not self.frames:
                data = await asyncio.wait_for(self.reader.read(4096), 30)
                if not data:
                    raise ConnectionError("gateway closed the connection")
                self.frames.extend(self.splitter.feed(data))
            reply = codec.decode_frame(self.frames.pop(0))
            if reply.header.msg_id == codec.MSG_REGISTER_RESPONSE:
                return reply
            if struct.unpack_from(">H", reply.body)[0] == serial:
                return reply

    async def connect(self) -> None:
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                self.splitter, self.frames = codec.FrameSplitter(), []
                if self.auth_code is None:
                    reply = await self._request(
                        codec.MSG_REGISTER,
                        codec.encode_register_body(
                            maker="70107", model="FAULTS", terminal_id=self.phone[-7:],
                            plate="川A00000", plate_color=2,
                        ),
                    )  # fmt: skip
                    self.auth_code = reply.body[3:]
                reply = await self._request(codec.MSG_AUTH, self.auth_code)
                assert reply.body[-1] == codec.RESULT_OK, reply
                return
            except (OSError, ConnectionError, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.5)

    async def send(self, location: Location) -> None:
        body = codec.encode_location_body(
            lat=location.lat, lon=location.lon, speed_kmh=location.speed_kmh, status_flags=0x3,
            time=location.when.astimezone(CST).replace(tzinfo=None),
        )  # fmt: skip
        first = True
        while True:
            if self.writer is None:
                await self.connect()
            try:
                reply = await self._request(codec.MSG_LOCATION, body)
            except (OSError, ConnectionError, TimeoutError):
                self.writer = None
                self.reconnects += 1
                first = False
                await asyncio.sleep(0.3)
                continue
            if reply.body[-1] == codec.RESULT_OK:
                self.accepted += 1
                self.resent += not first
                return
            # not persisted (Kafka not acknowledging): the terminal keeps it and sends again
            first = False
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


def slope_mib_per_min(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 3:
        return math.nan
    times, values = zip(*samples, strict=True)
    return statistics.linear_regression(times, values).slope * 60


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(math.ceil(q / 100 * len(ordered)) - 1, 0)
    return ordered[rank]


async def alert_in_api(
    client: httpx.AsyncClient, loan_id: str, rule: str, timeout_s: float = 120
) -> float:
    """Poll the API until the loan's alert of `rule` is listed; the monotonic time it was."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                response = await client.get("/v1/alerts", params={"loan": loan_id, "rule": rule})
            except httpx.TransportError:  # the API killed (crash test): ask again
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 200 and response.json()["items"]:
                return time.monotonic()
            await asyncio.sleep(0.05)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def make_loan(loan_id: str, device_id: str, first_due: dt.date, kind: str = "wired") -> Loan:
    """A loan in Chengdu (30 km home region) with two monthly instalments from `first_due`."""
    return Loan.model_validate(
        {
            "loan_id": loan_id,
            "borrower": {"name": "张三", "phone": "+8613800138000"},
            "vehicle": {"vin": "LSVAU2180N2123456", "plate": "川A12345"},
            "devices": [{"device_id": device_id, "kind": kind}],
            "home_region": {"center": [30.66, 104.06], "radius_km": 30},
            "schedule": [
                {"installment_no": 1, "due_date": first_due.isoformat(), "amount": 3200},
                {"installment_no": 2, "due_date": (first_due + dt.timedelta(days=31)).isoformat(),
                 "amount": 3200},
            ],
        }
    )  # fmt: skip


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def home_ping(device: str, n: int, rng: random.Random) -> GpsPing:
    return GpsPing.model_validate(
        {
            "event_id": f"{device}-{n}", "device_id": device, "vendor": "load", "ts": now(),
            "lat": HOME_LAT + rng.uniform(-0.002, 0.002), "lon": HOME_LON + rng.uniform(-0.002, 0.002),
            "speed_kmh": 0.0, "device_kind": "wired", "acc_on": False,
        }
    )  # fmt: skip


def call(loan_id: str, event_id: str, outcome: str) -> ContactAttempt:
    return ContactAttempt.model_validate(
        {"event_id": event_id, "loan_id": loan_id, "ts": now(), "party": "borrower",
         "channel": "call", "outcome": outcome}
    )  # fmt: skip
