"""Codec edge cases: escaping, stream framing, editions and the version quirk, split
messages, bodies of every edition, and the bounded FrameError reasons."""

from __future__ import annotations

import struct
from datetime import datetime

import pytest

from services.jt808 import codec
from services.jt808.codec import FrameError
from tests.unit.jt808.support import PHONE, frame, location_body

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ escaping and check code


def test_escape_example_from_the_brief() -> None:
    assert codec.escape(bytes.fromhex("307e087d55")) == bytes.fromhex("307d02087d0155")
    assert codec.unescape(bytes.fromhex("307d02087d0155")) == bytes.fromhex("307e087d55")


def test_escape_of_an_escape_byte_followed_by_02_round_trips() -> None:
    raw = bytes.fromhex("7d02")  # would be misread if 7D 01 were undone first
    assert codec.unescape(codec.escape(raw)) == raw


@pytest.mark.parametrize("bad", ["7d", "7d03", "017d", "7d7d01"])
def test_bad_escape_sequences(bad: str) -> None:
    with pytest.raises(FrameError) as err:
        codec.unescape(bytes.fromhex(bad))
    assert err.value.reason == "bad_escape"


def test_checksum_mismatch() -> None:
    wire = bytearray(frame(codec.MSG_HEARTBEAT))
    wire[-2] ^= 0x01
    with pytest.raises(FrameError) as err:
        codec.decode_frame(bytes(wire))
    assert err.value.reason == "bad_checksum"


def test_checksum_byte_that_needs_escaping() -> None:
    # Find a serial whose check code is 0x7E, so the check code itself is escaped.
    for serial in range(65536):
        wire = frame(codec.MSG_HEARTBEAT, serial=serial)
        if wire.endswith(b"\x7d\x02\x7e"):
            break
    else:  # pragma: no cover
        pytest.fail("no serial gives check code 0x7E")
    assert codec.decode_frame(wire).header.serial == serial


# ------------------------------------------------------------------ stream framing


def test_splitter_handles_many_frames_in_one_read_and_one_frame_in_many() -> None:
    a, b = frame(codec.MSG_HEARTBEAT, serial=1), frame(codec.MSG_HEARTBEAT, serial=2)
    splitter = codec.FrameSplitter()
    assert splitter.feed(b"junk" + a + b[:5]) == [a[1:-1]]
    assert splitter.feed(b[5:9]) == []
    assert splitter.feed(b[9:]) == [b[1:-1]]
    assert splitter.buffered == 0


def test_splitter_byte_by_byte() -> None:
    wire = frame(codec.MSG_LOCATION, location_body(), serial=7) * 3
    splitter = codec.FrameSplitter()
    frames = [f for i in range(len(wire)) for f in splitter.feed(wire[i : i + 1])]
    assert [codec.decode_frame(f).header.serial for f in frames] == [7, 7, 7]


def test_splitter_accepts_frames_sharing_a_flag() -> None:
    a = frame(codec.MSG_HEARTBEAT, serial=1)
    b = frame(codec.MSG_HEARTBEAT, serial=2)
    assert codec.FrameSplitter().feed(a + b[1:]) == [a[1:-1], b[1:-1]]


def test_splitter_bounds_its_buffer() -> None:
    splitter = codec.FrameSplitter()
    assert splitter.feed(b"\x7e" + b"\x00" * 5000) == []
    assert splitter.oversize_discards == 1
    assert splitter.buffered == 0
    # ...and recovers on the next frame.
    good = frame(codec.MSG_HEARTBEAT)
    assert splitter.feed(b"\x00" * 10 + good) == [good[1:-1]]


def test_splitter_drops_overlong_complete_runs() -> None:
    splitter = codec.FrameSplitter()
    assert splitter.feed(b"\x7e" + b"\x01" * 2500 + b"\x7e") == []
    assert splitter.oversize_discards == 1


# ------------------------------------------------------------------ headers and editions


def test_2019_header() -> None:
    wire = frame(codec.MSG_HEARTBEAT, serial=300, phone="12345678901234567890", version_2019=True)
    h = codec.decode_frame(wire).header
    assert (h.version_2019, h.version_flag, h.protocol_version) == (True, True, 1)
    assert h.phone == "12345678901234567890"
    assert h.serial == 300


