"""Routing tree, matchers, inhibition: table-driven, after Alertmanager's dispatch/route_test.go."""

from __future__ import annotations

import pytest
import yaml

from services.notify.config import parse_config
from services.notify.matchers import Matcher
from services.notify.routing import (
    DEFAULT_GROUP_INTERVAL_S,
    DEFAULT_GROUP_WAIT_S,
    DEFAULT_REPEAT_INTERVAL_S,
    NotifyConfig,
    Routing,
    alert_labels,
    parse_duration,
    parse_labels,
)
from tests.unit.notify.factories import alert

pytestmark = pytest.mark.unit

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# Alertmanager's TestRouteMatchers tree, in this project's config format.
TREE = """
route:
  receiver: notify-def
  routes:
  - matchers: ['{owner="team-A"}', '{level!="critical"}']
    receiver: notify-A
    routes:
    - matchers: ['{env="testing"}', '{baz!~".*quux"}']
      receiver: notify-testing
      group_by: ['...']
    - matchers: ['{env="production"}']
      receiver: notify-productionA
      group_wait: 1m
      continue: true
    - matchers: [ env=~"produ.*", job=~".*"]
      receiver: notify-productionB
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 1h
      group_by: ['job']
  - matchers: [owner=~"team-(B|C)"]
    group_by: ['foo', 'bar']
    group_wait: 2m
    receiver: notify-BC
  - matchers: [group_by="role"]
    group_by: ['role']
    routes:
    - matchers: ['{env="testing"}']
      receiver: notify-testing
      routes:
      - matchers: [wait="long"]
        group_wait: 2m
receivers:
- name: notify-def
- name: notify-A
- name: notify-testing
- name: notify-productionA
- name: notify-productionB
- name: notify-BC
"""

DEFAULTS = (("loan",), DEFAULT_GROUP_WAIT_S, DEFAULT_GROUP_INTERVAL_S, DEFAULT_REPEAT_INTERVAL_S)


def routing(text: str = TREE) -> Routing:
    return parse_config(text, "test.yaml")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"owner": "team-A"}, [("notify-A", *DEFAULTS, '{}/{level!="critical",owner="team-A"}')]),
        (
            {"owner": "team-A", "env": "unset"},
            [("notify-A", *DEFAULTS, '{}/{level!="critical",owner="team-A"}')],
        ),
        (
            {"owner": "team-C"},
            [
                (
                    "notify-BC",
                    ("foo", "bar"),
                    120.0,
                    DEFAULT_GROUP_INTERVAL_S,
                    DEFAULT_REPEAT_INTERVAL_S,
                    '{}/{owner=~"team-(B|C)"}',
                )
            ],
        ),
        (
            {"owner": "team-A", "env": "testing"},
            [
                (
                    "notify-testing",
                    ("...",),
                    DEFAULT_GROUP_WAIT_S,
                    DEFAULT_GROUP_INTERVAL_S,
                    DEFAULT_REPEAT_INTERVAL_S,
                    '{}/{level!="critical",owner="team-A"}/{baz!~".*quux",env="testing"}',
                )
            ],
        ),
        (
            {"owner": "team-A", "env": "production"},
            [
                (
                    "notify-productionA",
                    ("loan",),
                    60.0,
                    DEFAULT_GROUP_INTERVAL_S,
                    DEFAULT_REPEAT_INTERVAL_S,
                    '{}/{level!="critical",owner="team-A"}/{env="production"}',
                ),
                (
                    "notify-productionB",
                    ("job",),
                    30.0,
                    300.0,
                    3600.0,
                    '{}/{level!="critical",owner="team-A"}/{env=~"produ.*",job=~".*"}',
                ),
            ],
        ),
        (
            {"group_by": "role"},
            [
                (
                    "notify-def",
                    ("role",),
                    DEFAULT_GROUP_WAIT_S,
                    DEFAULT_GROUP_INTERVAL_S,
                    DEFAULT_REPEAT_INTERVAL_S,
                    '{}/{group_by="role"}',
                )
            ],
        ),
        (
            {"env": "testing", "group_by": "role"},
            [
                (
                    "notify-testing",
                    ("role",),
                    DEFAULT_GROUP_WAIT_S,
                    DEFAULT_GROUP_INTERVAL_S,
                    DEFAULT_REPEAT_INTERVAL_S,
                    '{}/{group_by="role"}/{env="testing"}',
                )
            ],
        ),
        (
            {"env": "testing", "group_by": "role", "wait": "long"},
            [
                (
                    "notify-testing",
                    ("role",),
                    120.0,
                    DEFAULT_GROUP_INTERVAL_S,
                    DEFAULT_REPEAT_INTERVAL_S,
                    '{}/{group_by="role"}/{env="testing"}/{wait="long"}',
                )
            ],
        ),
        # level=critical fails team A's level!="critical": falls through to the root.
        ({"owner": "team-A", "level": "critical"}, [("notify-def", *DEFAULTS, "{}")]),
        ({}, [("notify-def", *DEFAULTS, "{}")]),
    ],
)
def test_route_match(labels: dict[str, str], expected: list[tuple[object, ...]]) -> None:
    got = [
        (r.receiver, r.group_by, r.group_wait_s, r.group_interval_s, r.repeat_interval_s, r.key)
        for r in routing().routes_for(labels)
    ]
    assert got == expected


