"""A state that cannot round-trip is refused when written; stored bytes that are not a state this
code wrote are refused when read (issue 14, item 1: two payments of 1e308 on one instalment)."""

from __future__ import annotations

import math

import orjson
import pytest

from rules.state import AlertState, LoanState, StateDecodingError, StateEncodingError
from tests.unit.rules.rules_factories import at, payment, run, start

pytestmark = pytest.mark.unit


def test_two_payments_of_1e308_make_a_state_that_is_refused_when_written() -> None:
    engine, state = start()
    first = payment(at(hours=1), "payment_received", 1).model_copy(update={"amount": 1e308})
    second = payment(at(hours=2), "payment_received", 1).model_copy(update={"amount": 1e308})
    run(engine, state, [first])
    LoanState.from_bytes(state.to_bytes())  # 1e308 is finite: stored and read back
    run(engine, state, [second])
    assert math.isinf(state.installments[0].paid)
    with pytest.raises(StateEncodingError, match=r"in_\.0\.3 is inf"):
        state.to_bytes()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_anywhere_are_refused(value: float) -> None:
    _, state = start()
    state.separated_m = value
    with pytest.raises(StateEncodingError, match="sp is"):
        state.to_bytes()
    _, state = start()
    state.attempts = [[1.0, 2.0], [value, 3.0]]
    with pytest.raises(StateEncodingError, match=r"at\.1\.0"):
        state.to_bytes()


def test_integers_beyond_64_bits_are_refused() -> None:
    _, state = start()
    state.cured = 1 << 70
    with pytest.raises(StateEncodingError, match="L1"):
        state.to_bytes()


def test_a_state_stored_with_null_for_infinity_is_refused_when_read() -> None:
    """What the changelog holds when an older version wrote the 1e308 state: `null` paid."""
    engine, state = start()
    run(engine, state, [payment(at(hours=1), "payment_received", 1, amount=100.0)])
    raw = orjson.loads(state.to_bytes())
    raw["in_"][0][3] = None
    with pytest.raises(StateDecodingError, match=r"in_\.0\.3 is null"):
        LoanState.from_bytes(orjson.dumps(raw))


@pytest.mark.parametrize(
    "stored",
    [b"", b"{not json", b"[]", b'{"no": "id"}', b'{"id": "L1", "in_": [[1]]}', b'"L1"',
     b'{"id": "L1", "dv": {"W1": {}}}', b'{"id": "L1", "al": {"r": [1, 2, 3, 4, 5, 6]}}'],
)  # fmt: skip
def test_bytes_that_are_not_a_state_raise_a_decoding_error(stored: bytes) -> None:
    with pytest.raises(StateDecodingError):
        LoanState.from_bytes(stored)


def test_a_pending_alert_without_start_still_round_trips() -> None:
    """The one `null` a state holds by design: a pending alert has not started firing."""
    _, state = start()
    state.alerts["r"] = AlertState("pending", 10.0)
    assert LoanState.from_bytes(state.to_bytes()).alerts["r"] == AlertState("pending", 10.0)


def test_a_none_where_a_number_belongs_is_refused_when_written_as_when_read() -> None:
    _, state = start()
    state.attempts = [[1.0, None]]  # type: ignore[list-item]
    with pytest.raises(StateEncodingError, match=r"at\.0\.1 is None"):
        state.to_bytes()
