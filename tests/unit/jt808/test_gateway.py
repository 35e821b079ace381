"""Gateway connection logic on a fake transport (and a few real loopback sockets):
the register -> auth -> data state machine, replies and serials, ack-after-sink,
backpressure, limits and malformed input."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from rules.events import GpsPing
from services.jt808 import codec
from services.jt808.gateway import GatewayMetrics, GatewayOptions, Jt808Gateway, auth_code_for
from services.jt808.mapping import VendorConfig
from services.jt808.sink import MemorySink
from tests.unit.jt808.support import PHONE, FakeTransport, frame, general_response, location_body

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 5, 0, 0, tzinfo=UTC)


def make_gateway(
    sink: object | None = None, config: VendorConfig | None = None, **options: object
) -> tuple[Jt808Gateway, MemorySink]:
    memory = MemorySink()
    gateway = Jt808Gateway(
        sink=sink or memory,  # type: ignore[arg-type]
        config=config,
        options=GatewayOptions(**options),  # type: ignore[arg-type]
        metrics=GatewayMetrics(CollectorRegistry()),
        clock=lambda: NOW,
    )
    return gateway, memory


def connect(gateway: Jt808Gateway) -> tuple[asyncio.Protocol, FakeTransport]:
    protocol = gateway.new_connection()
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def metric(gateway: Jt808Gateway, name: str, **labels: str) -> float:
    value = gateway.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def authenticated(
    gateway: Jt808Gateway, phone: str = PHONE
) -> tuple[asyncio.Protocol, FakeTransport]:
    protocol, transport = connect(gateway)
    code = auth_code_for(phone, gateway.options.auth_secret)
    protocol.data_received(frame(codec.MSG_AUTH, code.encode(), serial=1, phone=phone))
    [(_, body)] = transport.replies()
    assert general_response(body) == (1, codec.MSG_AUTH, codec.RESULT_OK)
    return protocol, transport


async def test_register_auth_locate_with_serials_and_ack_after_sink() -> None:
    gateway, sink = make_gateway(auth_secret="s3cret")
    protocol, transport = connect(gateway)
    register = codec.encode_register_body(maker="ACME", model="T1", terminal_id="0000001", plate="")
    protocol.data_received(frame(codec.MSG_REGISTER, register, serial=40))
    [(header, body)] = transport.replies()
    assert header.msg_id == codec.MSG_REGISTER_RESPONSE and header.serial == 0
    assert header.phone_raw == codec.phone_bcd(PHONE)
    reply_serial, result = struct.unpack_from(">HB", body)
    code = body[3:].decode()
    assert (reply_serial, result, code) == (40, 0, auth_code_for(PHONE, "s3cret"))

    protocol.data_received(frame(codec.MSG_AUTH, code.encode(), serial=41))
    [(header, body)] = transport.replies()
    assert header.serial == 1 and general_response(body) == (41, codec.MSG_AUTH, 0)

    protocol.data_received(frame(codec.MSG_LOCATION, location_body(alarm_flags=1), serial=42))
    assert transport.replies() == []  # not before the sink has it
    await settle()
    [(header, body)] = transport.replies()
    assert header.serial == 2 and general_response(body) == (42, codec.MSG_LOCATION, 0)
    [ping] = sink.pings
    assert isinstance(ping, GpsPing)
    assert ping.device_id == f"jt808:{PHONE}" and ping.alarms == ("sos",)
    assert ping.backfill is False and ping.lat == 31.230416
    assert metric(gateway, "skipwatch_jt808_pings_total", outcome="produced") == 1


async def test_wrong_auth_code_is_refused_when_a_secret_is_set() -> None:
    gateway, sink = make_gateway(auth_secret="s3cret")
    protocol, transport = connect(gateway)
    protocol.data_received(frame(codec.MSG_AUTH, b"guess", serial=7))
    [(_, body)] = transport.replies()
    assert general_response(body) == (7, codec.MSG_AUTH, codec.RESULT_FAILURE)
    protocol.data_received(frame(codec.MSG_LOCATION, location_body(), serial=8))
    await settle()
    [(_, body)] = transport.replies()
    assert general_response(body) == (8, codec.MSG_LOCATION, codec.RESULT_FAILURE)
    assert sink.pings == []
    assert metric(gateway, "skipwatch_jt808_pings_total", outcome="unauthenticated") == 1


async def test_without_a_secret_any_code_is_accepted() -> None:
    gateway, _ = make_gateway()
    protocol, transport = connect(gateway)
    protocol.data_received(frame(codec.MSG_AUTH, b"whatever-the-last-platform-gave", serial=1))
    [(_, body)] = transport.replies()
    assert general_response(body)[2] == codec.RESULT_OK


async def test_require_auth_off_accepts_data_straight_away() -> None:
    gateway, sink = make_gateway(require_auth=False)
    protocol, transport = connect(gateway)
    protocol.data_received(frame(codec.MSG_LOCATION, location_body(), serial=1))
    await settle()
    assert len(sink.pings) == 1 and general_response(transport.replies()[0][1])[2] == 0


async def test_sink_failure_means_no_ack_and_the_link_survives() -> None:
    gateway, sink = make_gateway()
    protocol, transport = await authenticated(gateway)
    sink.fail = ConnectionError("kafka down")
    protocol.data_received(frame(codec.MSG_LOCATION, location_body(), serial=2))
    await settle()
    assert transport.replies() == [] and not transport.closed
    assert metric(gateway, "skipwatch_jt808_pings_total", outcome="sink_failed") == 1
    sink.fail = None
    protocol.data_received(frame(codec.MSG_LOCATION, location_body(), serial=2))  # the resend
    await settle()
    assert general_response(transport.replies()[0][1]) == (2, codec.MSG_LOCATION, 0)


async def test_blind_area_batch_is_backfill_with_one_reply() -> None:
    gateway, sink = make_gateway()
    protocol, transport = await authenticated(gateway)
    points = [location_body(time=datetime(2024, 5, 1, 8, m, 0)) for m in range(3)]
    protocol.data_received(
        frame(codec.MSG_BATCH, codec.encode_batch_body(points, batch_type=1), serial=9)
    )
    await settle()
    [(_, body)] = transport.replies()
    assert general_response(body) == (9, codec.MSG_BATCH, 0)
    assert [p.backfill for p in sink.pings] == [True, True, True]
    assert [p.ts.minute for p in sink.pings] == [0, 1, 2]


async def test_normal_batch_is_not_backfill() -> None:
    gateway, sink = make_gateway()
    protocol, _ = await authenticated(gateway)
    body = codec.encode_batch_body([location_body()], batch_type=0)
    protocol.data_received(frame(codec.MSG_BATCH, body, serial=9))
    await settle()
    assert [p.backfill for p in sink.pings] == [False]


async def test_split_batch_acks_every_packet_and_stores_once() -> None:
    gateway, sink = make_gateway()
    protocol, transport = await authenticated(gateway)
    points = [location_body(lat=10 + i / 10) for i in range(40)]
    body = codec.encode_batch_body(points, batch_type=1)
    chunks = [body[i : i + 700] for i in range(0, len(body), 700)]
    wire = b"".join(
        frame(codec.MSG_BATCH, c, serial=100 + i, split=(len(chunks), i + 1))
        for i, c in enumerate(chunks)
    )
    protocol.data_received(wire)
    await settle()
    replies = [general_response(b) for _, b in transport.replies()]
    assert replies == [(100 + i, codec.MSG_BATCH, 0) for i in range(len(chunks))]
    assert len(sink.pings) == 40 and sink.calls == 1


async def test_heartbeat_logout_and_data_after_logout() -> None:
    gateway, sink = make_gateway()
    protocol, transport = await authenticated(gateway)
    protocol.data_received(frame(codec.MSG_HEARTBEAT, serial=2) + frame(codec.MSG_LOGOUT, serial=3))
    assert [general_response(b) for _, b in transport.replies()] == [
        (2, codec.MSG_HEARTBEAT, 0),
        (3, codec.MSG_LOGOUT, 0),
    ]
    protocol.data_received(frame(codec.MSG_LOCATION, location_body(), serial=4))
    await settle()
    assert general_response(transport.replies()[0][1])[2] == codec.RESULT_FAILURE
    assert sink.pings == []


async def test_unsupported_and_terminal_response() -> None:
    gateway, _ = make_gateway()
    protocol, transport = connect(gateway)
    protocol.data_received(frame(0x0900, b"\x41\x00", serial=5))
    protocol.data_received(frame(codec.MSG_TERMINAL_RESPONSE, struct.pack(">HHB", 1, 0x8105, 0)))
    [(_, body)] = transport.replies()
    assert general_response(body) == (5, 0x0900, codec.RESULT_UNSUPPORTED)


async def test_bad_body_gets_message_error_reply() -> None:
    gateway, _ = make_gateway()
    protocol, transport = await authenticated(gateway)
    protocol.data_received(frame(codec.MSG_LOCATION, b"\x00" * 10, serial=6))
    [(_, body)] = transport.replies()
    assert general_response(body) == (6, codec.MSG_LOCATION, codec.RESULT_MESSAGE_ERROR)
    assert metric(gateway, "skipwatch_jt808_malformed_frames_total", reason="bad_body") == 1


async def test_2019_terminal_gets_2019_replies() -> None:
    gateway, _ = make_gateway()
    protocol, transport = connect(gateway)
    phone = "00000000013800138000"
    protocol.data_received(frame(codec.MSG_HEARTBEAT, serial=3, phone=phone, version_2019=True))
    [(header, _)] = transport.replies()
    assert header.version_2019 and header.protocol_version == 1
    assert header.phone_raw == codec.phone_bcd(phone, version_2019=True)


async def test_unknown_device_refused_when_only_listed_devices_are_accepted() -> None:
    config = VendorConfig.model_validate(
        {"accept_unknown_devices": False, "devices": {"13900000000": {"device_id": "car-9"}}}
    )
    gateway, sink = make_gateway(config=config)
    protocol, transport = connect(gateway)
    register = codec.encode_register_body(maker="A", model="B", terminal_id="C", plate="")
    protocol.data_received(frame(codec.MSG_REGISTER, register, serial=1))
    [(_, body)] = transport.replies()
    assert (
        struct.unpack_from(">HB", body) == (1, codec.REGISTER_TERMINAL_UNKNOWN) and len(body) == 3
    )
    known, _ = await authenticated(gateway, phone="13900000000")
    known.data_received(frame(codec.MSG_LOCATION, location_body(), phone="13900000000"))
    await settle()
    assert [p.device_id for p in sink.pings] == ["car-9"]


async def test_garbage_is_counted_and_a_flood_closes_the_link() -> None:
    gateway, _ = make_gateway(max_errors_per_connection=5)
    protocol, transport = connect(gateway)
    good = bytearray(frame(codec.MSG_HEARTBEAT))
    good[-2] ^= 0xFF
    protocol.data_received(bytes(good) * 4)
    assert transport.replies() == [] and not transport.closed
    assert metric(gateway, "skipwatch_jt808_malformed_frames_total", reason="bad_checksum") == 4
    protocol.data_received(b"\x7e\x01\x7e")
    assert transport.closed
    assert gateway.connection_count == 0


async def test_backpressure_pauses_reading_until_the_sink_catches_up() -> None:
    release = asyncio.Event()
    stored: list[GpsPing] = []

    async def slow_sink(pings: list[GpsPing]) -> None:
        await release.wait()
        stored.extend(pings)

    gateway, _ = make_gateway(sink=slow_sink, max_inflight_per_connection=4)
    protocol, transport = await authenticated(gateway)
    protocol.data_received(
        b"".join(frame(codec.MSG_LOCATION, location_body(), serial=s) for s in range(10, 14))
    )
    await settle()
    assert transport.reading_paused and transport.replies() == []
    release.set()
    await settle()
    assert not transport.reading_paused
    assert [general_response(b)[0] for _, b in transport.replies()] == [10, 11, 12, 13]
    assert len(stored) == 4


async def test_pings_from_many_connections_share_sink_calls() -> None:
    gateway, sink = make_gateway()
    links = [await authenticated(gateway, phone=f"1390000{i:04d}") for i in range(50)]
    for i, (protocol, _) in enumerate(links):
        protocol.data_received(
            frame(codec.MSG_LOCATION, location_body(), serial=2, phone=f"1390000{i:04d}")
        )
    await settle()
    assert len(sink.pings) == 50 and sink.calls == 1
    assert all(len(t.replies()) == 1 for _, t in links)


async def test_internal_error_costs_one_frame_only(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _ = make_gateway()
    protocol, transport = connect(gateway)

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("services.jt808.gateway.parse_body", boom)
    protocol.data_received(frame(codec.MSG_HEARTBEAT, serial=1))
    monkeypatch.undo()
    protocol.data_received(frame(codec.MSG_HEARTBEAT, serial=2))
    assert [general_response(b)[0] for _, b in transport.replies()] == [2]
    assert metric(gateway, "skipwatch_jt808_malformed_frames_total", reason="internal") == 1


async def test_connection_limit_and_idle_timeout_on_real_sockets() -> None:
    gateway, _ = make_gateway(max_connections=2, idle_timeout_s=0.2)
    port = await gateway.start("127.0.0.1", 0)
    try:
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        # The third is accepted by the kernel, then closed by the gateway.
        assert await asyncio.wait_for(streams[2][0].read(), 2) == b""
        assert gateway.connection_count == 2
        assert (
            metric(gateway, "skipwatch_jt808_connection_events_total", event="refused_limit") == 1
        )
        # Keep one link busy with heartbeats; the silent one is closed as idle.
        reader, writer = streams[0]
        for serial in range(6):
            writer.write(frame(codec.MSG_HEARTBEAT, serial=serial))
            await writer.drain()
            await asyncio.wait_for(reader.read(64), 2)
            await asyncio.sleep(0.06)
        assert await asyncio.wait_for(streams[1][0].read(), 2) == b""
        assert gateway.connection_count == 1
        assert metric(gateway, "skipwatch_jt808_connection_events_total", event="closed_idle") >= 1
        assert metric(gateway, "skipwatch_jt808_connections") == 1
    finally:
        for _, w in streams:
            w.close()
        await gateway.close()


def test_runs_on_uvloop() -> None:
    """The CLI serves on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def session() -> list[tuple[int, int, int]]:
        gateway, _ = make_gateway(require_auth=False)
        port = await gateway.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                frame(codec.MSG_HEARTBEAT, serial=5)
                + frame(codec.MSG_LOCATION, location_body(), serial=6)
            )
            splitter, frames = codec.FrameSplitter(), []
            while len(frames) < 2:
                frames += splitter.feed(await asyncio.wait_for(reader.read(256), 5))
            writer.close()
            return [general_response(codec.decode_frame(f).body) for f in frames]
        finally:
            await gateway.close()

    assert uvloop.run(session()) == [(5, codec.MSG_HEARTBEAT, 0), (6, codec.MSG_LOCATION, 0)]
