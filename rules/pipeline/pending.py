"""Pings of devices not bound to a loan yet, kept until the binding comes (trackers are
installed before funding), append-only.

Two tables: `index[device_id]` lists the device's chunks (``[[seq, pings], ...]``, a few dozen
bytes) and `chunks[chunk_key(device_id, seq)]` holds one batch's pings of the device, raw JSON
separated by newlines. A batch adds one chunk per waiting device and rewrites only its index, so
the changelog grows with the pings kept. The layout before this one rewrote the device's whole
list each batch: in the first-start benchmark 49,390 changelog records of up to 200 pings each
for 90,059 pings, and with every ping pending a single commit took two minutes.

At most `limit` pings are kept per device (the newest): whole chunks are dropped from the
oldest end while the rest still hold `limit`. A device's index written by the layout before
(the pings themselves, not a list) is read as one chunk.
"""

from __future__ import annotations

import orjson

from rules.pipeline.tables import Table

# Pings kept per device not bound yet (the newest): a tracker installed long before its loan is
# funded keeps a bounded backlog, not weeks of pings.
MAX_PENDING_PINGS_PER_DEVICE = 200


def chunk_key(device_id: str, seq: int) -> str:
    """A chunk's key: JSON, so the device id comes back out whatever characters it holds."""
    return orjson.dumps([device_id, seq]).decode()


def device_of(key: str) -> str:
    """The device id in a chunk key (its table partition is the device's)."""
    device_id: str = orjson.loads(key)[0]
    return device_id


class PendingPings:
    def __init__(
        self,
        index: Table,
        chunks: Table,
        limit: int = MAX_PENDING_PINGS_PER_DEVICE,
    ) -> None:
        self.index = index
        self.chunks = chunks
        self.limit = limit

    def _index_to_extend(self, device_id: str) -> list[list[int]]:
        """The device's chunk list; an index of the layout before becomes chunk 0."""
        raw = self.index.get(device_id)
        if not raw:
            return []
        if raw[:1] != b"[":  # the layout before: the pings themselves, read as chunk 0
            self.chunks[chunk_key(device_id, 0)] = raw
            return [[0, raw.count(b"\n") + 1]]
        chunks: list[list[int]] = orjson.loads(raw)
        return chunks

    def add(self, device_id: str, pings: list[bytes]) -> None:
        """Keep `pings` (oldest first) after the ones held for the device."""
        if not pings:
            return
        pings = pings[-self.limit :]
        held = self._index_to_extend(device_id)
        seq = held[-1][0] + 1 if held else 0
        self.chunks[chunk_key(device_id, seq)] = b"\n".join(pings)
        held.append([seq, len(pings)])
        total = sum(count for _, count in held)
        while len(held) > 1 and total - held[0][1] >= self.limit:
            old, count = held.pop(0)
            total -= count
            self._drop(chunk_key(device_id, old))
        self.index[device_id] = orjson.dumps(held)

    def held(self, device_id: str) -> list[bytes]:
        """The device's pings, oldest first, at most `limit`."""
        raw = self.index.get(device_id)
        if not raw:
            return []
        if raw[:1] != b"[":
            return raw.split(b"\n")[-self.limit :]
        pings: list[bytes] = []
        for seq, _ in orjson.loads(raw):
            chunk = self.chunks.get(chunk_key(device_id, seq))
            if chunk:
                pings.extend(chunk.split(b"\n"))
        return pings[-self.limit :]

    def forget(self, device_id: str) -> None:
        """Drop everything held for the device (its pings were forwarded)."""
        raw = self.index.get(device_id)
        if not raw:
            return
        if raw[:1] == b"[":
            for seq, _ in orjson.loads(raw):
                self._drop(chunk_key(device_id, seq))
        del self.index[device_id]

    def _drop(self, key: str) -> None:
        if self.chunks.get(key) is not None:
            del self.chunks[key]
