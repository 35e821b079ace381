"""JT/T 808 wire codec: framing, escaping, check code, headers and the bodies a gateway reads.

Pure functions and small value types, no IO. Every malformed input raises `FrameError`
whose `reason` is one of a fixed set of short codes (usable as a metric label).
Layouts follow /work/shared/jt808/BRIEF.md; all WORD/DWORD fields are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import xor
from typing import Literal, NamedTuple, TypeAlias

FLAG = 0x7E
_FLAG_BYTE = b"\x7e"

MSG_TERMINAL_RESPONSE = 0x0001
MSG_HEARTBEAT = 0x0002
MSG_LOGOUT = 0x0003
MSG_REGISTER = 0x0100
MSG_AUTH = 0x0102
MSG_LOCATION = 0x0200
MSG_BATCH = 0x0704
MSG_PLATFORM_RESPONSE = 0x8001
MSG_REGISTER_RESPONSE = 0x8100

# Bounded names for logs, JSON and metric labels; anything else is "other".
MESSAGE_NAMES: dict[int, str] = {
    MSG_TERMINAL_RESPONSE: "terminal_response",
    MSG_HEARTBEAT: "heartbeat",
    MSG_LOGOUT: "logout",
    MSG_REGISTER: "register",
    MSG_AUTH: "auth",
    MSG_LOCATION: "location",
    MSG_BATCH: "batch",
    MSG_PLATFORM_RESPONSE: "platform_response",
    MSG_REGISTER_RESPONSE: "register_response",
}

# 0x8001 / 0x0001 result codes.
RESULT_OK = 0
RESULT_FAILURE = 1
RESULT_MESSAGE_ERROR = 2
RESULT_UNSUPPORTED = 3

# 0x8100 result codes.
REGISTER_OK = 0
REGISTER_TERMINAL_UNKNOWN = 4

MAX_BODY_LENGTH = 0x3FF
# Largest unescaped frame: 2019 split header (21) + body (1023) + check code (1).
MAX_FRAME_LENGTH = 21 + MAX_BODY_LENGTH + 1
# Escaping can at most double it; anything longer between two flags is not a frame.
MAX_ESCAPED_FRAME_LENGTH = 2 * MAX_FRAME_LENGTH

FrameErrorReason = Literal[
    "too_short",
    "too_long",
    "bad_escape",
    "bad_checksum",
    "bad_length",
    "bad_split",
    "split_too_large",
    "encrypted",
    "bad_body",
    "oversize",
]


class FrameError(ValueError):
    """A frame or body that cannot be decoded; `reason` is a short, bounded code."""

    def __init__(self, reason: FrameErrorReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: FrameErrorReason = reason
        self.detail = detail


# --------------------------------------------------------------------------- escaping


def escape(data: bytes) -> bytes:
    """0x7D -> 7D 01 first, then 0x7E -> 7D 02 (the other order would re-escape)."""
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """Inverse of `escape`; a 0x7D not followed by 01 or 02 is a `bad_escape`."""
    if b"\x7d" not in data:
        return data
    # In a well-formed escaped stream every 0x7D starts a pair, so counts must agree.
    if data.count(b"\x7d") != data.count(b"\x7d\x01") + data.count(b"\x7d\x02"):
        raise FrameError("bad_escape")
    # 7D 02 first: after 7D 01 -> 7D a following 02 would otherwise be misread.
    return data.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")


def checksum(data: bytes) -> int:
    """XOR of every byte (header through body, unescaped)."""
    return reduce(xor, data, 0)


# --------------------------------------------------------------------------- stream framing


class FrameSplitter:
    """Cuts a TCP byte stream into escaped frame contents (bytes between two 0x7E flags).

    Bytes before the first flag are skipped, empty frames dropped. A run longer than any
    legal frame is discarded (counted in `oversize_discards`) so one connection's buffer
    stays bounded whatever a peer sends.
    """

    __slots__ = ("_pending", "_synced", "oversize_discards")

    def __init__(self) -> None:
        self._pending = b""
        self._synced = False
        self.oversize_discards = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The complete frames (non-empty runs between flags) in order."""
        return [p for p in self.feed_parts(data) if p]

    def feed_parts(self, data: bytes) -> list[bytes | None]:
        """Every complete run between two flags in order: b"" between adjacent flags, None for
        a run longer than any frame (discarded and counted)."""
        buf = self._pending + data if self._pending else data
        if not self._synced:
            start = buf.find(_FLAG_BYTE)
            if start < 0:
                self._pending = b""
                return []
            buf = buf[start + 1 :]
            self._synced = True
        parts: list[bytes | None] = buf.split(_FLAG_BYTE)  # type: ignore[assignment]
        tail = parts.pop()
        assert tail is not None
        if len(tail) > MAX_ESCAPED_FRAME_LENGTH:
            # No closing flag in sight: throw the run away and resynchronise on the next flag.
            self.oversize_discards += 1
            tail = b""
            self._synced = False
        self._pending = tail
        for index, part in enumerate(parts):
            if part is not None and len(part) > MAX_ESCAPED_FRAME_LENGTH:
                self.oversize_discards += 1
                parts[index] = None
        return parts

    @property
    def buffered(self) -> int:
        return len(self._pending)


