"""Alert search over the view's compact index: filters, sort, keyset pages and facet counts.

The Redis view (services/store.py) keeps, next to each full alert record, a small `AlertMeta`
(rule, loan, severity, status, snooze end, risk score, start, assignee, labels) in one of two
hashes, open or resolved. A list or facet request reads the hash its status filter needs (open
alerts only, for the queue) and filters, sorts and counts here, in one pass over plain values —
no full records are decoded except the page's. Pure: no Redis, no clock (`now` is passed in).

Semantics (docs/api.md "Alert queue: filters, sort, facets"):

- values of one filter are alternatives (rule=a&rule=b: either), different filters all apply;
  labels: values of the same key are alternatives, different keys all apply;
- `assignee=unassigned` matches alerts nobody is assigned to (the name is reserved);
- facets count, per dimension, the alerts that match every *other* filter (so each option's count
  is what choosing it would list); `total` counts the alerts matching all filters.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import orjson

from rules.events import AlertStatus, Severity

UNASSIGNED = "unassigned"
OPEN_STATUSES = frozenset({AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED, AlertStatus.SILENCED})
# Values listed per label key in the facets (most frequent first); the rest are summed up in
# `other` so a free-text label cannot blow up the answer.
MAX_LABEL_VALUES = 50
_RANK = {s.value: s.rank for s in Severity}


def _identity(text: str) -> str:
    return text


class AlertMeta(NamedTuple):
    """What search needs of one alert. `status` is the status once any snooze has ended;
    `silenced_until` (epoch s) the end of a snooze in force, so the status at any moment is known
    without the record. A tuple: thousands are decoded per request."""

    id: str
    rule_id: str
    loan_id: str
    severity: str
    status: str
    silenced_until: float | None
    risk_score: int
    started_at: float
    assignee: str | None
    labels: dict[str, str]

    def status_at(self, now: float) -> str:
        if (
            self.silenced_until is not None
            and self.silenced_until > now
            and self.status != AlertStatus.RESOLVED
        ):
            return AlertStatus.SILENCED.value
        return self.status

    @property
    def is_open(self) -> bool:
        return self.status != AlertStatus.RESOLVED

    def dumps(self) -> bytes:
        return orjson.dumps(list(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> AlertMeta:
        return cls._make(orjson.loads(raw))


class Sort(StrEnum):
    """`-` first: descending. Ties: newest `started_at` first, then alert id."""

    NEWEST = "-started_at"
    OLDEST = "started_at"
    SEVERITY_DESC = "-severity"
    SEVERITY_ASC = "severity"
    RISK_DESC = "-risk_score"
    RISK_ASC = "risk_score"


SortKey = tuple[float, float, str]


def sort_key(meta: AlertMeta, sort: Sort) -> SortKey:
    """Ascending order of this tuple is the order of the list."""
    if sort is Sort.NEWEST:
        return (-meta.started_at, 0.0, meta.id)
    if sort is Sort.OLDEST:
        return (meta.started_at, 0.0, meta.id)
    primary = float(_RANK[meta.severity] if sort.value.endswith("severity") else meta.risk_score)
    return (-primary if sort.value.startswith("-") else primary, -meta.started_at, meta.id)


class InvalidCursor(ValueError):
    pass


def encode_cursor(sort: Sort, key: SortKey) -> str:
    raw = orjson.dumps([sort.value, *key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, first, second, alert_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc
    if (
        not isinstance(first, int | float)
        or not isinstance(second, int | float)
        or not isinstance(alert_id, str)
    ):
        raise InvalidCursor("cursor is not one this API returned")
    if name != sort.value:
        raise InvalidCursor(f"cursor belongs to sort={name}; keep the sort when paging")
    return (float(first), float(second), alert_id)


@dataclass(frozen=True)
class Display:
    """How a caller sees free text (viewers: phone numbers masked). Filters compare, and facets
    count, the values as the caller sees them, so a facet value always works as a filter."""

    assignee: Callable[[str], str] = _identity
    label: Callable[[str], str] = _identity


PLAIN = Display()


@dataclass(frozen=True)
class AlertQuery:
    """Filters of `GET /v1/alerts` and `/v1/alerts/facets`; empty sets mean no filter."""

    rules: frozenset[str] = frozenset()
    severities: frozenset[Severity] = frozenset()
    statuses: frozenset[AlertStatus] = frozenset()
    assignees: frozenset[str] = frozenset()  # UNASSIGNED: nobody assigned
    labels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    loan_id: str | None = None
    since: dt.datetime | None = None  # started_at >= since
    until: dt.datetime | None = None  # started_at < until

    @property
    def open_only(self) -> bool:
        return bool(self.statuses) and self.statuses <= OPEN_STATUSES

    @property
    def resolved_only(self) -> bool:
        return self.statuses == {AlertStatus.RESOLVED}

    def checker(self, now: float, display: Display) -> Callable[[AlertMeta], list[str]]:
        """`failing(meta)`: the dimensions whose filter `meta` fails (`label:<key>` per label
        key); two empty names for the loan and time window, which are no facets. It stops at two:
        an alert failing two filters counts nowhere. Built once per request: it runs per alert."""
        rules, severities, statuses = self.rules, self.severities, self.statuses
        assignees, labels, loan_id = self.assignees, list(self.labels.items()), self.loan_id
        low = self.since.timestamp() if self.since is not None else None
        high = self.until.timestamp() if self.until is not None else None
        show_assignee, show_label = display.assignee, display.label
        silenced, resolved = AlertStatus.SILENCED.value, AlertStatus.RESOLVED.value
        outside = ["", ""]

        def failing(meta: AlertMeta) -> list[str]:
            if (loan_id is not None and meta.loan_id != loan_id) or (
                (low is not None and meta.started_at < low)
                or (high is not None and meta.started_at >= high)
            ):
                return outside
            out: list[str] = []
            if rules and meta.rule_id not in rules:
                out.append("rule")
            if severities and meta.severity not in severities:
                out.append("severity")
            if statuses:
                until, status = meta.silenced_until, meta.status
                if until is not None and until > now and status != resolved:
                    status = silenced
                if status not in statuses:
                    out.append("status")
            if assignees:
                who = meta.assignee
                if (UNASSIGNED if who is None else show_assignee(who)) not in assignees:
                    out.append("assignee")
            for key, values in labels:
                value = meta.labels.get(key)
                if value is None or show_label(value) not in values:
                    out.append(f"label:{key}")
            return out

        return failing


@dataclass(frozen=True)
class SearchPage:
    ids: list[str]
    next_cursor: str | None
    total: int  # alerts matching the filters, over all pages


def search(
    metas: Iterable[AlertMeta],
    query: AlertQuery,
    *,
    now: dt.datetime,
    sort: Sort = Sort.NEWEST,
    cursor: str | None = None,
    limit: int = 50,
    display: Display = PLAIN,
) -> SearchPage:
    """One page of matching alert ids in `sort` order, after `cursor` (keyset: the last item's
    sort key, so alerts that arrive meanwhile never shift or repeat the pages not yet read).
    O(n log limit) over the `metas` given. Raises InvalidCursor."""
    after = decode_cursor(cursor, sort) if cursor is not None else None
    moment = now.timestamp()
    total = 0
    keys: list[SortKey] = []
    failing = query.checker(moment, display)
    for meta in metas:
        if failing(meta):
            continue
        total += 1
        key = sort_key(meta, sort)
        if after is None or key > after:
            keys.append(key)
    page = heapq.nsmallest(limit + 1, keys)
    more = len(page) > limit
    page = page[:limit]
    return SearchPage(
        ids=[key[2] for key in page],
        next_cursor=encode_cursor(sort, page[-1]) if more else None,
        total=total,
    )


@dataclass(frozen=True)
class Facets:
    total: int
    rule: dict[str, int]
    severity: dict[str, int]
    status: dict[str, int]
    assignee: dict[str, int]
    label: dict[str, dict[str, int]]
    label_other: dict[str, int]  # per key: alerts whose value is beyond the listed ones


def facets(
    metas: Iterable[AlertMeta],
    query: AlertQuery,
    *,
    now: dt.datetime,
    display: Display = PLAIN,
    statuses: Iterable[AlertStatus] = tuple(AlertStatus),
) -> Facets:
    """Counts per value of each dimension over every alert in `metas`, each dimension under all
    the other filters (its own left out). One pass, O(n). `statuses`: those `metas` hold all
    alerts of (the status counts list these only)."""
    moment = now.timestamp()
    total = 0
    rule: Counter[str] = Counter()
    severity: Counter[str] = Counter()
    status: Counter[str] = Counter()
    assignee: Counter[str] = Counter()
    label: dict[str, Counter[str]] = {}
    check = query.checker(moment, display)
    for meta in metas:
        failing = check(meta)
        if len(failing) > 1:
            continue
        only = failing[0] if failing else None
        if only is None:
            total += 1
        if only in (None, "rule"):
            rule[meta.rule_id] += 1
        if only in (None, "severity"):
            severity[meta.severity] += 1
        if only in (None, "status"):
            status[meta.status_at(moment)] += 1
        if only in (None, "assignee"):
            shown = UNASSIGNED if meta.assignee is None else display.assignee(meta.assignee)
            assignee[shown] += 1
        for key, value in meta.labels.items():
            if only is None or only == f"label:{key}":
                label.setdefault(key, Counter())[display.label(value)] += 1
    listed: dict[str, dict[str, int]] = {}
    other: dict[str, int] = {}
    for key in sorted(label):
        top = label[key].most_common(MAX_LABEL_VALUES)
        listed[key] = dict(top)
        rest = sum(label[key].values()) - sum(n for _, n in top)
        if rest:
            other[key] = rest
    return Facets(
        total=total,
        rule=dict(sorted(rule.items(), key=lambda kv: (-kv[1], kv[0]))),
        severity={s.value: severity.get(s.value, 0) for s in Severity},
        status={s.value: status.get(s.value, 0) for s in AlertStatus if s in set(statuses)},
        assignee=dict(sorted(assignee.items(), key=lambda kv: (-kv[1], kv[0]))),
        label=listed,
        label_other=other,
    )
