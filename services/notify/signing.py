"""Signatures: Standard Webhooks (with the official `standardwebhooks` library) and DingTalk's
signed-URL mode. Pure: time is passed in."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """The secret if usable for signing, else ValueError saying what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ValueError("a webhook secret is 'whsec_' + base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret's key must be 24 to 64 bytes")
    return secret


@dataclass(frozen=True, slots=True)
class SigningKey:
    secret: str
    # After this instant the key no longer signs (the end of a rotation's overlap); None: never.
    expires_at: dt.datetime | None = None


def active_keys(keys: Iterable[SigningKey], now: dt.datetime) -> list[SigningKey]:
    return [k for k in keys if k.expires_at is None or k.expires_at > now]


def rotate(
    keys: Iterable[SigningKey], new: str, *, now: dt.datetime, overlap: dt.timedelta
) -> tuple[SigningKey, ...]:
    """Sign with `new` from now on, and keep the current keys signing until `now + overlap`, so
    receivers can switch secrets without missing a message."""
    check_secret(new)
    until = now + overlap
    kept = tuple(
        SigningKey(k.secret, min(k.expires_at, until) if k.expires_at else until)
        for k in active_keys(keys, now)
        if k.secret != new
    )
    return (SigningKey(new), *kept)


def webhook_headers(
    keys: Iterable[SigningKey], *, msg_id: str, body: bytes, now: dt.datetime
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (one `v1,…` per active key,
    space-separated, as the spec allows during a rotation)."""
    signing = active_keys(keys, now)
    if not signing:
        raise ValueError("no active signing key")
    signatures = [Webhook(k.secret).sign(msg_id, now, body) for k in signing]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk 加签: urlencode(base64(HMAC-SHA256(key=secret, msg="<timestamp>\\n<secret>")))."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The robot URL with `&timestamp=…&sign=…` appended (the sign is already URL-encoded)."""
    joiner = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{joiner}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"
