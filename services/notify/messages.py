"""Wire formats of notifications, built in one place: the Standard Webhooks payload and the
Chinese markdown of the WeCom and DingTalk robots. Pure: no sockets, no clock."""

from __future__ import annotations

from typing import Any

import orjson

from rules.events import AlertStatus, Severity
from services.api.views import mask_name, mask_phone, mask_text
from services.notify.model import Borrower, EventType, Message, Notice

# WeCom caps markdown content at 4096 bytes, DingTalk at about 20,000; one cap keeps both safe.
MAX_MARKDOWN_BYTES = 4000

SEVERITY_ZH = {Severity.CRITICAL: "严重", Severity.WARNING: "警告", Severity.INFO: "提示"}
TYPE_ZH = {
    EventType.FIRING: "告警",
    EventType.ESCALATED: "告警升级",
    EventType.ACKNOWLEDGED: "已确认",
    EventType.RESOLVED: "已恢复",
}
STATUS_ZH = {
    AlertStatus.FIRING: "告警中",
    AlertStatus.ACKNOWLEDGED: "已确认",
    AlertStatus.RESOLVED: "已恢复",
    AlertStatus.SILENCED: "已静默",
}


def alert_link(dashboard_url: str, alert_id: str) -> str:
    return f"{dashboard_url.rstrip('/')}/#/alerts/{alert_id}"


def webhook_data(notice: Notice, *, dashboard_url: str) -> dict[str, Any]:
    """`data` of a Standard Webhooks payload: the alert with its evidence, its last location and
    a link to it. Lenders' case systems hold the borrower already: no personal data is added."""
    alert = notice.alert
    return {
        "id": alert.alert_id,
        "fingerprint": alert.fingerprint,
        "rule_id": alert.rule_id,
        "loan_id": alert.loan_id,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "title": alert.title,
        "summary": alert.summary,
        "risk_score": alert.risk_score,
        "evidence": [dict(item) for item in alert.evidence],
        "last_location": (
            {"lat": alert.location.lat, "lon": alert.location.lon} if alert.location else None
        ),
        "labels": {k: v for k, v in alert.labels.items() if not k.startswith("skipwatch/")},
        "started_at": alert.started_at.isoformat(),
        "updated_at": alert.updated_at.isoformat(),
        "event_time": alert.event_time.isoformat(),
        "link": alert_link(dashboard_url, alert.alert_id),
    }


def webhook_body(message: Message, *, dashboard_url: str) -> bytes:
    """The signed body: `{type, timestamp, data}` of the message's one notice."""
    if len(message.notices) != 1:
        raise ValueError(f"a webhook message carries one alert, got {len(message.notices)}")
    notice = message.notices[0]
    payload = {
        "type": notice.type.value,
        "timestamp": message.created_at.isoformat(),
        "data": webhook_data(notice, dashboard_url=dashboard_url),
    }
    return orjson.dumps(payload)


def borrower_masked(borrower: Borrower | None) -> str:
    """As a viewer sees it (services/api/views.py): 张*（138****8000）."""
    if borrower is None:
        return "未知"
    return f"{mask_name(borrower.name)}（{mask_phone(borrower.phone)}）"


def _notice_lines(notice: Notice, dashboard_url: str) -> list[str]:
    alert = notice.alert
    location = f"{alert.location.lat:.5f}, {alert.location.lon:.5f}" if alert.location else "暂无"
    # Chat groups are as wide an audience as a viewer: free text is masked the same way.
    return [
        f"### 【{TYPE_ZH[notice.type]}】{mask_text(alert.title)}",
        f"> 级别：{SEVERITY_ZH[alert.severity]}　状态：{STATUS_ZH[alert.status]}",
        f"> 贷款：{alert.loan_id}",
        f"> 借款人：{borrower_masked(notice.borrower)}",
        f"> 风险评分：{alert.risk_score}",
        f"> 最后位置：{location}",
        f"> 开始时间：{alert.started_at.isoformat(timespec='seconds')}",
        f"> 摘要：{mask_text(alert.summary)}",
        f"[查看告警]({alert_link(dashboard_url, alert.alert_id)})",
    ]


def markdown_title(message: Message) -> str:
    first = message.notices[0]
    more = f" 等{len(message.notices)}条" if len(message.notices) > 1 else ""
    return f"【{TYPE_ZH[first.type]}】{mask_text(first.alert.title)}{more}"


def markdown_text(message: Message, *, dashboard_url: str) -> str:
    """The notices of a message as one markdown text, cut to the robots' size limit."""
    if not message.notices:
        raise ValueError("a message needs at least one notice")
    blocks: list[str] = []
    size = 0
    for index, notice in enumerate(message.notices):
        block = "\n".join(_notice_lines(notice, dashboard_url))
        cost = len(block.encode()) + 2
        if blocks and size + cost > MAX_MARKDOWN_BYTES - 64:
            blocks.append(f"…… 另有 {len(message.notices) - index} 条告警，请在看板查看")
            break
        blocks.append(block)
        size += cost
    return "\n\n".join(blocks)


def wecom_body(message: Message, *, dashboard_url: str) -> dict[str, Any]:
    """企业微信群机器人 markdown message: {"msgtype": "markdown", "markdown": {"content": ...}}."""
    return {
        "msgtype": "markdown",
        "markdown": {"content": markdown_text(message, dashboard_url=dashboard_url)},
    }


def dingtalk_body(message: Message, *, dashboard_url: str) -> dict[str, Any]:
    """钉钉自定义机器人 markdown message: {"msgtype": "markdown", "markdown": {"title", "text"}}."""
    return {
        "msgtype": "markdown",
        "markdown": {
            "title": markdown_title(message),
            "text": markdown_text(message, dashboard_url=dashboard_url),
        },
    }