# --------------------------------------------------------------------------- non-conforming frames

# Errors a frame cut at a 0x7E its tracker did not escape shows: its first part misses the rest
# (bad check code or length, or too short), and so do the parts after it.
REPAIRABLE: frozenset[str] = frozenset({"bad_checksum", "bad_length", "too_short"})
REPAIR_UNESCAPED_FLAG = "unescaped_flag"


class ReadFrame(NamedTuple):
    raw: bytes  # the escaped bytes between the flags (joined again when repaired)
    result: Frame | FrameError
    repaired: bool = False


_WAIT = object()  # a join might still complete with bytes not yet received


def _xor_unescaped(part: bytes) -> int | None:
    """XOR of a part's unescaped bytes, or None when its escaping is broken."""
    try:
        return checksum(unescape(part))
    except FrameError:
        return None


class FrameReader:
    """Decoded frames from a TCP byte stream, mending frames of non-conforming trackers.

    Some trackers do not escape 0x7E inside the frame, so the stream is cut there too. When a
    part fails its check code (or length), the part is joined with the following part(s),
    the 0x7E bytes put back, up to the maximum frame length, and the join is accepted when it
    decodes with a verified check code (the XOR over the whole frame is known from the parts'
    XORs, so a join is cheap to rule out). Only a part shorter than the length its header
    declares is joined, never past that length, and a join stops at a part that is a valid
    frame on its own. A part still short of its declared length when the bytes received so
    far end is held until more arrive.
    """

    __slots__ = ("_held", "repairs", "splitter")

    def __init__(self) -> None:
        self.splitter = FrameSplitter()
        self._held: list[bytes | None] = []
        self.repairs = 0

    @property
    def held(self) -> int:
        """Bytes held back for a join that may still complete."""
        return sum(len(p) + 1 for p in self._held if p is not None)

    def feed(self, data: bytes, *, final: bool = False) -> list[ReadFrame]:
        """The frames completed by `data`; `final`: no more bytes will come, hold nothing."""
        parts = self.splitter.feed_parts(data)
        if self._held:
            parts = self._held + parts
            self._held = []
        out: list[ReadFrame] = []
        xors: dict[int, int | None] = {}
        decoded: dict[int, Frame | FrameError] = {}
        i = 0
        while i < len(parts):
            part = parts[i]
            if not part:
                i += 1
                continue
            result = decoded.pop(i, None) or _decode(part)
            if isinstance(result, FrameError) and result.reason in REPAIRABLE:
                joined = self._join(parts, i, xors, decoded)
                if joined is _WAIT and not final:
                    self._held = parts[i:]
                    break
                if isinstance(joined, tuple):
                    raw, frame, i = joined
                    self.repairs += 1
                    out.append(ReadFrame(raw, frame, True))
                    continue
            out.append(ReadFrame(part, result))
            i += 1
        return out

    @staticmethod
    def _join(
        parts: list[bytes | None],
        start: int,
        xors: dict[int, int | None],
        decoded: dict[int, Frame | FrameError],
    ) -> tuple[bytes, Frame, int] | object | None:
        first = parts[start]
        assert first is not None
        try:
            head = unescape(first)
        except FrameError:
            return None
        acc = checksum(head)
        size = len(head)
        # What the header says the whole frame measures: a part that long already is corrupt,
        # not cut short, and a join may not grow past it.
        sizes = _frame_sizes(head)
        limit = MAX_FRAME_LENGTH if sizes is None else max(sizes)
        if size >= limit:
            return None
        length = len(first)
        for j in range(start + 1, len(parts)):
            part = parts[j]
            if part is None:
                return None  # an oversize run: no frame spans it
            length += 1 + len(part)
            if length > MAX_ESCAPED_FRAME_LENGTH:
                return None
            if j not in xors:
                xors[j] = _xor_unescaped(part)
            x = xors[j]
            if x is None:
                return None
            acc ^= 0x7E ^ x  # the put-back flag byte, then the part
            size += 1 + len(part) - part.count(b"\x7d")
            if size > limit:
                return None
            if acc == 0 and part and (sizes is None or size in sizes):
                raw = _FLAG_BYTE.join(p for p in parts[start : j + 1] if p is not None)
                result = _decode(raw)
                if isinstance(result, Frame):
                    return raw, result, j + 1
            if part and x == 0:
                # The part checks out on its own: if it decodes, it is a frame, not a tail.
                if j not in decoded:
                    decoded[j] = _decode(part)
                if isinstance(decoded[j], Frame):
                    return None
        # Wait for more bytes only for a part whose header says it is cut short.
        return None if sizes is None else _WAIT