def test_2019_flag_on_a_2013_body_falls_back_to_2013_layout() -> None:
    """The quirk: bit 14 set, but the header is the 12-byte 2013 one."""
    body = location_body()
    payload = (
        struct.pack(">HH", codec.MSG_LOCATION, len(body) | 0x4000)
        + codec.phone_bcd(PHONE)
        + struct.pack(">H", 9)
        + body
    )
    wire = b"\x7e" + codec.escape(payload + bytes((codec.checksum(payload),))) + b"\x7e"
    decoded = codec.decode_frame(wire)
    assert decoded.header.version_flag is True
    assert decoded.header.version_2019 is False
    assert decoded.header.phone == "0" + PHONE
    assert decoded.header.serial == 9
    assert decoded.body == body


def test_body_length_that_fits_no_layout() -> None:
    payload = struct.pack(">HH", codec.MSG_HEARTBEAT, 5) + codec.phone_bcd(PHONE) + b"\x00\x01"
    wire = codec.escape(payload + bytes((codec.checksum(payload),)))
    with pytest.raises(FrameError) as err:
        codec.decode_frame(wire)
    assert err.value.reason == "bad_length"


def test_too_short() -> None:
    with pytest.raises(FrameError) as err:
        codec.decode_frame(bytes.fromhex("000200"))
    assert err.value.reason == "too_short"


def test_non_bcd_phone_is_kept_as_hex() -> None:
    payload = (
        struct.pack(">HH", codec.MSG_HEARTBEAT, 0) + bytes.fromhex("0a0bffc0ffee") + b"\x00\x01"
    )
    wire = codec.escape(payload + bytes((codec.checksum(payload),)))
    assert codec.decode_frame(wire).header.phone == "0a0bffc0ffee"


def test_encrypted_body_is_refused() -> None:
    body = location_body()
    payload = (
        struct.pack(">HH", codec.MSG_LOCATION, len(body) | 0x0400)
        + codec.phone_bcd(PHONE)
        + struct.pack(">H", 1)
        + body
    )
    decoded = codec.decode_frame(codec.escape(payload + bytes((codec.checksum(payload),))))
    assert decoded.header.encryption == 1
    with pytest.raises(FrameError) as err:
        codec.parse_body(decoded)
    assert err.value.reason == "encrypted"


# ------------------------------------------------------------------ split messages


def _split(msg_id: int, body: bytes, *, first_serial: int, size: int) -> list[bytes]:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return [
        frame(msg_id, chunk, serial=first_serial + i, split=(len(chunks), i + 1))
        for i, chunk in enumerate(chunks)
    ]


def test_split_batch_reassembles_in_any_order() -> None:
    points = [location_body(lat=30 + i / 100) for i in range(40)]
    body = codec.encode_batch_body(points, batch_type=1)
    assert len(body) > 1023  # too big for one frame: it has to be split
    packets = _split(codec.MSG_BATCH, body, first_serial=65534, size=500)  # serial wraps
    assembler = codec.SplitAssembler()
    results = [assembler.add(codec.decode_frame(p)) for p in reversed(packets)]
    assert results[:-1] == [None] * (len(packets) - 1)
    whole = results[-1]
    assert whole is not None and whole.header.serial == 65534
    batch = codec.parse_body(whole)
    assert isinstance(batch, codec.Batch) and batch.backfill
    assert [round(p.lat, 2) for p in batch.locations] == [round(30 + i / 100, 2) for i in range(40)]
    assert assembler.pending == 0


def test_split_assembler_is_bounded() -> None:
    assembler = codec.SplitAssembler(max_packets=64, max_pending=4)
    for serial in range(0, 100, 2):  # 50 messages that never complete
        assert (
            assembler.add(codec.decode_frame(frame(0x0704, b"x", serial=serial, split=(2, 1))))
            is None
        )
    assert assembler.pending == 4
    with pytest.raises(FrameError) as err:
        assembler.add(codec.decode_frame(frame(0x0704, b"x", split=(65, 1))))
    assert err.value.reason == "split_too_large"


@pytest.mark.parametrize("split", [(0, 0), (3, 0), (3, 4)])
def test_bad_split_numbers(split: tuple[int, int]) -> None:
    with pytest.raises(FrameError) as err:
        codec.decode_frame(frame(0x0704, b"x", split=split))
    assert err.value.reason == "bad_split"


# ------------------------------------------------------------------ bodies


def test_register_2011_layout() -> None:
    body = (
        struct.pack(">HH", 44, 100)
        + b"MAKER"
        + b"M-2011\x00\x00"
        + b"TID0001"
        + b"\x01"
        + "京A12345".encode("gbk")
    )
    reg = codec.parse_register(body, version_2019=False)
    assert (reg.province, reg.city, reg.maker, reg.model, reg.terminal_id) == (
        44,
        100,
        "MAKER",
        "M-2011",
        "TID0001",
    )
    assert (reg.plate_color, reg.plate) == (1, "京A12345")


