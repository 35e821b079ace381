"""The watermark marks on gps.bound (streams/records.py): encoded, told from ping records, and
refused with the reason when they cannot be read."""

from __future__ import annotations

import pytest

from streams.records import (
    MARK_HEADER,
    Rejected,
    decode_bound,
    decode_marks,
    encode_marks,
    is_mark,
)

pytestmark = pytest.mark.unit


def test_marks_round_trip_and_carry_their_header() -> None:
    value, headers = encode_marks([(0, 1_700_000_000.5, 42), (3, None, 0), (1, None, None)])
    assert is_mark(headers)
    assert is_mark(dict(headers))
    assert decode_marks(value) == [(0, 1_700_000_000.5, 42), (3, None, 0), (1, None, None)]


def test_ping_records_are_not_marks() -> None:
    assert not is_mark(None)
    assert not is_mark([])
    assert not is_mark([("other", b"1")])
    assert is_mark([(MARK_HEADER, b"1")])


def test_a_mark_is_not_taken_for_pings() -> None:
    """Were a mark read as a gps.bound ping record (a consumer that ignores the header), it
    gives no ping: never one made up from it."""
    value, _ = encode_marks([(0, 1.0, 1)])
    entries = decode_bound(value)
    assert entries
    assert all(isinstance(ping, Rejected) for _, ping, _ in entries)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"[]", "not a gps.bound mark"),
        (b'{"marks": [[-1, 1.0, 1]]}', "partition -1"),
        (b'{"marks": [[0, "soon", 1]]}', "watermark 'soon'"),
        (b'{"marks": [[0, 1.0, -3]]}', "through -3"),
        (b'{"marks": [[0, 1.0]]}', "not a gps.bound mark"),
        (b"\xff", "not a gps.bound mark"),
    ],
)
def test_an_unreadable_mark_is_refused_with_the_problem(value: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_marks(value)
