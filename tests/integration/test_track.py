"""Loan tracks for real: pings in Kafka -> projector -> Redis -> `GET /v1/loans/{id}/track`.

A drive and a parked night come back thinned (every moving fix, parked one per 15 min); the
other tracker's last position is there; a restart that re-reads from an earlier position and a
wiped Redis rebuilt from Kafka give the same track; the store gives the same track whatever
the order and batching of the pings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from services.kafka import ensure_topics
from services.track import TrackStore, parse_fix
from tests.integration.test_alert_view import (
    LOAN,
    OPERATOR,
    VIEWER,
    Env,
    auth,
    env,
    eventually,
    running_api,
)

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture, re-used

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
TWO_TRACKERS = {
    **LOAN,
    "devices": [
        {"device_id": "dev-1", "kind": "wired"},
        {"device_id": "dev-2", "kind": "wireless"},
    ],
    "home_region": {"center": [30.66, 104.06], "radius_km": 30},
}


def ping(n: int, device: str = "dev-1", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{device}-{n}", "device_id": device, "vendor": "v",
        "ts": (T0 + dt.timedelta(seconds=30 * n)).isoformat(), "lat": 30.66, "lon": 104.06,
        "device_kind": "wired" if device == "dev-1" else "wireless", **fields,
    }  # fmt: skip


def pings() -> list[dict[str, Any]]:
    # 30 min driving north (a ping every 30 s), then parked for 2 h: 60 + 4 kept out of 300.
    drive = [ping(n, speed_kmh=50.0, lat=30.66 + n * 0.002) for n in range(60)]
    parked = [ping(n, speed_kmh=0.0, lat=30.66 + 60 * 0.002) for n in range(60, 300)]
    wireless = [ping(n, "dev-2", fix="lbs", lat=30.5) for n in (0, 240)]
    return drive + parked + wireless


async def produce(env: Env, topic: str, items: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send(env.topic_prefix + topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def test_track_is_thinned_bounded_and_rebuilt(env: Env) -> None:
    await ensure_topics(env.bootstrap, env.topic_prefix, partitions=2)
    await produce(env, "loans", [("L1", orjson.dumps(TWO_TRACKERS))])

    async def track(client: httpx.AsyncClient, token: str = VIEWER, **params: Any) -> Any:
        response = await client.get("/v1/loans/L1/track", params=params, headers=auth(token))
        assert response.status_code == 200, response.text
        return response.json()

    async with running_api(env) as client:

        async def registered() -> bool:
            response = await client.get("/v1/loans/L1", headers=auth(VIEWER))
            return response.status_code == 200

        await eventually(registered)
        await produce(env, "gps.raw", [(p["device_id"], orjson.dumps(p)) for p in pings()])

        async def complete() -> Any:
            response = await client.get("/v1/loans/L1/track", headers=auth(VIEWER))
            if response.status_code == 404:  # not projected yet (after the wipe)
                return None
            body = response.json()
            done = len(body["latest"]) == 2 and body["latest"][0]["event_id"] == "dev-1-299"
            return body if done and len(body["fixes"]) >= 66 else None

        body = await eventually(complete)
        kept = [f["event_id"] for f in body["fixes"] if f["device_id"] == "dev-1"]
        assert kept == [f"dev-1-{n}" for n in range(60)] + [
            f"dev-1-{n}" for n in (60, 90, 120, 150, 180, 210, 240, 270)
        ]
        assert [f["event_id"] for f in body["fixes"] if f["device_id"] == "dev-2"] == [
            "dev-2-0",
            "dev-2-240",
        ]
        assert body["to"] == (T0 + dt.timedelta(seconds=30 * 299)).isoformat().replace(
            "+00:00", "Z"
        )
        first = next(f for f in body["fixes"] if f["device_id"] == "dev-1")
        assert first["speed_kmh"] == 50.0 and first["fix"] == "gps"
        assert first["device_kind"] == "wired"
        assert {f["device_id"]: f["fix"] for f in body["latest"]} == {
            "dev-1": "gps",
            "dev-2": "lbs",
        }
        assert body["retention_h"] == 168.0 and body["max_fixes"] == 5000

        # A window: the first 10 minutes only.
        window = await track(
            client, **{"from": T0.isoformat(), "to": (T0 + dt.timedelta(minutes=10)).isoformat()}
        )
        assert [f["event_id"] for f in window["fixes"] if f["device_id"] == "dev-1"] == [
            f"dev-1-{n}" for n in range(21)
        ]
        limited = await track(client, limit=5)
        assert limited["truncated"] is True and len(limited["fixes"]) == 5
        assert limited["fixes"][-1]["event_id"] == "dev-1-270"  # the newest five

        loan = (await client.get("/v1/loans/L1", headers=auth(OPERATOR))).json()
        assert loan["home_region"] == {"center": [30.66, 104.06], "radius_km": 30.0}

        bad = await client.get(
            "/v1/loans/L1/track", params={"from": "2024-05-01T08:00:00"}, headers=auth(VIEWER)
        )
        assert bad.status_code == 422
        missing = await client.get("/v1/loans/nope/track", headers=auth(VIEWER))
        assert missing.status_code == 404

    # A restart that re-reads pings from an earlier stored position (here: the middle of the
    # parked stretch, between two kept fixes) must make the same choices, not add a second
    # 15-minute grid of parked fixes.
    redis = Redis.from_url(env.redis_url)
    try:
        key = f"{env.redis_prefix}view:offsets"
        offsets = {k.decode(): int(v) for k, v in (await redis.hgetall(key)).items()}
        gps = {k: v for k, v in offsets.items() if k.startswith(env.topic_prefix + "gps.raw:")}
        dev1 = max(gps, key=lambda k: gps[k])  # dev-1's 300 pings are the bulk of one partition
        assert gps[dev1] >= 300
        await redis.hset(key, dev1, 100)  # dev-1-100: after the kept 90, before the kept 120
    finally:
        await redis.aclose()
    async with running_api(env) as client:

        async def reread() -> bool:
            text = (await client.get("/metrics")).text
            counts = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("skipwatch_projector_track_fixes_total{")
            ]
            return sum(counts) >= 200

        await eventually(reread)
        await asyncio.sleep(1.0)  # the metric counts a batch just before it is written
        again = await track(client)
        assert again["fixes"] == body["fixes"]

    await env.wipe_redis()
    async with running_api(env) as client:
        rebuilt = await eventually(complete)
        assert rebuilt["fixes"] == body["fixes"]
        assert rebuilt["latest"] == body["latest"]


async def test_the_track_does_not_depend_on_order_batching_or_re_reads(
    redis_url: str, redis_prefix: str
) -> None:
    fixes = []
    for p in pings():
        parsed = parse_fix(orjson.dumps(p))
        assert parsed is not None
        fixes.append(parsed)
    redis = Redis.from_url(redis_url)
    tracks = []
    try:
        for n, feed in enumerate(
            [
                [fixes[i : i + 50] for i in range(0, len(fixes), 50)],  # in order
                [fixes[i : i + 50] for i in range(0, len(fixes), 50)]
                + [fixes[100:]],  # a restart re-reads from offset 100
                [fixes[i : i + 37] for i in range(0, len(fixes), 37)][::-1],  # newest first
                [random.Random(7).sample(fixes, len(fixes))],  # shuffled, one batch
            ]
        ):
            store = TrackStore(redis, f"{redis_prefix}{n}:")
            for batch in feed:
                await store.add({"L1": batch})
            got = await store.track("L1", T0, T0 + dt.timedelta(days=1), limit=10_000)
            tracks.append(([f.event_id for f in got.fixes], got.latest))
            await redis.delete(
                f"{redis_prefix}{n}:view:track:L1", f"{redis_prefix}{n}:view:track:last:L1"
            )
    finally:
        await redis.aclose()
    first = tracks[0]
    assert [e for e in first[0] if e.startswith("dev-1")] == [f"dev-1-{n}" for n in range(60)] + [
        f"dev-1-{n}" for n in (60, 90, 120, 150, 180, 210, 240, 270)
    ]
    assert all(t == first for t in tracks[1:])