def test_children_inherit_group_by_all() -> None:
    text = """
route:
  receiver: r
  routes:
  - matchers: [env="parent"]
    group_by: ['...']
    routes:
    - matchers: [env="child1"]
    - matchers: [env="child2"]
      group_by: ['foo']
receivers: [{name: r}]
"""
    parent = routing(text).root.routes[0]
    assert parent.group_by == ("...",)
    assert parent.routes[0].group_by == ("...",)
    assert parent.routes[1].group_by == ("foo",)


def test_group_keys_by_loan_by_default_and_by_all_labels() -> None:
    tree = routing()
    root = tree.root
    labels = {"loan": "L-1", "rule": "r1", "severity": "critical"}
    assert root.group_key(labels) == root.group_key({**labels, "rule": "r2"})
    assert root.group_key(labels) != root.group_key({**labels, "loan": "L-2"})
    by_all = tree.routes_for({"owner": "team-A", "env": "testing"})[0]
    assert by_all.group_key({"owner": "team-A", "env": "testing", "x": "1"}) != by_all.group_key(
        {"owner": "team-A", "env": "testing", "x": "2"}
    )


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ("severity=critical", {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "warning"}, False),
        ('severity!="critical"', {"severity": "warning"}, True),
        ('severity!="critical"', {}, True),
        ('team=~"coll.*"', {"team": "collections"}, True),
        ('team=~"coll"', {"team": "collections"}, False),  # anchored
        ('team!~"coll.*"', {"team": "recovery"}, True),
        ('team!~"coll.*"', {"team": "collections"}, False),
        ('branch=""', {}, True),  # a missing label is the empty string
        ('branch=~".+"', {}, False),
        ('{region="华东"}', {"region": "华东"}, True),
        ('note="say \\"hi\\""', {"note": 'say "hi"'}, True),
    ],
)
def test_matchers(text: str, labels: dict[str, str], matches: bool) -> None:
    assert Matcher.parse(text).matches(labels) is matches


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("severity", "expected name"),
        ('team=~"("', "invalid regular expression"),
        ("9x=1", "expected name"),
        ('a="b', "unbalanced"),
    ],
)
def test_bad_matchers(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Matcher.parse(text)


def test_alert_labels_add_severity_rule_loan_status() -> None:
    labels = alert_labels(alert(labels={"team": "collections", "skipwatch/internal": "x"}))
    assert labels == {
        "team": "collections",
        "severity": "critical",
        "rule": "missed_payment_unreachable",
        "loan": "L-1001",
        "status": "firing",
    }


@pytest.mark.parametrize(
    ("target", "sources", "inhibited"),
    [
        ({"loan": "L1", "severity": "warning"}, [{"loan": "L1", "severity": "critical"}], True),
        ({"loan": "L1", "severity": "info"}, [{"loan": "L1", "severity": "critical"}], True),
        ({"loan": "L1", "severity": "warning"}, [{"loan": "L2", "severity": "critical"}], False),
        ({"loan": "L1", "severity": "critical"}, [{"loan": "L1", "severity": "critical"}], False),
        ({"loan": "L1", "severity": "warning"}, [{"loan": "L1", "severity": "warning"}], False),
        ({"loan": "L1", "severity": "warning"}, [], False),
    ],
)
def test_default_inhibition_a_critical_mutes_lower_alerts_of_its_loan(
    target: dict[str, str], sources: list[dict[str, str]], inhibited: bool
) -> None:
    assert routing().inhibited(target, sources) is inhibited


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("severity=critical,team=collections", {"severity": "critical", "team": "collections"}),
        (" a = b , c= ", {"a": "b", "c": ""}),
        ("", {}),
    ],
)
def test_parse_labels(text: str, labels: dict[str, str]) -> None:
    assert parse_labels(text) == labels


