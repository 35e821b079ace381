"""The routing config and tree (anchor: Alertmanager's `route`, `receivers`, `inhibit_rules`,
`time_intervals`). Pure: parsing and validation of the document, label matching, muting by
time, inhibition. Loading files and reloading live in services/notify/config.py.

An alert is routed by its labels: the rule's labels (team, pattern, ...) plus `severity`,
`rule`, `loan` and `status` (see `alert_labels`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from rules.events import AlertEvent
from services.notify.matchers import Matcher, matches_all
from services.notify.signing import check_secret
from services.notify.timeintervals import NamedTimeInterval

ALL_LABELS = "..."
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `4h`, `1d`, `1h30m` → seconds (Alertmanager's duration format)."""
    found = _DURATION.match(text.strip())
    if found is None or not any(found.groups()):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 4h, 1d or 1h30m")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in found.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


Duration = Annotated[str, StringConstraints(min_length=2)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _check_matchers(value: list[str]) -> list[str]:
    for text in value:
        Matcher.parse(text)
    return value


def _check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


class WebhookConfig(_Strict):
    """A Standard Webhooks endpoint. During a rotation, `previous_secret` also signs until
    `previous_secret_expires`."""

    url: str
    secret: str
    previous_secret: str | None = None
    previous_secret_expires: dt.datetime | None = None

    _url = field_validator("url")(_check_url)

    @field_validator("secret", "previous_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)

    @model_validator(mode="after")
    def _rotation(self) -> WebhookConfig:
        if (self.previous_secret is None) != (self.previous_secret_expires is None):
            raise ValueError("previous_secret and previous_secret_expires go together")
        if self.previous_secret_expires is not None and self.previous_secret_expires.tzinfo is None:
            raise ValueError("previous_secret_expires needs a time zone (e.g. ...Z)")
        return self


class WeComConfig(_Strict):
    """企业微信群机器人: its webhook URL (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`)."""

    url: str
    _url = field_validator("url")(_check_url)


class DingTalkConfig(_Strict):
    """钉钉自定义机器人: its URL (`…/robot/send?access_token=…`); in 加签 mode its `SEC…` secret."""

    url: str
    secret: str | None = None
    _url = field_validator("url")(_check_url)


class ReceiverConfig(_Strict):
    name: Name
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    wecom_configs: list[WeComConfig] = Field(default_factory=list)
    dingtalk_configs: list[DingTalkConfig] = Field(default_factory=list)


class RouteConfig(_Strict):
    receiver: Name | None = None
    group_by: list[str] | None = None
    continue_: bool = Field(False, alias="continue")
    matchers: list[str] = Field(default_factory=list)
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    mute_time_intervals: list[Name] = Field(default_factory=list)
    active_time_intervals: list[Name] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)

    _matchers = field_validator("matchers")(_check_matchers)

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and ALL_LABELS in value and len(value) > 1:
            raise ValueError("'...' (group by all labels) cannot be combined with label names")
        return value


class InhibitRuleConfig(_Strict):
    """While an alert matching `source_matchers` fires, alerts matching `target_matchers` with
    the same values of the `equal` labels are not notified."""

    source_matchers: list[str]
    target_matchers: list[str]
    equal: list[str] = Field(default_factory=list)

    _source = field_validator("source_matchers")(_check_matchers)
    _target = field_validator("target_matchers")(_check_matchers)


# Inhibition as the alert view applies it: a critical on a loan mutes its lower alerts.
DEFAULT_INHIBIT_RULES = [
    InhibitRuleConfig(
        source_matchers=['severity="critical"'],
        target_matchers=['severity=~"warning|info"'],
        equal=["loan"],
    )
]


class NotifyConfig(_Strict):
    route: RouteConfig
    receivers: list[ReceiverConfig]
    time_intervals: list[NamedTimeInterval] = Field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = Field(
        default_factory=lambda: list(DEFAULT_INHIBIT_RULES)
    )

    @model_validator(mode="after")
    def _references(self) -> NotifyConfig:
        names = [r.name for r in self.receivers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"receiver names must be unique: {', '.join(duplicates)}")
        intervals = [t.name for t in self.time_intervals]
        if len(intervals) != len(set(intervals)):
            raise ValueError("time interval names must be unique")
        if self.route.receiver is None:
            raise ValueError("route.receiver: the root route needs a receiver")
        if self.route.matchers:
            raise ValueError("route.matchers: the root route matches every alert; no matchers")
        if self.route.mute_time_intervals or self.route.active_time_intervals:
            raise ValueError("route: the root route cannot have mute or active time intervals")
        _check_route(self.route, "route", set(names), set(intervals))
        return self


def _check_route(route: RouteConfig, where: str, receivers: set[str], intervals: set[str]) -> None:
    if route.receiver is not None and route.receiver not in receivers:
        raise ValueError(f"{where}.receiver: no receiver named {route.receiver!r}")
    for field_name in ("mute_time_intervals", "active_time_intervals"):
        for name in getattr(route, field_name):
            if name not in intervals:
                raise ValueError(f"{where}.{field_name}: no time interval named {name!r}")
    for index, child in enumerate(route.routes):
        _check_route(child, f"{where}.routes[{index}]", receivers, intervals)


# --- the tree ------------------------------------------------------------------------------------

DEFAULT_GROUP_BY = ("loan",)
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


@dataclass(frozen=True)
class Route:
    """A node of the routing tree with its options resolved (children inherit what they do not
    set). `key` is Alertmanager's (the matchers down the path, for people); `id` is the index
    path (`0.2`; the root is ``), unique even when sibling routes share their matchers."""

    key: str
    id: str
    receiver: str
    group_by: tuple[str, ...]  # ("...",): every label
    matchers: tuple[Matcher, ...]
    continue_: bool
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    mute_time_intervals: tuple[str, ...]
    active_time_intervals: tuple[str, ...]
    routes: tuple[Route, ...]

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert with these labels goes to (depth first; a matching child without
        `continue` ends the search among its siblings; no matching child: this node)."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by == (ALL_LABELS,):
            return dict(labels)
        return {name: labels.get(name, "") for name in self.group_by}

    def group_key(self, labels: Mapping[str, str]) -> str:
        shown = ",".join(f"{k}={v!r}" for k, v in sorted(self.group_labels(labels).items()))
        return f"{self.id}:{{{shown}}}"

    def muted_at(self, instant: dt.datetime, intervals: Mapping[str, NamedTimeInterval]) -> bool:
        """Muted by one of its mute intervals, or outside all of its active intervals."""
        if any(intervals[name].contains(instant) for name in self.mute_time_intervals):
            return True
        return bool(self.active_time_intervals) and not any(
            intervals[name].contains(instant) for name in self.active_time_intervals
        )


def build_route(
    config: RouteConfig, parent: Route | None = None, key: str = "{}", id_: str = ""
) -> Route:
    def inherit(value: str | None, parent_s: float | None, default: float) -> float:
        if value is not None:
            return parse_duration(value)
        return parent_s if parent_s is not None else default

    receiver = config.receiver or (parent.receiver if parent else None)
    assert receiver is not None, "validated: the root has a receiver"
    if config.group_by is not None:
        group_by = tuple(config.group_by)
    else:
        group_by = parent.group_by if parent else DEFAULT_GROUP_BY
    matchers = tuple(Matcher.parse(m) for m in config.matchers)
    node = Route(
        key=key,
        id=id_,
        receiver=receiver,
        group_by=group_by,
        matchers=matchers,
        continue_=config.continue_,
        group_wait_s=inherit(
            config.group_wait, parent.group_wait_s if parent else None, DEFAULT_GROUP_WAIT_S
        ),
        group_interval_s=inherit(
            config.group_interval,
            parent.group_interval_s if parent else None,
            DEFAULT_GROUP_INTERVAL_S,
        ),
        repeat_interval_s=inherit(
            config.repeat_interval,
            parent.repeat_interval_s if parent else None,
            DEFAULT_REPEAT_INTERVAL_S,
        ),
        mute_time_intervals=tuple(config.mute_time_intervals),
        active_time_intervals=tuple(config.active_time_intervals),
        routes=(),
    )
    # Alertmanager's route keys: the parent's key, then the child's matchers, sorted.
    children = tuple(
        build_route(
            child,
            node,
            f"{key}/{{{','.join(sorted(str(Matcher.parse(m)) for m in child.matchers))}}}",
            f"{id_}.{index}" if id_ else str(index),
        )
        for index, child in enumerate(config.routes)
    )
    return dataclasses.replace(node, routes=children)


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    def mutes(self, target: Mapping[str, str], source: Mapping[str, str]) -> bool:
        return (
            matches_all(self.target, target)
            and matches_all(self.source, source)
            and all(target.get(n, "") == source.get(n, "") for n in self.equal)
        )


@dataclass(frozen=True)
class Routing:
    """A validated config made ready to route: the tree, the receivers, intervals, inhibition."""

    config: NotifyConfig
    root: Route
    receivers: Mapping[str, ReceiverConfig]
    intervals: Mapping[str, NamedTimeInterval]
    inhibit_rules: tuple[InhibitRule, ...]

    @classmethod
    def from_config(cls, config: NotifyConfig) -> Routing:
        return cls(
            config=config,
            root=build_route(config.route),
            receivers={r.name: r for r in config.receivers},
            intervals={t.name: t for t in config.time_intervals},
            inhibit_rules=tuple(
                InhibitRule(
                    tuple(Matcher.parse(m) for m in rule.source_matchers),
                    tuple(Matcher.parse(m) for m in rule.target_matchers),
                    tuple(rule.equal),
                )
                for rule in config.inhibit_rules
            ),
        )

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        return self.root.match(labels)

    def route_by_id(self, route_id: str) -> Route | None:
        """The route with this index path (`0.2`), or None when the config has no such node."""
        node = self.root
        for part in filter(None, route_id.split(".")):
            index = int(part)
            if index >= len(node.routes):
                return None
            node = node.routes[index]
        return node

    def inhibited(self, labels: Mapping[str, str], firing: Iterable[Mapping[str, str]]) -> bool:
        """Whether an alert with `labels` is muted by one of the `firing` alerts (an alert never
        inhibits itself: pass the others)."""
        sources = list(firing)
        return any(rule.mutes(labels, source) for rule in self.inhibit_rules for source in sources)


def alert_labels(alert: AlertEvent) -> dict[str, str]:
    """The labels an alert is routed, grouped, inhibited and silenced by."""
    labels = {k: v for k, v in alert.labels.items() if not k.startswith("skipwatch/")}
    labels.update(
        severity=alert.severity.value,
        rule=alert.rule_id,
        loan=alert.loan_id,
        status=alert.status.value,
    )
    return labels


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (the CLI's --labels) → a dict; a bad item raises ValueError naming it."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"label {item!r} must be name=value")
        labels[name.strip()] = value.strip()
    return labels


def describe(
    routes: Sequence[Route], routing: Routing, instant: dt.datetime
) -> list[dict[str, Any]]:
    """What `skipwatch routes test` prints for each matched route."""
    return [
        {
            "receiver": route.receiver,
            "route": route.key,
            "group_by": list(route.group_by),
            "muted": route.muted_at(instant, routing.intervals),
        }
        for route in routes
    ]
