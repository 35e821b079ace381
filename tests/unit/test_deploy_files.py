"""The deployment files agree with the code: docker-compose.yml, deploy/Dockerfile,
deploy/prometheus/, deploy/grafana/ and deploy/k8s/.

No Docker or Kubernetes here: the files are parsed and cross-checked (commands are real
`skipwatch` subcommands, ports match the settings defaults, every scrape target is a compose
service, every metric a dashboard or alert uses is one the code defines, settings validate).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from prometheus_client.metrics_core import Metric

from services.cli import app as cli_app
from services.notify.config import load_config
from services.notify.dispatcher import DispatcherMetrics
from services.settings import (
    ApiSettings,
    GatewaySettings,
    KafkaSettings,
    NotifySettings,
    Settings,
    WorkerSettings,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
K8S_DIR = ROOT / "deploy" / "k8s"
NOTIFY_DIR = ROOT / "deploy" / "notify"

# `skipwatch` subcommands a deployment may run, as (command, subcommand-or-None).
SUBCOMMANDS = {
    "worker": None,
    "api": None,
    "simulate": None,
    "gateway": {"jt808"},
    "topics": {"create"},
    "dispatcher": None,
    "notify-receiver": None,
}
# Compose services of the skipwatch image that talk to Kafka (and start after `topics`).
SKIPWATCH_SERVICES = {"topics", "worker", "api", "gateway", "dispatcher", "simulator"}
# Compose services of the skipwatch image for local use only (no Kafka, no settings).
DEV_SERVICES = {"receiver"}

# Operations port of the dispatcher (settings notify.metrics_port).
NOTIFY_METRICS_PORT = NotifySettings().metrics_port

# Metrics port of the gateway (settings gateway.metrics_port).
GATEWAY_METRICS_PORT = int(getattr(GatewaySettings(), "metrics_port", 9808))

# Names that may appear in PromQL besides skipwatch_* metrics.
STANDARD_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip
# Source files that define the metrics the dashboards and alerts use.
METRIC_SOURCES = [ROOT / "streams", ROOT / "services"]


# --------------------------------------------------------------------------------------------
# helpers


def _interpolate(value: Any) -> Any:
    """Compose-style `${VAR:-default}` / `${VAR-default}` / `${VAR}` with VAR unset."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _command(cmd: Any) -> list[str]:
    assert isinstance(cmd, list), f"command must be an exec-form list, got {cmd!r}"
    return [str(c) for c in cmd]


def _check_subcommand(args: list[str], where: str) -> None:
    assert args, f"{where}: empty command"
    assert args[0] in SUBCOMMANDS, f"{where}: {args[0]!r} is not a skipwatch subcommand"
    subs = SUBCOMMANDS[args[0]]
    if subs is not None:
        assert len(args) > 1 and args[1] in subs, f"{where}: `{args[0]}` needs one of {subs}"
    if args[:2] == ["gateway", "jt808"]:
        flags = dict(zip(args[2::2], args[3::2], strict=False))
        assert int(flags.get("--port", GatewaySettings().port)) == GatewaySettings().port, where
        assert int(flags.get("--metrics-port", GATEWAY_METRICS_PORT)) == GATEWAY_METRICS_PORT


def test_subcommands_exist_in_the_cli() -> None:
    """SUBCOMMANDS (what the deployment files may run) are commands of `skipwatch` itself."""
    root = typer.main.get_command(cli_app)
    commands = root.commands  # type: ignore[attr-defined]
    for name, subs in SUBCOMMANDS.items():
        assert name in commands, f"`skipwatch {name}` does not exist"
        if subs is not None:
            assert subs <= set(commands[name].commands), (name, subs)


