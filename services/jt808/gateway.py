"""JT/T 808 TCP gateway: terminals in, GpsPing batches out through a pluggable async sink.

One asyncio Protocol per connection (cheaper than streams at 10k+ connections). A location
is acknowledged with 0x8001 only after the sink accepted its ping, so a terminal keeps (and
resends) anything the gateway could not store. Pings from all connections are gathered
into one sink call while the previous call is in flight, which is where throughput comes
from; an idle gateway forwards each ping at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from hashlib import sha256
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rules.events import GpsPing
from rules.events.bounds import DEFAULT_WINDOW, TimeWindow
from services.jt808.codec import (
    MSG_AUTH,
    MSG_BATCH,
    MSG_LOCATION,
    MSG_REGISTER,
    REGISTER_OK,
    REGISTER_TERMINAL_UNKNOWN,
    RESULT_FAILURE,
    RESULT_MESSAGE_ERROR,
    RESULT_OK,
    RESULT_UNSUPPORTED,
    Auth,
    Batch,
    Body,
    Empty,
    FrameError,
    FrameReader,
    Header,
    Location,
    ReadFrame,
    Register,
    SplitAssembler,
    TerminalResponse,
    encode_general_response,
    encode_register_response,
    parse_body,
)
from services.jt808.mapping import (
    DeviceDirectory,
    DeviceIdentity,
    PingRejected,
    VendorConfig,
    location_to_ping,
    normalize_phone,
)

log = logging.getLogger(__name__)

# Stores a batch of pings: returns once they are durable (Kafka acknowledged), else raises.
PingSink = Callable[[list[GpsPing]], Awaitable[None]]

# Only messages whose content we read are reassembled; other split uploads (multimedia)
# are acknowledged packet by packet without buffering them.
_REASSEMBLED = frozenset({MSG_LOCATION, MSG_BATCH, MSG_REGISTER, MSG_AUTH})
_MESSAGE_LABELS = ("heartbeat", "logout", "register", "auth", "location", "batch")
_STORED_BODIES = (Location, Batch)  # a tuple: `Location | Batch` is rebuilt on every call


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    max_connections: int = 20_000
    # Terminals heartbeat every 60 s by default (parameter 0x0001); a few missed beats
    # mean the peer is gone even if TCP never said so.
    idle_timeout_s: float = 300.0
    # Location frames waiting for the sink per connection; beyond this we stop reading
    # from that socket (backpressure) rather than buffer without bound.
    max_inflight_per_connection: int = 256
    # Consecutive malformed frames before the connection is dropped.
    max_errors_per_connection: int = 50
    # Standard behaviour: data only after 0x0102. Some cheap trackers never authenticate.
    require_auth: bool = True
    # Auth codes are HMAC(secret, phone): stateless, survive restarts, verifiable on any
    # gateway instance. Without a secret any auth code is accepted (as traccar does).
    auth_secret: str | None = None
    max_batch: int = 5_000
    # Event times within this window of the arrival (services/settings.py `bounds`).
    time_window: TimeWindow = DEFAULT_WINDOW


class GatewayMetrics:
    """Gateway metrics on an injected registry; every label set is bounded."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "skipwatch_jt808_frames_total",
            "Decoded frames by message and outcome.",
            ["message", "outcome"],
            registry=r,
        )
        self.malformed = Counter(
            "skipwatch_jt808_malformed_frames_total",
            "Frames that could not be decoded, by reason.",
            ["reason"],
            registry=r,
        )
        self.connections = Gauge(
            "skipwatch_jt808_connections", "Open terminal connections.", registry=r
        )
        self.connection_events = Counter(
            "skipwatch_jt808_connection_events_total",
            "Connections accepted, refused and closed by the gateway.",
            ["event"],
            registry=r,
        )
        self.pings = Counter(
            "skipwatch_jt808_pings_total",
            "Locations by what became of them.",
            ["outcome"],
            registry=r,
        )
        self.repaired = Counter(
            "skipwatch_jt808_frames_repaired_total",
            "Frames of trackers that do not escape 0x7E, joined again at the flag bytes "
            "(the join's check code verified), by message.",
            ["message"],
            registry=r,
        )
        self.sink_seconds = Histogram(
            "skipwatch_jt808_sink_seconds", "Time for one sink batch.", registry=r
        )
        self._frame_children: dict[tuple[str, str], Counter] = {}

    def frame(self, name: str, outcome: str) -> None:
        key = (name if name in _MESSAGE_LABELS else "other", outcome)
        child = self._frame_children.get(key)
        if child is None:
            child = self._frame_children[key] = self.frames.labels(*key)
        child.inc()


