"""Receivers: bodies field by field, signatures, and how answers become outcomes."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from rules.events import AlertStatus, Severity
from services.notify.messages import MAX_MARKDOWN_BYTES, webhook_body
from services.notify.model import Borrower, Delivered, EventType, Failed, Notice, RetryLater
from services.notify.receivers import (
    DingTalkReceiver,
    WebhookReceiver,
    WeComReceiver,
    retry_after_seconds,
)
from services.notify.signing import SigningKey, new_secret, rotate
from services.notify.ssrf import AllowList, SsrfGuard, guarded_client
from tests.unit.notify.factories import T0, alert, message

pytestmark = pytest.mark.unit

DASHBOARD = "https://skipwatch.example"


class Endpoint:
    """A fake HTTP endpoint answering from a script; records every request."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers) or [httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def client(self) -> httpx.AsyncClient:
        guard = SsrfGuard(AllowList.parse(["127.0.0.1"]))
        return guarded_client(guard, 5.0, httpx.MockTransport(self))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_webhook_payload_and_signature() -> None:
    secret = new_secret()
    endpoint = Endpoint(httpx.Response(204))
    async with endpoint.client() as http:
        receiver = WebhookReceiver(
            url="http://127.0.0.1:9/hook",
            keys=[SigningKey(secret)],
            client=http,
            dashboard_url=DASHBOARD,
            clock=now,
        )
        outcome = await receiver.deliver(message(id="msg_42"))
    assert outcome == Delivered(204)
    request = endpoint.requests[0]
    payload = Webhook(secret).verify(request.content, dict(request.headers))
    assert request.headers["webhook-id"] == "msg_42"
    assert request.headers["content-type"] == "application/json"
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == "alert.firing"
    assert payload["timestamp"] == T0.isoformat()
    data = payload["data"]
    assert (
        data["id"] == "a1"
        and data["loan_id"] == "L-1001"
        and data["rule_id"] == "missed_payment_unreachable"
    )
    assert (
        data["severity"] == "critical" and data["status"] == "firing" and data["risk_score"] == 87
    )
    assert data["evidence"] == [{"kind": "state", "name": "payment.days_past_due", "value": 12}]
    assert data["last_location"] == {"lat": 31.2304, "lon": 121.4737}
    assert data["link"] == "https://skipwatch.example/#/alerts/a1"
    assert data["labels"] == {"team": "collections", "pattern": "delinquency"}
    assert "borrower" not in data


async def test_webhook_during_rotation_verifies_with_both_secrets() -> None:
    old, new = new_secret(), new_secret()
    keys = rotate([SigningKey(old)], new, now=now(), overlap=dt.timedelta(hours=1))
    endpoint = Endpoint(httpx.Response(200))
    async with endpoint.client() as http:
        receiver = WebhookReceiver(
            url="http://127.0.0.1:9/hook",
            keys=keys,
            client=http,
            dashboard_url=DASHBOARD,
            clock=now,
        )
        await receiver.deliver(message())
    request = endpoint.requests[0]
    for secret in (old, new):
        Webhook(secret).verify(request.content, dict(request.headers))


def test_a_webhook_message_carries_exactly_one_alert() -> None:
    two = message(Notice(EventType.FIRING, alert()), Notice(EventType.FIRING, alert(alert_id="a2")))
    with pytest.raises(ValueError, match="one alert"):
        webhook_body(two, dashboard_url=DASHBOARD)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200), Delivered(200)),
        (httpx.Response(299), Delivered(299)),
        (
            httpx.Response(302, headers={"location": "http://x/"}),
            RetryLater("client", "HTTP 302", 302),
        ),
        (httpx.Response(400), RetryLater("client", "HTTP 400", 400)),
        (httpx.Response(410), Failed("gone", "HTTP 410", 410)),
        (
            httpx.Response(429, headers={"retry-after": "120"}),
            RetryLater("rate_limited", "HTTP 429", 429, 120.0),
        ),
        (
            httpx.Response(503, headers={"retry-after": "7"}),
            RetryLater("server", "HTTP 503", 503, 7.0),
        ),
        (httpx.Response(500), RetryLater("server", "HTTP 500", 500)),
        (httpx.Response(408), RetryLater("server", "HTTP 408", 408)),
    ],
)
async def test_only_2xx_succeeds(response: httpx.Response, expected: object) -> None:
    endpoint = Endpoint(response)
    async with endpoint.client() as http:
        receiver = WebhookReceiver(
            url="http://127.0.0.1:9/hook",
            keys=[SigningKey(new_secret())],
            client=http,
            dashboard_url=DASHBOARD,
            clock=now,
        )
        assert await receiver.deliver(message()) == expected


async def test_transport_failures_are_retried_with_a_reason() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    guard = SsrfGuard(AllowList.parse(["127.0.0.1"]))
    for handler, reason in ((broken, "connect"), (slow, "timeout")):
        async with guarded_client(guard, 1.0, httpx.MockTransport(handler)) as http:
            receiver = WebhookReceiver(
                url="http://127.0.0.1:9/",
                keys=[SigningKey(new_secret())],
                client=http,
                dashboard_url=DASHBOARD,
                clock=now,
            )
            outcome = await receiver.deliver(message())
        assert isinstance(outcome, RetryLater) and outcome.reason == reason


