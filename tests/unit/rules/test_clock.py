"""The time model (rules/clock.py): per-partition watermarks, idle partitions, ordered release,
the engine's `now` and the deadline sweep's gate; and lateness judged by arrival (engine)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from rules.clock import EngineClock, TimeMerge
from rules.engine import Engine
from rules.events import AlertStatus
from tests.scenarios import at, loan, ping

pytestmark = pytest.mark.unit


def caught_up(merge: TimeMerge[str, str], key: str, end: int, now: float) -> None:
    """The consumer fetched `key` to its end `end` and handed on everything before it."""
    merge.fetched(key, position=end, highwater=end, delivered=end - 1 if end else None, now=now)


def lagging(merge: TimeMerge[str, str], key: str, now: float) -> None:
    merge.fetched(key, position=0, highwater=100, delivered=None, now=now)


# ------------------------------------------------------------------ watermarks


def test_now_is_the_minimum_watermark_over_the_active_partitions() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=5.0)
    merge.assign(["pay-0", "gps-0"], now=0.0)
    lagging(merge, "pay-0", 0.0)
    lagging(merge, "gps-0", 0.0)
    # the small topic was read far ahead of the big one
    for offset, t in enumerate((100.0, 500.0, 900.0)):
        merge.push("pay-0", offset, t, f"pay@{t:g}", now=0.0)
    merge.push("gps-0", 0, 50.0, "gps@50", now=0.0)
    merge.push("gps-0", 1, 120.0, "gps@120", now=0.0)
    assert merge.watermark(now=0.0) == 120.0
    # released in arrival order up to the slower partition only: the payments of 500 and 900
    # wait for the pings before them
    assert merge.release(now=0.0) == ["gps@50", "pay@100", "gps@120"]
    merge.push("gps-0", 2, 600.0, "gps@600", now=0.0)
    assert merge.release(now=0.0) == ["pay@500", "gps@600"]
    assert len(merge) == 1  # pay@900 waits for a later ping
    assert merge.forced == 0


def test_an_idle_partition_is_left_out_only_after_the_timeout() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=5.0)
    merge.assign(["pay-0", "gps-0"], now=0.0)
    lagging(merge, "pay-0", 0.0)
    merge.push("pay-0", 0, 100.0, "pay@100", now=0.0)
    # gps-0 has nothing and is read to its end: it may still be about to get a record
    caught_up(merge, "gps-0", 0, 0.0)
    assert merge.watermark(now=1.0) == -math.inf
    assert merge.release(now=1.0) == []
    # nothing new for the timeout: it no longer holds the others back
    assert merge.watermark(now=5.0) == 100.0
    assert merge.release(now=5.0) == ["pay@100"]


def test_a_partition_with_lag_is_never_idle() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0)
    merge.assign(["pay-0", "gps-0"], now=0.0)
    lagging(merge, "pay-0", 0.0)
    merge.push("pay-0", 0, 100.0, "pay@100", now=0.0)
    lagging(merge, "gps-0", 0.0)  # records to read, none read yet
    assert merge.release(now=1_000.0) == []
    # a partition whose records were handed on but not read yet is not caught up either
    merge.fetched("gps-0", position=100, highwater=100, delivered=99, now=1_000.0)
    assert merge.release(now=1_000.0) == []
    merge.observe("gps-0", 99, 90.0, now=1_000.0)
    assert merge.release(now=1_000.0) == ["pay@100"]


def test_records_the_worker_sent_itself_are_waited_for_whatever_the_last_fetch_said() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0)
    merge.assign(["pay-0", "bound-0"], now=0.0)
    lagging(merge, "pay-0", 0.0)
    merge.push("pay-0", 0, 100.0, "pay@100", now=0.0)
    caught_up(merge, "bound-0", 3, 0.0)
    merge.observe("bound-0", 2, 40.0, now=0.0)
    merge.sent("bound-0", 3)  # forwarded pings: acked, not fetched yet
    assert merge.release(now=10.0) == []
    merge.push("bound-0", 3, 95.0, "bound@95", now=10.0)
    caught_up(merge, "bound-0", 4, 10.0)
    assert merge.release(now=10.0) == ["bound@95", "pay@100"]


def test_a_derived_partition_is_released_by_arrival_and_bounded_by_its_sources() -> None:
    """gps.bound holds pings re-keyed from several gps.raw partitions, in the order the worker
    forwarded them, not by arrival: released by arrival, behind the gps.raw watermarks."""
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0, derived=lambda key: key == "bound-0")
    merge.assign(["raw-0", "raw-1", "bound-0", "pay-0"], now=0.0)
    lagging(merge, "raw-0", 0.0)
    lagging(merge, "raw-1", 0.0)
    lagging(merge, "pay-0", 0.0)
    merge.push("pay-0", 0, 250.0, "pay@250", now=0.0)
    # the worker forwarded raw-1's pings up to 300 first, then raw-0's up to 200
    merge.observe("raw-1", 10, 300.0, now=0.0)
    merge.observe("raw-0", 10, 200.0, now=0.0)
    merge.sent("bound-0", 1)
    merge.fetched("bound-0", position=2, highwater=2, delivered=1, now=0.0)
    merge.push("bound-0", 0, 100.0, "wireless@100", now=0.0)
    merge.push("bound-0", 0, 300.0, "wireless@300", now=0.0)
    merge.push("bound-0", 1, 90.0, "wired@90", now=0.0)
    # not everything forwarded was read back yet: nothing goes
    merge.fetched("bound-0", position=1, highwater=2, delivered=0, now=0.0)
    assert merge.release(now=0.0) == []
    merge.fetched("bound-0", position=2, highwater=2, delivered=1, now=0.0)
    assert merge.release(now=0.0) == ["wired@90", "wireless@100"]  # raw-0 is at 200
    merge.observe("raw-0", 11, 400.0, now=0.0)
    assert merge.release(now=0.0) == ["pay@250"]  # the payments may hold more before 300
    caught_up(merge, "pay-0", 1, 0.0)
    assert merge.release(now=0.0) == ["wireless@300"]


def two_binders(idle_s: float = 0.0, source_timeout_s: float = math.inf) -> TimeMerge[str, str]:
    """The merge of a worker that binds raw-0 and reads bound-0; raw-1 is bound by another
    worker, whose pings and marks reach it on bound-0."""
    merge: TimeMerge[str, str] = TimeMerge(
        idle_s=idle_s, derived=lambda k: k.startswith("bound"), source_timeout_s=source_timeout_s
    )
    merge.set_sources(["raw-0", "raw-1"])
    merge.assign(["raw-0", "bound-0"], now=0.0)
    lagging(merge, "raw-0", 0.0)
    return merge


def test_a_source_bound_by_another_worker_holds_the_clock_until_its_binder_marks_it() -> None:
    """The survivor of a takeover must not run ahead of the pings of a gps.raw partition whose
    binder is dead (or not heard from yet): they come later, and would be taken as history."""
    merge = two_binders()
    assert merge.remote_sources() == ["raw-1"]
    merge.observe("raw-0", 10, 500.0, now=0.0)
    merge.push("bound-0", 0, 100.0, "own@100", now=0.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    assert merge.release(now=0.0) == []  # nothing announced of raw-1: it holds everything
    assert merge.watermark(now=0.0) == -math.inf
    merge.mark("bound-0", 1, "raw-1", 150.0, through=40, now=0.0)
    merge.fetched("bound-0", position=2, highwater=2, delivered=1, now=0.0)
    assert merge.watermark(now=0.0) == 150.0
    assert merge.release(now=0.0) == ["own@100"]
    # the other worker's pings up to 300 came, then its mark: they go in arrival order
    merge.push("bound-0", 2, 300.0, "other@300", now=0.0)
    merge.push("bound-0", 2, 200.0, "other@200", now=0.0)
    merge.mark("bound-0", 3, "raw-1", 300.0, through=80, now=0.0)
    merge.fetched("bound-0", position=4, highwater=4, delivered=3, now=0.0)
    assert merge.release(now=0.0) == ["other@200", "other@300"]
    assert not merge.caught_up(now=0.0)  # raw-1's end is not known: it may hold more


def test_marks_take_the_smallest_announcement_over_the_derived_partitions_read() -> None:
    """A mark on one gps.bound partition says nothing of the pings still on their way on
    another: the watermark of a source is the minimum over every derived partition read."""
    merge = two_binders()
    merge.assign(["raw-0", "bound-0", "bound-1"], now=0.0)
    merge.observe("raw-0", 10, 1_000.0, now=0.0)
    for key in ("bound-0", "bound-1"):
        merge.fetched(key, position=5, highwater=5, delivered=4, now=0.0)
    merge.mark("bound-0", 4, "raw-1", 700.0, through=70, now=0.0)
    assert merge.watermark(now=0.0) == -math.inf  # bound-1 has no mark of raw-1 yet
    merge.mark("bound-1", 4, "raw-1", 400.0, through=40, now=0.0)
    assert merge.watermark(now=0.0) == 400.0
    # marks never go back (a new binder announces from its committed offset)
    merge.mark("bound-1", 4, "raw-1", 300.0, through=30, now=0.0)
    assert merge.watermark(now=0.0) == 400.0
    # a partition revoked takes its marks with it
    merge.assign(["raw-0", "bound-0"], now=0.0)
    assert merge.watermark(now=0.0) == 700.0


def test_a_remote_source_is_idle_only_once_its_binder_handled_it_to_its_end() -> None:
    """Idle needs the data: the binder's `through` at or past the partition's end offset as
    this worker last asked the broker, and nothing moved for the idle timeout. A binder killed
    while caught up does not leave its partition idle once records come after it."""
    merge = two_binders(idle_s=5.0)
    caught_up(merge, "raw-0", 11, 0.0)
    merge.observe("raw-0", 10, 1_000.0, now=0.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    merge.mark("bound-0", 0, "raw-1", 600.0, through=50, now=0.0)
    assert merge.watermark(now=10.0) == 600.0  # the end of raw-1 not known
    merge.source_end("raw-1", 50, now=0.5)
    assert merge.watermark(now=1.0) == 600.0  # handled to its end, not quiet for 5 s yet
    assert not merge.caught_up(now=1.0)
    assert merge.watermark(now=10.0) == math.inf
    assert merge.caught_up(now=10.0)
    # its binder was killed; records keep coming to raw-1: it holds the clock again
    merge.source_end("raw-1", 57, now=20.0)
    assert merge.watermark(now=20.0) == 600.0
    assert not merge.caught_up(now=20.0)


def test_a_remote_source_whose_marks_stand_still_past_the_timeout_is_left_out() -> None:
    """A dead binder's partition holds the clock until the rebalance gives it a new binder
    (whose marks move again), not for ever: past `source_timeout_s` with no mark of it moving
    it is left out (and named in `timed_out`); a mark that moves takes it back in."""
    merge = two_binders(source_timeout_s=60.0)
    caught_up(merge, "raw-0", 11, 0.0)
    merge.observe("raw-0", 10, 1_000.0, now=0.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    merge.mark("bound-0", 0, "raw-1", 600.0, through=40, now=5.0)
    merge.source_end("raw-1", 90, now=5.0)  # records its binder never handled
    merge.push("bound-0", 1, 800.0, "own@800", now=5.0)
    merge.fetched("bound-0", position=2, highwater=2, delivered=1, now=5.0)
    assert merge.release(now=64.0) == []  # held by raw-1's mark (600) for 59 s
    assert merge.timed_out == set()
    assert merge.release(now=65.0) == ["own@800"]  # 60 s without a move: left out
    assert merge.timed_out == {"raw-1"} and merge.caught_up(now=65.0)
    merge.mark("bound-0", 2, "raw-1", 900.0, through=60, now=70.0)  # a new binder announces
    merge.fetched("bound-0", position=3, highwater=3, delivered=2, now=70.0)
    assert merge.watermark(now=70.0) == 900.0 and merge.timed_out == set()


def test_a_source_never_announced_holds_the_clock_only_up_to_the_timeout() -> None:
    """No mark at all (a reader started after the last announcement of a quiet binder): the
    wait counts from the derived partition's assignment."""
    merge = two_binders(source_timeout_s=60.0)
    caught_up(merge, "raw-0", 11, 0.0)
    merge.observe("raw-0", 10, 1_000.0, now=0.0)
    caught_up(merge, "bound-0", 0, 0.0)  # nothing on it
    assert merge.watermark(now=59.0) == -math.inf
    assert merge.watermark(now=60.0) == math.inf
    merge.assign(["raw-0", "bound-0", "bound-1"], now=100.0)  # a new one: its own wait
    merge.fetched("bound-1", position=0, highwater=0, delivered=None, now=100.0)
    assert merge.watermark(now=101.0) == -math.inf


