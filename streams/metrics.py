"""Worker metrics on an injected registry; labels stay bounded (topic, outcome, rule, reason)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)


@dataclass(frozen=True)
class WorkerMetrics:
    events: Counter
    alerts: Counter
    deadletters: Counter
    event_time_lag: Histogram
    deadline_sweeps: Counter
    deadlines_due: Counter
    deadlines_pending: Gauge
    pending_pings: Gauge
    batch_seconds: Histogram
    input_gaps: Counter
    quarantined: Counter
    quarantined_keys: Gauge
    risk_places: Gauge
    marks_sent: Counter
    sources_timed_out: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> WorkerMetrics:
        return cls(
            events=Counter(
                "skipwatch_worker_events_total",
                "Input records by topic and outcome "
                "(applied, duplicate, pending_binding, unbound, invalid, undecodable).",
                ["topic", "outcome"],
                registry=registry,
            ),
            alerts=Counter(
                "skipwatch_worker_alerts_total",
                "Alert state changes emitted, by rule, severity and status.",
                ["rule", "severity", "status"],
                registry=registry,
            ),
            deadletters=Counter(
                "skipwatch_worker_deadletters_total",
                "Records sent to the dead-letter topic, by source topic and reason.",
                ["topic", "reason"],
                registry=registry,
            ),
            event_time_lag=Histogram(
                "skipwatch_worker_event_time_lag_seconds",
                "Wall-clock time minus event time when a record is processed.",
                ["topic"],
                buckets=LAG_BUCKETS,
                registry=registry,
            ),
            deadline_sweeps=Counter(
                "skipwatch_worker_deadline_sweeps_total",
                "Deadline sweeps run (absence detection).",
                registry=registry,
            ),
            deadlines_due=Counter(
                "skipwatch_worker_deadlines_due_total",
                "Loans advanced because one of their deadlines fell due.",
                registry=registry,
            ),
            deadlines_pending=Gauge(
                "skipwatch_worker_deadlines_pending",
                "Deadlines held in this worker's index.",
                registry=registry,
            ),
            pending_pings=Gauge(
                "skipwatch_worker_unbound_devices",
                "Devices whose pings wait for a loan binding.",
                registry=registry,
            ),
            batch_seconds=Histogram(
                "skipwatch_worker_batch_seconds",
                "Time to process one batch of records.",
                ["agent"],
                registry=registry,
            ),
            input_gaps=Counter(
                "skipwatch_worker_input_gaps_total",
                "Records the consumer skipped; the partition was sent back to replay them.",
                ["topic"],
                registry=registry,
            ),
            quarantined=Counter(
                "skipwatch_worker_quarantined_total",
                "Records or stored states that made a step fail: dead-lettered, their key "
                "(loan, place, device) marked, processing went on. By step and reason.",
                ["step", "reason"],
                registry=registry,
            ),
            quarantined_keys=Gauge(
                "skipwatch_worker_quarantined_keys",
                "Keys (loans, places, devices) marked quarantined since the worker started.",
                registry=registry,
            ),
            risk_places=Gauge(
                "skipwatch_worker_risk_places",
                "Risk places in force in this worker (the catalog and the places topic).",
                registry=registry,
            ),
            marks_sent=Counter(
                "skipwatch_worker_watermark_marks_total",
                "Watermark marks sent on gps.bound: how far the gps.raw partitions this worker "
                "binds were forwarded (one per gps.bound partition and change).",
                registry=registry,
            ),
            sources_timed_out=Gauge(
                "skipwatch_worker_sources_timed_out",
                "gps.raw partitions bound by another worker left out of this worker's clock "
                "because no mark of theirs moved for SKIPWATCH_WORKER__SOURCE_TIMEOUT_S.",
                registry=registry,
            ),
        )
