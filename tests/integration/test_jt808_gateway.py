"""A simulated tracker talks to a real JT/T 808 gateway over TCP; pings land in real Kafka.

Uses the session fixtures from tests/conftest.py: `kafka_bootstrap` ("127.0.0.1:PORT")
and `topic_prefix` (unique per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import CollectorRegistry

from rules.events import Alarm, GpsPing
from services.infra import free_port
from services.jt808 import codec
from services.jt808.gateway import GatewayMetrics, GatewayOptions, Jt808Gateway
from services.jt808.mapping import VendorConfig
from services.jt808.sink import KafkaPingSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PHONE = "13800138000"
PHONE_RAW = codec.phone_bcd(PHONE)


class Tracker:
    """Just enough of a terminal: sends frames, reads replies frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.splitter = codec.FrameSplitter()
        self.frames: list[bytes] = []
        self.serial = 0

    async def send(self, msg_id: int, body: bytes = b"") -> int:
        serial = self.serial
        self.serial += 1
        self.writer.write(
            codec.encode_frame(msg_id=msg_id, phone_raw=PHONE_RAW, serial=serial, body=body)
        )
        await self.writer.drain()
        return serial

    async def reply(self) -> codec.Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(4096), 15)
            assert data, "gateway closed the connection"
            self.frames.extend(self.splitter.feed(data))
        return codec.decode_frame(self.frames.pop(0))

    async def general_response(self) -> tuple[int, int, int]:
        reply = await self.reply()
        assert reply.header.msg_id == codec.MSG_PLATFORM_RESPONSE
        assert reply.header.phone_raw == PHONE_RAW
        serial, msg_id, result = struct.unpack(">HHB", reply.body)
        return serial, msg_id, result


