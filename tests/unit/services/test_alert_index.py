"""Alert search (services/alert_index.py): each filter, combinations, sorts, keyset pages, facets,
and that a record's search entry tells its status like the record itself."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import pytest

from rules.events import AlertEvent, AlertStatus, Severity
from services.alert_index import (
    UNASSIGNED,
    AlertMeta,
    AlertQuery,
    Display,
    InvalidCursor,
    Sort,
    decode_cursor,
    encode_cursor,
    facets,
    search,
)
from services.store import Action, AlertRecord, merge, operator_event

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=2)


def meta(n: int, **overrides: Any) -> AlertMeta:
    values: dict[str, Any] = {
        "id": f"a{n:03d}",
        "rule_id": "tracker-cut",
        "loan_id": f"L{n % 7}",
        "severity": "warning",
        "status": "firing",
        "silenced_until": None,
        "risk_score": 50,
        "started_at": (T0 + dt.timedelta(minutes=n)).timestamp(),
        "assignee": None,
        "labels": {"team": "recovery"},
    }
    values.update(overrides)
    return AlertMeta(**values)


def ids(metas: list[AlertMeta], query: AlertQuery, **kw: Any) -> list[str]:
    return search(metas, query, now=NOW, limit=1000, **kw).ids


def brute(metas: list[AlertMeta], query: AlertQuery) -> set[str]:
    """The filters spelled out one by one, independently of `AlertQuery.checker`."""
    now = NOW.timestamp()
    out = set()
    for m in metas:
        assignee = m.assignee if m.assignee is not None else UNASSIGNED
        if query.rules and m.rule_id not in query.rules:
            continue
        if query.severities and m.severity not in query.severities:
            continue
        if query.statuses and m.status_at(now) not in query.statuses:
            continue
        if query.assignees and assignee not in query.assignees:
            continue
        if any(m.labels.get(k) not in v for k, v in query.labels.items()):
            continue
        if query.loan_id and m.loan_id != query.loan_id:
            continue
        if query.since and m.started_at < query.since.timestamp():
            continue
        if query.until and m.started_at >= query.until.timestamp():
            continue
        out.add(m.id)
    return out


def portfolio(n: int = 300, seed: int = 7) -> list[AlertMeta]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        silenced = rng.random() < 0.1
        out.append(
            meta(
                i,
                rule_id=rng.choice(["tracker-cut", "long-dwell", "offline", "overdue"]),
                severity=rng.choice(["info", "warning", "critical"]),
                status=rng.choice(["firing", "firing", "acknowledged", "resolved"]),
                silenced_until=(
                    NOW + dt.timedelta(hours=1 if rng.random() < 0.5 else -1)
                ).timestamp()
                if silenced
                else None,
                risk_score=rng.randrange(0, 101, 5),
                assignee=rng.choice([None, None, "collector-07", "华东催收组"]),
                labels={"team": rng.choice(["recovery", "collections"]), "pattern": "x"},
                started_at=(T0 + dt.timedelta(minutes=rng.randrange(0, 3000))).timestamp(),
            )
        )
    return out


def test_each_filter_alone() -> None:
    metas = [
        meta(1, rule_id="long-dwell"),
        meta(2, severity="critical"),
        meta(3, status="acknowledged"),
        meta(4, assignee="collector-07"),
        meta(5, labels={"team": "collections"}),
        meta(6, loan_id="LX"),
    ]
    assert ids(metas, AlertQuery(rules=frozenset({"long-dwell"}))) == ["a001"]
    assert ids(metas, AlertQuery(severities=frozenset({Severity.CRITICAL}))) == ["a002"]
    assert ids(metas, AlertQuery(statuses=frozenset({AlertStatus.ACKNOWLEDGED}))) == ["a003"]
    assert ids(metas, AlertQuery(assignees=frozenset({"collector-07"}))) == ["a004"]
    unassigned = ids(metas, AlertQuery(assignees=frozenset({UNASSIGNED})))
    assert unassigned == ["a006", "a005", "a003", "a002", "a001"]
    assert ids(metas, AlertQuery(labels={"team": frozenset({"collections"})})) == ["a005"]
    assert ids(metas, AlertQuery(labels={"nope": frozenset({"x"})})) == []
    assert ids(metas, AlertQuery(loan_id="LX")) == ["a006"]
    window = AlertQuery(since=T0 + dt.timedelta(minutes=2), until=T0 + dt.timedelta(minutes=4))
    assert ids(metas, window) == ["a003", "a002"]  # since inclusive, until exclusive


def test_snooze_status_depends_on_now() -> None:
    until = (NOW + dt.timedelta(minutes=5)).timestamp()
    snoozed = meta(1, status="acknowledged", silenced_until=until)
    silenced = AlertQuery(statuses=frozenset({AlertStatus.SILENCED}))
    acked = AlertQuery(statuses=frozenset({AlertStatus.ACKNOWLEDGED}))
    assert search([snoozed], silenced, now=NOW).ids == ["a001"]
    later = NOW + dt.timedelta(minutes=6)
    assert search([snoozed], silenced, now=later).ids == []
    assert search([snoozed], acked, now=later).ids == ["a001"]
    assert meta(2, status="resolved", silenced_until=until).status_at(NOW.timestamp()) == "resolved"


@pytest.mark.parametrize("seed", range(4))
def test_combinations_match_a_brute_force_reading(seed: int) -> None:
    metas = portfolio(seed=seed)
    rng = random.Random(seed)
    for _ in range(60):
        query = AlertQuery(
            rules=frozenset(
                rng.sample(["tracker-cut", "long-dwell", "offline"], rng.randint(0, 2))
            ),
            severities=frozenset(rng.sample(list(Severity), rng.randint(0, 2))),
            statuses=frozenset(rng.sample(list(AlertStatus), rng.randint(0, 2))),
            assignees=frozenset(
                rng.sample([UNASSIGNED, "collector-07", "华东催收组"], rng.randint(0, 2))
            ),
            labels={"team": frozenset({"recovery"})} if rng.random() < 0.3 else {},
            since=T0 + dt.timedelta(minutes=500) if rng.random() < 0.3 else None,
        )
        page = search(metas, query, now=NOW, limit=1000)
        assert set(page.ids) == brute(metas, query)
        assert page.total == len(page.ids)


@pytest.mark.parametrize("sort", list(Sort))
def test_sort_orders_and_pages_are_stable(sort: Sort) -> None:
    metas = portfolio(250)
    rank = {"info": 0, "warning": 1, "critical": 2}
    full = ids(metas, AlertQuery(), sort=sort)
    rows = {m.id: m for m in metas}
    for a, b in itertools.pairwise(full):
        x, y = rows[a], rows[b]
        if sort in (Sort.NEWEST, Sort.OLDEST):
            sign = -1 if sort is Sort.NEWEST else 1
            assert (sign * x.started_at, x.id) < (sign * y.started_at, y.id)
            continue
        value = (
            (lambda m: rank[m.severity]) if "severity" in sort.value else (lambda m: m.risk_score)
        )
        if sort.value.startswith("-"):
            assert value(x) >= value(y)
        else:
            assert value(x) <= value(y)
        if value(x) == value(y):  # ties: newest first, then id
            assert (-x.started_at, x.id) < (-y.started_at, y.id)
    # Page through 37 at a time, adding alerts after the first page: the pages already promised
    # neither repeat nor skip an alert present from the start.
    seen: list[str] = []
    cursor = None
    pool = list(metas)
    while True:
        page = search(pool, AlertQuery(), now=NOW, sort=sort, cursor=cursor, limit=37)
        assert page.total == len(pool)
        seen += page.ids
        cursor = page.next_cursor
        if cursor is None:
            break
        pool.append(meta(1000 + len(pool), risk_score=len(pool) % 100))
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in rows] == full


def test_cursor_round_trip_garbage_and_another_sort() -> None:
    key = (-T0.timestamp(), 0.0, "a/b")
    assert decode_cursor(encode_cursor(Sort.NEWEST, key), Sort.NEWEST) == key
    for bad in ("nope", "", encode_cursor(Sort.NEWEST, key)[:-3] + "!!!"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad, Sort.NEWEST)
    with pytest.raises(InvalidCursor, match="sort"):
        decode_cursor(encode_cursor(Sort.NEWEST, key), Sort.RISK_DESC)


def test_facets_count_each_dimension_under_the_other_filters() -> None:
    metas = portfolio(400, seed=3)
    query = AlertQuery(
        rules=frozenset({"tracker-cut"}),
        statuses=frozenset({AlertStatus.FIRING, AlertStatus.SILENCED}),
        labels={"team": frozenset({"recovery"})},
    )
    counted = facets(metas, query, now=NOW)
    assert counted.total == len(brute(metas, query))
    for rule in ("tracker-cut", "long-dwell", "offline", "overdue"):
        expected = len(brute(metas, AlertQuery(**{**query.__dict__, "rules": frozenset({rule})})))
        assert counted.rule.get(rule, 0) == expected
    for status in AlertStatus:
        other = AlertQuery(**{**query.__dict__, "statuses": frozenset({status})})
        assert counted.status[status.value] == len(brute(metas, other))
    for severity in Severity:
        other = AlertQuery(**{**query.__dict__, "severities": frozenset({severity})})
        assert counted.severity[severity.value] == len(brute(metas, other))
    for who in (UNASSIGNED, "collector-07", "华东催收组"):
        other = AlertQuery(**{**query.__dict__, "assignees": frozenset({who})})
        assert counted.assignee.get(who, 0) == len(brute(metas, other))
    for team in ("recovery", "collections"):
        other = AlertQuery(**{**query.__dict__, "labels": {"team": frozenset({team})}})
        assert counted.label["team"].get(team, 0) == len(brute(metas, other))
    # An unfiltered label key counts under every filter.
    assert counted.label["pattern"] == {"x": counted.total}


def test_facets_cap_label_values_and_count_the_rest() -> None:
    metas = [meta(i, labels={"note": f"n{i % 60}"}) for i in range(120)]
    counted = facets(metas, AlertQuery(), now=NOW)
    assert len(counted.label["note"]) == 50
    assert sum(counted.label["note"].values()) + counted.label_other["note"] == 120


def test_masked_display_filters_and_counts_what_viewers_see() -> None:
    masked = Display(assignee=lambda s: s.replace("13800138000", "138****8000"))
    metas = [meta(1, assignee="张三 13800138000"), meta(2, assignee="collector-07")]
    counted = facets(metas, AlertQuery(), now=NOW, display=masked)
    assert counted.assignee == {"张三 138****8000": 1, "collector-07": 1}
    seen = AlertQuery(assignees=frozenset({"张三 138****8000"}))
    assert search(metas, seen, now=NOW, display=masked).ids == ["a001"]
    assert search(metas, AlertQuery(assignees=frozenset({"张三 13800138000"})), now=NOW,
                  display=masked).ids == []  # fmt: skip


def _event(**overrides: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "alert_id": "a1",
        "fingerprint": "fp1",
        "rule_id": "tracker-cut",
        "loan_id": "L1",
        "severity": Severity.WARNING,
        "status": AlertStatus.FIRING,
        "title": "t",
        "summary": "s",
        "risk_score": 40,
        "started_at": T0,
        "updated_at": T0,
        "event_time": T0,
        "labels": {"team": "recovery"},
    }
    values.update(overrides)
    return AlertEvent(**values)


def test_a_records_search_entry_tells_its_status_at_any_moment() -> None:
    wall = T0 + dt.timedelta(hours=1)
    record = merge(None, _event())
    assert record is not None
    states: list[AlertRecord] = [record]

    def act(r: AlertRecord, action: Action, **kw: Any) -> AlertRecord:
        out = merge(r, operator_event(r, action, by="operator", now=wall, **kw))
        assert out is not None
        return out

    acked = act(record, Action.ACK)
    snoozed = act(acked, Action.SNOOZE, until=wall + dt.timedelta(hours=2))
    assigned = act(snoozed, Action.ASSIGN, assignee="collector-07")
    escalated = merge(
        assigned,
        _event(severity=Severity.CRITICAL, updated_at=T0 + dt.timedelta(hours=3), risk_score=90),
    )
    assert escalated is not None
    resolved = act(escalated, Action.RESOLVE)
    states += [acked, snoozed, assigned, escalated, resolved]
    for r in states:
        m = r.meta()
        assert AlertMeta.loads(m.dumps()) == m
        assert "skipwatch/operator" not in m.labels
        for moment in (wall, wall + dt.timedelta(hours=1), wall + dt.timedelta(hours=3)):
            assert m.status_at(moment.timestamp()) == r.status(moment).value
    assert assigned.meta().assignee == "collector-07"
    assert escalated.meta().severity == "critical" and escalated.meta().risk_score == 90
