"""A per-partition deadline index: the sweep costs O(deadlines due), not O(loans held).

Entries are (when, key). Rescheduling a key just pushes a new entry; stale entries are skipped
when popped (lazy deletion), so every operation is O(log n) and nothing scans all loans.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class DeadlineIndex:
    _heaps: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    # The deadline currently wanted per key; heap entries that disagree are stale.
    _wanted: dict[str, float] = field(default_factory=dict)

    def schedule(self, partition: int, key: str, when: float | None) -> None:
        if when is None:
            self._wanted.pop(key, None)
            return
        if self._wanted.get(key) == when:
            return
        self._wanted[key] = when
        heapq.heappush(self._heaps.setdefault(partition, []), (when, key))

    def pop_due(self, partitions: set[int], now: float, limit: int = 10_000) -> list[str]:
        """Keys whose deadline is <= now, in deadline order, from the given partitions only."""
        due: list[str] = []
        for partition in partitions:
            heap = self._heaps.get(partition)
            while heap and heap[0][0] <= now and len(due) < limit:
                when, key = heapq.heappop(heap)
                if self._wanted.get(key) == when:
                    del self._wanted[key]
                    due.append(key)
        return due

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget partitions this worker no longer owns (another worker now acts on them)."""
        for partition in partitions:
            for _, key in self._heaps.pop(partition, []):
                self._wanted.pop(key, None)

    def __len__(self) -> int:
        return len(self._wanted)