# Called once per submission: None when its pings are stored, else why they are not.
StoredCallback = Callable[[BaseException | None], None]


class PingBatcher:
    """Gathers pings from all connections into as few sink calls as possible.

    While a sink call is in flight, new submissions queue up and go out together in the
    next call; calls run one at a time, so submissions complete in submission order. A
    submission completes only after the sink call holding its pings returned.
    """

    def __init__(self, sink: PingSink, *, max_batch: int, metrics: GatewayMetrics) -> None:
        self._sink = sink
        self._max_batch = max_batch
        self._metrics = metrics
        self._produced = metrics.pings.labels("produced")
        self._queue: list[tuple[list[GpsPing], StoredCallback]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, pings: list[GpsPing], done: StoredCallback) -> None:
        """Queue pings; `done(None)` once the sink stored them, `done(exc)` if it did not.

        The hot path: a plain callback per submission, called straight from the batch's
        completion (no future and no extra loop callback per location).
        """
        self._queue.append((pings, done))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        batch: list[tuple[list[GpsPing], StoredCallback]] = []
        try:
            while self._queue:
                queue = self._queue
                taken, size, limit = 0, 0, self._max_batch
                for group, _ in queue:
                    if taken and size >= limit:
                        break
                    size += len(group)
                    taken += 1
                if taken == len(queue):
                    batch, self._queue = queue, []
                else:
                    batch, self._queue = queue[:taken], queue[taken:]
                pings = [p for group, _ in batch for p in group]
                await self._send(pings, batch)
                batch = []
        except asyncio.CancelledError as exc:
            pending, batch, self._queue = batch + self._queue, [], []
            self._complete(pending, exc)
            raise
        finally:
            self._task = None

    async def _send(
        self, pings: list[GpsPing], batch: list[tuple[list[GpsPing], StoredCallback]]
    ) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await self._sink(pings)
        except Exception as exc:  # reported to every submission in the batch
            log.warning("sink failed for %d pings: %r", len(pings), exc)
            self._metrics.pings.labels("sink_failed").inc(len(pings))
            self._complete(batch, exc)
        else:
            self._produced.inc(len(pings))
            self._complete(batch, None)
        self._metrics.sink_seconds.observe(asyncio.get_running_loop().time() - started)

    @staticmethod
    def _complete(
        batch: list[tuple[list[GpsPing], StoredCallback]], exc: BaseException | None
    ) -> None:
        for _, done in batch:
            try:
                done(exc)
            except Exception:  # one connection's bug must not cost the others their acks
                log.exception("jt808 stored-callback failed")

    async def wait_idle(self) -> None:
        while self._task is not None:
            await asyncio.shield(self._task)


def auth_code_for(phone: str, secret: str | None) -> str:
    key = (secret or "skipwatch-jt808").encode()
    return hmac.new(key, normalize_phone(phone).encode(), sha256).hexdigest()[:16]


