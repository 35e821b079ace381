"""A faster message hand-off from Faust's fetcher to the agents (throughput, DESIGN §9).

Faust's consumer hands every fetched message to the conductor through
``wait_first(callback(message), suspend_flow.wait())``: two tasks and an ``asyncio.wait`` per
message, so the fetcher — not the agents — limits a worker to a few thousand records a second.
The race only matters when delivery can block: flow suspended for a rebalance, the producer
buffer over its limit, or a channel queue full. When none of those holds, the conductor's
callback completes without yielding to the event loop, so awaiting it directly is the same
operation minus the task machinery. Otherwise we fall back to Faust's own path unchanged.

Everything else in the loop (read offsets, gap tracking, commit cadence, periodic yields) is
Faust's ``Consumer._drain_messages`` as of faust-streaming 0.15.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING, Consumer

_installed = False
YIELD_EVERY = 100


def _can_deliver_now(consumer: Any, tp: Any) -> bool:
    app = consumer.app
    if not consumer.flow_active or not app.flow_control.is_active():
        return False
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:
        return False
    return not any(channel.queue.full() for channel in app.topics._tp_index.get(tp, ()))


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - run by Faust
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    num_since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if self.should_stop:
                continue
            async for tp, message in ait:
                num_since_yield += 1
                if num_since_yield > YIELD_EVERY:
                    await asyncio.sleep(0)
                    num_since_yield = 0
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is not None and offset < r_offset:
                    continue
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if _can_deliver_now(self, tp):
                    await callback(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                set_read_offset(tp, offset)
            self.diag.unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            return
        raise


def install() -> None:
    """Replace Faust's drain loop in this process (the worker calls this once)."""
    global _installed
    if not _installed:
        Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
        _installed = True
