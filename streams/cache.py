"""Deserialised loan states of recently touched loans (decoding a state costs more than
evaluating an event on it).

An entry is valid only for the exact table bytes it was decoded from or encoded to, so a value
the cache has not seen (recovery after a rebalance, a write by another worker) is a miss. A
state is taken *out* of the cache while a batch works on it and put back when it is stored: if
the batch fails half-way, the next load decodes the table's bytes again instead of reusing an
object that was changed but never saved.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class StateCache(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[bytes, T]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def take(self, key: str, raw: bytes) -> T | None:
        """The state decoded from exactly `raw`, removed from the cache; None on a miss."""
        item = self._items.pop(key, None)
        if item is not None and item[0] == raw:
            self.hits += 1
            return item[1]
        self.misses += 1
        return None

    def put(self, key: str, raw: bytes, state: T) -> None:
        self._items[key] = (raw, state)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