def test_a_rebalance_forgets_the_watermarks_and_marks_of_the_partitions_kept() -> None:
    """The records held are dropped and read again from the committed offsets: a partition
    kept over the rebalance must not keep the watermark of records it will read again (the
    others' records would be released ahead of them), nor a source its old marks."""
    merge = two_binders()
    merge.assign(["raw-0", "bound-0", "pay-0"], now=0.0)
    merge.push("pay-0", 7, 900.0, "pay@900", now=0.0)
    merge.observe("raw-0", 10, 1_000.0, now=0.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    merge.mark("bound-0", 0, "raw-1", 950.0, through=50, now=0.0)
    assert merge.release(now=0.0) == ["pay@900"]
    merge.clear()  # revoked; the same partitions assigned again
    merge.assign(["raw-0", "bound-0", "pay-0"], now=1.0)
    lagging(merge, "raw-0", 1.0)
    merge.fetched("bound-0", position=0, highwater=1, delivered=None, now=1.0)
    merge.push("pay-0", 5, 700.0, "pay@700", now=1.0)  # read again from its committed offset
    assert merge.watermark(now=1.0) == -math.inf  # raw-0 read again from nothing, no marks
    assert merge.release(now=1.0) == []
    merge.observe("raw-0", 8, 800.0, now=1.0)
    merge.mark("bound-0", 0, "raw-1", 750.0, through=30, now=1.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=1.0)
    assert merge.release(now=1.0) == ["pay@700"]


def test_a_remote_source_caught_up_a_moment_is_not_idle_before_its_end_stood_still() -> None:
    """Its binder keeps up with a busy partition: between two answers of the broker it is often
    at the end it was told. Idle only once that end stood still for `source_quiet_s`: records
    that came since the last answer (not bound yet) must not be taken for none."""
    merge = two_binders()  # idle_s 0, source_quiet_s 1 (the default)
    caught_up(merge, "raw-0", 11, 0.0)
    merge.observe("raw-0", 10, 1_000.0, now=0.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    merge.mark("bound-0", 0, "raw-1", 600.0, through=50, now=0.0)
    merge.source_end("raw-1", 50, now=0.0)
    assert merge.watermark(now=0.5) == 600.0
    merge.source_end("raw-1", 50, now=0.9)  # asked again: the same end, still counting from 0
    assert merge.watermark(now=1.0) == math.inf


def test_the_end_of_a_remote_source_is_asked_afresh_while_its_binder_claims_it_all() -> None:
    """Asking the broker for a remote source's end is needed only when it may be idle: its end
    not known, or every mark at or past the end last known (then records may have come since).
    A binder behind its end keeps the source active without asking."""
    merge = two_binders()
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    assert merge.unsettled_sources() == ["raw-1"]  # end not known
    merge.source_end("raw-1", 50, now=0.0)
    assert merge.unsettled_sources() == []  # no mark yet: it holds the clock anyway
    merge.mark("bound-0", 0, "raw-1", 600.0, through=40, now=0.0)
    assert merge.unsettled_sources() == []  # the binder is behind: active
    merge.mark("bound-0", 0, "raw-1", 700.0, through=50, now=0.0)
    assert merge.unsettled_sources() == ["raw-1"]  # at the end last known: ask again


def test_what_a_binder_announces_of_the_sources_it_reads() -> None:
    merge = two_binders()
    assert merge.forwarded("raw-1") == (None, None)  # not read here
    assert merge.forwarded("raw-0") == (None, None)  # nothing read yet
    merge.observe("raw-0", 3, 250.0, now=0.0)
    assert merge.forwarded("raw-0") == (250.0, 4)  # records below 4 handled, more to fetch
    merge.fetched("raw-0", position=6, highwater=6, delivered=5, now=0.0)
    assert merge.forwarded("raw-0") == (250.0, 4)  # 4 and 5 handed on, not handled yet
    merge.observe("raw-0", 5, None, now=0.0)  # dead-lettered or pending: no time, but handled
    assert merge.forwarded("raw-0") == (250.0, 6)  # read to the fetch position


def test_a_mark_for_an_unknown_source_is_refused() -> None:
    merge = two_binders()
    with pytest.raises(ValueError, match="raw-7"):
        merge.mark("bound-0", 0, "raw-7", 1.0, through=1, now=0.0)


def test_a_single_worker_reading_every_source_ignores_marks() -> None:
    """The backtest and a lone worker bind every gps.raw partition: marks change nothing."""
    merge = two_binders()
    merge.assign(["raw-0", "raw-1", "bound-0"], now=0.0)
    lagging(merge, "raw-1", 0.0)
    assert merge.remote_sources() == []
    merge.observe("raw-0", 1, 500.0, now=0.0)
    merge.observe("raw-1", 1, 400.0, now=0.0)
    merge.fetched("bound-0", position=1, highwater=1, delivered=0, now=0.0)
    merge.mark("bound-0", 0, "raw-1", 100.0, through=1, now=0.0)
    assert merge.watermark(now=0.0) == 400.0


def test_all_partitions_idle_releases_everything_and_reports_caught_up() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0)
    merge.assign(["a", "b"], now=0.0)
    merge.push("a", 0, 30.0, "a@30", now=0.0)
    merge.push("a", 1, 10.0, "a@10", now=0.0)  # older than the record before it
    merge.push("b", 0, 20.0, "b@20", now=0.0)
    caught_up(merge, "a", 2, 0.0)
    caught_up(merge, "b", 1, 0.0)
    assert not merge.caught_up(now=0.0)  # records are held
    assert merge.watermark(now=0.0) == 20.0  # partitions with held records are active
    # within a partition the read order stands (a late record stays behind the newer one)
    assert merge.release(now=0.0) == ["b@20", "a@30", "a@10"]
    assert merge.caught_up(now=0.0)
    assert merge.watermark(now=0.0) == math.inf


def test_records_without_a_time_are_released_at_once_and_do_not_hold_the_clock() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0)
    merge.assign(["pay-0"], now=0.0)
    lagging(merge, "pay-0", 0.0)
    merge.push("loans-0", 0, None, "loan", now=0.0)
    assert merge.release(now=0.0) == ["loan"]
    assert set(merge.partitions) == {"pay-0"}