@pytest.fixture
async def gateway(
    kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[tuple[Jt808Gateway, int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(f"{topic_prefix}gps.raw", 3, 1)])
    finally:
        await admin.close()
    sink = KafkaPingSink(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await sink.start()
    gw = Jt808Gateway(
        sink=sink,
        config=VendorConfig.model_validate({"devices": {PHONE: {"device_id": "veh-0042"}}}),
        options=GatewayOptions(auth_secret="integration-secret"),
        metrics=GatewayMetrics(CollectorRegistry()),
    )
    port = await gw.start("127.0.0.1", 0)
    try:
        yield gw, port
    finally:
        await gw.close()
        await sink.stop()


async def consume(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, GpsPing]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[tuple[bytes, GpsPing]] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=1000)
                for messages in batch.values():
                    for m in messages:
                        assert m.key is not None and m.value is not None
                        records.append((m.key, GpsPing.model_validate_json(m.value)))
        # Nothing more than expected (no duplicates from the gateway).
        extra = await consumer.getmany(timeout_ms=1500)
        assert sum(len(v) for v in extra.values()) == 0
    finally:
        await consumer.stop()
    return records


async def test_tracker_session_lands_in_kafka(
    gateway: tuple[Jt808Gateway, int], kafka_bootstrap: str, topic_prefix: str
) -> None:
    gw, port = gateway
    tracker = Tracker(*await asyncio.open_connection("127.0.0.1", port))

    # Data before authentication is refused (the tracker keeps it for later).
    early = await tracker.send(
        codec.MSG_LOCATION,
        codec.encode_location_body(lat=1.0, lon=1.0, time=datetime(2024, 5, 1, 7, 0, 0)),
    )
    assert await tracker.general_response() == (early, codec.MSG_LOCATION, codec.RESULT_FAILURE)

    register = await tracker.send(
        codec.MSG_REGISTER,
        codec.encode_register_body(
            maker="70107", model="HB-R03GBD", terminal_id="2366104", plate="苏BA6860", plate_color=2
        ),
    )
    reply = await tracker.reply()
    assert reply.header.msg_id == codec.MSG_REGISTER_RESPONSE
    reply_serial, result = struct.unpack_from(">HB", reply.body)
    assert (reply_serial, result) == (register, codec.REGISTER_OK)
    auth_code = reply.body[3:]
    assert auth_code

    auth = await tracker.send(codec.MSG_AUTH, auth_code)
    assert await tracker.general_response() == (auth, codec.MSG_AUTH, codec.RESULT_OK)

    heartbeat = await tracker.send(codec.MSG_HEARTBEAT)
    assert await tracker.general_response() == (heartbeat, codec.MSG_HEARTBEAT, codec.RESULT_OK)

    # Two live locations: an SOS with power cut, and one south-west with no alarm.
    live = [
        await tracker.send(
            codec.MSG_LOCATION,
            codec.encode_location_body(
                lat=31.230416,
                lon=121.473701,
                time=datetime(2024, 5, 1, 12, 0, 0),
                alarm_flags=1 << 0 | 1 << 8,
                status_flags=0x3,
                speed_kmh=62.3,
                heading=270,
            ),
        ),
        await tracker.send(
            codec.MSG_LOCATION,
            codec.encode_location_body(
                lat=-33.86882,
                lon=-151.209296,
                time=datetime(2024, 5, 1, 12, 0, 30),
                status_flags=0x2,
            ),
        ),
    ]
    for serial in live:
        assert await tracker.general_response() == (serial, codec.MSG_LOCATION, codec.RESULT_OK)

    # A blind-area upload of three buffered points: one reply for the whole batch.
    buffered = [
        codec.encode_location_body(
            lat=22.5 + i / 100, lon=114.0, time=datetime(2024, 5, 1, 9, i, 0)
        )
        for i in range(3)
    ]
    batch = await tracker.send(codec.MSG_BATCH, codec.encode_batch_body(buffered, batch_type=1))
    assert await tracker.general_response() == (batch, codec.MSG_BATCH, codec.RESULT_OK)

    logout = await tracker.send(codec.MSG_LOGOUT)
    assert await tracker.general_response() == (logout, codec.MSG_LOGOUT, codec.RESULT_OK)
    tracker.writer.close()

    records = await consume(kafka_bootstrap, f"{topic_prefix}gps.raw", 5)
    assert {key for key, _ in records} == {b"veh-0042"}
    pings = sorted((p for _, p in records), key=lambda p: p.ts)
    backfill, sos, south_west = pings[:3], pings[3], pings[4]

    assert [p.backfill for p in backfill] == [True, True, True]
    assert [p.ts for p in backfill] == [datetime(2024, 5, 1, 1, i, 0, tzinfo=UTC) for i in range(3)]
    assert [p.lat for p in backfill] == [22.5, 22.51, 22.52]

    assert sos.backfill is False
    assert sos.ts == datetime(2024, 5, 1, 4, 0, 0, tzinfo=UTC)  # device time is GMT+8
    assert (sos.lat, sos.lon, sos.speed_kmh, sos.heading) == (31.230416, 121.473701, 62.3, 270)
    assert set(sos.alarms) == {Alarm.SOS, Alarm.POWER_CUT} and sos.acc_on is True
    assert (south_west.lat, south_west.lon, south_west.alarms) == (-33.86882, -151.209296, ())
    assert len({p.event_id for p in pings}) == 5
    assert all(p.vendor == "jt808" and p.device_id == "veh-0042" for p in pings)

    produced = gw.metrics.registry.get_sample_value(
        "skipwatch_jt808_pings_total", {"outcome": "produced"}
    )
    assert produced == 5


async def test_gateway_command_serves_readiness_liveness_and_metrics(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """`skipwatch gateway jt808` as operators run it: ready once it accepts trackers."""
    port, ops_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPWATCH_")}
    env.update(
        SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        SKIPWATCH_KAFKA__TOPIC_PREFIX=topic_prefix,
        SKIPWATCH_GATEWAY__PORT=str(port),
        SKIPWATCH_GATEWAY__METRICS_PORT=str(ops_port),
    )
    log = (tmp_path / "gateway.log").open("wb")
    command = [sys.executable, "-m", "services.cli", "gateway", "jt808"]
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}", timeout=5) as client:
            ready = None
            async with asyncio.timeout(60):
                while ready is None or ready.status_code != 200:
                    assert proc.returncode is None, (tmp_path / "gateway.log").read_text()
                    with contextlib.suppress(httpx.TransportError):  # not listening yet
                        ready = await client.get("/readyz")
                    await asyncio.sleep(0.2)
            assert ready.json() == {"status": "ok", "detail": "accepting trackers"}
            _, writer = await asyncio.open_connection("127.0.0.1", port)  # trackers get in
            writer.close()
            live = await client.get("/healthz")
            assert live.status_code == 200
            assert live.json()["detail"].startswith("event loop heartbeat")
            metrics = (await client.get("/metrics")).text
        assert "skipwatch_jt808_" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, (tmp_path / "gateway.log").read_text()