def _frame_sizes(head: bytes) -> tuple[int, ...] | None:
    """The unescaped sizes a frame starting with `head` may have (as `decode_frame` reads the
    header: the 2019 layout only when bit 14 is set), or None when `head` is too short."""
    if len(head) < 4:
        return None
    (props,) = struct.unpack_from(">H", head, 2)
    rest = (4 if props & 0x2000 else 0) + (props & 0x3FF) + 1
    return (12 + rest, 17 + rest) if props & 0x4000 else (12 + rest,)


def _decode(part: bytes) -> Frame | FrameError:
    try:
        return decode_frame(part)
    except FrameError as exc:
        return exc


# --------------------------------------------------------------------------- header


# Header, Frame, Item and Location are NamedTuples: immutable and hashable like frozen
# dataclasses, but built several times faster (a frozen dataclass pays an
# object.__setattr__ call per field), and one of each is made per location frame.
class Header(NamedTuple):
    msg_id: int
    # True when the frame uses the 2019 layout (version byte, BCD[10] phone).
    version_2019: bool
    # Bit 14 as sent; differs from version_2019 for the "2019 flag on a 2013 body" quirk.
    version_flag: bool
    protocol_version: int | None
    phone: str
    phone_raw: bytes
    serial: int
    body_length: int
    encryption: int
    total_packets: int | None = None
    packet_index: int | None = None

    @property
    def is_split(self) -> bool:
        return self.total_packets is not None

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.msg_id, "other")


class Frame(NamedTuple):
    header: Header
    body: bytes


def phone_text(raw: bytes) -> str:
    """BCD phone as its digits. Non-BCD ids come out as hex too: stable and unique per device."""
    return raw.hex()


