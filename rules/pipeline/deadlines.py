"""A per-partition deadline index: the sweep costs O(deadlines due), not O(loans held).

Each key (a loan) has at most one live entry (when, key) in its partition's heap, at or before
the deadline wanted for it. A deadline that moves later keeps its earlier entry: the entry wakes
the key early and is moved on to the real deadline then (cheaper than a push per engine call).
A deadline that moves earlier pushes a new entry; the old one is stale and skipped when popped
(lazy deletion). The heaps are rebuilt from the live entries when stale ones outnumber them, so
memory follows the keys held, not the engine calls made.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}
        self._wanted: dict[str, float] = {}  # the deadline wanted per key
        self._entry: dict[str, tuple[float, int]] = {}  # its live entry: (when, partition)
        self._size = 0  # entries in the heaps, live and stale

    def schedule(self, partition: int, key: str, when: float | None) -> None:
        """`key`'s deadline is `when` now (None: it has none)."""
        if when is None:
            self._wanted.pop(key, None)  # its entry, if any, is dropped when it pops
            return
        self._wanted[key] = when
        entry = self._entry.get(key)
        if entry is not None and entry[0] <= when and entry[1] == partition:
            return  # the earlier entry wakes the key and moves it on
        self._entry[key] = (when, partition)
        heapq.heappush(self._heaps.setdefault(partition, []), (when, key))
        self._size += 1
        if self._size > 2 * len(self._entry) + 1024:
            self._compact()

    def pop_due(self, partitions: Iterable[int], now: float, limit: int = 10_000) -> list[str]:
        """Keys whose deadline is <= now, in deadline order within a partition, from the given
        partitions only; at most `limit`. A popped key is unscheduled until scheduled again."""
        due: list[str] = []
        for partition in partitions:
            heap = self._heaps.get(partition)
            while heap and heap[0][0] <= now and len(due) < limit:
                when, key = heapq.heappop(heap)
                self._size -= 1
                if self._entry.get(key) != (when, partition):
                    continue  # stale: the key has another entry
                del self._entry[key]
                wanted = self._wanted.get(key)
                if wanted is None:
                    continue  # unscheduled since
                if wanted != when:  # woke early: the deadline moved later
                    self._entry[key] = (wanted, partition)
                    heapq.heappush(heap, (wanted, key))
                    self._size += 1
                    continue
                del self._wanted[key]
                due.append(key)
        return due

    def heap(self, partition: int) -> list[tuple[float, str]]:
        """A partition's heap, to look at (not change): `heap[0][0]` is its earliest entry
        (which may wake its key early). The same list for as long as the partition is held."""
        return self._heaps.setdefault(partition, [])

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (another worker now acts on them)."""
        for partition in partitions:
            heap = self._heaps.pop(partition, [])
            self._size -= len(heap)
            for when, key in heap:
                if self._entry.get(key) == (when, partition):
                    del self._entry[key]
                    self._wanted.pop(key, None)

    def entries(self) -> int:
        """Heap entries held, live and stale (bounded by 2 x the live ones + 1,024)."""
        return self._size

    def _compact(self) -> None:
        live: dict[int, list[tuple[float, str]]] = {p: [] for p in self._heaps}
        for key, (when, partition) in self._entry.items():
            live.setdefault(partition, []).append((when, key))
        for partition, entries in live.items():
            heapq.heapify(entries)
            self._heaps.setdefault(partition, [])[:] = entries  # in place: `heap()` holds it
        self._size = len(self._entry)

    def __len__(self) -> int:
        return len(self._wanted)
