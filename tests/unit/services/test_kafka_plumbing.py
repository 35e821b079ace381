"""Kafka plumbing said once: one key partitioner that every producer uses and that agrees with
Kafka's own; a producer that is replaced after a fatal error (issue 14 item 2, issue 13)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber, ProducerFenced
from aiokafka.partitioner import DefaultPartitioner

from services.api.publisher import OutRecord, ProducerNotReady, Publisher, partition_for
from services.jt808.sink import KafkaPingSink
from services.kafka import KeyPartitioner, RecoveringProducer, key_hash, key_partition
from streams import app as worker
from streams.faust_edge.producer import sender_alive
from tests.unit.api.support import FakeProducer

pytestmark = pytest.mark.unit

# Kafka's own murmur2 vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
# testMurmur2), as the Java default partitioner uses them: toPositive(murmur2(key)).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_key_hash_is_javas_murmur2() -> None:
    for key, java in JAVA_MURMUR2.items():
        assert key_hash(key) == java & 0x7FFFFFFF, key


def test_every_producer_places_keys_where_kafkas_default_partitioner_does() -> None:
    """The API's publisher, the gateway's and the simulator's producers (KeyPartitioner) and
    the worker's tables (key_partition) against aiokafka's DefaultPartitioner."""
    rng = random.Random(7)
    default, ours = DefaultPartitioner(), KeyPartitioner()
    keys = [rng.randbytes(rng.randint(0, 24)) for _ in range(1_000)]
    keys += [f"L-{n}".encode() for n in range(200)] + ["贷款-7".encode(), b"dev-42"]
    for key in keys:
        partitions = list(range(rng.randint(1, 64)))
        expected = default(key, partitions, partitions)
        assert ours(key, partitions, partitions) == expected
        assert partition_for(key, len(partitions)) == expected
        assert key_partition(key, len(partitions)) == expected
        if key.isascii():
            assert worker.key_partition(key.decode(), len(partitions)) == expected
    assert worker.key_partition is key_partition
    assert ours(None, [0, 1, 2], [1]) == 1  # no key: an available partition


@dataclass
class Fleet:
    """Producers made by a factory; the first `poisoned` fail every send with `error`."""

    error: BaseException
    poisoned: int = 1
    made: list[FakeProducer] = field(default_factory=list)

    def __call__(self) -> FakeProducer:
        producer = FakeProducer(partitions=2)
        if len(self.made) < self.poisoned:
            producer.fail_with = self.error
        self.made.append(producer)
        return producer


def record(n: int) -> OutRecord:
    return OutRecord("t", f"dev-{n}".encode(), b"{}")


async def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("error", [OutOfOrderSequenceNumber(), ProducerFenced()])
async def test_a_fatal_error_replaces_the_producer_and_nothing_is_acked_meanwhile(
    error: BaseException,
) -> None:
    fleet = Fleet(error)
    publisher = Publisher(fleet, timeout_s=1.0, retry_start_every_s=0.05)
    await publisher.start()
    assert publisher.started
    failed = await publisher.publish([record(1), record(2)])
    assert failed.acked == [] and isinstance(failed.error, type(error))
    # being replaced: not ready, and a publish is refused at once (the API answers 503)
    assert not publisher.started
    refused = await publisher.publish([record(3)])
    assert refused.acked == [] and isinstance(refused.error, ProducerNotReady)
    await wait_for(lambda: publisher.started)
    assert len(fleet.made) == 2 and publisher.recreated == 1
    ok = await publisher.publish([record(4), record(5)])
    assert ok.error is None and len(ok.acked) == 2
    assert sorted(s.key for s in fleet.made[1].sent) == [b"dev-4", b"dev-5"]
    assert fleet.made[0].sent == []
    await publisher.stop()


async def test_a_timeout_alone_does_not_replace_the_producer() -> None:
    fleet = Fleet(KafkaTimeoutError())
    publisher = Publisher(fleet, timeout_s=1.0, retry_start_every_s=0.05)
    await publisher.start()
    result = await publisher.publish([record(1)])
    assert isinstance(result.error, KafkaTimeoutError)
    assert publisher.started and len(fleet.made) == 1
    await publisher.stop()


async def test_a_dead_sender_task_counts_as_fatal_and_readiness_follows() -> None:
    class Sender:
        def __init__(self) -> None:
            self.sender_task: asyncio.Task[None] = asyncio.create_task(asyncio.sleep(0))

    made: list[Any] = []

    def factory() -> Any:
        producer = FakeProducer()
        producer._sender = Sender()  # type: ignore[attr-defined]
        made.append(producer)
        return producer

    holder: RecoveringProducer[Any] = RecoveringProducer(factory, name="t", backoff_s=(0.01, 0.05))
    await holder.start()
    await asyncio.sleep(0.01)  # the first sender task ends, as aiokafka's does on a fatal error
    assert not sender_alive(made[0])
    assert not holder.ready
    assert holder.check(None)  # noticed: replaced
    made_before = len(made)
    await wait_for(lambda: len(made) > made_before and holder._ready.is_set())
    await holder.stop()


async def test_the_gateway_sink_is_not_ready_while_its_producer_is_replaced() -> None:
    sink = KafkaPingSink(bootstrap_servers="127.0.0.1:1")
    fleet = Fleet(OutOfOrderSequenceNumber())
    sink._holder = RecoveringProducer(fleet, name="gw", backoff_s=(0.2, 0.2))
    await sink.start()
    assert sink.ready
    sink._holder.check(OutOfOrderSequenceNumber())
    assert not sink.ready
    await wait_for(lambda: sink.ready)
    assert len(fleet.made) == 2
    await sink.stop()


async def test_the_gateway_sink_is_not_ready_while_the_brokers_do_not_answer() -> None:
    """Issue 14 item 2, found by the broker-restart fault test: the gateway's /readyz said ready
    for the whole outage (its producer looked healthy while every send failed)."""
    sink = KafkaPingSink(bootstrap_servers="127.0.0.1:1", probe_s=0.05)
    fleet = Fleet(OutOfOrderSequenceNumber(), poisoned=0)
    sink._holder = RecoveringProducer(fleet, name="gw", backoff_s=(0.2, 0.2))
    await sink.start()
    await asyncio.sleep(0.2)
    assert sink.ready
    fleet.made[0].unreachable = True  # the broker is down
    await wait_for(lambda: not sink.ready)
    fleet.made[0].unreachable = False  # back
    await wait_for(lambda: sink.ready)
    assert len(fleet.made) == 1  # nothing to replace: the producer itself was fine
    await sink.stop()