def decode_frame(data: bytes) -> Frame:
    """Decode one frame: escaped bytes between the flags (flags themselves are tolerated)."""
    if data[:1] == _FLAG_BYTE:
        data = data[1:]
    if data[-1:] == _FLAG_BYTE:
        data = data[:-1]
    if len(data) > MAX_ESCAPED_FRAME_LENGTH:
        raise FrameError("too_long")
    raw = unescape(data)
    size = len(raw)
    if size < 13:
        raise FrameError("too_short")
    if size > MAX_FRAME_LENGTH:
        raise FrameError("too_long")
    if checksum(raw[:-1]) != raw[-1]:
        raise FrameError("bad_checksum")
    msg_id, props = struct.unpack_from(">HH", raw)
    body_length = props & 0x3FF
    split_extra = 4 if props & 0x2000 else 0
    version_flag = bool(props & 0x4000)
    # Some terminals set bit 14 but send the 2013 layout: the layout whose declared
    # length matches the frame wins, 2013 being the fallback.
    if version_flag and 17 + split_extra + body_length + 1 == size:
        protocol_version: int | None = raw[4]
        phone_raw = raw[5:15]
        (serial,) = struct.unpack_from(">H", raw, 15)
        offset = 17
    elif 12 + split_extra + body_length + 1 == size:
        protocol_version = None
        phone_raw = raw[4:10]
        (serial,) = struct.unpack_from(">H", raw, 10)
        offset = 12
    else:
        raise FrameError("bad_length")
    total: int | None = None
    index: int | None = None
    if split_extra:
        total, index = struct.unpack_from(">HH", raw, offset)
        if total == 0 or index == 0 or index > total:
            raise FrameError("bad_split")
        offset += 4
    header = Header(  # positional (hot path), in field order
        msg_id,
        protocol_version is not None,  # version_2019
        version_flag,
        protocol_version,
        phone_raw.hex(),  # phone: phone_text(phone_raw)
        phone_raw,
        serial,
        body_length,
        (props >> 10) & 0x7,  # encryption
        total,  # total_packets
        index,  # packet_index
    )
    return Frame(header, raw[offset:-1])


# --------------------------------------------------------------------------- split messages


class SplitAssembler:
    """Reassembles split messages (bit 13) per connection, within fixed bounds.

    Packets of one message carry consecutive serials, so `serial - (index - 1)` names
    the message. At most `max_pending` messages are held; the oldest is evicted first.
    """

    __slots__ = ("_max_packets", "_max_pending", "_pending")

    def __init__(self, *, max_packets: int = 64, max_pending: int = 4) -> None:
        self._max_packets = max_packets
        self._max_pending = max_pending
        self._pending: dict[tuple[int, int, int], dict[int, Frame]] = {}

    def add(self, frame: Frame) -> Frame | None:
        """Return the whole message when this packet completes it, else None."""
        h = frame.header
        if h.total_packets is None or h.packet_index is None:
            return frame
        if h.total_packets > self._max_packets:
            raise FrameError("split_too_large")
        key = (h.msg_id, h.total_packets, (h.serial - h.packet_index + 1) & 0xFFFF)
        parts = self._pending.pop(key, None)
        if parts is None:
            parts = {}
            while len(self._pending) >= self._max_pending:
                del self._pending[next(iter(self._pending))]
        parts[h.packet_index] = frame
        if len(parts) < h.total_packets:
            self._pending[key] = parts  # re-inserted last: dict order is least recently used
            return None
        first = parts[1].header
        body = b"".join(parts[i].body for i in range(1, h.total_packets + 1))
        whole = Header(
            msg_id=first.msg_id,
            version_2019=first.version_2019,
            version_flag=first.version_flag,
            protocol_version=first.protocol_version,
            phone=first.phone,
            phone_raw=first.phone_raw,
            serial=first.serial,
            body_length=len(body),
            encryption=first.encryption,
            total_packets=first.total_packets,
            packet_index=None,
        )
        return Frame(whole, body)

    @property
    def pending(self) -> int:
        return len(self._pending)


# --------------------------------------------------------------------------- bodies


def _text(raw: bytes) -> str:
    """GBK string with NUL and space padding removed; undecodable bytes replaced, never raised."""
    return raw.decode("gbk", errors="replace").strip("\x00 ")


@dataclass(frozen=True, slots=True)
class Register:
    province: int
    city: int
    maker: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str


@dataclass(frozen=True, slots=True)
class Auth:
    code: str
    imei: str | None = None
    software_version: str | None = None