def _env_settings(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.upper().startswith("SKIPWATCH_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("SKIPWATCH_"):
            monkeypatch.setenv(name, str(_interpolate(value)))
    return Settings()


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (good enough for the expressions in this repo)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range / subquery selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def _metric_source_text() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8") for d in METRIC_SOURCES for p in sorted(d.rglob("*.py"))
    )


def _check_metric_names(exprs: dict[str, str]) -> None:
    """Every metric is skipwatch_* or standard; a skipwatch_* one exists in the code, unless the
    code defines no metric of its family yet (a process still being written)."""
    source = _metric_source_text()
    assert exprs
    for where, expr in exprs.items():
        names = _metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names:
            if name in STANDARD_METRICS:
                continue
            assert name.startswith("skipwatch_"), f"{where}: {name!r} is not a skipwatch metric"
            family = "_".join(name.split("_")[:2]) + "_"  # skipwatch_worker_, skipwatch_ingest_
            if f'"{family}' not in source:
                continue  # e.g. skipwatch_webhook_*: the dispatcher has not landed yet
            base = re.sub(r"_(total|bucket|sum|count|created)$", "", name)
            assert f'"{base}' in source, f"{where}: {name!r}: no metric {base!r} in the code"


# --------------------------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def _container_ports(svc: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in svc.get("ports", []):
        ports.add(int(str(_interpolate(entry)).rsplit(":", 1)[-1].split("/")[0]))
    for entry in svc.get("expose", []):
        ports.add(int(str(entry).split("/")[0]))
    return ports


def test_compose_has_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    expected = SKIPWATCH_SERVICES | DEV_SERVICES | {"kafka", "redis", "prometheus", "grafana"}
    assert expected <= set(services)


def test_compose_skipwatch_commands_are_real_subcommands(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in SKIPWATCH_SERVICES | DEV_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        _check_subcommand(_command(svc["command"]), f"compose service {name}")
    assert _command(services["topics"]["command"]) == ["topics", "create"]
    assert _command(services["gateway"]["command"])[:2] == ["gateway", "jt808"]
    assert _command(services["simulator"]["command"])[0] == "simulate"
    assert _command(services["dispatcher"]["command"]) == ["dispatcher"]
    assert _command(services["receiver"]["command"])[0] == "notify-receiver"


def test_compose_ports_match_settings_defaults(services: dict[str, dict[str, Any]]) -> None:
    assert ApiSettings().port in _container_ports(services["api"])
    assert GatewaySettings().port in _container_ports(services["gateway"])
    assert WorkerSettings().metrics_port in _container_ports(services["worker"])
    worker_check = services["worker"]["environment"]["HEALTHCHECK_URL"]
    assert worker_check == f"http://127.0.0.1:{WorkerSettings().metrics_port}/readyz"
    gateway_check = services["gateway"]["environment"]["HEALTHCHECK_URL"]
    assert gateway_check == f"http://127.0.0.1:{GATEWAY_METRICS_PORT}/readyz"
    assert GATEWAY_METRICS_PORT in _container_ports(services["gateway"])
    env = services["api"]["environment"]
    assert int(env["SKIPWATCH_API__PORT"]) == ApiSettings().port
    assert int(env["SKIPWATCH_GATEWAY__PORT"]) == GatewaySettings().port
    assert int(env["SKIPWATCH_WORKER__METRICS_PORT"]) == WorkerSettings().metrics_port
    assert int(_interpolate(env["SKIPWATCH_KAFKA__PARTITIONS"])) == KafkaSettings().partitions
    assert int(env["SKIPWATCH_NOTIFY__METRICS_PORT"]) == NOTIFY_METRICS_PORT
    dispatcher = services["dispatcher"]
    assert NOTIFY_METRICS_PORT in _container_ports(dispatcher)
    check = dispatcher["environment"]["HEALTHCHECK_URL"]
    assert check == f"http://127.0.0.1:{NOTIFY_METRICS_PORT}/readyz"
    assert dispatcher["healthcheck"]["test"]


def _mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository file of a service's bind mounts."""
    return {
        v.split(":")[1]: ROOT / v.split(":")[0]
        for v in svc.get("volumes", [])
        if v.startswith("./")
    }


def test_compose_dispatcher_routing(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher (and the API, for /v1/receivers) read the routing file compose mounts; it
    is valid, its destinations pass the SSRF allow-list, and the receiver service verifies
    with the secret the dispatcher signs with, on the port it sends to."""
    settings = _env_settings(services["dispatcher"]["environment"], monkeypatch)
    assert settings.notify.metrics_host == "0.0.0.0"  # Prometheus scrapes it from its container
    assert settings.notify.dashboard_url == "http://localhost:8000"  # the API's published port
    path = str(settings.notify.routing_config)
    for name in ("dispatcher", "api"):
        assert path in _mounts(services[name]), f"{name}: {path} not mounted"
    routing = load_config(_mounts(services["dispatcher"])[path])
    assert _mounts(services["api"])[path] == _mounts(services["dispatcher"])[path]
    receiver = services["receiver"]
    args = _command(receiver["command"])
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--host"] == "0.0.0.0"
    configs = [c for r in routing.receivers.values() for c in r.webhook_configs]
    assert configs and not [
        c for r in routing.receivers.values() for c in (*r.wecom_configs, *r.dingtalk_configs)
    ], "the compose routing sends to the local receiver only"
    for config in configs:
        url = re.match(r"http://([^:/]+):(\d+)/", config.url)
        assert url, config.url
        assert url.group(1) == "receiver" and url.group(1) in settings.notify.allow_list
        assert int(url.group(2)) == int(flags["--port"]) in _container_ports(receiver)
        assert config.secret == receiver["environment"]["SKIPWATCH_DEV_RECEIVER_SECRET"]
    assert receiver["environment"]["HEALTHCHECK_URL"] == f"tcp://127.0.0.1:{flags['--port']}"
    dep = services["dispatcher"]["depends_on"]["receiver"]
    assert dep["condition"] == "service_healthy"


def test_compose_env_is_shared_and_valid(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "x-skipwatch-env: &skipwatch-env" in text
    assert "local" in text.lower() and "SKIPWATCH_AUTH__TOKENS" in text
    for name in SKIPWATCH_SERVICES:
        env = services[name]["environment"]
        assert env["SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:29092", name
        assert env["SKIPWATCH_REDIS__URL"].startswith("redis://redis:"), name
        settings = _env_settings(env, monkeypatch)
        assert settings.api.host == "0.0.0.0"  # reachable from other containers
        assert settings.gateway.host == "0.0.0.0"
        assert "admin" in settings.auth.tokens.values()
    assert _env_settings(services["worker"]["environment"], monkeypatch).worker.store.startswith(
        "rocksdb://"
    )


def test_compose_kafka_is_single_node_kraft(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = {k: str(_interpolate(v)) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    assert env["CLUSTER_ID"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    assert "INTERNAL://kafka:29092" in advertised  # what the skipwatch containers bootstrap from
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    protocol_map = dict(
        p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert listeners <= set(protocol_map)
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert "/opt/kafka/bin/" in json.dumps(kafka["healthcheck"]["test"])
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]


def test_compose_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["topics"]["restart"] == "no"
    for name in SKIPWATCH_SERVICES - {"topics"}:
        dep = services[name]["depends_on"]["topics"]
        assert dep["condition"] == "service_completed_successfully", name
    for name in SKIPWATCH_SERVICES - {"topics", "simulator"}:
        assert services[name]["healthcheck"]["test"], name
    assert "replicas" in services["worker"]["deploy"]
    assert "profiles" not in services["simulator"]  # `docker compose up` includes the demo data


def test_compose_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"


# --------------------------------------------------------------------------------------------
# deploy/Dockerfile and .dockerignore


def test_dockerfile_essentials() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage build expected"
    assert "python:3.11-slim" in text
    assert re.search(r'^ENTRYPOINT \["skipwatch"\]$', text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "HEALTHCHECK" in text
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in ("**/.venv", "**/.skipwatch", "deploy/kafka/lib", "**/__pycache__", "tests"):
        assert entry in ignore, entry
    assert "uv.lock" not in ignore


def test_every_install_is_from_the_lock() -> None:
    """The image, `make install` and CI install exactly what uv.lock pins, never a fresh resolve."""
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^COPY pyproject.toml uv.lock ", dockerfile, re.M)
    syncs = re.findall(r"uv sync ([^\\\n]*)", dockerfile)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert "pip install" not in dockerfile.replace('pip install --no-cache-dir "uv==', "")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "uv sync --locked" in makefile and "pip install -e" not in makefile
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(encoding="utf-8"), re.M)
    assert re.search(r"^test: .*lint", makefile, re.M) and re.search(
        r"^lint: \$\(STAMP\)", makefile, re.M
    )
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = pyproject["project"]["requires-python"]
    locked = re.search(r'^requires-python = "([^"]+)"', lock, re.M)
    assert locked and locked.group(1).replace(" ", "") == wanted.replace(" ", ""), "run make lock"
    for version in ("3.11", "3.12"):
        assert f"Programming Language :: Python :: {version}" in pyproject["project"]["classifiers"]


# --------------------------------------------------------------------------------------------
# Prometheus


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    data = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_prometheus_targets_are_compose_services(
    prometheus: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    targets: dict[str, set[int]] = {}
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.setdefault(host, set()).add(int(port))
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                targets.setdefault(host, set()).add(int(dns["port"]))
    assert {"api", "worker", "gateway", "dispatcher"} <= set(targets)
    for host, ports in targets.items():
        assert host in services, f"scrape target {host} is not a compose service"
        if host in SKIPWATCH_SERVICES:
            assert ports <= _container_ports(services[host]), (host, ports)
    assert targets["api"] == {ApiSettings().port}
    assert targets["worker"] == {WorkerSettings().metrics_port}
    assert targets["dispatcher"] == {NOTIFY_METRICS_PORT}
    # The files Prometheus loads are the ones compose mounts.
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"] if v.startswith("./")}
    for rule_file in prometheus["rule_files"]:
        assert rule_file in mounted


def test_prometheus_alert_rules(rules: list[dict[str, Any]]) -> None:
    names = {rule["alert"] for rule in rules}
    for wanted in (
        "SkipwatchWorkerDown",
        "SkipwatchDeadLettersRising",
        "SkipwatchEventTimeLagHigh",
        "SkipwatchWorkerStalled",
        "SkipwatchNoDispatcher",
        "SkipwatchNotifyDeliveriesDead",
        "SkipwatchNotifyBacklogOld",
    ):
        assert wanted in names
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    _check_metric_names({rule["alert"]: rule["expr"] for rule in rules})


def _exported_names(family: Metric) -> set[str]:
    """The series names Prometheus sees for a metric family of a registry."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }[family.type]
    return {family.name + suffix for suffix in suffixes}


def _dispatcher_series() -> set[str]:
    registry = DispatcherMetrics().registry
    return {name for family in registry.collect() for name in _exported_names(family)}


def test_prometheus_dispatcher_rules_use_its_metrics(rules: list[dict[str, Any]]) -> None:
    """Every skipwatch_notify_* name an alert rule uses is a series DispatcherMetrics exports,
    and the rules cover dead-lettered deliveries and the oldest pending delivery."""
    exported = _dispatcher_series()
    assert "skipwatch_notify_deliveries_total" in exported
    used = {
        name
        for rule in rules
        for name in _metric_names(rule["expr"])
        if name.startswith("skipwatch_notify_")
    }
    assert used and used <= exported, used - exported
    assert {"skipwatch_notify_deliveries_total", "skipwatch_notify_oldest_pending_seconds"} <= used
    jobs = " ".join(rule["expr"] for rule in rules)
    assert 'job="skipwatch-dispatcher"' in jobs  # the scrape job's name


def test_promql_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, topic) (rate(skipwatch_worker_x_bucket{a="b"}'
        '[$__rate_interval]))) > 0 and on () up{job="x"} == 0'
    )
    assert _metric_names(expr) == {"skipwatch_worker_x_bucket", "up"}


# --------------------------------------------------------------------------------------------
# Grafana


def _dashboard_files() -> list[Path]:
    files = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert files
    return files


def test_grafana_provisioning(services: dict[str, dict[str, Any]]) -> None:
    mounts = {
        v.split(":")[0].removeprefix("./"): v.split(":")[1]
        for v in services["grafana"]["volumes"]
        if v.startswith("./")
    }
    provisioning = GRAFANA_DIR / "provisioning"
    datasources = [
        ds
        for f in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]
    ]
    assert [ds["type"] for ds in datasources] == ["prometheus"]
    url = datasources[0]["url"]
    host, port = url.split("//")[1].rstrip("/").split(":")
    assert host in services and int(port) == 9090
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    ]
    assert providers
    for provider in providers:
        # The provider's path is where compose mounts deploy/grafana/dashboards.
        assert provider["options"]["path"] == mounts["deploy/grafana/dashboards"]
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_grafana_dashboard_queries(services: dict[str, dict[str, Any]]) -> None:
    for path in _dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["uid"] and dashboard["title"]
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        exprs = {
            f"{path.name}: {panel['title']} {target['refId']}": target["expr"]
            for panel in panels
            for target in panel["targets"]
        }
        _check_metric_names(exprs)
        used = {name for expr in exprs.values() for name in _metric_names(expr)}
        for wanted in (
            "skipwatch_worker_events_total",
            "skipwatch_worker_alerts_total",
            "skipwatch_worker_deadletters_total",
            "skipwatch_worker_event_time_lag_seconds_bucket",
        ):
            assert wanted in used, wanted
        assert any(n.startswith("skipwatch_ingest_") for n in used)
        assert any(n.startswith("skipwatch_jt808_") for n in used)
        notify = {n for n in used if n.startswith("skipwatch_notify_")}
        assert notify <= _dispatcher_series(), notify - _dispatcher_series()
        assert {
            "skipwatch_notify_deliveries_total",
            "skipwatch_notify_oldest_pending_seconds",
        } <= notify


# --------------------------------------------------------------------------------------------
# Kubernetes


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path, doc))
    return docs


