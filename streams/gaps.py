"""Guard against input records that were skipped without being applied.

Around a restart's seek to the committed offsets Faust could hand an agent a partition's
records with one missing and still commit past it (its fetch loop marks a record read when a
flow suspension cut the hand-off short, counts missing offsets as a compaction gap, and its
commit bookkeeping lets a one-record gap at the head of a partition through). Seen as a
restarted worker that committed every input yet never applied some pings (the SIGKILL pipeline
test, about one run in fifteen), and as `expected 55, got 56` on a raw GPS partition. The
pipeline's own intake (streams/intake.py) closes the causes it found; the guard stays as the
check that nothing is applied out of order.

The guard follows, per partition of a topic whose offsets are contiguous (delete policy, no
transactions: a compacted topic has holes by design), the next offset the pipeline expects. A
record past it is not applied: the caller seeks the partition back to the expected offset
(once per batch: the seek drops what was fetched after it), so the skipped record and the ones
after it come again, in order. Records below the expected offset are re-deliveries and are
applied again (the engine ignores repeated event ids). After every assignment the caller sets
each partition's expected offset to the group's committed offset, so a first record past it is
a gap as well; a partition with records after the expected offset and none delivered for a
while (its tail was dropped, or none of its records came at all) is sent back by a periodic
check.

Offsets with no record behind them are normal in Kafka too: a transactional producer's commit
markers take offsets, and compaction removes records. So before a partition is sent back, the
caller asks the broker for the first record at or after the expected offset (a one-off fetch
outside the consumer group): when that is the record just received, there was nothing to skip
and the partition goes on from it (`skip_to`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Verdict:
    apply: bool
    seek_to: int | None = None
    new_gap: bool = False


APPLY = Verdict(apply=True)


@dataclass
class InputGaps(Generic[K]):
    expected: dict[K, int] = field(default_factory=dict)
    # partitions sent back to an offset, until the record there comes again
    rewound: dict[K, int] = field(default_factory=dict)
    last_seen: dict[K, float] = field(default_factory=dict)

    def admit(self, tp: K, offset: int, now: float = 0.0) -> Verdict:
        self.last_seen[tp] = now
        expected = self.expected.get(tp)
        if expected is None or offset == expected:
            self.expected[tp] = offset + 1
            self.rewound.pop(tp, None)
            return APPLY
        if offset < expected:
            return APPLY  # delivered again
        new_gap = self.rewound.get(tp) != expected
        self.rewound[tp] = expected
        return Verdict(apply=False, seek_to=expected, new_gap=new_gap)

    def admit_run(self, tp: K, first: int, last: int, count: int, now: float = 0.0) -> bool:
        """A run of `count` records of one partition, offsets `first`..`last` in order: True
        (and the run applied as a whole) when they are exactly the offsets expected next. Else
        nothing changes and the caller admits them one by one."""
        expected = self.expected.get(tp)
        if last - first + 1 != count or (expected is not None and first != expected):
            return False
        self.last_seen[tp] = now
        self.expected[tp] = last + 1
        self.rewound.pop(tp, None)
        return True

    def stalled(self, end_offsets: Mapping[K, int], now: float, quiet_s: float) -> dict[K, int]:
        """Partitions with records after the expected offset but nothing delivered for `quiet_s`
        (the consumer dropped the tail of a partition): where to seek them back to."""
        out: dict[K, int] = {}
        for tp, expected in self.expected.items():
            end = end_offsets.get(tp)
            seen = self.last_seen.setdefault(tp, now)  # expected (assigned), none delivered yet
            if end is not None and end > expected and now - seen >= quiet_s:
                out[tp] = expected
                self.last_seen[tp] = now  # one seek per quiet period
        return out

    def expect(self, tp: K, offset: int) -> None:
        """Where a newly assigned partition resumes (its committed offset): a first record past
        it is a gap too."""
        self.expected.setdefault(tp, offset)

    def skip_to(self, tp: K, offset: int) -> None:
        """The broker holds no record before `offset` after the expected one (transaction
        markers, compaction): the partition continues from there."""
        self.expected[tp] = offset
        self.rewound.pop(tp, None)

    def forget(self, tps: Iterable[K] | None = None) -> None:
        """Partitions revoked or newly assigned (all when None) start afresh."""
        for tp in list(self.expected) if tps is None else tps:
            self.expected.pop(tp, None)
            self.rewound.pop(tp, None)
            self.last_seen.pop(tp, None)