@dataclass(frozen=True, slots=True)
class Empty:
    """Heartbeat and logout carry no body."""


@dataclass(frozen=True, slots=True)
class TerminalResponse:
    reply_serial: int
    reply_msg_id: int
    result: int


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A message this gateway does not interpret; acknowledged as unsupported."""

    body: bytes


class Item(NamedTuple):
    """One additional item after 0x0200's fixed part: id, raw value."""

    id: int
    value: bytes


class Location(NamedTuple):
    alarm_flags: int
    status_flags: int
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    heading: int
    # Device local time as sent (no zone: which zone is a per-vendor setting); None when
    # the BCD field is all zeros or not a real date (seen on trackers without a fix).
    time: datetime | None
    raw_time: str
    items: tuple[Item, ...] = ()
    # Set when the items area ended in a length running past the body (rest ignored).
    items_truncated: bool = False
    # The 28-byte fixed part, kept to derive a stable idempotency key.
    fixed: bytes = b""

    def item(self, item_id: int) -> bytes | None:
        for it in self.items:
            if it.id == item_id:
                return it.value
        return None

    @property
    def mileage_km(self) -> float | None:
        value = self.item(0x01)
        return int.from_bytes(value, "big") / 10 if value is not None and len(value) == 4 else None


@dataclass(frozen=True, slots=True)
class Batch:
    type: int  # 0 = normal batch, 1 = blind-area backfill
    declared_count: int
    locations: tuple[Location, ...]
    # Items whose own content could not be read (too short); the rest are kept.
    bad_items: int = 0

    @property
    def backfill(self) -> bool:
        return self.type == 1


Body: TypeAlias = Register | Auth | Empty | TerminalResponse | Location | Batch | Unsupported

_FIXED = struct.Struct(">IIIIhHH6s")


def _bcd_time(raw: bytes) -> tuple[datetime | None, str]:
    digits = raw.hex()
    # hex() of a BCD byte is its two decimal digits; any nibble above 9 shows as a-f.
    if not digits.isdigit() or digits == "000000000000":
        return None, digits
    yy, mo, dd, hh, mi, ss = raw
    try:
        t = datetime(
            2000 + (yy >> 4) * 10 + (yy & 15),
            (mo >> 4) * 10 + (mo & 15),
            (dd >> 4) * 10 + (dd & 15),
            (hh >> 4) * 10 + (hh & 15),
            (mi >> 4) * 10 + (mi & 15),
            (ss >> 4) * 10 + (ss & 15),
        )
    except ValueError:
        return None, digits
    return t, digits


