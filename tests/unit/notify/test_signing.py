"""Standard Webhooks signatures (verified with the official library) and DingTalk's 加签."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import urllib.parse

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.notify.signing import (
    SigningKey,
    check_secret,
    dingtalk_sign,
    dingtalk_signed_url,
    new_secret,
    rotate,
    webhook_headers,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
BODY = b'{"type":"alert.firing","timestamp":"2026-12-07T02:00:00+00:00","data":{}}'


def test_generated_secret_is_whsec_base64_of_32_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    assert check_secret(secret) == secret
    assert new_secret() != secret


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("abc", "starts with"),
        ("whsec_!!!", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 8).decode(), "24 to 64"),
    ],
)
def test_bad_secrets_are_refused_with_the_reason(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_secret(secret)


def test_signature_verifies_with_the_official_library() -> None:
    # the official library checks the timestamp against the real clock (5 min tolerance):
    # sign at the moment of the test, not when the module was imported
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    secret = new_secret()
    headers = webhook_headers([SigningKey(secret)], msg_id="msg_abc", body=BODY, now=now)
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "alert.firing",
        "timestamp": "2026-12-07T02:00:00+00:00",
        "data": {},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"firing", b"resolved"), headers)


def test_rotation_overlap_verifies_with_both_secrets_then_only_the_new() -> None:
    # the official library checks the timestamp against the real clock (5 min tolerance):
    # sign at the moment of the test, not when the module was imported
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old, new = new_secret(), new_secret()
    keys = rotate([SigningKey(old)], new, now=now, overlap=dt.timedelta(hours=24))
    during = webhook_headers(keys, msg_id="msg_1", body=BODY, now=now + dt.timedelta(hours=1))
    assert len(during["webhook-signature"].split(" ")) == 2
    # Verify needs a timestamp near the real clock; sign "now" for that check.
    during_now = webhook_headers(keys, msg_id="msg_1", body=BODY, now=now)
    Webhook(old).verify(BODY, during_now)
    Webhook(new).verify(BODY, during_now)
    after = webhook_headers(keys, msg_id="msg_1", body=BODY, now=now + dt.timedelta(hours=25))
    assert len(after["webhook-signature"].split(" ")) == 1
    assert after["webhook-signature"] == Webhook(new).sign(
        "msg_1", now + dt.timedelta(hours=25), BODY
    )


def test_rotating_twice_keeps_no_key_past_the_first_overlap() -> None:
    a, b, c = new_secret(), new_secret(), new_secret()
    keys = rotate([SigningKey(a)], b, now=NOW, overlap=dt.timedelta(hours=24))
    keys = rotate(keys, c, now=NOW + dt.timedelta(hours=1), overlap=dt.timedelta(hours=48))
    by_secret = {k.secret: k.expires_at for k in keys}
    assert by_secret[c] is None
    assert by_secret[a] == NOW + dt.timedelta(hours=24)  # never extended by a later rotation
    assert by_secret[b] == NOW + dt.timedelta(hours=49)


def test_dingtalk_sign_matches_an_independent_computation() -> None:
    # Worked example from the documented algorithm, computed here step by step with the
    # standard library: string_to_sign = "<ms>\n<secret>", HMAC-SHA256 keyed by the secret,
    # base64, then URL-encoded (quote_plus, as DingTalk's Python sample does).
    secret = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
    timestamp = 1733539200000
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}\n{secret}".encode(), hashlib.sha256)
    expected = urllib.parse.quote_plus(base64.b64encode(mac.digest()))
    assert dingtalk_sign(secret, timestamp) == expected
    # The same example computed outside Python, with OpenSSL:
    #   printf '%s\n%s' 1733539200000 "$S" | openssl dgst -sha256 -hmac "$S" -binary | base64
    # then URL-encoded ('+' -> %2B, '/' -> %2F, '=' -> %3D).
    assert expected == "muCe%2BB807Vl%2FsgltpRZQA0h9vsfH5DKm2QFj2BUSJyw%3D"


def test_dingtalk_signed_url_appends_timestamp_and_sign() -> None:
    url = dingtalk_signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=T", "SECx", 1700000000123
    )
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["access_token"] == ["T"]
    assert query["timestamp"] == ["1700000000123"]
    raw = base64.b64encode(
        hmac.new(b"SECx", b"1700000000123\nSECx", hashlib.sha256).digest()
    ).decode()
    assert query["sign"] == [raw]  # parse_qs undoes the URL encoding
