"""Faust kept at its edge: every use of faust-streaming's, mode-streaming's or aiokafka's private
members (underscore names, undocumented attributes, overridden internal methods) is in this
package, and only here. The worker refuses to start on versions these hooks were not tested on
(`versions.py`, checked by `streams/runner.py` before anything of Faust runs).

Each hook, what it touches, and why:

`consumer.py` — `LaneConsumer(faust.transport.drivers.aiokafka.Consumer)`, the app's consumer
class (docs/streaming.md, "Intake"):
- `install`: sets `app.transport.Consumer` (undocumented) before Faust creates the consumer, so
  the app's consumer is this class.
- overrides `_drain_messages(fetcher)`, the body of Faust's fetch loop: a fetch's records go to
  the lanes as one list per partition instead of one callback, event and ack per record
  (≈300 µs each). It reads `fetcher._stopped`, `self._stopped`, `self._read_offset` (moved only
  with delivered records), `self.callback`, `self.suspend_flow`, `self.wait_first`,
  `self.consumer_stopped_errors`, `app.topics.acks_enabled_for`.
- `_fetch`: Faust's `getmany` without its per-record generator: `_wait_next_records`,
  `_buffered_partitions`, `perform_seek`, `highwater`, `app.monitor.track_tp_end_offset`;
  `_message` builds `ConsumerMessage` as Faust's `_to_message` does.
- overrides `_seek(partition, offset)` to seek on the consumer's thread (`_thread.seek`,
  `_thread.call_thread`; aiokafka is not thread-safe) and drop what the lanes hold of the
  partition; `_thread.earliest_offsets` for never-committed partitions.
- overrides `seek_to_committed()`: never-committed partitions go to their first record.
- `mark_empty`: `_add_gap(tp, first, last)`, so a commit passes offsets the broker confirmed
  hold no record (the gap guard, streams/gaps.py).
- `describe` (SIGUSR1 dump): `_paused_partitions`, `_active_partitions`, `_read_offset`.
- `fetch_state` / `_positions`: aiokafka's fetch position and high-water mark per partition,
  from `_thread._ensure_consumer()._subscription.subscription.assignment.state_value(tp)`
  (`position`, `has_valid_position`, `highwater`, `paused`): the time model's "caught up" test
  (rules/clock.py) and the SIGUSR1 dump. `_lane_positions` reads the same positions right
  after each fetch; `fetch_state` reports a partition's position only once the records that
  fetch brought are in their lane, so records aiokafka handed over and still on their way
  (waiting for room in a full lane) never look read.

`tables.py` — `RawKeyTable(faust.Table)`, the app's table class, and `DeviceChunkTable`
(docs/streaming.md, "State"):
- overrides `_serializer_from_type`: `str` keys written as raw UTF-8, not JSON, so a key's
  changelog record lands on its input partition.
- overrides `partition_for_key`: the changelog partition computed here (services/kafka.py's
  partitioner) instead of Faust asking aiokafka's partitioner eagerly (issue 14 item 7).
- overrides `_new_store_by_url`: `rocksdb://` makes a `KeyPartitionedRocksDB`.

`stores.py` — `KeyPartitionedRocksDB(faust.stores.rocksdb.Store)`: overrides `_set`, `_get`,
`_contains` and uses `_key_index`, `_db_for_partition`, `_dbs`: each key in its own
partition's database (Faust's store asserts an event is being processed).

`worker.py`:
- `Worker(faust.Worker)` overrides mode's `_on_sigusr1`: the consumer's fetch state is printed
  before mode's task stacks.
- `recovery_progress` reads `app.tables.recovery.active_remaining_total()`, `app.in_recovery`
  and `app.rebalancing` for `RecoveryWatchdog` (a stalled recovery exits for a restart).

`producer.py` — `sender_alive` reads aiokafka's `AIOKafkaProducer._sender.sender_task`: aiokafka
gives no public check that its sender died (`services.kafka.RecoveringProducer`, used by the
API, the gateway and the simulator; imports neither faust nor aiokafka).

Not hooks (public API only, so they stay where they are): `services.kafka.OffsetProbe` (a
plain `AIOKafkaConsumer`), `streams.gaps.InputGaps` (pure bookkeeping), and in `streams/app.py`
`app.producer.buffer` (`ProducerBuffer.size`, `max_messages`), `app.flow_control.manage_queue`,
`app.assignor.assigned_actives()`, `app.tables.add`.

This package's `__init__` imports nothing: `services.kafka` imports `producer.py` without
loading Faust.
"""