def parse_location(body: bytes) -> Location:
    if len(body) < 28:
        raise FrameError("bad_body", "location shorter than 28 bytes")
    alarm, status, lat_raw, lon_raw, altitude, speed, heading, time_raw = _FIXED.unpack_from(body)
    lat = lat_raw / 1e6
    lon = lon_raw / 1e6
    if status & 0x4:
        lat = -lat
    if status & 0x8:
        lon = -lon
    time, raw_time = _bcd_time(time_raw)
    items: list[Item] = []
    pos, end, truncated = 28, len(body), False
    while pos < end:
        if pos + 2 > end:
            truncated = True
            break
        item_id, length = body[pos], body[pos + 1]
        if pos + 2 + length > end:
            truncated = True
            break
        items.append(Item(item_id, body[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return Location(  # positional (hot path), in field order
        alarm,  # alarm_flags
        status,  # status_flags
        lat,
        lon,
        altitude,  # altitude_m
        speed / 10,  # speed_kmh
        heading,
        time,
        raw_time,
        tuple(items),
        truncated,  # items_truncated
        body[:28],  # fixed
    )


def parse_batch(body: bytes) -> Batch:
    if len(body) < 3:
        raise FrameError("bad_body", "batch shorter than 3 bytes")
    count, batch_type = struct.unpack_from(">HB", body)
    locations: list[Location] = []
    bad = 0
    pos, end = 3, len(body)
    for _ in range(count):
        if pos + 2 > end:
            raise FrameError("bad_body", "batch ends before its declared count")
        (length,) = struct.unpack_from(">H", body, pos)
        pos += 2
        if pos + length > end:
            raise FrameError("bad_body", "batch item runs past the body")
        try:
            locations.append(parse_location(body[pos : pos + length]))
        except FrameError:
            bad += 1  # one unreadable point must not cost the device its other points
        pos += length
    if pos != end:
        raise FrameError("bad_body", "bytes after the declared batch items")
    return Batch(type=batch_type, declared_count=count, locations=tuple(locations), bad_items=bad)


def parse_register(body: bytes, *, version_2019: bool) -> Register:
    # (maker, model, terminal id) widths by edition; 2011 and 2013 told apart by length.
    if version_2019:
        widths = (11, 30, 30)
    elif len(body) >= 2 + 2 + 5 + 20 + 7 + 1:
        widths = (5, 20, 7)
    else:
        widths = (5, 8, 7)
    fixed = 4 + sum(widths) + 1
    if len(body) < fixed:
        raise FrameError("bad_body", "register body too short")
    province, city = struct.unpack_from(">HH", body)
    pos = 4
    fields: list[str] = []
    for width in widths:
        fields.append(_text(body[pos : pos + width]))
        pos += width
    return Register(
        province=province,
        city=city,
        maker=fields[0],
        model=fields[1],
        terminal_id=fields[2],
        plate_color=body[pos],
        plate=_text(body[pos + 1 :]),
    )


def parse_auth(body: bytes, *, version_2019: bool) -> Auth:
    # 2019: length-prefixed code, IMEI[15], software version[20]; used only when the
    # lengths add up, since some 2019 terminals still send the bare code.
    if version_2019 and body and 1 + body[0] + 15 + 20 == len(body):
        n = body[0]
        return Auth(
            code=_text(body[1 : 1 + n]),
            imei=_text(body[1 + n : 16 + n]),
            software_version=_text(body[16 + n :]),
        )
    return Auth(code=_text(body))


def parse_body(frame: Frame) -> Body:
    """Interpret a (reassembled) frame's body by message id."""
    h, body = frame.header, frame.body
    if h.encryption:
        raise FrameError("encrypted")
    msg_id = h.msg_id
    if msg_id == MSG_LOCATION:
        return parse_location(body)
    if msg_id == MSG_BATCH:
        return parse_batch(body)
    if msg_id in (MSG_HEARTBEAT, MSG_LOGOUT):
        return Empty()
    if msg_id == MSG_AUTH:
        return parse_auth(body, version_2019=h.version_2019)
    if msg_id == MSG_REGISTER:
        return parse_register(body, version_2019=h.version_2019)
    if msg_id == MSG_TERMINAL_RESPONSE:
        if len(body) < 5:
            raise FrameError("bad_body", "terminal response shorter than 5 bytes")
        serial, reply_id, result = struct.unpack_from(">HHB", body)
        return TerminalResponse(serial, reply_id, result)
    return Unsupported(body)


# --------------------------------------------------------------------------- encoders


def encode_frame(
    *,
    msg_id: int,
    phone_raw: bytes,
    serial: int,
    body: bytes,
    protocol_version: int | None = None,
    split: tuple[int, int] | None = None,
) -> bytes:
    """A complete wire frame, flags included. `protocol_version` set means the 2019 header."""
    if len(body) > MAX_BODY_LENGTH:
        raise ValueError("body longer than 1023 bytes: split it")
    props = len(body)
    if protocol_version is not None:
        props |= 0x4000
        head = struct.pack(">HHB", msg_id, props, protocol_version)
    else:
        head = struct.pack(">HH", msg_id, props)
    if split is not None:
        head = struct.pack(">HH", msg_id, props | 0x2000) + head[4:]
    payload = head + phone_raw + struct.pack(">H", serial & 0xFFFF)
    if split is not None:
        payload += struct.pack(">HH", *split)
    payload += body
    return b"\x7e" + escape(payload + bytes((checksum(payload),))) + b"\x7e"


def encode_general_response(
    *,
    phone_raw: bytes,
    serial: int,
    reply_serial: int,
    reply_msg_id: int,
    result: int = RESULT_OK,
    protocol_version: int | None = None,
) -> bytes:
    """0x8001 platform general response (the hot path: one per stored location)."""
    tail = _GENERAL_TAIL.pack(serial & 0xFFFF, reply_serial & 0xFFFF, reply_msg_id, result)
    if protocol_version is None:
        payload = _GENERAL_HEAD_2013 + phone_raw + tail
    else:
        payload = _GENERAL_HEAD_2019 + bytes((protocol_version,)) + phone_raw + tail
    payload += bytes((checksum(payload),))
    if b"\x7e" in payload or b"\x7d" in payload:
        payload = escape(payload)
    return b"\x7e" + payload + b"\x7e"


# Same bytes as encode_frame(msg_id=0x8001, body=<5 bytes>, ...), without its generic path.
_GENERAL_HEAD_2013 = struct.pack(">HH", MSG_PLATFORM_RESPONSE, 5)
_GENERAL_HEAD_2019 = struct.pack(">HH", MSG_PLATFORM_RESPONSE, 5 | 0x4000)
_GENERAL_TAIL = struct.Struct(">HHHB")  # serial, then the body: reply serial, reply id, result


def encode_register_response(
    *,
    phone_raw: bytes,
    serial: int,
    reply_serial: int,
    result: int,
    auth_code: str | None,
    protocol_version: int | None = None,
) -> bytes:
    """0x8100 register response; the auth code is sent only with result 0."""
    body = struct.pack(">HB", reply_serial & 0xFFFF, result)
    if result == REGISTER_OK and auth_code:
        body += auth_code.encode("gbk")
    return encode_frame(
        msg_id=MSG_REGISTER_RESPONSE,
        phone_raw=phone_raw,
        serial=serial,
        body=body,
        protocol_version=protocol_version,
    )


# Terminal-side bodies: what a tracker sends. Used by tests, the simulator and benchmarks.


def phone_bcd(phone: str, *, version_2019: bool = False) -> bytes:
    """Phone digits as BCD[6] (2011/2013) or BCD[10] (2019), zero-padded on the left."""
    width = 20 if version_2019 else 12
    if len(phone) > width or not phone.isdigit():
        raise ValueError(f"phone must be at most {width} digits")
    return bytes.fromhex(phone.rjust(width, "0"))


def encode_location_body(
    *,
    lat: float,
    lon: float,
    time: datetime,
    alarm_flags: int = 0,
    status_flags: int = 0x2,
    altitude_m: int = 0,
    speed_kmh: float = 0.0,
    heading: int = 0,
    items: tuple[Item, ...] = (),
) -> bytes:
    status = status_flags & ~0xC
    if lat < 0:
        status |= 0x4
    if lon < 0:
        status |= 0x8
    fixed = _FIXED.pack(
        alarm_flags,
        status,
        round(abs(lat) * 1e6),
        round(abs(lon) * 1e6),
        altitude_m,
        round(speed_kmh * 10),
        heading,
        bytes.fromhex(time.strftime("%y%m%d%H%M%S")),
    )
    return fixed + b"".join(bytes((it.id, len(it.value))) + it.value for it in items)


def encode_batch_body(locations: list[bytes], *, batch_type: int) -> bytes:
    head = struct.pack(">HB", len(locations), batch_type)
    return head + b"".join(struct.pack(">H", len(loc)) + loc for loc in locations)


def encode_register_body(
    *,
    maker: str,
    model: str,
    terminal_id: str,
    plate: str,
    plate_color: int = 0,
    province: int = 0,
    city: int = 0,
) -> bytes:
    """2013 layout."""

    def pad(text: str, width: int) -> bytes:
        return text.encode("gbk")[:width].ljust(width, b"\x00")

    return (
        struct.pack(">HH", province, city)
        + pad(maker, 5)
        + pad(model, 20)
        + pad(terminal_id, 7)
        + bytes((plate_color,))
        + plate.encode("gbk")
    )
