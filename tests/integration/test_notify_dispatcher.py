"""The dispatcher against the shared broker and real HTTP receivers on 127.0.0.1 (allow-listed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from standardwebhooks import Webhook

from rules.events import AlertEvent, AlertStatus, Severity
from services.kafka import ensure_topics
from services.notify import service
from services.notify.config import ConfigHolder
from services.notify.dispatcher import Dispatcher
from services.notify.ssrf import AllowList, SsrfGuard
from services.notify.state import NotifyState
from services.settings import KafkaSettings, NotifySettings, Settings
from tests.integration.conftest import stop_process
from tests.integration.notify_support import SECRET_KEY, LocalReceiver, wait_for
from tests.unit.notify.factories import alert

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = [0.0, 0.2, 0.2, 0.2, 0.2]


def settings_for(
    bootstrap: str,
    prefix: str,
    config: Path | None,
    schedule: list[float] = FAST,
    retention_s: float = 3600.0,
) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=2),
        notify=NotifySettings(
            routing_config=config, allow_list=["127.0.0.1"], retry_schedule_s=schedule,
            retry_jitter=0.0, metrics_port=0, dashboard_url="http://127.0.0.1:8000",
            delivery_retention_s=retention_s, secret_keys=[SecretStr(SECRET_KEY)],
        ),
    )  # fmt: skip


def write_config(path: Path, url: str) -> Path:
    path.write_text(
        f"""
route:
  receiver: hooks
  group_wait: 0s
  group_interval: 1s
receivers:
- name: hooks
  webhook_configs: [{{url: "{url}", secret: "{SECRET}"}}]
