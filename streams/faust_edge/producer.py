"""aiokafka's producer: whether its sender task is alive (for `services.kafka.RecoveringProducer`:
the API, the gateway and the simulator). Listed in `streams/faust_edge/__init__.py`; this
module imports neither faust nor aiokafka, so the processes without Faust load nothing of it."""

from __future__ import annotations

import asyncio


def sender_alive(producer: object) -> bool:
    """False once aiokafka's sender task ended (it dies on OutOfOrderSequenceNumber and
    ProducerFenced, and every later send waits forever). aiokafka exposes no public check:
    this reads `AIOKafkaProducer._sender.sender_task` (aiokafka 0.12), and answers True for
    anything without one (test fakes)."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return not (isinstance(task, asyncio.Task) and task.done())
