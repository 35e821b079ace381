"""Short-lived memory of event_ids already in Kafka, so vendor retries are counted and skipped.

Best effort by design: the worker deduplicates by event_id too, so a store that is down or has
forgotten an id only costs a duplicate record, never correctness. Ids are marked only after Kafka
acknowledged their record, so an id is never skipped unless it really is in the log.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 6 * 3600  # longer than any sane vendor retry window, short enough to stay small
DEFAULT_MEMORY_ENTRIES = 500_000


class DedupStore(Protocol):
    async def seen(self, namespace: str, ids: Sequence[str]) -> set[str]:
        """The ids of `ids` already marked in `namespace` (a topic name)."""
        ...

    async def mark(self, namespace: str, ids: Sequence[str]) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers; for the readiness probe."""
        ...

    async def close(self) -> None: ...


class DedupUnavailable(RuntimeError):
    """The store did not answer; callers continue without dedup."""


class MemoryDedup:
    """In-process LRU with a TTL: for single-process deployments and tests."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MEMORY_ENTRIES):
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        # Keyed by "<namespace>\0<event_id>": a str key is no object for the garbage collector
        # to track (a tuple per id was, and made collections of a busy API process slow).
        self._expiry: OrderedDict[str, float] = OrderedDict()

    async def seen(self, namespace: str, ids: Sequence[str]) -> set[str]:
        now = time.monotonic()
        prefix = namespace + "\0"
        get = self._expiry.get
        found: set[str] = set()
        for event_id in ids:
            expires = get(prefix + event_id)
            if expires is not None and expires > now:
                found.add(event_id)
        return found

    async def mark(self, namespace: str, ids: Sequence[str]) -> None:
        expires = time.monotonic() + self._ttl_s
        prefix = namespace + "\0"
        expiry = self._expiry
        move_to_end = expiry.move_to_end
        for event_id in ids:
            key = prefix + event_id
            expiry[key] = expires
            move_to_end(key)
        while len(expiry) > self._max_entries:
            expiry.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._expiry.clear()


class RedisDedup:
    """Shared by all API processes: one key per id, `<prefix>dedup:<namespace>:<event_id>`, EX."""

    def __init__(self, url: str, key_prefix: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        # Short timeouts: a slow Redis must not hold up ingest; dedup is an optimisation.
        self._redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = f"{key_prefix}dedup:"
        self._ttl_s = ttl_s

    def _key(self, namespace: str, event_id: str) -> str:
        return f"{self._prefix}{namespace}:{event_id}"

    async def seen(self, namespace: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        try:
            values = await self._redis.mget([self._key(namespace, i) for i in ids])
        except (RedisError, OSError) as exc:
            raise DedupUnavailable(str(exc)) from exc
        return {event_id for event_id, value in zip(ids, values, strict=True) if value is not None}

    async def mark(self, namespace: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id in ids:
                    pipe.set(self._key(namespace, event_id), b"1", ex=self._ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise DedupUnavailable(str(exc)) from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
