"""The queue's server-side filters and facet counts for real (Kafka -> projector -> Redis -> API
over HTTP), at more alerts than one page: a filter finds an alert far beyond the first 200, the
facets equal counts taken from the events themselves, and the search index comes back after a
Redis wipe and after a view of an older layout (no index) is replayed."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from rules.events import AlertEvent, AlertStatus, Severity
from tests.integration.test_alert_view import (
    OPERATOR,
    VIEWER,
    Env,
    alert,
    auth,
    env,
    eventually,
    list_ids,
    running_api,
)

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture

N = 600
RULES = ["skip_seed", "tracker_cut_at_risk_place", "long-dwell", "offline"]
TEAMS = ["recovery", "collections"]


def portfolio() -> list[AlertEvent]:
    rng = random.Random(16)
    events = []
    for n in range(N):
        events.append(
            alert(
                n,
                rule_id=rng.choice(RULES),
                severity=rng.choice(list(Severity)),
                status=AlertStatus.RESOLVED if rng.random() < 0.2 else AlertStatus.FIRING,
                risk_score=rng.randrange(0, 101),
                loan_id=f"L{n % 50}",
                labels={"team": rng.choice(TEAMS), "rule_file": "x.yaml"},
            )
        )
    # The needle: the oldest open alert (last of 480 in the newest-first queue) and the only one
    # of its rule and team.
    events[0] = alert(
        0,
        rule_id="needle-rule",
        severity=Severity.WARNING,
        risk_score=3,
        loan_id="L-needle",
        labels={"team": "needle-team"},
    )
    return events


def truth(events: list[AlertEvent], assigned: dict[str, str]) -> dict[str, Counter[str]]:
    """Counts of open (firing) alerts per value, from the events and the assignments made."""
    open_events = [e for e in events if e.status is AlertStatus.FIRING]
    return {
        "rule": Counter(e.rule_id for e in open_events),
        "severity": Counter(e.severity.value for e in open_events),
        "assignee": Counter(assigned.get(e.alert_id, "unassigned") for e in open_events),
        "team": Counter(e.labels["team"] for e in open_events),
    }


async def facets(client: Any, params: Any, token: str = VIEWER) -> dict[str, Any]:
    response = await client.get("/v1/alerts/facets", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_filters_and_facets_over_more_than_a_page(env: Env) -> None:
    events = portfolio()
    await env.produce_alerts(*events)
    open_status = [("status", "firing"), ("status", "acknowledged"), ("status", "silenced")]
    expected_open = sum(e.status is AlertStatus.FIRING for e in events)
    assert expected_open > 200
    assigned: dict[str, str] = {}
    async with running_api(env) as client:

        async def projected() -> bool:
            return (await facets(client, open_status))["total"] == expected_open

        await eventually(projected, timeout_s=60)
        # Newest first, the needle is beyond the first 200 open alerts.
        first = await client.get(
            "/v1/alerts", params=[*open_status, ("limit", "200")], headers=auth(VIEWER)
        )
        assert first.json()["total"] == expected_open
        assert "alert-000" not in [a["id"] for a in first.json()["items"]]
        for params in (
            [*open_status, ("rule", "needle-rule")],
            [("label", "team=needle-team")],
            [("loan", "L-needle"), ("severity", "warning")],
            [("sort", "started_at"), ("limit", "1"), *open_status],
        ):
            found = await client.get("/v1/alerts", params=params, headers=auth(VIEWER))
            assert [a["id"] for a in found.json()["items"]] == ["alert-000"], params

        # Assign a few open alerts; the counts follow at once (the API applies its own writes).
        for e in [e for e in events if e.status is AlertStatus.FIRING][5:305:10]:
            who = "collector-07" if len(assigned) % 2 else "华东催收组"
            response = await client.post(
                f"/v1/alerts/{e.alert_id}/assign", json={"assignee": who}, headers=auth(OPERATOR)
            )
            assert response.status_code == 200
            assigned[e.alert_id] = who
        expected = truth(events, assigned)
        counted = await facets(client, open_status)
        assert counted["total"] == expected_open
        assert counted["rule"] == dict(expected["rule"])
        assert counted["severity"] == {s.value: expected["severity"][s.value] for s in Severity}
        assert counted["assignee"] == dict(expected["assignee"])
        assert counted["label"]["team"] == dict(expected["team"])
        assert "resolved" not in counted["status"]  # an open-only queue never reads the history
        every = await facets(client, [])
        assert every["status"]["resolved"] == N - expected_open
        assert every["status"]["firing"] == expected_open

        # A filter's count is the number of rows it lists, over every page.
        params = [*open_status, ("assignee", "collector-07"), ("label", "team=recovery")]
        assert len(await list_ids(client)) == N  # every status, every page
        listed = []
        cursor = None
        while True:
            query = [*params, ("limit", "7"), *([("cursor", cursor)] if cursor else [])]
            page = (await client.get("/v1/alerts", params=query, headers=auth(VIEWER))).json()
            listed += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        team_counts = (await facets(client, [*open_status, ("assignee", "collector-07")]))["label"]
        assert len(listed) == team_counts["team"]["recovery"] == page["total"]
        assert all(a["assigned"]["assignee"] == "collector-07" for a in listed)

        # Latency at this size, for the record (docs/api.md has the figures at 10 000).
        started = time.perf_counter()
        await facets(client, open_status)
        await client.get("/v1/alerts", params=[*open_status, ("sort", "-risk_score")],
                         headers=auth(VIEWER))  # fmt: skip
        assert time.perf_counter() - started < 2.0

    before = counted
    # A wiped Redis: the projector rebuilds the view and its search index from Kafka.
    await env.wipe_redis()
    async with running_api(env) as client:

        async def rebuilt() -> dict[str, Any] | None:
            body = await facets(client, open_status)
            return body if body["assignee"] == before["assignee"] else None

        after = await eventually(rebuilt, timeout_s=60)
        assert after["total"] == expected_open and after["rule"] == before["rule"]

    # A view of the previous layout (records, no search index, no layout mark) is replayed and
    # gains its index, also for alerts whose records the replay does not change.
    redis = Redis.from_url(env.redis_url)
    try:
        view = f"{env.redis_prefix}view:"
        await redis.delete(f"{view}meta:open", f"{view}meta:resolved", f"{view}layout")
    finally:
        await redis.aclose()
    async with running_api(env) as client:

        async def reindexed() -> dict[str, Any] | None:
            body = await facets(client, open_status)
            return body if body["total"] == expected_open else None

        again = await eventually(reindexed, timeout_s=60)
        assert again["assignee"] == before["assignee"] and again["label"] == before["label"]
