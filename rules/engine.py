"""The rules engine: events and time in, alert state changes out. Pure: ``now`` is a parameter.

Time model. Each loan has a *clock*: the instant it was last evaluated at. It moves only to
event times and to deadline instants, never to a wall clock, so replays give the same alerts
and alert ids. ``apply(state, event, now)`` first runs the deadlines up to ``now`` (the
watermark; live, the record's arrival: rules/clock.py), then applies the event at max(clock,
event time). ``advance(state, now)`` runs each deadline up to ``now`` at its own instant.
``next_deadline`` is the earliest instant at which time alone could change a decision: a due
date ending, a duration variable crossing a threshold a rule compares it with, an alarm
expiring, a rule's ``for`` elapsing, a backfill settling. It
may be earlier than necessary (a harmless wake-up), never later.

Cost. Rules are evaluated only when a signal may have changed (the event updaters say so) or a
deadline passed. Each condition's result is memoised on its inputs, with time-based inputs
reduced to which side of each threshold they are on, so CEL runs only for combinations not
seen before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

from rules.alerts import build_alert, to_datetime
from rules.config import EngineConfig
from rules.events.alert import AlertEvent, AlertStatus, Severity
from rules.events.contact import ContactAttempt
from rules.events.gps import GpsPing
from rules.events.loan import Loan
from rules.events.payment import PaymentEvent
from rules.geo import compact_region
from rules.places import PlaceIndex, load_places
from rules.scoring import RiskScore, risk_score
from rules.signals import contact as contact_signals
from rules.signals import payment as payment_signals
from rules.signals.catalog import SIGNALS
from rules.signals.vehicle import EPSILON, Tracking
from rules.spec import CATALOG_DIR, Expression, Rule, RuleSet, load_rules, nest
from rules.state import AlertState, DeviceState, LoanState

InputEvent = Loan | GpsPing | PaymentEvent | ContactAttempt

STAT_NAMES = (
    "events",
    "duplicates",
    "late_events",
    "late_pings",
    "future_rejected",
    "drift_discarded",
    "evaluations",
    "cel_evaluations",
    "rule_errors",
)
_MEMO_LIMIT = 200_000


class FutureEventError(ValueError):
    """An event dated further ahead of the engine's `now` than `max_future_skew_s`: refused
    before it touches the state, for the caller to dead-letter (never dropped in silence)."""


_MAX_DEADLINES_PER_ADVANCE = 10_000
_INF = float("inf")


def _memo_key(
    layout: Iterable[tuple[str, tuple[float, ...] | None]], signals: Mapping[str, Any]
) -> tuple[Any, ...]:
    """What a condition's result depends on: each input's value, with a time-varying input
    reduced to which side of each threshold it is on (so a memoised result stays exact)."""
    key: list[Any] = []
    for name, thresholds in layout:
        value = signals[name]
        if thresholds is not None:
            key.append(bisect_left(thresholds, value))
            key.append(bisect_right(thresholds, value))
        elif value.__class__ is list:
            key.append(tuple(value))
        else:
            key.append(value)
    return tuple(key)


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


def event_hash(event_id: str) -> int:
    """48-bit stable hash of an event id (Python's hash() is salted per process)."""
    return _from_bytes(_blake2b(event_id.encode(), digest_size=6).digest(), "big")


class Engine:
    def __init__(
        self,
        rules: RuleSet,
        places: PlaceIndex | None = None,
        config: EngineConfig = EngineConfig(),
    ) -> None:
        self.rules = rules
        self.places = places
        self.config = config
        # Counters for metrics (bounded names; the worker exports them). Not part of any state.
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.tracking = Tracking(config, places, rules.thresholds, self.stats)
        self._max_days_past_due = int(max(rules.thresholds.get("payment.days_past_due", (0,)))) + 1
        self._memo: dict[tuple[Any, ...], bool] = {}
        # Per rule, per expression (0 = condition, 1.. = escalations): the memo-key layout.
        self._layouts: list[list[tuple[tuple[str, tuple[float, ...] | None], ...]]] = [
            [
                tuple((name, rule.bucketed.get(name)) for name in expr.inputs)
                for expr in (rule.condition, *(e for e, _ in rule.escalations))
            ]
            for rule in rules.rules
        ]
        # One key for all the rules: every signal some rule reads, bucketed on the union of the
        # thresholds when every rule reading it buckets it (a finer split than any one rule's),
        # else raw. Equal keys give equal per-rule memo keys, hence equal decisions.
        read = sorted({name for rule in rules.rules for name in _rule_inputs(rule)})
        self._decision_layout: tuple[tuple[str, tuple[float, ...] | None], ...] = tuple(
            (
                name,
                rules.thresholds.get(name)
                if all(name in r.bucketed for r in rules.rules if name in _rule_inputs(r))
                else None,
            )
            for name in read
        )
        self._decisions: dict[tuple[Any, ...], tuple[tuple[tuple[bool, Severity], ...], bool]] = {}
        self._now: dt.datetime | None = None  # the last `now` given to apply(), in seconds:
        self._now_s = 0.0
        self._epoch_of: dt.datetime | None = None  # the last datetime given to epoch(), and
        self._epoch = 0.0  # its timestamp

    @classmethod
    def default(cls) -> Engine:
        """The shipped catalog and place list (rules/catalog/)."""
        return cls(load_rules(CATALOG_DIR), load_places(CATALOG_DIR / "places"))

    def epoch(self, moment: dt.datetime) -> float:
        """``moment.timestamp()``, remembered for the last datetime given: apply() reads an
        event's time through it, so a runner that needs the time first (the backtest's clock)
        pays for the conversion once (it costs as much as a third of a parked car's ping)."""
        if moment is self._epoch_of:
            return self._epoch
        epoch = self._epoch = moment.timestamp()
        self._epoch_of = moment
        return epoch

    def new_state(self, loan_id: str) -> LoanState:
        return LoanState(loan_id=loan_id, dirty=True)  # evaluate on the first event

    # ------------------------------------------------------------------ inputs

    def apply(
        self,
        state: LoanState,
        event: InputEvent,
        now: dt.datetime,
        arrival: float | None = None,
    ) -> list[AlertEvent]:
        """Apply one event already bound to this loan; returns alert state changes.

        Lateness is a property of the data. An event is late (history: signals updated, the
        decision deferred to live data or the settle time) when it is a tracker's backfill,
        when it entered Kafka (`arrival`, epoch seconds; None: on time, as in a replay) more
        than `allowed_lateness_s` after its event time, or when it is older than what this loan
        already decided on (its clock, which moves only to event times and to deadlines up to
        `now`; the worker passes the record's arrival as `now`, not the time it read it).
        """
        if now is self._now:  # (a replay passes one `now` to many events)
            now_s = self._now_s
        else:
            now_s = self._now_s = now.timestamp()
            self._now = now
        stats = self.stats
        stats["events"] += 1
        if isinstance(event, GpsPing) or not isinstance(event, Loan):  # (pings first: cheaper)
            event_ts = event.ts
            if event_ts is self._epoch_of:  # (epoch(), inline)
                ts = self._epoch
            else:
                ts = now_s if event_ts is now else self.epoch(event_ts)
            if ts - now_s > self.config.max_future_skew_s:
                self._refuse_future(event, now)
        deadline = state.deadline
        # Usually nothing is due, and advance() would do nothing.
        out = self._advance(state, now_s) if deadline is None or deadline <= now_s else []
        if not isinstance(event, GpsPing) and isinstance(event, Loan):
            dirty = self._apply_loan(state, event, max(state.clock or now_s, now_s))
            instant = max(state.clock or now_s, now_s)
            if dirty:
                state.clock = instant
                out += self._evaluate(state, instant, to_datetime(instant))
            return out

        config = self.config
        digest = event_hash(event.event_id)
        seen = state.seen
        if digest in seen:
            stats["duplicates"] += 1
            return out
        clock = state.clock
        late = (clock is not None and ts < clock - config.late_tolerance_s) or (
            arrival is not None and arrival - ts > config.allowed_lateness_s
        )
        if isinstance(event, GpsPing):
            late = late or event.backfill
            changed, dirty = self.tracking.apply_ping(state, event, ts)
        else:
            if isinstance(event, PaymentEvent):
                changed = dirty = payment_signals.apply_payment(state, event, ts, digest)
            else:
                changed = dirty = contact_signals.apply_contact(state, event, ts)
        if not changed:
            stats["duplicates"] += 1
            return out
        seen.append(digest)
        if len(seen) > config.seen_event_ids:
            del seen[: -config.seen_event_ids]
        if late:
            # History is updated; the decision waits for live data (or the settle time), so a
            # buffered position never raises an alert the next live ping would clear.
            stats["late_events"] += 1
            settle_at = max(clock or ts, now_s) + config.backfill_settle_s
            state.pending_eval = max(state.pending_eval or settle_at, settle_at)
            state.dirty = True
            state.deadline = None
            return out
        instant = clock if clock is not None and clock > ts else ts  # max(clock or ts, ts)
        state.clock = instant
        # A deadline falls EPSILON after the threshold it stands for: an event at the threshold
        # itself sees the crossing (as an evaluation of every event would).
        if dirty or state.dirty:
            out += self._evaluate(state, instant, event_ts)
            return out
        deadline = state.deadline
        if deadline is None:
            deadline = self._cached_deadline(state)
        if deadline <= instant + EPSILON:
            out += self._evaluate(state, instant, event_ts)
        return out

    def _refuse_future(
        self, event: GpsPing | PaymentEvent | ContactAttempt, now: dt.datetime
    ) -> None:
        """Raise FutureEventError for an event too far ahead of `now`, before anything changes
        (so the refused event leaves no trace in the state); counted in `future_rejected`."""
        ahead = event.ts.timestamp() - now.timestamp()
        if ahead > self.config.max_future_skew_s:
            self.stats["future_rejected"] += 1
            raise FutureEventError(
                f"event {event.event_id}: event time {event.ts.isoformat()} is {ahead:.0f} s "
                f"ahead of the engine's clock ({now.isoformat()}); at most "
                f"{self.config.max_future_skew_s:.0f} s"
            )

    def apply_place_count(
        self, state: LoanState, place_id: str, count: int, now: dt.datetime
    ) -> list[AlertEvent]:
        """Give the loan the number of financed cars at ``place_id`` (from PlaceOccupancy).
        Ignored unless the loan's vehicle is at that place now."""
        out = self.advance(state, now)
        if state.place_id != place_id or self.place_of(state) != place_id:
            return out
        if state.cars_at_place == count:
            return out
        state.cars_at_place = count
        instant = max(state.clock or now.timestamp(), now.timestamp())
        state.clock = instant
        return out + self._evaluate(state, instant, to_datetime(instant))

    def place_of(self, state: LoanState) -> str | None:
        """The risk place the vehicle counts toward in the cross-loan occupancy, if any. Compare
        before/after apply()/advance() to feed PlaceOccupancy (left the old place, entered the
        new one). A car counts only once it has stayed ``occupancy_min_dwell_s`` (a car driving
        past never counts); one that leaves keeps counting for ``occupancy_leave_grace_s`` and
        resumes its stay if it is back by then (a GPS glitch does not make the count flap)."""
        if not state.place_id and state.place_left is None:
            return None  # at no place, none left (most cars): what counted_place says, sooner
        return self.tracking.counted_place(state, state.clock or 0.0)

    def advance(self, state: LoanState, now: dt.datetime) -> list[AlertEvent]:
        """Time passes with no event: run every deadline up to ``now`` at its own instant."""
        return self._advance(state, now.timestamp())

    def _advance(self, state: LoanState, now_s: float) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        for _ in range(_MAX_DEADLINES_PER_ADVANCE):
            deadline = self._cached_deadline(state)
            clock = state.clock
            if deadline > now_s or clock is None:
                break
            instant = max(deadline, clock)
            if not state.dirty:
                # The cached deadline may be early: events since the last evaluation that
                # changed no signal (a parked car's pings) moved its instants on. If nothing
                # falls due by `instant`, no decision changes there (every signal change marks
                # the loan dirty): wait for the exact deadline instead of evaluating, and keep
                # the clock (a deadline that is not one does not make later events late).
                exact = self._exact_deadline(state, clock)
                if exact > instant:
                    state.deadline = exact
                    continue
            state.clock = instant
            out += self._evaluate(state, instant, to_datetime(instant))
        return out

    def next_deadline(self, state: LoanState) -> dt.datetime | None:
        deadline = self._cached_deadline(state)
        return to_datetime(deadline) if deadline != float("inf") else None

    def next_deadline_s(self, state: LoanState) -> float | None:
        """`next_deadline` in epoch seconds (not rounded to the microsecond)."""
        deadline = state.deadline
        if deadline is None:
            deadline = self._cached_deadline(state)
        return deadline if deadline != _INF else None

    # ------------------------------------------------------------------ queries

    def signals(self, state: LoanState, now: dt.datetime | None = None) -> dict[str, Any]:
        """The state variables as conditions see them (durations in seconds)."""
        instant = now.timestamp() if now is not None else (state.clock or 0.0)
        return self._signals(state, instant)

    def resident_points(self, state: LoanState) -> list[dict[str, Any]]:
        """Where the car usually parks (常驻点), night and day hours: for the loan view."""
        return self.tracking.resident_points(state)

    def risk(self, state: LoanState, now: dt.datetime | None = None) -> RiskScore:
        return risk_score(self.signals(state, now))

    # ------------------------------------------------------------------ loan

    def _apply_loan(self, state: LoanState, loan: Loan, instant: float) -> bool:
        changed = False
        if state.status != loan.status.value:
            state.status = loan.status.value
            changed = True
        if state.timezone != loan.timezone:
            state.timezone = loan.timezone
            changed = True
        if state.labels != loan.labels:
            state.labels = dict(loan.labels)
            changed = True
        region = (
            list(compact_region(loan.home_region, self.config.region_simplify_m))
            if loan.home_region is not None
            else None
        )
        if region != state.region:
            state.region = region
            state.region_obj = None
            state.clear_zone = None
            state.region_check = None
            changed = True
            self._reclassify_region(state)
        listed = {d.device_id: d.kind.value for d in loan.devices}
        for device_id in list(state.devices):
            if device_id not in listed:
                del state.devices[device_id]
                changed = True
        for device_id, kind in listed.items():
            device = state.devices.get(device_id)
            if device is None:
                state.devices[device_id] = DeviceState(kind=kind, bound_at=instant)
                changed = True
            elif device.kind != kind:
                device.kind = kind
                changed = True
        if payment_signals.merge_schedule(state, loan.schedule):
            changed = True
        return changed

    def _reclassify_region(self, state: LoanState) -> None:
        """A new home region: classify the last known position against it right away."""
        if state.region is None:
            state.inside, state.outside_since = None, None
            return
        position = state.position
        if position is None:
            return
        region = self.tracking.region_of(state)
        assert region is not None
        inside = region.read(position[1], position[2]).outside_m <= self.config.region_margin_m
        if inside != state.inside:
            state.inside = inside
            state.outside_since = None if inside else position[0]

    # ------------------------------------------------------------------ evaluation

    def _signals(self, state: LoanState, instant: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        payment_signals.derive(state, instant, out)
        contact_signals.derive(state, instant, out, self.config.contact_recent_s)
        self.tracking.derive(state, instant, out)
        return out

    def _holds(
        self, rule_index: int, n: int, rule: Rule, expr: Expression, signals: Mapping[str, Any]
    ) -> bool:
        memo_key = (rule_index, n, *_memo_key(self._layouts[rule_index][n], signals))
        cached = self._memo.get(memo_key)
        if cached is not None:
            return cached
        self.stats["cel_evaluations"] += 1
        activation = nest({name: _cel_value(name, signals[name]) for name in expr.inputs})
        try:
            result = expr.program.execute(activation)
        except Exception:  # a runtime error (e.g. null compared) makes the condition false
            self.stats["rule_errors"] += 1
            result = False
        holds = result is True
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[memo_key] = holds
        return holds

    def _decide(self, signals: Mapping[str, Any]) -> tuple[tuple[tuple[bool, Severity], ...], bool]:
        """Per rule: whether its condition holds and the severity (escalations applied); and
        whether any rule's condition holds."""
        decision_key = _memo_key(self._decision_layout, signals)
        cached = self._decisions.get(decision_key)
        if cached is not None:
            return cached
        out: list[tuple[bool, Severity]] = []
        for index, rule in enumerate(self.rules.rules):
            holds = self._holds(index, 0, rule, rule.condition, signals)
            severity = rule.severity
            for n, (expr, escalated) in enumerate(rule.escalations, start=1):
                if (
                    holds
                    and escalated.rank > severity.rank
                    and self._holds(index, n, rule, expr, signals)
                ):
                    severity = escalated
            out.append((holds, severity))
        if len(self._decisions) >= _MEMO_LIMIT:
            self._decisions.clear()
        decided = self._decisions[decision_key] = (tuple(out), any(h for h, _ in out))
        return decided

    def _evaluate(
        self, state: LoanState, instant: float, event_time: dt.datetime
    ) -> list[AlertEvent]:
        self.stats["evaluations"] += 1
        state.pending_eval = None
        state.dirty = False
        signals = self._signals(state, instant)
        active = state.status == "active"
        alerts = state.alerts
        out: list[AlertEvent] = []
        score: RiskScore | None = None
        ready: dict[str, tuple[Rule, Severity]] = {}

        def emit(
            rule: Rule, status: AlertStatus, severity: Severity, started: float, note: str = ""
        ) -> None:
            nonlocal score
            if score is None:
                score = risk_score(signals)
            out.append(
                build_alert(
                    rule=rule,
                    state=state,
                    status=status,
                    severity=severity,
                    started_at=started,
                    instant=instant,
                    event_time=event_time,
                    signals=signals,
                    score=score,
                    note=note,
                )
            )

        decisions, any_holds = self._decide(signals) if active else (None, False)
        if not any_holds and not alerts:  # the common case: no rule holds, no episode to end
            state.deadline = self._exact_deadline(state, instant)
            return out
        for index, rule in enumerate(self.rules.rules):
            holds, severity = decisions[index] if decisions is not None else (False, rule.severity)
            current = alerts.get(rule.id)
            if not holds:
                if current is not None:
                    if current.status == "firing" and rule.keep_seconds and active:
                        # keep_firing_for: resolve only once it has not held for that long
                        if current.cleared_since is None:
                            current.cleared_since = instant
                        if instant - current.cleared_since < rule.keep_seconds:
                            continue
                    if current.status == "firing" and current.started_at is not None:
                        emit(
                            rule,
                            AlertStatus.RESOLVED,
                            Severity(current.severity),
                            current.started_at,
                        )
                    del alerts[rule.id]
                continue
            if current is None:
                current = alerts[rule.id] = AlertState("pending", instant)
            current.cleared_since = None
            if instant - current.active_since >= rule.for_seconds:
                ready[rule.id] = (rule, severity)

        # Inhibition: a ready alert whose rule inhibits lower severities mutes those below it.
        top_rank, top_rule = -1, ""
        for rule_id, (rule, severity) in ready.items():
            if rule.inhibits_lower and severity.rank > top_rank:
                top_rank, top_rule = severity.rank, rule_id
        for rule_id, (rule, severity) in ready.items():
            current = alerts[rule_id]
            if severity.rank < top_rank:
                if current.status == "firing" and current.started_at is not None:
                    note = f"inhibited by {top_rule}"
                    emit(
                        rule,
                        AlertStatus.RESOLVED,
                        Severity(current.severity),
                        current.started_at,
                        note,
                    )
                current.status, current.started_at, current.severity = "inhibited", None, ""
                continue
            if current.status != "firing":
                current.status, current.started_at, current.severity = (
                    "firing",
                    instant,
                    severity.value,
                )
                emit(rule, AlertStatus.FIRING, severity, instant)
            elif current.severity != severity.value:
                current.severity = severity.value  # escalated (or back down): same alert id
                assert current.started_at is not None
                emit(rule, AlertStatus.FIRING, severity, current.started_at, "severity changed")
        state.deadline = self._exact_deadline(state, instant)
        return out

    # ------------------------------------------------------------------ deadlines

    def _cached_deadline(self, state: LoanState) -> float:
        if state.deadline is None:
            state.deadline = self._exact_deadline(state, state.clock or 0.0)
        return state.deadline

    def _exact_deadline(self, state: LoanState, clock: float) -> float:
        if state.clock is None:
            return float("inf")
        if state.pending_eval is not None:
            # Settling after late data: nothing is decided before then, so no decision rests
            # on buffered data that the next live ping may contradict.
            return max(state.pending_eval, clock)
        candidates: list[float] = []
        for rule_id, alert in state.alerts.items():
            if alert.status == "pending":
                rule = self.rules.by_id(rule_id)
                candidates.append(alert.active_since + rule.for_seconds)
            elif alert.cleared_since is not None:
                rule = self.rules.by_id(rule_id)
                candidates.append(alert.cleared_since + rule.keep_seconds)
        if state.status == "active":
            due = payment_signals.deadline(state, clock, self._max_days_past_due)
            if due is not None:
                candidates.append(due)
            if "contact.recent_failures" in self.rules.thresholds:  # (read by a loaded rule)
                recent = self.config.contact_recent_s
                expiry = contact_signals.recent_expiry(state, clock, recent)
                if expiry is not None:
                    candidates.append(expiry)
            streak = contact_signals.streak_start(state)
            if streak is not None:
                for threshold in self.rules.thresholds.get("contact.unreachable_for", ()):
                    if streak + threshold + 0.001 > clock:
                        candidates.append(streak + threshold + 0.001)
                        break
            candidates.extend(self.tracking.deadlines(state, clock))
        earliest = _INF
        for candidate in candidates:
            if clock < candidate < earliest:
                earliest = candidate
        return earliest


def _rule_inputs(rule: Rule) -> set[str]:
    return {*rule.condition.inputs, *(name for e, _ in rule.escalations for name in e.inputs)}


def _cel_value(name: str, value: Any) -> Any:
    kind = SIGNALS[name].type
    if kind == "duration":
        return dt.timedelta(seconds=value)
    if kind == "timestamp":
        return to_datetime(value) if value is not None else None
    return value
