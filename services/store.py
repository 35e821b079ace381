"""The Redis view of alerts, loans and per-loan timelines: a cache of Kafka, rebuilt from it.

Two writers feed one alert record:

- the **worker** (Faust) emits every rule-driven state change (firing, escalated, resolved);
- **operators** act through the API (ack, assign, resolve, snooze). Each action is published to
  `<prefix>alerts` as an AlertEvent carrying the operator state in reserved labels, then applied
  here exactly like the projector applies it, so Kafka stays the source of truth and a rebuilt
  view has the same acks and assignees.

A record keeps the two apart (`base`: the newest worker event; `ops`: operator state) because the
worker never reads operator actions: its next update must not undo an ack, and its clock (event
time during replays) is not comparable with the operators' wall clock. Each side is merged only
with itself, by its own timestamps, so replays, repeats and reordering between API processes
converge to the same record. The effective status is computed when read (a snooze ends by time).

Keys (all under `<redis.key_prefix>view:`):

    alert:<id>          JSON record {"base": AlertEvent, "ops": OperatorState | null}
    meta:open           HASH alert id -> AlertMeta (services/alert_index.py) of the alerts not
                        resolved (firing, acknowledged, silenced): what list and facets search
    meta:resolved       HASH alert id -> AlertMeta of the resolved alerts
    idx:loan:<loan_id>  ZSET of one loan's alerts -> started_at (epoch s)
    loan:<loan_id>      the latest Loan from `<prefix>loans`
    devices             HASH device_id -> loan_id (to put pings on a loan's timeline)
    status:<loan_id>    the latest LoanStatus from `<prefix>loan-status` (the worker's signals and
                        resident points; services/loan_status.py)
    signal:<name>       SET of the loans whose latest status shows the signal (overview counts)
    timeline:<loan_id>  ZSET of JSON entries -> event time, capped to the newest N
    offsets             HASH "<topic>:<partition>" -> next offset the projector reads
    built               id of the current build; absent: empty or wiped (rebuild)
    layout              LAYOUT of the build; another one (an older version's view): rebuild
    changes             pub/sub channel: every changed alert record (for SSE)
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from rules.events import AlertEvent, AlertStatus, Loan, Severity
from services.alert_index import (
    OPEN_STATUSES,
    PLAIN,
    AlertMeta,
    AlertQuery,
    Display,
    Facets,
    Sort,
    facets,
    search,
)
from services.loan_status import SIGNALS, LoanStatus

log = logging.getLogger(__name__)

UTC = dt.UTC

# Reserved AlertEvent labels on operator-published events (documented in docs/api.md).
LABEL_ORIGIN = "skipwatch/origin"
LABEL_ACTION = "skipwatch/action"
LABEL_OPERATOR = "skipwatch/operator"  # the whole OperatorState as JSON
ORIGIN_OPERATOR = "operator"

DEFAULT_TIMELINE_CAP = 200
# Page size limit of `GET /v1/alerts`.
MAX_PAGE = 500
# The view's key layout: a view built by a version with another layout is rebuilt from Kafka.
LAYOUT = "2"


class Action(StrEnum):
    ACK = "ack"
    ASSIGN = "assign"
    RESOLVE = "resolve"
    SNOOZE = "snooze"


# --- operator state: last-writer-wins per field group, so concurrent actions merge ---------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Stamp(_Model):
    """Who did something, when (wall clock), and to the alert at which severity: a later
    escalation voids an ack, resolve or snooze (a collector who acked a warning must hear about
    it again when it turns critical)."""

    by: str
    at: dt.datetime
    severity: Severity


class Assignment(Stamp):
    assignee: str


class Silence(Stamp):
    until: dt.datetime


class OperatorState(_Model):
    acknowledged: Stamp | None = None
    assigned: Assignment | None = None
    resolved: Stamp | None = None
    silenced: Silence | None = None

    @property
    def at(self) -> dt.datetime:
        stamps = [
            s.at for s in (self.acknowledged, self.assigned, self.resolved, self.silenced) if s
        ]
        return max(stamps) if stamps else dt.datetime.min.replace(tzinfo=UTC)

    def merge(self, other: OperatorState) -> OperatorState:
        """Field group by field group, the newer stamp wins (commutative, idempotent)."""

        def newer(a: Any, b: Any) -> Any:
            if a is None or (b is not None and b.at >= a.at):
                return b
            return a

        return OperatorState(
            acknowledged=newer(self.acknowledged, other.acknowledged),
            assigned=newer(self.assigned, other.assigned),
            resolved=newer(self.resolved, other.resolved),
            silenced=newer(self.silenced, other.silenced),
        )


@dataclass(frozen=True)
class AlertRecord:
    """What the view keeps per alert id."""

    base: AlertEvent
    ops: OperatorState | None = None

    def ops_in_force(self) -> OperatorState | None:
        """The operator state minus the acks, resolves and snoozes an escalation voided (the
        assignment stays: it says who owns the alert, not what state it is in)."""
        if self.ops is None:
            return None
        rank = self.base.severity.rank

        def valid(stamp: Any) -> Any:
            return stamp if stamp is not None and stamp.severity.rank >= rank else None

        return OperatorState(
            acknowledged=valid(self.ops.acknowledged),
            assigned=self.ops.assigned,
            resolved=valid(self.ops.resolved),
            silenced=valid(self.ops.silenced),
        )

    def status(self, now: dt.datetime) -> AlertStatus:
        if self.base.status is AlertStatus.RESOLVED:
            return AlertStatus.RESOLVED  # the condition cleared: nothing an operator did matters
        ops = self.ops_in_force()
        if ops is not None:
            if ops.resolved:
                return AlertStatus.RESOLVED
            if ops.silenced and ops.silenced.until > now:
                return AlertStatus.SILENCED
            if ops.acknowledged:
                return AlertStatus.ACKNOWLEDGED
        return self.base.status

    def is_open(self) -> bool:
        # Time-independent (a snooze never resolves), so it can drive the open index.
        return self.status(dt.datetime.max.replace(tzinfo=UTC)) is not AlertStatus.RESOLVED

    def updated_at(self) -> dt.datetime:
        if self.ops is not None and self.ops.at > self.base.updated_at:
            return self.ops.at
        return self.base.updated_at

    def meta(self) -> AlertMeta:
        """The compact entry search reads (services/alert_index.py)."""
        ops = self.ops_in_force()
        silenced = ops.silenced if ops is not None else None
        return AlertMeta(
            id=self.base.alert_id,
            rule_id=self.base.rule_id,
            loan_id=self.base.loan_id,
            severity=self.base.severity.value,
            status=self.status(dt.datetime.max.replace(tzinfo=UTC)).value,
            silenced_until=silenced.until.timestamp() if silenced is not None else None,
            risk_score=self.base.risk_score,
            started_at=self.base.started_at.timestamp(),
            assignee=self.ops.assigned.assignee if self.ops and self.ops.assigned else None,
            labels={k: v for k, v in self.base.labels.items() if not k.startswith("skipwatch/")},
        )

    def effective(self, now: dt.datetime) -> AlertEvent:
        """The alert as people see it now: base event with the operator status applied."""
        return self.base.model_copy(
            update={"status": self.status(now), "updated_at": self.updated_at()}
        )

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "base": self.base.model_dump(mode="json"),
                "ops": self.ops.model_dump(mode="json") if self.ops else None,
            }
        )

    @classmethod
    def loads(cls, raw: bytes | str) -> AlertRecord:
        data = orjson.loads(raw)
        ops = OperatorState.model_validate(data["ops"]) if data.get("ops") else None
        return cls(base=AlertEvent.model_validate(data["base"]), ops=ops)


def is_operator_event(event: AlertEvent) -> bool:
    return event.labels.get(LABEL_ORIGIN) == ORIGIN_OPERATOR


def operator_state_of(event: AlertEvent) -> OperatorState:
    return OperatorState.model_validate_json(event.labels[LABEL_OPERATOR])


def merge(current: AlertRecord | None, event: AlertEvent) -> AlertRecord | None:
    """The record after `event`, or None when the event changes nothing (older or a repeat)."""
    if is_operator_event(event):
        incoming = operator_state_of(event)
        if current is None:
            # The worker's event is older in the same partition; only retention can lose it.
            # Keep what the operator event carries, minus the operator's own status.
            labels = {k: v for k, v in event.labels.items() if not k.startswith("skipwatch/")}
            base_status = (
                AlertStatus.RESOLVED
                if event.status is AlertStatus.RESOLVED and incoming.resolved is None
                else AlertStatus.FIRING
            )
            base = event.model_copy(update={"status": base_status, "labels": labels})
            return AlertRecord(base=base, ops=incoming)
        ops = incoming if current.ops is None else current.ops.merge(incoming)
        return None if ops == current.ops else replace(current, ops=ops)
    if current is None:
        return AlertRecord(base=event)
    if event.updated_at < current.base.updated_at or event == current.base:
        return None  # a stale replay or the worker re-emitting after a crash
    return replace(current, base=event)


def operator_event(
    record: AlertRecord,
    action: Action,
    *,
    by: str,
    now: dt.datetime,
    assignee: str | None = None,
    until: dt.datetime | None = None,
) -> AlertEvent:
    """The AlertEvent an operator action publishes: the alert as it is, the new status and the
    whole operator state in labels (so the latest such event alone restores it)."""
    severity = record.base.severity
    stamp = Stamp(by=by, at=now, severity=severity)
    change: dict[str, Any] = {}
    if action is Action.ACK:
        change["acknowledged"] = stamp
    elif action is Action.RESOLVE:
        change["resolved"] = stamp
    elif action is Action.ASSIGN:
        assert assignee is not None
        change["assigned"] = Assignment(by=by, at=now, severity=severity, assignee=assignee)
    else:
        assert until is not None
        change["silenced"] = Silence(by=by, at=now, severity=severity, until=until)
    ops = (record.ops or OperatorState()).model_copy(update=change)
    after = AlertRecord(base=record.base, ops=ops)
    labels = {
        **record.base.labels,
        LABEL_ORIGIN: ORIGIN_OPERATOR,
        LABEL_ACTION: action.value,
        LABEL_OPERATOR: ops.model_dump_json(),
    }
    return record.base.model_copy(
        update={"status": after.status(now), "updated_at": now, "labels": labels}
    )


# --- listing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertPage:
    items: list[AlertRecord]
    next_cursor: str | None  # present when more follow
    total: int  # alerts matching the query, over all pages


# --- loans and timelines ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoanSummary:
    loan_id: str
    loan: Loan | None
    open_alerts: list[AlertRecord]
    # Highest risk score among open alerts (0 when none).
    risk_score: int
    last_event_at: dt.datetime | None
    alert_count: int
    status: LoanStatus | None = None  # the worker's derived status, once it published one


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to a loan; `data` is the event's own fields."""

    ts: dt.datetime
    kind: str  # alert | payment | contact | ping
    data: dict[str, Any] = field(default_factory=dict)

    def member(self) -> bytes:
        # Deterministic bytes: a replayed event maps to the same ZSET member (idempotent).
        return orjson.dumps(
            {"ts": self.ts.isoformat(), "kind": self.kind, "data": self.data},
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_member(cls, raw: bytes) -> TimelineEntry:
        data = orjson.loads(raw)
        return cls(ts=dt.datetime.fromisoformat(data["ts"]), kind=data["kind"], data=data["data"])


def alert_timeline_entry(event: AlertEvent, record: AlertRecord) -> TimelineEntry:
    data: dict[str, Any] = {
        "alert_id": event.alert_id,
        "rule_id": event.rule_id,
        "severity": event.severity.value,
        "status": event.status.value,
        "title": event.title,
        "risk_score": event.risk_score,
    }
    if is_operator_event(event):
        data["action"] = event.labels.get(LABEL_ACTION)
        ops = record.ops
        stamp = ops and {
            "ack": ops.acknowledged,
            "assign": ops.assigned,
            "resolve": ops.resolved,
            "snooze": ops.silenced,
        }.get(data["action"] or "")
        if stamp:
            data["by"] = stamp.by
        if ops and ops.assigned and data["action"] == "assign":
            data["assignee"] = ops.assigned.assignee
    return TimelineEntry(ts=event.updated_at, kind="alert", data=data)


# --- the store ----------------------------------------------------------------------------------


class AlertView(Protocol):
    """What the API routes need from the view (tests give a fake)."""

    async def get(self, alert_id: str) -> AlertRecord | None: ...

    async def apply(self, event: AlertEvent) -> AlertRecord | None: ...

    async def list_alerts(
        self,
        query: AlertQuery,
        *,
        now: dt.datetime,
        sort: Sort = Sort.NEWEST,
        cursor: str | None = None,
        limit: int = 50,
        display: Display = PLAIN,
    ) -> AlertPage:
        """Raises alert_index.InvalidCursor."""
        ...

    async def facets(
        self, query: AlertQuery, *, now: dt.datetime, display: Display = PLAIN
    ) -> Facets: ...

    async def loan_summary(self, loan_id: str) -> LoanSummary | None: ...

    async def timeline(
        self, loan_id: str, *, limit: int = DEFAULT_TIMELINE_CAP
    ) -> list[TimelineEntry]: ...

    def changes(self) -> Any:
        """An async context manager yielding an async iterator of changed AlertRecords."""
        ...

    async def signal_counts(self) -> dict[str, int]:
        """Loans per current signal, from the worker's loan statuses."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


PublishFn = Callable[[AlertEvent], Awaitable[None]]


class AlertStore:
    """The view in Redis (see the module docstring for the keys)."""

    def __init__(
        self,
        url: str,
        key_prefix: str,
        *,
        timeline_cap: int = DEFAULT_TIMELINE_CAP,
        redis: Redis | None = None,
    ) -> None:
        self.redis = redis or Redis.from_url(url, socket_connect_timeout=2.0)
        self.prefix = f"{key_prefix}view:"
        self.timeline_cap = timeline_cap
        self.channel = f"{self.prefix}changes"

    # keys
    def _alert_key(self, alert_id: str) -> str:
        return f"{self.prefix}alert:{alert_id}"

    def _loan_index(self, loan_id: str) -> str:
        return f"{self.prefix}idx:loan:{loan_id}"

    def _timeline_key(self, loan_id: str) -> str:
        return f"{self.prefix}timeline:{loan_id}"

    def _meta_key(self, open_: bool) -> str:
        return f"{self.prefix}meta:{'open' if open_ else 'resolved'}"

    def _write_meta(self, pipe: Any, record: AlertRecord) -> None:
        meta = record.meta()
        pipe.hset(self._meta_key(meta.is_open), meta.id, meta.dumps())
        pipe.hdel(self._meta_key(not meta.is_open), meta.id)

    # alerts
    async def get(self, alert_id: str) -> AlertRecord | None:
        raw = await self.redis.get(self._alert_key(alert_id))
        return AlertRecord.loads(raw) if raw is not None else None

    async def apply(self, event: AlertEvent) -> AlertRecord | None:
        """Merge one AlertEvent; return the new record, or None when nothing changed. Safe against
        concurrent writers (projectors in several API processes, operator actions): optimistic
        WATCH/MULTI, retried on conflict."""
        key = self._alert_key(event.alert_id)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    current = AlertRecord.loads(raw) if raw is not None else None
                    record = merge(current, event)
                    if record is None:
                        # Nothing changed; the search entry is still (re)written, so a view
                        # replayed over an older layout gains it (idempotent).
                        assert current is not None
                        pipe.multi()  # type: ignore[no-untyped-call]
                        self._write_meta(pipe, current)
                        await pipe.execute()
                        return None
                    score = record.base.started_at.timestamp()
                    dumped = record.dumps()
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, dumped)
                    pipe.zadd(self._loan_index(record.base.loan_id), {event.alert_id: score})
                    self._write_meta(pipe, record)
                    self._add_timeline(
                        pipe, record.base.loan_id, [alert_timeline_entry(event, record)]
                    )
                    pipe.publish(self.channel, dumped)
                    await pipe.execute()
                    return record
                except WatchError:
                    continue

    async def _metas(self, query: AlertQuery, *, read_open: bool = False) -> list[AlertMeta]:
        """The search entries a query has to look at: one loan's (through its index), else the
        open ones, the resolved ones, or both, as its status filter needs (`read_open`: the open
        ones in any case)."""
        keys = [
            self._meta_key(open_)
            for open_ in (True, False)
            if not (query.open_only and not open_)
            and not (query.resolved_only and open_ and not read_open)
        ]
        raws: list[bytes | str | None] = []
        if query.loan_id is not None:
            ids: list[bytes] = await self.redis.zrange(self._loan_index(query.loan_id), 0, -1)  # type: ignore[assignment]
            if not ids:
                return []
            for key in keys:
                raws += await self.redis.hmget(key, ids)
        else:
            for key in keys:
                raws += await self.redis.hvals(key)
        return [AlertMeta.loads(raw) for raw in raws if raw is not None]

    async def list_alerts(
        self,
        query: AlertQuery,
        *,
        now: dt.datetime,
        sort: Sort = Sort.NEWEST,
        cursor: str | None = None,
        limit: int = 50,
        display: Display = PLAIN,
    ) -> AlertPage:
        """One page in `sort` order (services/alert_index.py: keyset pages, so alerts that arrive
        or change while a client pages never shift the pages it has not read). Reads the whole
        search index the query needs: O(open alerts) for the queue."""
        page = search(
            await self._metas(query),
            query,
            now=now,
            sort=sort,
            cursor=cursor,
            limit=max(1, limit),
            display=display,
        )
        raws = await self.redis.mget([self._alert_key(i) for i in page.ids]) if page.ids else []
        items = [AlertRecord.loads(raw) for raw in raws if raw is not None]
        return AlertPage(items, page.next_cursor, page.total)

    async def facets(
        self, query: AlertQuery, *, now: dt.datetime, display: Display = PLAIN
    ) -> Facets:
        """Reads the open alerts, and the resolved ones unless the status filter is open
        statuses only (then `resolved` is not counted: the queue never pays for history)."""
        counted = OPEN_STATUSES if query.open_only else frozenset(AlertStatus)
        metas = await self._metas(query, read_open=True)
        return facets(metas, query, now=now, display=display, statuses=counted)

    async def loan_alerts(self, loan_id: str, limit: int = 200) -> list[AlertRecord]:
        ids: list[bytes] = await self.redis.zrevrange(self._loan_index(loan_id), 0, limit - 1)  # type: ignore[assignment]
        if not ids:
            return []
        raws = await self.redis.mget([self._alert_key(i.decode()) for i in ids])
        return [AlertRecord.loads(r) for r in raws if r is not None]

    # loans
    async def put_loan(self, loan: Loan) -> None:
        key = f"{self.prefix}loan:{loan.loan_id}"
        previous = await self.redis.get(key)
        async with self.redis.pipeline(transaction=True) as pipe:
            if previous is not None:
                old = Loan.model_validate_json(previous)
                dropped = {d.device_id for d in old.devices} - {d.device_id for d in loan.devices}
                if dropped:
                    pipe.hdel(f"{self.prefix}devices", *dropped)
            if loan.devices:
                pipe.hset(
                    f"{self.prefix}devices",
                    mapping={d.device_id: loan.loan_id for d in loan.devices},
                )
            pipe.set(key, loan.model_dump_json())
            await pipe.execute()

    async def get_loan(self, loan_id: str) -> Loan | None:
        raw = await self.redis.get(f"{self.prefix}loan:{loan_id}")
        return Loan.model_validate_json(raw) if raw is not None else None

    async def loans_of_devices(self, device_ids: Sequence[str]) -> dict[str, str]:
        if not device_ids:
            return {}
        values: list[bytes | None] = await self.redis.hmget(
            f"{self.prefix}devices", list(device_ids)
        )  # type: ignore[assignment]
        return {d: v.decode() for d, v in zip(device_ids, values, strict=True) if v is not None}

    # loan statuses (the worker's signals and resident points)
    async def put_loan_status(self, loan_id: str, status: LoanStatus | None) -> None:
        """The newest status of a loan (None: a tombstone, forget it) and its signal sets."""
        flags = status.flags() if status is not None else set()
        async with self.redis.pipeline(transaction=True) as pipe:
            if status is None:
                pipe.delete(f"{self.prefix}status:{loan_id}")
            else:
                pipe.set(f"{self.prefix}status:{loan_id}", status.model_dump_json())
            for name in SIGNALS:
                if name in flags:
                    pipe.sadd(f"{self.prefix}signal:{name}", loan_id)
                else:
                    pipe.srem(f"{self.prefix}signal:{name}", loan_id)
            await pipe.execute()

    async def loan_status(self, loan_id: str) -> LoanStatus | None:
        raw = await self.redis.get(f"{self.prefix}status:{loan_id}")
        return LoanStatus.model_validate_json(raw) if raw is not None else None

    async def signal_counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in SIGNALS:
                pipe.scard(f"{self.prefix}signal:{name}")
            counts = await pipe.execute()
        return dict(zip(SIGNALS, (int(c) for c in counts), strict=True))

    async def loan_summary(self, loan_id: str) -> LoanSummary | None:
        loan = await self.get_loan(loan_id)
        alerts = await self.loan_alerts(loan_id)
        status = await self.loan_status(loan_id)
        if loan is None and not alerts and status is None:
            return None
        open_alerts = [a for a in alerts if a.is_open()]
        newest: list[tuple[bytes, float]] = await self.redis.zrevrange(  # type: ignore[assignment]
            self._timeline_key(loan_id), 0, 0, withscores=True
        )
        times = [a.updated_at() for a in alerts]
        if newest:
            times.append(dt.datetime.fromtimestamp(newest[0][1], UTC))
        return LoanSummary(
            loan_id=loan_id,
            loan=loan,
            open_alerts=open_alerts,
            risk_score=max((a.base.risk_score for a in open_alerts), default=0),
            last_event_at=max(times) if times else None,
            alert_count=len(alerts),
            status=status,
        )

    # timelines
    def _add_timeline(self, pipe: Any, loan_id: str, entries: Iterable[TimelineEntry]) -> None:
        key = self._timeline_key(loan_id)
        pipe.zadd(key, {e.member(): e.ts.timestamp() for e in entries})
        pipe.zremrangebyrank(key, 0, -(self.timeline_cap + 1))  # keep the newest N by event time

    async def add_timeline(self, entries: Mapping[str, Sequence[TimelineEntry]]) -> None:
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for loan_id, items in entries.items():
                if items:
                    self._add_timeline(pipe, loan_id, items)
            await pipe.execute()

    async def timeline(
        self, loan_id: str, *, limit: int = DEFAULT_TIMELINE_CAP
    ) -> list[TimelineEntry]:
        raws: list[bytes] = await self.redis.zrevrange(self._timeline_key(loan_id), 0, limit - 1)  # type: ignore[assignment]
        return [TimelineEntry.from_member(r) for r in raws]

    # projector bookkeeping
    async def generation(self) -> str | None:
        """The id of the view's current build, or None when the view is empty, was wiped, or
        was built with another key layout (an older version): then it is rebuilt."""
        raw, layout = await self.redis.mget([f"{self.prefix}built", f"{self.prefix}layout"])
        if raw is None or layout is None or _text(layout) != LAYOUT:
            return None
        return _text(raw)

    async def start_generation(self) -> str:
        """Begin a rebuild from scratch: forget every stored position, then mark a new build."""
        generation = uuid.uuid4().hex
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.prefix}offsets")
            pipe.set(f"{self.prefix}built", generation.encode())
            pipe.set(f"{self.prefix}layout", LAYOUT)
            await pipe.execute()
        return generation

    async def offsets(self) -> dict[tuple[str, int], int]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(f"{self.prefix}offsets")  # type: ignore[assignment]
        out: dict[tuple[str, int], int] = {}
        for k, v in raw.items():
            topic, _, partition = k.decode().rpartition(":")
            out[(topic, int(partition))] = int(v)
        return out

    async def save_offsets(self, offsets: Mapping[tuple[str, int], int], generation: str) -> bool:
        """Record positions, only if the view is still the build `generation`. False when it was
        wiped or rebuilt meanwhile (by this or another process): the caller must start over, so
        no process keeps positions that point past data the view no longer has."""
        key = f"{self.prefix}built"
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                current = await pipe.get(key)
                if current is None or _text(current) != generation:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(
                    f"{self.prefix}offsets",
                    mapping={f"{t}:{p}": o for (t, p), o in offsets.items()},
                )
                await pipe.execute()
            except WatchError:
                return False
        return True

    # live changes
    @asynccontextmanager
    async def changes(self) -> AsyncIterator[AsyncIterator[AlertRecord]]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)

        async def iterate() -> AsyncIterator[AlertRecord]:
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    yield AlertRecord.loads(message["data"])
                except (ValidationError, ValueError, KeyError):
                    log.warning("unreadable alert change on the pub/sub channel")

        try:
            yield iterate()
        finally:
            await pubsub.unsubscribe(self.channel)
            await pubsub.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class AlertNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    pass


async def act_on_alert(
    view: AlertView,
    publish: PublishFn,
    alert_id: str,
    action: Action,
    *,
    by: str,
    now: dt.datetime,
    assignee: str | None = None,
    until: dt.datetime | None = None,
) -> AlertRecord:
    """An operator action: publish the change to Kafka first (the source of truth), then apply it
    to the view the same way the projector will when it reads it back (then a no-op repeat).
    Raises AlertNotFound, InvalidTransition, or whatever `publish` raises (view unchanged)."""
    record = await view.get(alert_id)
    if record is None:
        raise AlertNotFound(alert_id)
    status = record.status(now)
    if status is AlertStatus.RESOLVED and action in (Action.ACK, Action.SNOOZE):
        raise InvalidTransition(f"alert {alert_id} is resolved; cannot {action.value} it")
    ops = record.ops_in_force()
    # Repeats are no-ops, not new events: double clicks and client retries stay quiet.
    if (
        (action is Action.RESOLVE and status is AlertStatus.RESOLVED)
        or (action is Action.ACK and ops is not None and ops.acknowledged is not None)
        or (
            action is Action.ASSIGN
            and record.ops is not None
            and record.ops.assigned is not None
            and record.ops.assigned.assignee == assignee
        )
    ):
        return record
    event = operator_event(record, action, by=by, now=now, assignee=assignee, until=until)
    await publish(event)
    return await view.apply(event) or await view.get(alert_id) or record