def test_revoked_partitions_are_forgotten_and_their_records_dropped() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0)
    merge.assign(["a", "b"], now=0.0)
    lagging(merge, "b", 0.0)
    merge.push("a", 0, 10.0, "a@10", now=0.0)
    merge.assign(["a"], now=1.0)
    caught_up(merge, "a", 1, 1.0)
    assert merge.release(now=1.0) == ["a@10"]
    merge.push("a", 1, 20.0, "a@20", now=2.0)
    merge.clear()
    assert len(merge) == 0 and merge.release(now=3.0) == []


def test_a_full_merge_releases_its_oldest_records_and_counts_them() -> None:
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0, limit=2)
    merge.assign(["a", "b"], now=0.0)
    lagging(merge, "b", 0.0)
    lagging(merge, "a", 0.0)
    for offset in range(4):
        merge.push("a", offset, float(offset), f"a@{offset}", now=0.0)
    assert merge.release(now=0.0) == ["a@0", "a@1"]
    assert merge.forced == 2 and len(merge) == 2


def test_bad_settings_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="idle_s"):
        TimeMerge(idle_s=-1.0)
    with pytest.raises(ValueError, match="limit"):
        TimeMerge(idle_s=0.0, limit=0)
    with pytest.raises(ValueError, match="source_quiet_s"):
        TimeMerge(idle_s=0.0, source_quiet_s=-1.0)
    with pytest.raises(ValueError, match="source_timeout_s"):
        TimeMerge(idle_s=0.0, source_timeout_s=0.0)
    with pytest.raises(ValueError, match="clock mode"):
        EngineClock("sundial", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lateness"):
        EngineClock("wall", -1.0)


# ------------------------------------------------------------------ now and the sweep gate


def test_event_clock_trails_the_newest_released_event_time_and_never_goes_back() -> None:
    clock = EngineClock("event", allowed_lateness_s=60.0)
    assert clock.record_now(wall=1e9) == 0.0
    clock.released(1_000.0)
    clock.released(900.0)  # an older record released later
    assert clock.record_now(wall=1e9) == 940.0
    assert clock.sweep_now(wall=1e9, caught_up=False) == 940.0


def test_a_rebalance_takes_the_clock_back_to_the_records_read_again() -> None:
    """The survivor of a takeover recovers a loan's state from the changelog (a commit interval
    behind) and reads its records again from the committed offsets: its sweep must not advance
    that loan to the `now` it had reached with its own partitions before those records are read
    again (it fired a tracker silence their pings cancel: takeover mode, one extra)."""
    for mode in ("event", "wall"):
        clock = EngineClock(mode, 0.0)  # type: ignore[arg-type]
        clock.released(5_000.0)
        assert clock.sweep_now(wall=9_000.0, caught_up=False) == 5_000.0
        clock.reset()
        assert clock.sweep_now(wall=9_000.0, caught_up=False) == 0.0  # nothing due yet
        clock.released(1_000.0)  # a record read again
        assert clock.sweep_now(wall=9_000.0, caught_up=False) == 1_000.0
        assert clock.record_now(wall=9_000.0) == 1_000.0


def test_wall_clock_handles_a_record_at_its_arrival_not_when_it_is_read() -> None:
    clock = EngineClock("wall", allowed_lateness_s=300.0)
    # before any timed record: a loan record's own timestamp, else the wall clock
    assert clock.record_now(wall=5_000.0, fallback=1_000.0) == 1_000.0
    assert clock.record_now(wall=5_000.0) == 5_000.0
    clock.released(2_000.0)  # arrived at 2,000; read at 5,000 after an outage
    assert clock.record_now(wall=5_000.0) == 2_000.0
    clock.released(9_000.0)  # a producer clock ahead of ours: never past the wall clock
    assert clock.record_now(wall=5_000.0) == 5_000.0


def test_sweep_fires_on_the_wall_clock_only_once_caught_up() -> None:
    clock = EngineClock("wall", allowed_lateness_s=300.0)
    assert clock.sweep_now(wall=5_000.0, caught_up=False) == 0.0  # nothing read yet
    clock.released(2_000.0)
    # a due date at 3,000 must wait: a payment arriving before it may sit in the backlog
    assert clock.sweep_now(wall=5_000.0, caught_up=False) == 2_000.0
    assert clock.sweep_now(wall=5_000.0, caught_up=True) == 5_000.0


def test_sweep_gate_follows_the_slowest_partition_through_the_merge() -> None:
    """A due date is advanced only once every partition's records up to it were read."""
    merge: TimeMerge[str, str] = TimeMerge(idle_s=0.0)
    clock = EngineClock("wall", allowed_lateness_s=300.0)
    merge.assign(["pay-0", "gps-0"], now=0.0)
    merge.fetched("pay-0", position=1, highwater=1, delivered=0, now=0.0)
    merge.push("pay-0", 0, 1_000.0, "pay@1000", now=0.0)
    lagging(merge, "gps-0", 0.0)
    merge.push("gps-0", 0, 900.0, "gps@900", now=0.0)
    for _ in merge.release(now=0.0):
        clock.released(900.0)
    due = 950.0
    assert clock.sweep_now(wall=5_000.0, caught_up=merge.caught_up(0.0)) < due
    merge.push("gps-0", 1, 1_100.0, "gps@1100", now=0.0)
    merge.fetched("gps-0", position=2, highwater=2, delivered=1, now=0.0)
    for item in merge.release(now=0.0):
        clock.released(float(item.split("@")[1]))
    assert merge.caught_up(0.0)
    assert clock.sweep_now(wall=5_000.0, caught_up=True) == 5_000.0 >= due


def test_live_no_deadline_fires_while_a_source_without_a_binder_has_records_unread() -> None:
    """clock=wall: the binder of raw-1 is dead (its partition waits for the session timeout)
    and records came to raw-1 after its last mark: a payment's absence deadline must wait for
    them (they could hold what cancels it), however far the wall clock went."""
    merge = two_binders()
    clock = EngineClock("wall", allowed_lateness_s=300.0)
    caught_up(merge, "raw-0", 1, 0.0)
    merge.observe("raw-0", 0, 1_000.0, now=0.0)
    merge.push("bound-0", 0, 1_000.0, "own@1000", now=0.0)
    merge.mark("bound-0", 1, "raw-1", 900.0, through=20, now=0.0)
    merge.fetched("bound-0", position=2, highwater=2, delivered=1, now=0.0)
    merge.source_end("raw-1", 25, now=-10.0)  # five records nobody bound yet, for a while
    for item in merge.release(now=0.0):
        clock.released(float(item.split("@")[1]))
    due = 950.0
    assert clock.sweep_now(wall=5_000.0, caught_up=merge.caught_up(0.0)) < due
    # the survivor takes raw-1 over and binds it to its end: the wall clock rules again
    merge.assign(["raw-0", "raw-1", "bound-0"], now=1.0)
    caught_up(merge, "raw-1", 25, 1.0)
    merge.observe("raw-1", 24, 1_200.0, now=1.0)
    merge.push("bound-0", 2, 1_200.0, "taken-over@1200", now=1.0)
    merge.fetched("bound-0", position=3, highwater=3, delivered=2, now=1.0)
    for item in merge.release(now=1.0):
        clock.released(float(item.split("@")[1]))
    assert merge.caught_up(1.0)
    assert clock.sweep_now(wall=5_000.0, caught_up=True) == 5_000.0


# ------------------------------------------------------------------ lateness by arrival


def removal_fired(arrival_delay_s: float, read_delay_s: float) -> list[AlertStatus]:
    """A wired tracker reports a removal alarm; the ping enters Kafka `arrival_delay_s` after
    it was taken and is read `read_delay_s` after that. What does tracker-removed do?"""
    engine = Engine.default()
    state = engine.new_state("L1")
    t0 = at(2, 10)
    engine.apply(state, loan("L1"), t0, arrival=t0.timestamp())
    for n in range(3):
        when = t0 + dt.timedelta(minutes=n)
        engine.apply(state, ping("L1-w", when, 1.0, n), when, arrival=when.timestamp())
    alarm_at = t0 + dt.timedelta(minutes=10)
    arrival = alarm_at.timestamp() + arrival_delay_s
    alarm = ping("L1-w", alarm_at, 1.0, 9, alarms=["removal"])
    # The worker passes the record's arrival as `now`, never the time it read it: the read
    # delay must not matter.
    del read_delay_s
    changes = engine.apply(state, alarm, dt.datetime.fromtimestamp(arrival, dt.UTC), arrival)
    return [c.status for c in changes if c.rule_id == "tracker-removed"]


def test_a_record_read_long_after_it_arrived_on_time_is_live() -> None:
    assert removal_fired(arrival_delay_s=2.0, read_delay_s=3_600.0) == [AlertStatus.FIRING]


def test_a_record_that_entered_kafka_later_than_the_allowed_lateness_is_history() -> None:
    assert removal_fired(arrival_delay_s=301.0, read_delay_s=0.0) == []


def test_without_an_arrival_a_record_is_on_time_as_in_a_replay() -> None:
    engine = Engine.default()
    state = engine.new_state("L1")
    t0 = at(2, 10)
    engine.apply(state, loan("L1"), t0)
    alarm = ping("L1-w", t0, 1.0, 1, alarms=["removal"])
    changes = engine.apply(state, alarm, t0)
    assert [c.status for c in changes if c.rule_id == "tracker-removed"] == [AlertStatus.FIRING]
    assert engine.stats["late_events"] == 0


def test_the_allowed_lateness_is_the_engine_setting() -> None:
    from rules.config import EngineConfig

    base = Engine.default()
    engine = Engine(base.rules, base.places, EngineConfig(allowed_lateness_s=3_600.0))
    state = engine.new_state("L1")
    t0 = at(2, 10)
    engine.apply(state, loan("L1"), t0)
    alarm = ping("L1-w", t0, 1.0, 1, alarms=["removal"])
    arrival = t0.timestamp() + 1_800.0  # half an hour: within this engine's allowed lateness
    changes = engine.apply(state, alarm, dt.datetime.fromtimestamp(arrival, dt.UTC), arrival)
    assert [c.status for c in changes if c.rule_id == "tracker-removed"] == [AlertStatus.FIRING]