@pytest.fixture(scope="module")
def k8s() -> list[tuple[Path, dict[str, Any]]]:
    docs = _k8s_docs()
    assert docs
    return docs


def _objects(k8s: list[tuple[Path, dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s if doc.get("kind") == kind}


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_k8s_manifests_are_well_formed(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, doc in k8s:
        where = path.relative_to(ROOT)
        assert doc.get("apiVersion") and doc.get("kind"), where
        if doc["kind"] == "Kustomization":
            for resource in doc["resources"]:
                assert (path.parent / resource).is_file(), resource
            continue
        assert doc["metadata"]["name"], where
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "skipwatch", where
    kustomization = next(doc for _, doc in k8s if doc["kind"] == "Kustomization")
    listed = {K8S_DIR / r for r in kustomization["resources"]}
    base = {p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert base == listed, "every base manifest is listed in kustomization.yaml"
    assert not any(doc["kind"] == "Secret" for p, doc in k8s if p in listed), "no Secret in base"


def test_k8s_workloads(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    workloads = {
        **_objects(k8s, "Deployment"),
        **_objects(k8s, "StatefulSet"),
        **_objects(k8s, "Job"),
    }
    assert set(workloads) == {
        "skipwatch-api",
        "skipwatch-gateway",
        "skipwatch-worker",
        "skipwatch-topics",
        "skipwatch-dispatcher",
    }
    for name, workload in workloads.items():
        spec = _pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        if workload["kind"] != "Job":
            selector = workload["spec"]["selector"]["matchLabels"]
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), name
        for container in spec["containers"]:
            _check_subcommand(container["args"], f"{name}/{container['name']}")
            resources = container["resources"]
            assert resources["requests"]["memory"] and resources["limits"]["memory"], name
            ports = {p["containerPort"] for p in container.get("ports", [])}
            annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
            if annotations.get("prometheus.io/scrape") == "true":
                assert int(annotations["prometheus.io/port"]) in ports, name
    api = _pod_spec(workloads["skipwatch-api"])["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in api["ports"]} == {ApiSettings().port}
    gateway = _pod_spec(workloads["skipwatch-gateway"])["containers"][0]
    assert GatewaySettings().port in {p["containerPort"] for p in gateway["ports"]}
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    worker = _pod_spec(workloads["skipwatch-worker"])["containers"][0]
    assert {p["containerPort"] for p in worker["ports"]} == {WorkerSettings().metrics_port}
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert workloads["skipwatch-worker"]["spec"]["volumeClaimTemplates"]
    assert workloads["skipwatch-topics"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "topics",
        "create",
    ]


def _probe_port(container: dict[str, Any], probe: str) -> int:
    """The container port a probe hits (a named port resolved)."""
    port = container[probe]["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"{container['name']}: {probe} names no port {port!r}"
    return int(named[port])


def test_k8s_dispatcher(
    k8s: list[tuple[Path, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher's probes hit its operations port, the one the settings open (reachable
    from the kubelet and Prometheus); the routing file is mounted where the settings look."""
    config = _objects(k8s, "ConfigMap")["skipwatch-config"]["data"]
    settings = _env_settings(config, monkeypatch)
    notify = settings.notify
    assert notify.metrics_port == NOTIFY_METRICS_PORT and notify.metrics_host == "0.0.0.0"
    assert notify.routing_config is not None
    workload = _objects(k8s, "Deployment")["skipwatch-dispatcher"]
    spec = _pod_spec(workload)
    container = spec["containers"][0]
    assert container["args"] == ["dispatcher"]
    assert {"configMapRef": {"name": "skipwatch-config"}} in container["envFrom"]
    assert {p["containerPort"] for p in container["ports"]} == {notify.metrics_port}
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        assert container[probe]["httpGet"]["path"] == path, probe
        assert _probe_port(container, probe) == notify.metrics_port, probe
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == notify.metrics_port
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    metrics = _objects(k8s, "Service")["skipwatch-dispatcher-metrics"]
    assert [p["port"] for p in metrics["spec"]["ports"]] == [notify.metrics_port]
    # The routing file: where the settings look, in the dispatcher and in the API (/v1/receivers).
    routing = Path(notify.routing_config)
    for name in ("skipwatch-dispatcher", "skipwatch-api"):
        pod = _pod_spec(_objects(k8s, "Deployment")[name])
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        found = [
            (mount, volumes[mount["name"]])
            for mount in mounts.values()
            if routing.parent == Path(mount["mountPath"])
        ]
        assert found, f"{name}: nothing mounted at {routing.parent}"
        mount, volume = found[0]
        assert "subPath" not in mount  # a subPath mount never sees an updated Secret
        source = volume.get("secret") or volume.get("configMap")
        assert source, f"{name}: {mount['name']} is not a Secret or ConfigMap volume"
        assert [item["path"] for item in source["items"]] == [routing.name]


def test_k8s_workers_scale_within_partitions(
    k8s: list[tuple[Path, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _objects(k8s, "ConfigMap")["skipwatch-config"]["data"]
    secret = _objects(k8s, "Secret")["skipwatch-secrets"]["stringData"]
    for value in secret.values():
        assert "REPLACE" in value or value == "{}", "the Secret template holds no real secret"
    settings = _env_settings({**config, **secret}, monkeypatch)
    assert settings.env == "prod"
    assert settings.worker.store.startswith("rocksdb://")
    worker = _objects(k8s, "StatefulSet")["skipwatch-worker"]
    assert 1 <= worker["spec"]["replicas"] <= settings.kafka.partitions
    mounts = {
        m["mountPath"] for m in worker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert any(str(settings.worker.data_dir).startswith(m) for m in mounts)


def test_k8s_services_and_hpa(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    pods = [
        w["spec"]["template"]
        for kind in ("Deployment", "StatefulSet")
        for w in _objects(k8s, kind).values()
    ]
    for name, service in _objects(k8s, "Service").items():
        selector = service["spec"]["selector"]
        matching = [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]
        assert matching, f"Service {name} selects no pod"
        port_names = {
            port["name"] for p in matching for c in p["spec"]["containers"] for port in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (name, port)
    assert _objects(k8s, "Service")["skipwatch-gateway"]["spec"]["ports"][0]["protocol"] == "TCP"
    for hpa in _objects(k8s, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in _objects(k8s, "Deployment")
