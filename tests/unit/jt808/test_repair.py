"""Frames from trackers that do not escape 0x7e inside the frame (captures vendored from
Traccar's decoder tests, tests/fixtures/jt808/unescaped_7e.json): joined again when the join's
check code verifies, in the stream reader, the gateway and `skipwatch jt808 decode`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.jt808 import codec
from services.jt808.cli import decode_hex
from services.jt808.codec import Frame, FrameError, FrameReader, Location, ReadFrame, parse_body
from services.jt808.mapping import VendorConfig
from tests.unit.jt808.support import frame, location_body
from tests.unit.jt808.test_gateway import authenticated, make_gateway, metric, settle

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parents[2] / "fixtures" / "jt808" / "unescaped_7e.json"
CAPTURES: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["frames"]


def ids(case: dict[str, Any]) -> str:
    return str(case["name"])


def frames_of(results: list[ReadFrame]) -> list[Frame]:
    return [r.result for r in results if isinstance(r.result, Frame)]


def check(decoded: Frame, expect: dict[str, Any]) -> None:
    assert decoded.header.msg_id == expect["msg_id"]
    assert decoded.header.phone == expect["phone"]
    assert decoded.header.serial == expect["serial"]
    location = parse_body(decoded)
    assert isinstance(location, Location)
    assert (location.lat, location.lon) == (expect["lat"], expect["lon"])
    assert location.time is not None and location.time.isoformat() == expect["time"]


def test_the_captures_do_not_decode_when_split_at_every_flag() -> None:
    for case in CAPTURES:
        data = bytes.fromhex(case["hex"])
        parts = [p for p in codec.FrameSplitter().feed(data) if p]
        assert len(parts) == case["unescaped_flags"] + 1
        for part in parts:
            with pytest.raises(FrameError):
                codec.decode_frame(part)


@pytest.mark.parametrize("case", CAPTURES, ids=ids)
def test_a_capture_is_joined_when_its_check_code_verifies(case: dict[str, Any]) -> None:
    reader = FrameReader()
    results = reader.feed(bytes.fromhex(case["hex"]))
    assert [type(r.result) for r in results] == [Frame]
    check(frames_of(results)[0], case["expect"])
    assert reader.repairs == 1


@pytest.mark.parametrize("case", CAPTURES, ids=ids)
def test_a_capture_cut_by_tcp_at_its_unescaped_flag_is_still_joined(
    case: dict[str, Any],
) -> None:
    data = bytes.fromhex(case["hex"])
    cut = data.index(b"\x7e", 1) + 1  # right after the first unescaped flag
    reader = FrameReader()
    assert reader.feed(data[:cut]) == []  # held: the rest may follow
    results = reader.feed(data[cut:])
    assert [type(r.result) for r in results] == [Frame]
    check(frames_of(results)[0], case["expect"])


def test_good_frames_around_a_repaired_one_are_untouched_and_bad_ones_still_fail() -> None:
    good = frame(codec.MSG_LOCATION, location_body(), serial=5)
    corrupt = bytearray(frame(codec.MSG_LOCATION, location_body(), serial=6))
    corrupt[20] ^= 0xFF  # a flipped byte: no join can mend this
    capture = bytes.fromhex(CAPTURES[0]["hex"])
    reader = FrameReader()
    results = reader.feed(good + capture + bytes(corrupt) + good)
    kinds = [r.result.reason if isinstance(r.result, FrameError) else "Frame" for r in results]
    assert kinds == ["Frame", "Frame", "bad_checksum", "Frame"]
    assert [f.header.serial for f in frames_of(results)] == [5, CAPTURES[0]["expect"]["serial"], 5]
    assert reader.repairs == 1


def test_a_corrupt_frame_of_its_declared_length_is_reported_at_once() -> None:
    corrupt = bytearray(frame(codec.MSG_LOCATION, location_body(), serial=6))
    corrupt[20] ^= 0xFF
    reader = FrameReader()
    [read] = reader.feed(bytes(corrupt))
    assert isinstance(read.result, FrameError) and read.result.reason == "bad_checksum"
    assert reader.held == 0


def test_a_short_last_part_waits_for_more_bytes_then_is_reported() -> None:
    whole = frame(codec.MSG_LOCATION, location_body(), serial=6)
    reader = FrameReader()
    assert reader.feed(whole[:30] + b"\x7e") == []  # may be the first half of an unescaped frame
    assert reader.held > 0
    good = frame(codec.MSG_LOCATION, location_body(), serial=7)
    results = reader.feed(good)
    kinds = [r.result.reason if isinstance(r.result, FrameError) else "Frame" for r in results]
    assert kinds == ["bad_checksum", "Frame"]
    assert reader.held == 0


def test_joins_stop_at_the_maximum_frame_length() -> None:
    # Garbage full of flags: nothing is joined beyond one frame's length, and nothing is held.
    garbage = (b"\x7e" + b"\x01" * 40) * 200 + b"\x7e"
    reader = FrameReader()
    results = reader.feed(garbage)
    assert all(isinstance(r.result, FrameError) for r in results)
    assert reader.held <= codec.MAX_ESCAPED_FRAME_LENGTH + 1
    assert reader.repairs == 0


async def test_gateway_stores_a_repaired_location_and_counts_the_repair() -> None:
    case = CAPTURES[1]
    clock = datetime(2021, 11, 29, 3, 18, 0, tzinfo=UTC)  # the capture's time is GMT+8
    gateway, sink = make_gateway()
    gateway.clock = lambda: clock
    protocol, _ = await authenticated(gateway, phone=case["expect"]["phone"])
    protocol.data_received(bytes.fromhex(case["hex"]))
    await settle()
    [ping] = sink.pings
    assert (ping.lat, ping.lon) == (case["expect"]["lat"], case["expect"]["lon"])
    assert metric(gateway, "skipwatch_jt808_frames_repaired_total", message="location") == 1
    assert metric(gateway, "skipwatch_jt808_malformed_frames_total", reason="bad_checksum") == 0


def test_cli_decode_joins_unescaped_frames() -> None:
    case = CAPTURES[2]
    [message] = decode_hex(case["hex"], VendorConfig())
    assert message["msg_id"] == case["expect"]["msg_id"]
    assert message["repaired"] == "unescaped_flag"
    assert message["location"]["lat"] == case["expect"]["lat"]


async def test_bytes_held_when_the_connection_closes_count_as_malformed() -> None:
    gateway, _ = make_gateway()
    protocol, _ = await authenticated(gateway)
    whole = frame(codec.MSG_LOCATION, location_body(), serial=6)
    protocol.data_received(whole[:30] + b"\x7e")
    assert metric(gateway, "skipwatch_jt808_malformed_frames_total", reason="bad_checksum") == 0
    protocol.connection_lost(None)
    assert metric(gateway, "skipwatch_jt808_malformed_frames_total", reason="bad_checksum") == 1