def test_parse_labels_names_the_bad_item() -> None:
    with pytest.raises(ValueError, match="'oops'"):
        parse_labels("a=b,oops")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("1h30m", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


BASE = f"""
route:
  receiver: hooks
receivers:
- name: hooks
  webhook_configs: [{{url: "https://example.com/h", secret: "{SECRET}"}}]
"""


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"route": {"receiver": "nobody"}},
            "test.yaml: route.receiver: no receiver named 'nobody'",
        ),
        (
            {"route": {"receiver": "hooks", "colour": "red"}},
            "test.yaml: route.colour: Extra inputs are not permitted",
        ),
        (
            {"route": {"receiver": "hooks", "routes": [{"group_wait": "soon"}]}},
            "test.yaml: route.routes[0].group_wait: invalid duration 'soon'",
        ),
        (
            {"route": {"receiver": "hooks", "routes": [{"matchers": ["team=~("]}]}},
            "test.yaml: route.routes[0].matchers: invalid regular expression",
        ),
        (
            {"route": {"receiver": "hooks", "routes": [{"mute_time_intervals": ["nights"]}]}},
            "route.routes[0].mute_time_intervals: no time interval named 'nights'",
        ),
        (
            {
                "receivers": [
                    {
                        "name": "hooks",
                        "webhook_configs": [{"url": "https://e.com", "secret": "plain"}],
                    }
                ]
            },
            "test.yaml: receivers[0].webhook_configs[0].secret: a webhook secret starts with 'whsec_'",
        ),
        (
            {"receivers": [{"name": "hooks", "wecom_configs": [{"url": "qyapi.weixin.qq.com"}]}]},
            "test.yaml: receivers[0].wecom_configs[0].url: must be an http(s) URL",
        ),
        (
            {"receivers": [{"name": "hooks"}, {"name": "hooks"}]},
            "receiver names must be unique: hooks",
        ),
        (
            {"time_intervals": [{"name": "t", "time_intervals": [{"location": "Mars/Olympus"}]}]},
            "test.yaml: time_intervals[0].time_intervals[0].location: unknown IANA time zone 'Mars/Olympus'",
        ),
        (
            {
                "time_intervals": [
                    {
                        "name": "t",
                        "time_intervals": [
                            {"times": [{"start_time": "21:00", "end_time": "08:00"}]}
                        ],
                    }
                ]
            },
            "start_time 21:00 must be before end_time 08:00",
        ),
        (
            {"time_intervals": [{"name": "t", "time_intervals": [{"weekdays": ["funday"]}]}]},
            "'funday' is not a number or one of monday",
        ),
    ],
)
def test_config_errors_name_the_file_and_the_field(patch: dict[str, object], message: str) -> None:
    document = yaml.safe_load(BASE)
    document.update(patch)
    with pytest.raises(ValueError) as caught:
        parse_config(yaml.safe_dump(document, allow_unicode=True), "test.yaml")
    assert message.replace("Value error, ", "") in str(caught.value)


def test_config_that_is_not_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"test\.yaml: expected a mapping"):
        parse_config("- a\n- b\n", "test.yaml")
    with pytest.raises(ValueError, match=r"test\.yaml: not valid YAML"):
        parse_config("route: [\n", "test.yaml")


def test_the_shipped_sample_config_is_valid() -> None:
    from pathlib import Path

    sample = Path(__file__).resolve().parents[3] / "deploy" / "notify" / "routing.example.yaml"
    routes = parse_config(sample.read_text(encoding="utf-8"), str(sample))
    assert isinstance(routes.config, NotifyConfig)


def test_sibling_routes_with_the_same_matchers_group_apart() -> None:
    text = """
route:
  receiver: a
  routes:
  - {matchers: [severity="critical"], receiver: a, continue: true}
  - {matchers: [severity="critical"], receiver: b}
receivers: [{name: a}, {name: b}]
"""
    first, second = routing(text).routes_for({"severity": "critical", "loan": "L1"})
    assert first.key == second.key == '{}/{severity="critical"}'
    assert (first.id, second.id) == ("0", "1")
    assert first.group_key({"loan": "L1"}) != second.group_key({"loan": "L1"})
