"""Every frame in tests/fixtures/jt808/vectors.json (vendored from the shared brief) decodes to its expected values; encode cases
are reproduced byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from services.jt808 import codec
from services.jt808.cli import decode_hex
from services.jt808.mapping import VendorConfig
from tests.unit.jt808.support import load_vectors

pytestmark = pytest.mark.unit

VECTORS = load_vectors()


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every expected key/value is present in actual (actual may say more)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-9), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize("case", VECTORS["decode"], ids=lambda c: c["name"])
def test_decode_vector(case: dict[str, Any]) -> None:
    [decoded] = decode_hex(case["frame"], VendorConfig())
    assert "error" not in decoded
    assert_subset(case["expect"], decoded)


def test_vectors_cover_every_message_the_brief_lists() -> None:
    ids = {case["expect"]["msg_id"] for case in VECTORS["decode"]}
    assert {0x0002, 0x0100, 0x0102, 0x0200, 0x0704} <= ids


def test_encode_register_response_byte_for_byte() -> None:
    [case] = [c for c in VECTORS["encode"] if c["name"] == "register_response_ok"]
    encoded = codec.encode_register_response(
        phone_raw=bytes.fromhex("012345678900"),
        serial=10,
        reply_serial=100,
        result=codec.REGISTER_OK,
        auth_code="123456",
    )
    assert encoded == bytes.fromhex(case["frame"])


def test_encode_general_response_byte_for_byte() -> None:
    [case] = [c for c in VECTORS["encode"] if c["name"] == "general_response_location"]
    encoded = codec.encode_general_response(
        phone_raw=bytes.fromhex("012345678900"),
        serial=10,
        reply_serial=100,
        reply_msg_id=codec.MSG_LOCATION,
        result=codec.RESULT_OK,
    )
    assert encoded == bytes.fromhex(case["frame"])


@pytest.mark.parametrize("case", VECTORS["decode"], ids=lambda c: c["name"])
def test_vector_frames_reencode_identically(case: dict[str, Any]) -> None:
    """Decoding then re-encoding header and body gives the wire bytes back."""
    wire = bytes.fromhex(case["frame"])
    decoded = codec.decode_frame(wire)
    h = decoded.header
    again = codec.encode_frame(
        msg_id=h.msg_id, phone_raw=h.phone_raw, serial=h.serial, body=decoded.body
    )
    assert again == wire