async def test_a_refused_destination_fails_permanently() -> None:
    endpoint = Endpoint()
    guard = SsrfGuard(AllowList.parse([]))
    async with guarded_client(guard, 1.0, httpx.MockTransport(endpoint)) as http:
        receiver = WebhookReceiver(
            url="http://10.0.0.1/",
            keys=[SigningKey(new_secret())],
            client=http,
            dashboard_url=DASHBOARD,
            clock=now,
        )
        outcome = await receiver.deliver(message())
    assert isinstance(outcome, Failed) and outcome.reason == "refused"
    assert endpoint.requests == []


def test_retry_after_as_http_date() -> None:
    moment = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("Mon, 07 Dec 2026 02:01:30 GMT", moment) == 90.0
    assert retry_after_seconds("soon", moment) is None
    assert retry_after_seconds(None, moment) is None


EXPECTED_MARKDOWN = """\
### 【告警】逾期且失联
> 级别：严重　状态：告警中
> 贷款：L-1001
> 借款人：张*（138****8000）
> 风险评分：87
> 最后位置：31.23040, 121.47370
> 开始时间：2026-12-07T02:00:00+00:00
> 摘要：逾期且失联 (days_past_due=12, 借款人电话 138****8000 无法接通)
[查看告警](https://skipwatch.example/#/alerts/a1)"""


async def test_wecom_body_matches_the_documented_markdown_format() -> None:
    endpoint = Endpoint(httpx.Response(200, json={"errcode": 0, "errmsg": "ok"}))
    url = "http://127.0.0.1:9/cgi-bin/webhook/send?key=693a91f6-7xxx"
    async with endpoint.client() as http:
        outcome = await WeComReceiver(url=url, client=http, dashboard_url=DASHBOARD).deliver(
            message()
        )
    assert outcome == Delivered(200)
    request = endpoint.requests[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert str(request.url).endswith("/cgi-bin/webhook/send?key=693a91f6-7xxx")
    body: dict[str, Any] = orjson.loads(request.content)
    assert body == {"msgtype": "markdown", "markdown": {"content": EXPECTED_MARKDOWN}}
    assert "13800138000" not in request.content.decode() and "张三" not in request.content.decode()


async def test_dingtalk_body_and_signed_url() -> None:
    endpoint = Endpoint(httpx.Response(200, json={"errcode": 0, "errmsg": "ok"}))
    fixed = dt.datetime(2026, 12, 7, 2, 0, 0, 123000, tzinfo=dt.UTC)
    async with endpoint.client() as http:
        receiver = DingTalkReceiver(
            url="http://127.0.0.1:9/robot/send?access_token=T",
            secret="SECabc",
            client=http,
            dashboard_url=DASHBOARD,
            clock=lambda: fixed,
        )
        assert await receiver.deliver(message()) == Delivered(200)
    request = endpoint.requests[0]
    body = orjson.loads(request.content)
    assert body == {
        "msgtype": "markdown",
        "markdown": {"title": "【告警】逾期且失联", "text": EXPECTED_MARKDOWN},
    }
    query = urllib.parse.parse_qs(request.url.query.decode())
    assert query["access_token"] == ["T"]
    assert query["timestamp"] == [str(int(fixed.timestamp() * 1000))]
    assert "sign" in query


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"errcode": 0, "errmsg": "ok"}, Delivered(200)),
        (
            {"errcode": 45009, "errmsg": "api freq out of limit"},
            RetryLater("rate_limited", "errcode 45009: api freq out of limit", 200, 60.0),
        ),
        (
            {"errcode": 130101, "errmsg": "send too fast"},
            RetryLater("rate_limited", "errcode 130101: send too fast", 200, 60.0),
        ),
        (
            {"errcode": -1, "errmsg": "system busy"},
            RetryLater("server", "errcode -1: system busy", 200),
        ),
        (
            {"errcode": 310000, "errmsg": "sign not match"},
            Failed("rejected", "errcode 310000: sign not match", 200),
        ),
        ({"unexpected": True}, RetryLater("server", "no errcode in the robot's answer", 200)),
    ],
)
async def test_robot_error_codes(answer: dict[str, Any], expected: object) -> None:
    endpoint = Endpoint(httpx.Response(200, json=answer))
    async with endpoint.client() as http:
        receiver = DingTalkReceiver(
            url="http://127.0.0.1:9/robot/send?access_token=T", client=http, dashboard_url=DASHBOARD
        )
        assert await receiver.deliver(message()) == expected


async def test_several_alerts_in_one_robot_message_stay_under_the_size_limit() -> None:
    notices = tuple(
        Notice(
            EventType.RESOLVED if i % 2 else EventType.ESCALATED,
            alert(
                alert_id=f"a{i}",
                severity=Severity.WARNING,
                status=AlertStatus.RESOLVED if i % 2 else AlertStatus.FIRING,
            ),
            Borrower("欧阳娜娜", "+8613800138000"),
        )
        for i in range(60)
    )
    endpoint = Endpoint()
    async with endpoint.client() as http:
        await WeComReceiver(
            url="http://127.0.0.1:9/send?key=k", client=http, dashboard_url=DASHBOARD
        ).deliver(message(*notices))
    body = orjson.loads(endpoint.requests[0].content)
    content = body["markdown"]["content"]
    assert len(content.encode()) <= MAX_MARKDOWN_BYTES
    assert content.startswith("### 【告警升级】")
    assert "【已恢复】" in content and "欧***（+86138****8000）" in content
    assert "条告警，请在看板查看" in content
