"""Bounded fuzzing of the decoder in the suite (the long run is benchmarks/fuzz_jt808.py).

Property: whatever bytes arrive, decoding raises nothing but FrameError, mapping nothing
but PingRejected, and a gateway connection never hits an internal error.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.jt808 import codec
from services.jt808.cli import decode_hex
from services.jt808.mapping import DeviceDirectory, VendorConfig
from tests.unit.jt808 import support
from tests.unit.jt808.support import FakeTransport, load_vectors
from tests.unit.jt808.test_gateway import make_gateway

pytestmark = pytest.mark.unit

DIRECTORY = DeviceDirectory(VendorConfig())
SEEDS = [bytes.fromhex(c["frame"]) for c in load_vectors()["decode"]]


def decode_everything(data: bytes) -> None:
    support.decode_everything(data, DIRECTORY)


def reframe(payload: bytes) -> bytes:
    """Valid escaping and check code around any payload, so parsers past the check see it."""
    return b"\x7e" + codec.escape(payload + bytes((codec.checksum(payload),))) + b"\x7e"


@st.composite
def plausible_frames(draw: st.DrawFn) -> bytes:
    msg_id = draw(st.sampled_from([0x0002, 0x0003, 0x0100, 0x0102, 0x0200, 0x0704, 0x0001, 0x0900]))
    body = draw(st.binary(max_size=300))
    if msg_id == 0x0200 and draw(st.booleans()):
        body = draw(st.binary(min_size=28, max_size=28)) + body[:60]
    version_2019 = draw(st.booleans())
    props = len(body) | (0x4000 if draw(st.booleans()) or version_2019 else 0)
    head = struct.pack(">HH", msg_id, props)
    if version_2019:
        head += b"\x01" + draw(st.binary(min_size=10, max_size=10))
    else:
        head += draw(st.binary(min_size=6, max_size=6))
    head += struct.pack(">H", draw(st.integers(0, 0xFFFF)))
    if draw(st.integers(0, 4)) == 0:
        head = head[:2] + struct.pack(">H", props | 0x2000) + head[4:]
        head += struct.pack(">HH", draw(st.integers(0, 5)), draw(st.integers(0, 5)))
    return reframe(head + body)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data = data[:pos]
    if draw(st.booleans()):
        # Fix the envelope so the mutation reaches the header and body parsers.
        inner = bytes(data).strip(b"\x7e").replace(b"\x7e", b"")
        try:
            payload = codec.unescape(inner)[:-1]
        except codec.FrameError:
            payload = inner
        return reframe(payload)
    return bytes(data)


# About 3,500 examples in all: enough to catch regressions in a suite that runs in seconds.
FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(FUZZ, max_examples=1000)
@given(st.binary(max_size=2500))
def test_random_bytes(data: bytes) -> None:
    decode_everything(data)
    decode_everything(b"\x7e" + data + b"\x7e")


@FUZZ
@given(plausible_frames())
def test_structured_frames(data: bytes) -> None:
    decode_everything(data)


@FUZZ
@given(mutated())
def test_mutated_vectors(data: bytes) -> None:
    decode_everything(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(mutated(), plausible_frames(), st.binary(max_size=200)), max_size=8))
def test_decode_cli_never_crashes(chunks: list[bytes]) -> None:
    for result in decode_hex(b"".join(chunks).hex(), VendorConfig()):
        assert isinstance(result, dict)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(mutated(), plausible_frames(), st.binary(max_size=200)), max_size=10))
def test_connection_survives_any_stream(chunks: list[bytes]) -> None:
    gateway, _ = make_gateway(require_auth=False, max_errors_per_connection=10_000)

    async def feed() -> None:
        protocol = gateway.new_connection()
        protocol.connection_made(FakeTransport())
        for chunk in chunks:
            protocol.data_received(chunk)
        await asyncio.sleep(0)  # let the batcher run its sink call

    asyncio.run(feed())
    internal = gateway.metrics.registry.get_sample_value(
        "skipwatch_jt808_malformed_frames_total", {"reason": "internal"}
    )
    assert not internal


@given(st.binary(max_size=1500))
@settings(max_examples=500, deadline=None)
def test_escape_round_trip(data: bytes) -> None:
    escaped = codec.escape(data)
    assert b"\x7e" not in escaped
    assert codec.unescape(escaped) == data
