"""Helpers shared by the JT/T 808 unit tests: vectors, frame builders, a fake transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.jt808 import codec
from services.jt808.mapping import DeviceDirectory, PingRejected, describe_message, location_to_ping

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS_PATH = REPO_ROOT / "tests" / "fixtures" / "jt808" / "vectors.json"


def load_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data


PHONE = "13800138000"
PHONE_RAW = codec.phone_bcd(PHONE)


def frame(
    msg_id: int,
    body: bytes = b"",
    *,
    serial: int = 1,
    phone: str = PHONE,
    version_2019: bool = False,
    split: tuple[int, int] | None = None,
) -> bytes:
    return codec.encode_frame(
        msg_id=msg_id,
        phone_raw=codec.phone_bcd(phone, version_2019=version_2019),
        serial=serial,
        body=body,
        protocol_version=1 if version_2019 else None,
        split=split,
    )


def location_body(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "lat": 31.230416,
        "lon": 121.473701,
        "time": datetime(2024, 5, 1, 12, 30, 0),
        "speed_kmh": 42.5,
        "heading": 90,
    }
    fields.update(overrides)
    return codec.encode_location_body(**fields)


class FakeTransport(asyncio.Transport):
    """Records writes; the protocol under test never touches a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading_paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def replies(self) -> list[tuple[codec.Header, bytes]]:
        """Every frame written so far, decoded; clears the buffer."""
        frames = codec.FrameSplitter().feed(bytes(self.written))
        self.written.clear()
        out = []
        for raw in frames:
            decoded = codec.decode_frame(raw)
            out.append((decoded.header, decoded.body))
        return out


def general_response(body: bytes) -> tuple[int, int, int]:
    """(reply serial, reply msg id, result) of a 0x8001 body."""
    serial, msg_id, result = struct.unpack(">HHB", body)
    return serial, msg_id, result


FUZZ_RECEIVED_AT = datetime(2024, 1, 1, tzinfo=UTC)


def decode_everything(data: bytes, directory: DeviceDirectory, *, backfill: bool = False) -> None:
    """The fuzzing property, shared by the suite and benchmarks/fuzz_jt808.py: the full receive
    path minus the socket (split, decode, reassemble, parse, describe, map to GpsPing) raises
    nothing but FrameError with a documented reason and PingRejected."""
    assembler = codec.SplitAssembler()
    for raw in codec.FrameSplitter().feed(data):
        try:
            whole = assembler.add(codec.decode_frame(raw))
            if whole is None:
                continue
            body = codec.parse_body(whole)
        except codec.FrameError as exc:
            if exc.reason not in codec.FrameErrorReason.__args__:  # type: ignore[attr-defined]
                raise AssertionError(f"unknown reason {exc.reason!r}") from exc
            continue
        identity = directory.resolve(whole.header.phone)
        assert identity is not None
        describe_message(whole, body, identity)
        locations: tuple[codec.Location, ...] = ()
        if isinstance(body, codec.Location):
            locations = (body,)
        elif isinstance(body, codec.Batch):
            locations = body.locations
        for loc in locations:
            with contextlib.suppress(PingRejected):
                location_to_ping(
                    loc,
                    identity=identity,
                    phone=whole.header.phone,
                    received_at=FUZZ_RECEIVED_AT,
                    backfill=backfill,
                )
