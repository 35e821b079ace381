"""Receivers: Standard Webhooks endpoints, WeCom group robots, DingTalk custom robots.

Each turns a Message into one HTTP POST through the SSRF-guarded client and classifies the answer
(only 2xx succeeds; robots also answer 200 with an `errcode`). Nothing here retries or sleeps:
the dispatcher decides when to try again.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson

from services.notify.messages import dingtalk_body, webhook_body, wecom_body
from services.notify.model import Delivered, Failed, Message, Outcome, RetryLater
from services.notify.signing import SigningKey, dingtalk_signed_url, webhook_headers
from services.notify.ssrf import DestinationRefused

Clock = Callable[[], dt.datetime]

USER_AGENT = "skipwatch-notify/1"
# Robot error codes that mean "too many messages, try later" (WeCom 45009, DingTalk 130101).
ROBOT_RATE_LIMITED = frozenset({45009, 130101})
# Robot error codes that mean "busy, try later".
ROBOT_BUSY = frozenset({-1})


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def classify_status(response: httpx.Response, now: dt.datetime) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        return Delivered(status)
    detail = f"HTTP {status}"
    if status == 410:
        return Failed("gone", detail, status)
    if status == 429:
        wait = retry_after_seconds(response.headers.get("retry-after"), now)
        return RetryLater("rate_limited", detail, status, wait)
    if status >= 500 or status == 408:
        wait = retry_after_seconds(response.headers.get("retry-after"), now)
        return RetryLater("server", detail, status, wait)
    return RetryLater("client", detail, status)


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], now: dt.datetime
) -> httpx.Response | Outcome:
    """POST and return the response, or the Outcome of a transport failure."""
    try:
        return await client.post(
            url,
            content=body,
            headers={"content-type": "application/json", "user-agent": USER_AGENT, **headers},
        )
    except DestinationRefused as exc:
        return Failed("refused", exc.detail)
    except httpx.TimeoutException as exc:
        return RetryLater("timeout", f"timed out: {type(exc).__name__}")
    except httpx.TransportError as exc:
        return RetryLater("connect", f"{type(exc).__name__}: {exc}"[:500])


class WebhookReceiver:
    """A Standard Webhooks endpoint: `{type, timestamp, data}`, signed with every active key."""

    kind = "webhook"

    def __init__(
        self,
        *,
        url: str,
        keys: Sequence[SigningKey],
        client: httpx.AsyncClient,
        dashboard_url: str,
        clock: Clock = _utcnow,
    ) -> None:
        self.url = url
        self.keys = tuple(keys)
        self._client = client
        self._dashboard_url = dashboard_url
        self._clock = clock

    async def deliver(self, message: Message) -> Outcome:
        body = webhook_body(message, dashboard_url=self._dashboard_url)
        now = self._clock()
        headers = webhook_headers(self.keys, msg_id=message.id, body=body, now=now)
        response = await post(self._client, self.url, body, headers, now)
        if not isinstance(response, httpx.Response):
            return response
        return classify_status(response, now)


def _robot_outcome(response: httpx.Response, now: dt.datetime) -> Outcome:
    """Robots answer HTTP 200 with `{"errcode": 0, "errmsg": "ok"}`; anything else failed."""
    outcome = classify_status(response, now)
    if not isinstance(outcome, Delivered):
        return outcome
    try:
        answer: Any = orjson.loads(response.content)
        code = int(answer["errcode"])
        text = str(answer.get("errmsg", ""))[:200]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return RetryLater("server", "no errcode in the robot's answer", response.status_code)
    if code == 0:
        return outcome
    detail = f"errcode {code}: {text}"
    if code in ROBOT_RATE_LIMITED:
        return RetryLater("rate_limited", detail, response.status_code, 60.0)
    if code in ROBOT_BUSY:
        return RetryLater("server", detail, response.status_code)
    return Failed("rejected", detail, response.status_code)


class WeComReceiver:
    """企业微信群机器人: POST markdown to its webhook URL (`.../cgi-bin/webhook/send?key=...`)."""

    kind = "wecom"

    def __init__(
        self, *, url: str, client: httpx.AsyncClient, dashboard_url: str, clock: Clock = _utcnow
    ) -> None:
        self.url = url
        self._client = client
        self._dashboard_url = dashboard_url
        self._clock = clock

    async def deliver(self, message: Message) -> Outcome:
        body = orjson.dumps(wecom_body(message, dashboard_url=self._dashboard_url))
        now = self._clock()
        response = await post(self._client, self.url, body, {}, now)
        if not isinstance(response, httpx.Response):
            return response
        return _robot_outcome(response, now)


class DingTalkReceiver:
    """钉钉自定义机器人: POST markdown to `.../robot/send?access_token=...`; with a `SEC...` secret
    the URL also carries `timestamp` (ms) and `sign` (加签 mode)."""

    kind = "dingtalk"

    def __init__(
        self,
        *,
        url: str,
        client: httpx.AsyncClient,
        dashboard_url: str,
        secret: str | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.url = url
        self._secret = secret
        self._client = client
        self._dashboard_url = dashboard_url
        self._clock = clock

    async def deliver(self, message: Message) -> Outcome:
        body = orjson.dumps(dingtalk_body(message, dashboard_url=self._dashboard_url))
        now = self._clock()
        url = self.url
        if self._secret:
            url = dingtalk_signed_url(url, self._secret, int(now.timestamp() * 1000))
        response = await post(self._client, url, body, {}, now)
        if not isinstance(response, httpx.Response):
            return response
        return _robot_outcome(response, now)