def test_register_2019_layout() -> None:
    body = (
        struct.pack(">HH", 0, 0)
        + b"MAKER-2019\x00"
        + b"MODEL".ljust(30, b"\x00")
        + b"TERMINAL-ID".ljust(30, b" ")
        + b"\x00"
    )
    reg = codec.parse_register(body, version_2019=True)
    assert (reg.maker, reg.model, reg.terminal_id, reg.plate) == (
        "MAKER-2019",
        "MODEL",
        "TERMINAL-ID",
        "",
    )


def test_register_too_short() -> None:
    with pytest.raises(FrameError):
        codec.parse_register(b"\x00" * 10, version_2019=False)


def test_auth_2019_with_imei_and_version() -> None:
    body = b"\x06" + b"abc123" + b"861234567890123" + b"V1.2".ljust(20, b"\x00")
    auth = codec.parse_auth(body, version_2019=True)
    assert (auth.code, auth.imei, auth.software_version) == ("abc123", "861234567890123", "V1.2")


def test_auth_2019_terminal_sending_the_bare_code() -> None:
    assert codec.parse_auth(b"abc123", version_2019=True).code == "abc123"


def test_location_items_unknown_and_truncated() -> None:
    items = (
        codec.Item(0x01, b"\x00\x00\x00\x64"),
        codec.Item(0xF1, b"89860012345"),
        codec.Item(0x30, b"\x17"),
    )
    body = location_body(items=items) + b"\x31\x05\x01"  # last item claims more than is there
    loc = codec.parse_location(body)
    assert [i.id for i in loc.items] == [0x01, 0xF1, 0x30]
    assert loc.mileage_km == 10.0
    assert loc.items_truncated is True


def test_location_south_west_and_zero_time() -> None:
    body = location_body(lat=-33.868820, lon=-151.209296)
    loc = codec.parse_location(body[:22] + b"\x00" * 6)
    assert (loc.lat, loc.lon) == (-33.86882, -151.209296)
    assert loc.time is None and loc.raw_time == "000000000000"


@pytest.mark.parametrize("raw_time", ["991399000000", "2405011261aa", "240230000000"])
def test_location_impossible_time_is_none(raw_time: str) -> None:
    body = location_body()[:22] + bytes.fromhex(raw_time)
    assert codec.parse_location(body).time is None


def test_location_too_short() -> None:
    with pytest.raises(FrameError) as err:
        codec.parse_location(b"\x00" * 27)
    assert err.value.reason == "bad_body"


def test_batch_keeps_good_points_around_a_short_one() -> None:
    good = location_body(time=datetime(2024, 1, 2, 3, 4, 5))
    body = codec.encode_batch_body([good, b"\x00" * 10, good], batch_type=0)
    batch = codec.parse_batch(body)
    assert len(batch.locations) == 2 and batch.bad_items == 1 and not batch.backfill


@pytest.mark.parametrize(
    "body",
    [
        b"\x00",  # shorter than count + type
        b"\x00\x02\x01" + b"\x00\x1c" + b"\x00" * 28,  # count 2, one item
        b"\x00\x01\x01" + b"\x00\x40" + b"\x00" * 28,  # item length past the end
        b"\x00\x01\x01" + b"\x00\x1c" + b"\x00" * 29,  # trailing byte
    ],
)
def test_batch_structure_errors(body: bytes) -> None:
    with pytest.raises(FrameError) as err:
        codec.parse_batch(body)
    assert err.value.reason == "bad_body"


def test_terminal_response_and_unsupported() -> None:
    resp = codec.parse_body(codec.decode_frame(frame(0x0001, struct.pack(">HHB", 5, 0x8105, 0))))
    assert resp == codec.TerminalResponse(5, 0x8105, 0)
    other = codec.parse_body(codec.decode_frame(frame(0x0900, b"\x01\x02")))
    assert other == codec.Unsupported(b"\x01\x02")


def test_encode_refuses_overlong_body() -> None:
    with pytest.raises(ValueError):
        frame(codec.MSG_BATCH, b"\x00" * 1024)


def test_reply_to_a_2019_terminal_echoes_version_and_phone() -> None:
    phone_raw = codec.phone_bcd("12345678901234567890", version_2019=True)
    wire = codec.encode_general_response(
        phone_raw=phone_raw, serial=3, reply_serial=9, reply_msg_id=0x0200, protocol_version=1
    )
    h = codec.decode_frame(wire).header
    assert h.version_2019 and h.phone_raw == phone_raw and h.serial == 3
