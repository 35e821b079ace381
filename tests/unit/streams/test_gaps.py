"""The guard that sends a partition back when the consumer skipped a record (streams/gaps.py)."""

from __future__ import annotations

import pytest

from streams.faust_edge.worker import RecoveryWatchdog
from streams.gaps import APPLY, InputGaps, Verdict

pytestmark = pytest.mark.unit


def test_in_order_records_are_applied() -> None:
    gaps = InputGaps()
    assert [gaps.admit("p0", n) for n in (5, 6, 7)] == [APPLY, APPLY, APPLY]


def test_a_run_of_exactly_the_next_offsets_is_applied_whole_anything_else_is_left_alone() -> None:
    gaps = InputGaps()
    gaps.expect("p0", 5)
    assert gaps.admit_run("p0", 5, 9, 5)  # 5..9, the offsets expected
    assert gaps.expected["p0"] == 10
    assert not gaps.admit_run("p0", 11, 12, 2)  # 10 skipped
    assert not gaps.admit_run("p0", 8, 12, 5)  # redelivered 8, 9: record by record
    assert not gaps.admit_run("p0", 10, 13, 3)  # a hole inside the run
    assert gaps.expected["p0"] == 10  # the refused runs changed nothing
    assert gaps.admit("p0", 11) == Verdict(apply=False, seek_to=10, new_gap=True)
    assert gaps.admit_run("p0", 10, 11, 2)  # the replay arrives in order
    assert gaps.rewound == {} and gaps.expected["p0"] == 12
    assert gaps.admit_run("p1", 40, 41, 2)  # a partition's first run sets its position


def test_a_skipped_record_sends_the_partition_back_and_stale_records_wait_for_it() -> None:
    gaps = InputGaps()
    gaps.admit("p0", 5)
    assert gaps.admit("p0", 7) == Verdict(apply=False, seek_to=6, new_gap=True)
    # stale records fetched after the gap: not applied, seek again (not a new gap)
    assert gaps.admit("p0", 8) == Verdict(apply=False, seek_to=6, new_gap=False)
    assert gaps.admit("p0", 6) == APPLY  # the replay arrives
    assert gaps.admit("p0", 7) == APPLY
    assert gaps.admit("p0", 9) == Verdict(apply=False, seek_to=8, new_gap=True)


def test_redelivered_records_are_applied_again_and_partitions_are_independent() -> None:
    gaps = InputGaps()
    for n in (0, 1, 2):
        gaps.admit("p0", n)
    assert gaps.admit("p0", 1) == APPLY
    assert gaps.admit("p0", 3) == APPLY
    assert gaps.admit("p1", 40) == APPLY  # first record seen on a partition sets its position


def test_rebalanced_partitions_start_afresh() -> None:
    gaps = InputGaps()
    gaps.admit("p0", 1)
    gaps.admit("p1", 1)
    gaps.forget(["p0"])
    assert gaps.admit("p0", 10) == APPLY
    assert gaps.admit("p1", 10) == Verdict(apply=False, seek_to=2, new_gap=True)
    gaps.forget()
    assert gaps.admit("p1", 10) == APPLY


def test_a_partition_whose_tail_was_dropped_is_sent_back_after_a_quiet_period() -> None:
    gaps = InputGaps()
    gaps.admit("p0", 4, now=100.0)  # expects 5 next
    gaps.admit("p1", 9, now=100.0)  # expects 10, and 10 is the end: caught up
    ends = {"p0": 8, "p1": 10}
    assert gaps.stalled(ends, now=105.0, quiet_s=15.0) == {}  # not quiet long enough
    assert gaps.stalled(ends, now=115.0, quiet_s=15.0) == {"p0": 5}
    assert gaps.stalled(ends, now=116.0, quiet_s=15.0) == {}  # one seek per quiet period
    gaps.admit("p0", 5, now=117.0)
    gaps.admit("p0", 6, now=117.0)
    gaps.admit("p0", 7, now=117.0)
    assert gaps.stalled(ends, now=200.0, quiet_s=15.0) == {}


def test_recovery_that_stops_progressing_is_a_stall_and_progress_or_completion_is_not() -> None:
    dog = RecoveryWatchdog(stall_s=30.0)
    assert not dog.stalled(recovering=True, remaining=500, now=0.0)
    assert not dog.stalled(recovering=True, remaining=200, now=25.0)  # progress
    assert not dog.stalled(recovering=True, remaining=200, now=50.0)
    assert dog.stalled(recovering=True, remaining=200, now=55.0)  # 30 s without progress
    assert not dog.stalled(recovering=False, remaining=0, now=60.0)
    assert not dog.stalled(recovering=True, remaining=200, now=100.0)  # a new recovery
    assert dog.stalled(recovering=True, remaining=200, now=130.0)


def test_a_hole_the_broker_confirms_is_skipped_not_replayed() -> None:
    gaps = InputGaps()
    gaps.admit("p0", 5)
    assert gaps.admit("p0", 7).seek_to == 6  # offset 6 is a transaction marker, say
    gaps.skip_to("p0", 7)  # the probe found 7 to be the first record from 6
    assert gaps.admit("p0", 7) == APPLY
    assert gaps.admit("p0", 8) == APPLY


def test_a_newly_assigned_partition_resumes_at_its_committed_offset() -> None:
    gaps = InputGaps()
    gaps.expect("p0", 40)  # the group committed 40: the next record to apply is 40
    assert gaps.admit("p0", 41) == Verdict(apply=False, seek_to=40, new_gap=True)
    assert gaps.admit("p0", 40) == APPLY
    gaps.expect("p0", 10)  # a partition already followed keeps its position
    assert gaps.admit("p0", 41) == APPLY


def test_an_assigned_partition_with_no_record_delivered_yet_counts_as_seen_when_first_checked() -> (
    None
):
    gaps: InputGaps[str] = InputGaps()
    gaps.expect("p0", 7)  # assigned; its first record not delivered yet
    assert gaps.stalled({"p0": 9}, now=100.0, quiet_s=15.0) == {}
    assert gaps.stalled({"p0": 9}, now=115.0, quiet_s=15.0) == {"p0": 7}