"""
    )
    return path


async def publish(settings: Settings, *alerts: AlertEvent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for item in alerts:
            await producer.send_and_wait(
                settings.topic("alerts"), item.model_dump_json().encode(), key=item.loan_id.encode()
            )
    finally:
        await producer.stop()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fresh_alert(n: int, **overrides: object) -> AlertEvent:
    moment = now()
    fields: dict[str, object] = {
        "alert_id": f"al{n}", "fingerprint": f"fp{n}", "loan_id": f"L-{n}",
        "started_at": moment, "updated_at": moment, "event_time": moment,
    }  # fmt: skip
    fields.update(overrides)
    return alert(**fields)


StartDispatcher = Callable[[LocalReceiver], Awaitable[Dispatcher]]


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[str]:
    await ensure_topics(kafka_bootstrap, topic_prefix, 2)
    yield topic_prefix


@pytest.fixture
async def dispatcher_for(
    kafka_bootstrap: str, topics: str, tmp_path: Path
) -> AsyncIterator[StartDispatcher]:
    running: list[Dispatcher] = []

    async def start(receiver: LocalReceiver) -> Dispatcher:
        settings = settings_for(
            kafka_bootstrap, topics, write_config(tmp_path / "routing.yaml", receiver.url())
        )
        dispatcher = Dispatcher(settings, config=ConfigHolder(tmp_path / "routing.yaml"))
        await dispatcher.start()
        running.append(dispatcher)
        await wait_for(dispatcher.ready.is_set, 30, "the dispatcher to join its group")
        return dispatcher

    yield start
    for dispatcher in running:
        await dispatcher.stop()


async def test_fails_three_times_then_accepted_once_with_one_webhook_id(
    dispatcher_for: StartDispatcher,
) -> None:
    receiver = LocalReceiver(answer=lambda n, r: 503 if n < 3 else 204)
    async with receiver.running():
        dispatcher = await dispatcher_for(receiver)
        await publish(dispatcher.settings, fresh_alert(1))
        await wait_for(lambda: len(receiver.accepted()) == 1, 30, "the alert to be accepted")
        await wait_for(
            lambda: any(r.state == "delivered" for r in dispatcher.records.values()),
            10,
            "the record",
        )
    assert len(receiver.received) == 4
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    for request in receiver.received:
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert payload["type"] == "alert.firing" and payload["data"]["id"] == "al1"
    (record,) = dispatcher.records.values()
    assert record.state == "delivered" and record.attempt_count == 4
    assert [a.status for a in record.attempts] == [503, 503, 503, 204]
    assert record.id == receiver.received[0].headers["webhook-id"]


async def test_always_failing_is_dead_lettered_and_redelivery_works(
    dispatcher_for: StartDispatcher,
) -> None:
    healthy = False
    receiver = LocalReceiver(answer=lambda n, r: 200 if healthy else 500)
    async with receiver.running():
        dispatcher = await dispatcher_for(receiver)
        await publish(dispatcher.settings, fresh_alert(2))
        await wait_for(
            lambda: any(r.state == "dead" for r in dispatcher.records.values()),
            30,
            "dead-lettering",
        )
        (dead,) = dispatcher.records.values()
        assert dead.attempt_count == len(FAST) and len(receiver.received) == len(FAST)
        healthy = True
        # Redelivery goes through Kafka, as the API does it: a second process's state.
        api_state = NotifyState(dispatcher.settings)
        await api_state.start()
        try:
            await wait_for(
                lambda: dead.id in api_state.deliveries.items, 10, "the API to see the delivery"
            )
            assert await service.redeliver_dead(api_state, endpoint=dead.endpoint, now=now()) == 1
        finally:
            await api_state.stop()
        await wait_for(lambda: len(receiver.accepted()) == 1, 30, "the redelivery")
    assert {r.headers["webhook-id"] for r in receiver.received} == {dead.id}
    await wait_for(lambda: dispatcher.records[dead.id].state == "delivered", 10, "the record")
    assert dispatcher.records[dead.id].generation == 1


async def test_410_disables_an_api_endpoint(kafka_bootstrap: str, topics: str) -> None:
    receiver = LocalReceiver(answer=lambda n, r: 410)
    async with receiver.running():
        settings = settings_for(kafka_bootstrap, topics, None)
        api_state = NotifyState(settings)
        await api_state.start()
        endpoint, secret = await service.create_endpoint(
            api_state,
            SsrfGuard(AllowList.parse(["127.0.0.1"])),
            url=receiver.url("/gone"),
            now=now(),
        )
        dispatcher = Dispatcher(settings)
        await dispatcher.start()
        try:
            await wait_for(dispatcher.ready.is_set, 30, "the dispatcher to join its group")
            await publish(settings, fresh_alert(3), fresh_alert(4))
            await wait_for(
                lambda: not api_state.endpoints.items[endpoint.id].enabled,
                30,
                "the endpoint to be disabled",
            )
            record = api_state.endpoints.items[endpoint.id]
            assert record.disabled_reason is not None and "410" in record.disabled_reason
            Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)
            # Disabled: the second alert is not sent (nor retried) any more.
            await wait_for(lambda: len(dispatcher.records) >= 1, 10, "records")
            count = len(receiver.received)
            await publish(settings, fresh_alert(5))
            await asyncio.sleep(1.0)
            assert len(receiver.received) == count
        finally:
            await dispatcher.stop()
            await api_state.stop()


async def test_silence_mutes_a_matching_alert_and_its_expiry_lets_the_next_change_through(
    dispatcher_for: StartDispatcher,
) -> None:
    receiver = LocalReceiver()
    async with receiver.running():
        dispatcher = await dispatcher_for(receiver)
        api_state = NotifyState(dispatcher.settings)
        await api_state.start()
        try:
            silence = await service.create_silence(
                api_state, matchers=['loan="L-7"'], starts_at=now() - dt.timedelta(minutes=1),
                ends_at=now() + dt.timedelta(hours=1), created_by="admin", comment="on holiday", now=now(),
            )  # fmt: skip
            await wait_for(
                lambda: silence.id in dispatcher.state.silences.items,
                10,
                "the dispatcher to see the silence",
            )
            first = fresh_alert(7)
            await publish(dispatcher.settings, first, fresh_alert(8))
            await wait_for(lambda: len(receiver.accepted()) == 1, 30, "the unsilenced alert")
            await asyncio.sleep(1.0)
            assert [
                Webhook(SECRET).verify(r.body, r.headers)["data"]["loan_id"]
                for r in receiver.received
            ] == ["L-8"]
            await service.expire_silence(api_state, silence_id=silence.id, now=now())
            await wait_for(
                lambda: dispatcher.state.silences.items[silence.id].ends_at <= now(),
                10,
                "the expiry",
            )
            resolved = first.model_copy(
                update={"status": AlertStatus.RESOLVED, "updated_at": now()}
            )
            await publish(dispatcher.settings, resolved)
            await wait_for(lambda: len(receiver.accepted()) == 2, 30, "the change after expiry")
            payload = Webhook(SECRET).verify(
                receiver.received[-1].body, receiver.received[-1].headers
            )
            assert payload["type"] == "alert.resolved" and payload["data"]["loan_id"] == "L-7"
        finally:
            await api_state.stop()


async def test_escalation_and_inhibition(dispatcher_for: StartDispatcher) -> None:
    receiver = LocalReceiver()
    async with receiver.running():
        dispatcher = await dispatcher_for(receiver)
        warning = fresh_alert(9, severity=Severity.WARNING)
        await publish(dispatcher.settings, warning)
        await wait_for(lambda: len(receiver.accepted()) == 1, 30, "the warning")
        # The same episode at critical: an escalation. Another warning on the loan: inhibited.
        escalated = warning.model_copy(update={"severity": Severity.CRITICAL, "updated_at": now()})
        other = fresh_alert(10, loan_id="L-9", severity=Severity.WARNING, rule_id="other_rule")
        await publish(dispatcher.settings, escalated, escalated, other)
        await wait_for(lambda: len(receiver.accepted()) == 2, 30, "the escalation")
        await asyncio.sleep(1.5)
    types = [Webhook(SECRET).verify(r.body, r.headers)["type"] for r in receiver.received]
    assert types == ["alert.firing", "alert.escalated"]


def dispatcher_env(kafka_bootstrap: str, topics: str, config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SKIPWATCH_KAFKA__TOPIC_PREFIX": topics,
        "SKIPWATCH_KAFKA__PARTITIONS": "2",
        "SKIPWATCH_NOTIFY__ROUTING_CONFIG": str(config),
        "SKIPWATCH_NOTIFY__ALLOW_LIST": '["127.0.0.1"]',
        "SKIPWATCH_NOTIFY__RETRY_SCHEDULE_S": "[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
        "SKIPWATCH_NOTIFY__RETRY_JITTER": "0",
        "SKIPWATCH_NOTIFY__METRICS_PORT": "0",
        "SKIPWATCH_NOTIFY__SECRET_KEYS": f'["{SECRET_KEY}"]',
    }


class DispatcherProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "dispatcher"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.proc)


async def test_sigkill_during_retries_loses_no_pending_delivery(
    kafka_bootstrap: str, topics: str, tmp_path: Path
) -> None:
    healthy = False
    receiver = LocalReceiver(answer=lambda n, r: 200 if healthy else 503)
    async with receiver.running():
        config = write_config(tmp_path / "routing.yaml", receiver.url())
        process = DispatcherProcess(
            dispatcher_env(kafka_bootstrap, topics, config), tmp_path / "dispatcher.log"
        )
        settings = settings_for(kafka_bootstrap, topics, config)
        alerts = [fresh_alert(20 + n) for n in range(5)]
        process.start()
        try:
            await publish(settings, *alerts)
            ids = lambda: {r.headers["webhook-id"] for r in receiver.received}  # noqa: E731
            await wait_for(lambda: len(ids()) == 5, 60, "a first attempt of every delivery")
            process.kill()
            tried = ids()
            healthy = True
            process.start()
            await wait_for(
                lambda: {r.headers["webhook-id"] for r in receiver.accepted()} == tried,
                60,
                "every pending delivery after the restart",
            )
        finally:
            process.stop()
    loans = sorted(
        Webhook(SECRET).verify(r.body, r.headers)["data"]["loan_id"] for r in receiver.accepted()
    )
    assert loans == sorted(a.loan_id for a in alerts)


GROUP_INTERVAL_S, REPEAT_INTERVAL_S = 15.0, 20.0


@pytest.mark.timeout(240)
async def test_group_timers_survive_a_sigkill(
    kafka_bootstrap: str, topics: str, tmp_path: Path
) -> None:
    """A group's last send and what it has sent that is still firing are in Kafka: after a
    SIGKILL and a restart, a new alert of the group waits for `group_interval` from the send
    before the kill (not notified early), and the reminder after `repeat_interval` still
    repeats the alert sent before the kill (not forgotten)."""
    receiver = LocalReceiver()
    async with receiver.running():
        config = tmp_path / "routing.yaml"
        config.write_text(
            f"""