class Jt808Gateway:
    """The TCP server. `start()` binds, `close()` stops accepting and drops connections."""

    def __init__(
        self,
        *,
        sink: PingSink,
        config: VendorConfig | None = None,
        options: GatewayOptions | None = None,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.options = options or GatewayOptions()
        self.metrics = metrics or GatewayMetrics()
        self.directory = DeviceDirectory(config or VendorConfig())
        self.clock = clock
        self.batcher = PingBatcher(sink, max_batch=self.options.max_batch, metrics=self.metrics)
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, host: str = "0.0.0.0", port: int = 808) -> int:
        """Bind and listen; returns the bound port (useful with port=0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.new_connection, host, port, backlog=4096, reuse_address=True
        )
        self._sweeper = loop.create_task(self._sweep_idle())
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("jt808 gateway listening on %s:%d", host, bound)
        return bound

    def new_connection(self) -> asyncio.Protocol:
        """Protocol for one terminal link (what the server calls per accept; tests too)."""
        return _Connection(self)

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for conn in list(self._connections):
            conn.close("shutdown")
        await self.batcher.wait_idle()
        if self._server is not None:
            await self._server.wait_closed()

    async def _sweep_idle(self) -> None:
        # One periodic sweep instead of a timer per connection: O(connections) every few
        # seconds is cheaper than rescheduling 10k timers on every frame.
        timeout = self.options.idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(5.0, timeout / 4))
            deadline = loop.time() - timeout
            for conn in [c for c in self._connections if c.last_seen < deadline]:
                conn.close("idle")

    # Called by connections.
    def _accept(self, conn: _Connection) -> bool:
        if len(self._connections) >= self.options.max_connections:
            self.metrics.connection_events.labels("refused_limit").inc()
            return False
        self._connections.add(conn)
        self.metrics.connections.set(len(self._connections))
        self.metrics.connection_events.labels("accepted").inc()
        return True

    def _forget(self, conn: _Connection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self.metrics.connections.set(len(self._connections))


class _Connection(asyncio.Protocol):
    """One terminal link: framing, the register -> auth -> data state, replies."""

    def __init__(self, gateway: Jt808Gateway) -> None:
        self.gw = gateway
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.splitter = self.reader.splitter
        self.assembler = SplitAssembler()
        self.authenticated: set[str] = set()  # phones; one link may carry more than one
        self.serial = 0
        self.errors = 0
        self.inflight = 0
        self.paused = False
        self.last_seen = 0.0
        # Replies are gathered and written once per data_received / per stored batch:
        # one send() for a window of frames instead of one per reply.
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._receiving = False

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        self.last_seen = asyncio.get_running_loop().time()
        if not self.gw._accept(self):
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        # Parts held for a join that can no longer complete count like any malformed frame.
        for read in self.reader.feed(b"", final=True):
            if isinstance(read.result, FrameError):
                self.gw.metrics.malformed.labels(read.result.reason).inc()
        self.gw._forget(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = asyncio.get_running_loop().time()
        discarded = self.splitter.oversize_discards
        self._receiving = True
        try:
            for read in self.reader.feed(data):
                try:
                    self._handle(read)
                except Exception:
                    # A bug on one frame must cost that frame only, never the gateway.
                    log.exception("unexpected error handling a jt808 frame")
                    self.gw.metrics.malformed.labels("internal").inc()
                    self._count_error()
            if self.splitter.oversize_discards != discarded:
                self.gw.metrics.malformed.labels("oversize").inc(
                    self.splitter.oversize_discards - discarded
                )
                self._count_error()
        finally:
            self._receiving = False
            self._flush()

    def close(self, why: str) -> None:
        self._flush()  # replies already made go out before the close, as they always did
        if self.transport is not None and not self.transport.is_closing():
            self.gw.metrics.connection_events.labels(f"closed_{why}").inc()
            self.transport.close()
        self.gw._forget(self)

    # ---------------------------------------------------------------- frames

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.gw.options.max_errors_per_connection:
            self.close("errors")

    def _handle(self, read: ReadFrame) -> None:
        metrics = self.gw.metrics
        frame = read.result
        if isinstance(frame, FrameError):
            metrics.malformed.labels(frame.reason).inc()
            self._count_error()
            return
        packet = frame.header
        if read.repaired:
            name = packet.name
            metrics.repaired.labels(name if name in _MESSAGE_LABELS else "other").inc()
        if packet.total_packets is not None:
            if packet.msg_id not in _REASSEMBLED:
                self._reply(packet, RESULT_UNSUPPORTED)
                return
            try:
                whole = self.assembler.add(frame)
            except FrameError as exc:
                metrics.malformed.labels(exc.reason).inc()
                self._reply(packet, RESULT_MESSAGE_ERROR)
                return
            if whole is None:
                self._reply(packet, RESULT_OK)  # packet received; the message is not done yet
                return
            frame = whole
        try:
            body = parse_body(frame)
        except FrameError as exc:
            metrics.malformed.labels(exc.reason).inc()
            metrics.frame(packet.name, "error")
            self._count_error()
            self._reply(packet, RESULT_MESSAGE_ERROR)
            return
        self.errors = 0
        self._dispatch(frame.header, packet, body)

    def _dispatch(self, header: Header, packet: Header, body: Body) -> None:
        """`header` describes the whole message, `packet` the frame that completed it."""
        gw, metrics = self.gw, self.gw.metrics
        name = header.name
        if isinstance(body, _STORED_BODIES):
            self._store(header, packet, body)
        elif isinstance(body, Empty):
            if header.msg_id == 0x0003:  # logout: the terminal must authenticate again
                self.authenticated.discard(header.phone)
            metrics.frame(name, "ok")
            self._reply(packet, RESULT_OK)
        elif isinstance(body, Register):
            identity = gw.directory.resolve(header.phone)
            result = REGISTER_OK if identity is not None else REGISTER_TERMINAL_UNKNOWN
            metrics.frame(name, "ok" if identity is not None else "rejected")
            code = auth_code_for(header.phone, gw.options.auth_secret)
            self._send(
                encode_register_response(
                    phone_raw=packet.phone_raw,
                    serial=self._next_serial(),
                    reply_serial=packet.serial,
                    result=result,
                    auth_code=code,
                    protocol_version=packet.protocol_version,
                )
            )
        elif isinstance(body, Auth):
            secret = gw.options.auth_secret
            ok = gw.directory.resolve(header.phone) is not None and (
                secret is None
                or hmac.compare_digest(body.code, auth_code_for(header.phone, secret))
            )
            if ok:
                self.authenticated.add(header.phone)
            metrics.frame(name, "ok" if ok else "rejected")
            self._reply(packet, RESULT_OK if ok else RESULT_FAILURE)
        elif isinstance(body, TerminalResponse):
            metrics.frame(name, "ok")  # answers to platform commands need no reply
        else:
            metrics.frame(name, "unsupported")
            self._reply(packet, RESULT_UNSUPPORTED)

    def _store(self, header: Header, packet: Header, body: Location | Batch) -> None:
        gw, metrics = self.gw, self.gw.metrics
        name = header.name
        identity = gw.directory.resolve(header.phone)
        if identity is None or (gw.options.require_auth and header.phone not in self.authenticated):
            # Failure makes the terminal keep the points for a later blind-area upload.
            metrics.frame(name, "rejected")
            metrics.pings.labels("unknown_device" if identity is None else "unauthenticated").inc()
            self._reply(packet, RESULT_FAILURE)
            return
        pings = self._pings(header, body, identity)
        metrics.frame(name, "ok")
        if not pings:
            self._reply(packet, RESULT_OK)  # nothing storable; the rejects were counted
            return
        self.inflight += 1
        gw.batcher.add(pings, partial(self._stored, packet))
        if self.inflight >= gw.options.max_inflight_per_connection and self.transport:
            self.paused = True
            self.transport.pause_reading()

    def _pings(
        self, header: Header, body: Location | Batch, identity: DeviceIdentity
    ) -> list[GpsPing]:
        if isinstance(body, Location):
            locations: tuple[Location, ...] = (body,)
            backfill, bad_items = False, 0
        else:
            locations, backfill, bad_items = body.locations, body.backfill, body.bad_items
        received_at = self.gw.clock()
        phone = normalize_phone(header.phone)
        pings: list[GpsPing] = []
        for location in locations:
            try:
                pings.append(
                    location_to_ping(
                        location,
                        identity=identity,
                        phone=phone,
                        received_at=received_at,
                        backfill=backfill,
                        window=self.gw.options.time_window,
                    )
                )
            except PingRejected as exc:
                self.gw.metrics.pings.labels(f"rejected_{exc.reason}").inc()
        if bad_items:
            self.gw.metrics.pings.labels("rejected_bad_item").inc(bad_items)
        return pings

    def _stored(self, packet: Header, exc: BaseException | None) -> None:
        """The batcher's verdict on one location message, after its sink call returned."""
        self.inflight -= 1
        if exc is not None:
            # No reply: the terminal resends, nothing acknowledged is lost.
            return
        self._reply(packet, RESULT_OK)
        if self.paused and self.inflight <= self.gw.options.max_inflight_per_connection // 2:
            self.paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # ---------------------------------------------------------------- replies

    def _next_serial(self) -> int:
        serial = self.serial
        self.serial = (serial + 1) & 0xFFFF
        return serial

    def _reply(self, packet: Header, result: int) -> None:
        self._send(
            encode_general_response(
                phone_raw=packet.phone_raw,
                serial=self._next_serial(),
                reply_serial=packet.serial,
                reply_msg_id=packet.msg_id,
                result=result,
                protocol_version=packet.protocol_version,
            )
        )

    def _send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._out.append(data)
        if not self._receiving and not self._flush_scheduled:
            # Acks from a stored batch: one write after the batch's callbacks have run.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        out = self._out
        self._out = []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))


__all__ = [
    "GatewayMetrics",
    "GatewayOptions",
    "Jt808Gateway",
    "PingBatcher",
    "PingSink",
    "auth_code_for",
]