route:
  receiver: hooks
  group_by: [loan]
  group_wait: 0s
  group_interval: {GROUP_INTERVAL_S:.0f}s
  repeat_interval: {REPEAT_INTERVAL_S:.0f}s
receivers:
- name: hooks
  webhook_configs: [{{url: "{receiver.url()}", secret: "{SECRET}"}}]
"""
        )
        process = DispatcherProcess(
            dispatcher_env(kafka_bootstrap, topics, config), tmp_path / "dispatcher.log"
        )
        settings = settings_for(kafka_bootstrap, topics, config)
        first = fresh_alert(80, loan_id="L-80")
        process.start()
        try:
            await publish(settings, first)
            await wait_for(lambda: len(receiver.accepted()) == 1, 60, "the first alert")
            sent_at = receiver.accepted()[0].at
            await asyncio.sleep(2.5)  # its offset committed (every second), then the kill
            process.kill()
            process.start()
            await publish(settings, fresh_alert(81, loan_id="L-80"))
            await wait_for(lambda: len(receiver.accepted()) == 2, 90, "the group's second alert")
            second_at = receiver.accepted()[1].at
            await wait_for(lambda: len(receiver.accepted()) == 4, 90, "the reminder")
        finally:
            process.stop()
    accepted = receiver.accepted()
    payloads = [Webhook(SECRET).verify(r.body, r.headers) for r in accepted]
    assert [p["data"]["id"] for p in payloads[:2]] == ["al80", "al81"]
    # Not early: the group's interval runs from the send before the kill (1 s: clocks, rounding).
    assert second_at - sent_at >= GROUP_INTERVAL_S - 1.0
    # Not forgotten: the reminder repeats both alerts, the one sent before the kill too.
    assert sorted(p["data"]["id"] for p in payloads[2:]) == ["al80", "al81"]
    assert {p["type"] for p in payloads} == {"alert.firing"}
    assert min(r.at for r in accepted[2:]) - second_at >= REPEAT_INTERVAL_S - 1.0
    assert len({r.headers["webhook-id"] for r in accepted}) == 4  # a reminder is a new message


async def test_two_dispatchers_share_the_partitions_and_deliver_each_alert_once(
    kafka_bootstrap: str, topics: str, tmp_path: Path
) -> None:
    receiver = LocalReceiver(answer=lambda n, r: 503 if n < 2 else 200)
    async with receiver.running():
        settings = settings_for(
            kafka_bootstrap, topics, write_config(tmp_path / "routing.yaml", receiver.url())
        )
        first = Dispatcher(settings, config=ConfigHolder(tmp_path / "routing.yaml"))
        second = Dispatcher(settings, config=ConfigHolder(tmp_path / "routing.yaml"))
        await first.start()
        await second.start()
        try:
            await wait_for(
                lambda: len(first.owned) == 1 and len(second.owned) == 1,
                60,
                "the partitions to be split",
            )
            alerts = [fresh_alert(60 + n) for n in range(8)]
            await publish(settings, *alerts)
            await wait_for(lambda: len(receiver.accepted()) == 8, 60, "every alert")
            await asyncio.sleep(1.0)
        finally:
            await first.stop()
            await second.stop()
    accepted = [r.headers["webhook-id"] for r in receiver.accepted()]
    assert len(set(accepted)) == 8 == len(accepted)
    made_by = [
        len([r for r in d.records.values() if r.partition in d.owned]) for d in (first, second)
    ]
    assert sum(made_by) == 8 and all(made_by)


async def test_finished_deliveries_are_deleted_after_their_retention(
    kafka_bootstrap: str, topics: str, tmp_path: Path
) -> None:
    receiver = LocalReceiver()
    async with receiver.running():
        settings = settings_for(
            kafka_bootstrap,
            topics,
            write_config(tmp_path / "routing.yaml", receiver.url()),
            retention_s=2.0,
        )
        dispatcher = Dispatcher(settings, config=ConfigHolder(tmp_path / "routing.yaml"))
        await dispatcher.start()
        try:
            await wait_for(dispatcher.ready.is_set, 30, "the dispatcher to join its group")
            await publish(settings, fresh_alert(70))
            await wait_for(lambda: len(receiver.accepted()) == 1, 30, "the delivery")
            ident = receiver.accepted()[0].headers["webhook-id"]
            assert dispatcher.records[ident].state == "delivered"
            await wait_for(lambda: ident not in dispatcher.records, 30, "the record to expire")
        finally:
            await dispatcher.stop()
        replay = NotifyState(settings)
        await replay.start()
        try:
            assert ident not in replay.deliveries.items  # a tombstone in the compacted topic
        finally:
            await replay.stop()
