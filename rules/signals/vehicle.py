"""GPS pings: trackers, the vehicle's fused position, home region, risk places, stationarity.

Order and lateness: a ping no newer than its device's last ping is *late*; it only feeds history
(risk places visited), never the current position, alarms or online status. The vehicle position
follows the newest accepted fix, preferring a live wired tracker over a wireless one (wired
trackers report often; wireless ones are hidden backups), so two trackers never make it flap.

Cost: most pings come from parked cars. Each check (region, places) stores a *clearance*: the
distance the car must move before its answer could change. Pings within it skip the check.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from typing import Any

from rules.config import DAY, EngineConfig
from rules.events.gps import Alarm, DeviceKind, Fix, GpsPing
from rules.geo import M_PER_DEG, HomeRegion, distance_m, home_region
from rules.places import PlaceIndex
from rules.signals.payment import day_start, local_day
from rules.state import FIX_GPS, FIX_LBS, FIX_WIFI, DeviceState, LoanState

FIX_QUALITY = {Fix.GPS: FIX_GPS, Fix.WIFI: FIX_WIFI, Fix.LBS: FIX_LBS, Fix.NONE: None}
# Alarms that describe a condition the tracker keeps reporting while it lasts; cleared by a
# newer ping without them. Every other alarm is an event, active for `alarm_hold_s`.
LEVEL_ALARMS = frozenset({Alarm.POWER_CUT.value, Alarm.LOW_BATTERY.value})


def alarm_active(alarm: str, raised: float, now: float, hold: float) -> bool:
    """A level alarm lasts while held in the state (the latest report clears it); any other
    lasts `hold` seconds after it was last raised."""
    return alarm in LEVEL_ALARMS or now - raised <= hold


WIRED = DeviceKind.WIRED.value
_GPS = Fix.GPS  # (an enum class attribute lookup is slow on the hot path)
WIRELESS = DeviceKind.WIRELESS.value
EPSILON = 0.001  # deadlines fall just after a threshold, where both > and >= hold
# (|dlat| + |dlon|) in degrees times this is at least the great-circle distance in metres (a path
# along the meridian, then the parallel, is no shorter); 1e-6 covers rounding in distance_m.
_BOUND_PER_DEG = M_PER_DEG * (1.0 + 1e-6)
# A latitude difference in degrees times this is at most the great-circle distance in metres
# (1e-6 below M_PER_DEG covers rounding in distance_m).
_LAT_BOUND_PER_DEG = M_PER_DEG * (1.0 - 1e-6)
_ZONE_MARGIN_M = 0.01  # of the clear zone, against rounding


class Tracking:
    """Applies pings to a loan state. Stateless apart from configuration and counters."""

    def __init__(
        self,
        config: EngineConfig,
        places: PlaceIndex | None,
        thresholds: Mapping[str, tuple[float, ...]],
        stats: dict[str, int],
    ) -> None:
        self.config = config
        self.places = places
        self.stats = stats
        self._accuracy = {
            FIX_GPS: config.accuracy_gps_m,
            FIX_WIFI: config.accuracy_wifi_m,
            FIX_LBS: config.accuracy_lbs_m,
        }
        # Accuracy slack of a pair of fixes, by their qualities.
        self._slack = [[self._accuracy[a] + self._accuracy[b] for b in range(3)] for a in range(3)]
        # A ping after its device was silent at least this long may change an offline variable
        # of its kind (device.offline_for.<kind>, device.offline.<kind>, device.all_offline,
        # devices.silent_kind): the lowest threshold the loaded rules or the engine compare that
        # kind's silence with. Per kind: a wired threshold says nothing about wireless reports.
        self.gap_by_kind = {
            WIRED: min(
                (*thresholds.get("device.offline_for.wired", ()), config.offline_after_wired_s)
            ),
            WIRELESS: min(
                (
                    *thresholds.get("device.offline_for.wireless", ()),
                    config.offline_after_wireless_s,
                )
            ),
        }
        self.min_gap = min(self.gap_by_kind.values())  # (a kind not listed above)
        # ... and after every tracker was silent this long it may change device.silent_for.
        self.silent_gap = min(thresholds.get("device.silent_for", ()), default=float("inf"))
        stationary = thresholds.get("vehicle.stationary_for", ())
        self.min_stationary = min(stationary) if stationary else float("inf")
        self.separation_km = thresholds.get("devices.separated_km", ())
        # Thresholds of each time-based duration variable, with the engine's own ones added.
        self.duration_thresholds: dict[str, tuple[float, ...]] = {
            name: tuple(sorted(set(thresholds.get(name, ()))))
            for name in (
                "vehicle.outside_home_region_for",
                "vehicle.risk_place_dwell",
                "vehicle.stationary_for",
                "vehicle.away_from_resident_for",
                "device.silent_for",
            )
        }
        self.duration_thresholds["device.offline_for.wired"] = tuple(
            sorted({*thresholds.get("device.offline_for.wired", ()), config.offline_after_wired_s})
        )
        self.duration_thresholds["device.offline_for.wireless"] = tuple(
            sorted(
                {
                    *thresholds.get("device.offline_for.wireless", ()),
                    config.offline_after_wireless_s,
                }
            )
        )

    # ------------------------------------------------------------------ apply

    def apply_ping(self, state: LoanState, ping: GpsPing, ts: float) -> tuple[bool, bool]:
        """Returns (state changed, a signal may have changed)."""
        device = state.devices.get(ping.device_id)
        new_device = device is None
        if device is None:  # not in the loan's device list: trust the ping's kind
            device = DeviceState(kind=ping.device_kind.value, bound_at=ts)
            state.devices[ping.device_id] = device
        fix = ping.fix
        quality = FIX_GPS if fix is _GPS else FIX_QUALITY[fix]
        last_seen = device.last_seen
        if last_seen is not None and ts <= last_seen:
            # Another report of the same second (an alarm report beside a periodic one): its
            # alarms happened, whichever of the two came first.
            same_second = ts == last_seen and ping.alarms and not ping.backfill
            if same_second and self._raise_alarms(device, ping, ts):
                return True, True
            self.stats["late_pings"] += 1
            # Alarms it carries are not lost: one whose condition still holds is raised now
            # (with its own time), one that newer data cleared goes to the alarm history.
            before = len(device.alarms), device.alarm_event
            raised = bool(ping.alarms) and self._late_alarms(state, device, ping, ts)
            changed = raised or (len(device.alarms), device.alarm_event) != before
            # Only buffered data feeds history this late. A live ping this old is a redelivery
            # (or a reordered copy) of one the live path already judged: had it been a drift fix,
            # recording its place now would change the state when the first delivery did not.
            history = ping.backfill and self._history(state, ping, ts, quality)
            return changed or history, raised
        previous = last_seen if last_seen is not None else device.bound_at
        # A first report may change devices.silent_kind (a tracker that never reported proves
        # nothing); a report after a silence, an offline variable (see __init__).
        dirty = new_device or last_seen is None or previous is None
        if not dirty:
            assert previous is not None
            gap = ts - previous
            dirty = gap >= self.gap_by_kind.get(device.kind, self.min_gap) or (
                gap >= self.silent_gap and ts - _newest_seen(state) >= self.silent_gap
            )
        if device.kind == WIRED and last_seen is not None and not ping.backfill:
            dirty |= self._cadence(device, last_seen, ping, ts)
        elif device.kind == WIRELESS and not ping.backfill:
            due = self._report_due(device)
            # device.wireless_overdue may change: the tracker back after missing a report, or
            # a slot just joined its schedule (an earlier next report may be due).
            dirty |= (due is not None and ts >= due) | self._schedule(device, ts)
        if not dirty and self._may_leave_behind(state, device, previous, ts):
            dirty = True  # devices.wired_left_behind_km may change
        device.last_seen = ts
        device.last_event = ping.event_id
        if (device.alarms or ping.alarms) and self._alarms(device, ping, ts):
            dirty = True
        if quality is not None:
            last_fix = device.fix
            lat, lon = ping.lat, ping.lon
            if (
                last_fix is not None
                and (abs(last_fix[1] - lat) + abs(last_fix[2] - lon)) * _BOUND_PER_DEG
                <= self._slack[int(last_fix[3])][quality]
            ):
                device.jump = None  # within the fixes' accuracy: plausible (see _plausible)
                plausible = True
            else:
                plausible = self._plausible(device, ping, ts, quality)
            if plausible:
                speed = ping.speed_kmh
                device.fix = [ts, lat, lon, quality, -1.0 if speed is None else round(speed)]
                if self._drives_vehicle(state, device, ts):
                    dirty |= self._move_vehicle(state, ping, ts, quality)
                dirty |= self._separation(state, device, last_fix)
            else:
                self.stats["drift_discarded"] += 1
        if ping.backfill:
            # What a late delivery of this ping would record (see above), so a redelivery of it
            # is a no-op whichever path it takes.
            self._history(state, ping, ts, quality)
        return True, dirty

    def _cadence(self, device: DeviceState, last_seen: float, ping: GpsPing, ts: float) -> bool:
        """Learn a wired tracker's longest regular parked reporting interval from a live report
        (before the device takes it). Returns whether device.wired_overdue may change: the
        tracker back after cadence_floor_s of silence, the car just parked (its silence may
        start to count) or the interval just learned."""
        config = self.config
        gap = ts - last_seen
        fix = device.fix
        was_parked = fix is not None and len(fix) > 4 and fix[4] == 0.0
        parked = ping.speed_kmh == 0.0
        dirty = gap >= config.cadence_floor_s or (parked and not was_parked)
        if not (parked and was_parked and 30.0 <= gap < config.offline_after_wired_s):
            return dirty  # driving, parking, an alarm beside a report, or a silence
        learned = config.cadence_min_gaps
        cadence = device.cadence
        if cadence is None:
            device.cadence = [round(gap, 1), 1, ts, 0.0, 0, ts, last_seen, ts]
            return dirty
        longest, n, at = cadence[0], int(cadence[1]), cadence[2]
        # (min and max below written out: this runs for nearly every ping of a parked car)
        age = ts - at
        decayed = longest * 0.5 ** ((age if age > 0.0 else 0.0) / config.cadence_half_life_s)
        if n >= learned:
            twice = 2.0 * decayed
            if twice < gap:
                gap = twice  # one long gap (a dead zone) moves it little
        count = learned if learned < n + 1 else n + 1
        if gap > decayed:  # a new longest: remember what it was before, and this gap
            device.cadence = [round(gap, 1), count, ts, longest, n, at, last_seen, ts]
        else:
            device.cadence = [round(decayed, 1), count, ts, *cadence[3:8]]
        return dirty or (n + 1 == learned)

    def _unlearn_buffered_gap(self, state: LoanState, ping: GpsPing, ts: float) -> bool:
        """A buffered fix from inside the gap that last raised the interval: that gap was a
        dead zone, not the tracker's cadence; go back to the interval before it (once: applying
        it again is a no-op)."""
        device = state.devices.get(ping.device_id)
        cadence = device.cadence if device is not None else None
        if device is None or cadence is None or len(cadence) < 8:
            return False
        if not cadence[6] < ts < cadence[7]:
            return False
        longest, n, at = cadence[3], int(cadence[4]), cadence[5]
        device.cadence = [longest, n, at, longest, n, at, at, at] if n else None
        return True

    def _schedule(self, device: DeviceState, ts: float) -> bool:
        """Learn a wireless tracker's report schedule from a live report (before the device
        takes it): the nearest slot within the tolerance takes it (its time moves toward it,
        its score decays and grows by one), else it starts a slot. Returns whether a slot just
        joined the schedule (an earlier report may be due)."""
        config = self.config
        tolerance = config.wireless_slot_tolerance_s
        when = ts % DAY
        slots = device.slots
        if slots is None:
            slots = device.slots = []
        nearest: list[float] | None = None
        nearest_off = 0.0
        for slot in slots:
            off = (when - slot[0] + DAY / 2) % DAY - DAY / 2  # signed, wrapped at midnight
            if abs(off) <= tolerance and (nearest is None or abs(off) < abs(nearest_off)):
                nearest, nearest_off = slot, off
        if nearest is None:
            # A slot without a report for the stale time is in no schedule (_report_due): drop
            # it, so retries and alarm reports off the schedule do not pile up in the state.
            stale = ts - config.wireless_slot_stale_s
            slots[:] = [slot for slot in slots if slot[2] >= stale]
            slots.append([round(when, 1), 1.0, ts])
            if len(slots) > config.wireless_slots_kept:
                slots.sort(key=lambda slot: -slot[2])
                del slots[config.wireless_slots_kept :]
            return False
        if ts - nearest[2] < 2 * tolerance:
            return False  # a retry, or a second report of the same wake-up
        threshold = config.wireless_slot_score
        before: float = nearest[1] * 0.5 ** ((ts - nearest[2]) / config.wireless_slot_half_life_s)
        score = before + 1.0
        nearest[0] = round((nearest[0] + nearest_off / score) % DAY, 1)
        nearest[1], nearest[2] = round(score, 3), ts
        # Two slots the same wake-up drifted into: keep the one with the higher score.
        for other in slots:
            if other is not nearest:
                off = abs(other[0] - nearest[0]) % DAY
                if min(off, DAY - off) <= tolerance:
                    slots.remove(other if other[1] <= nearest[1] else nearest)
                    break
        return before < threshold <= score

    def _report_due(self, device: DeviceState) -> float | None:
        """When a wireless tracker is overdue: the first slot of its schedule after its last
        report, plus the margin; None without a schedule."""
        slots, last = device.slots, device.last_seen
        if not slots or last is None:
            return None
        config = self.config
        after = last + config.wireless_slot_tolerance_s  # (the slot this report belongs to)
        midnight = after - after % DAY
        threshold, stale = config.wireless_slot_score, last - config.wireless_slot_stale_s
        due: float | None = None
        for when, score, hit in slots:
            if score < threshold or hit < stale:
                continue
            at = midnight + when
            if at <= after:
                at += DAY
            if due is None or at < due:
                due = at
        return None if due is None else due + config.wireless_overdue_margin_s

    def wireless_overdue_at(self, state: LoanState) -> float | None:
        """When the newest-reporting wireless tracker misses its schedule
        (device.wireless_overdue), or None if it has no schedule learned yet."""
        newest = _newest_reporting(state, WIRELESS)
        return None if newest is None else self._report_due(newest)

    def wired_overdue_at(self, state: LoanState) -> float | None:
        """When the wired tracker's silence becomes overdue (device.wired_overdue), or None if
        its silence does not count: no interval learned yet, its last fix not a parked one at a
        resident point, or one where a buffered upload came from."""
        wired = _newest_reporting(state, WIRED)
        if wired is None or wired.last_seen is None:
            return None
        config = self.config
        cadence, fix = wired.cadence, wired.fix
        if cadence is None or cadence[1] < config.cadence_min_gaps or fix is None:
            return None
        if len(fix) < 5 or fix[4] != 0.0:
            return None  # last seen driving (or speed unknown): not a car parked where it lives
        if not self._at_resident_point(state, fix[1], fix[2]):
            return None
        spot = config.buffer_spot_radius_m
        if any(distance_m(b[0], b[1], fix[1], fix[2]) <= spot for b in state.buffer_spots):
            return None
        age = max(0.0, wired.last_seen - cadence[2])
        longest: float = cadence[0] * 0.5 ** (age / config.cadence_half_life_s)
        return wired.last_seen + max(config.cadence_floor_s, config.cadence_factor * longest)

    def _alarms(self, device: DeviceState, ping: GpsPing, ts: float) -> bool:
        hold = self.config.alarm_hold_s
        active_before = {
            a for a, raised in device.alarms.items() if alarm_active(a, raised, ts, hold)
        }
        reported = {a.value for a in ping.alarms}
        for alarm in list(device.alarms):
            expired = not alarm_active(alarm, device.alarms[alarm], ts, hold)
            if (alarm in LEVEL_ALARMS and alarm not in reported) or expired:
                del device.alarms[alarm]
        for alarm in reported:
            device.alarms[alarm] = ts
        if reported - active_before:
            device.alarm_event = ping.event_id
        return active_before != set(device.alarms)

    def _raise_alarms(self, device: DeviceState, ping: GpsPing, ts: float) -> bool:
        """The ping's alarms that are not active, raised at `ts`; nothing is cleared (which of
        two reports of one second is the newer is unknown). Applying it again changes nothing."""
        hold = self.config.alarm_hold_s
        raised_any = False
        for alarm in ping.alarms:
            name = alarm.value
            raised = device.alarms.get(name)
            if raised is None or not alarm_active(name, raised, ts, hold):
                device.alarms[name] = ts
                raised_any = True
        if raised_any:
            device.alarm_event = ping.event_id
        return raised_any

    def _late_alarms(self, state: LoanState, device: DeviceState, ping: GpsPing, ts: float) -> bool:
        """Raise the event alarms (removal, tamper, ...) of a ping older than the device's
        newest one that still hold at the loan's clock: an event alarm is active for
        ``alarm_hold_s`` after it happened, so it is raised with its own time. Level alarms
        (power cut, low battery) are what the newest report says: that report, newer than this
        one, carries them too or cleared them. Returns whether an alarm became active.
        Idempotent (a redelivery changes nothing)."""
        hold = self.config.alarm_hold_s
        clock = max(state.clock or ts, device.last_seen or ts)
        raised = False
        for alarm in ping.alarms:
            name = alarm.value
            if name in LEVEL_ALARMS or clock - ts > hold:
                continue
            current = device.alarms.get(name)
            if current is None or current < ts:
                raised |= current is None or not alarm_active(name, current, clock, hold)
                device.alarms[name] = ts
                device.alarm_event = ping.event_id
        return raised

    def _plausible(self, device: DeviceState, ping: GpsPing, ts: float, quality: int) -> bool:
        """Reject a fix that implies an impossible speed since the last one (GPS drift, a cell
        tower far away). Two rejected fixes that agree with each other are accepted: then the car
        really moved (or the old fix was the outlier)."""
        previous = device.fix
        if previous is None:
            return True
        if self._reachable(previous, ping.lat, ping.lon, ts, quality):
            device.jump = None
            return True
        candidate = device.jump
        if (
            candidate is not None
            and ts > candidate[0]
            and self._reachable(candidate, ping.lat, ping.lon, ts, quality)
        ):
            device.jump = None
            return True
        device.jump = [ts, ping.lat, ping.lon, quality]
        return False

    def _reachable(self, fix: list[float], lat: float, lon: float, ts: float, q: int) -> bool:
        slack = self._accuracy[int(fix[3])] + self._accuracy[q]
        gap = distance_m(fix[1], fix[2], lat, lon) - slack
        if gap <= 0.0:
            return True
        elapsed = ts - fix[0]
        return gap / (1.0 if elapsed < 1.0 else elapsed) * 3.6 <= self.config.max_speed_kmh

    def _may_leave_behind(
        self, state: LoanState, device: DeviceState, previous: float | None, ts: float
    ) -> bool:
        """Whether this ping may turn devices.wired_left_behind_km on (a wireless ping while a
        wired tracker is silent) or off (the wired tracker back after a silence)."""
        silence = self.config.left_behind_silence_s
        if device.kind == WIRED:
            return previous is not None and ts - previous >= silence
        return any(
            other.kind == WIRED and other.last_seen is not None and ts - other.last_seen >= silence
            for other in state.devices.values()
        )

    def left_behind_m(self, state: LoanState) -> float:
        """Lower bound (m) of how far the car is from where its silent wired tracker last
        reported parked, on the wireless tracker's newest fix taken after the wired tracker had
        been silent left_behind_silence_s; 0 if none (see devices.wired_left_behind_km)."""
        wired: DeviceState | None = None
        wireless: list[float] | None = None
        for device in state.devices.values():
            if device.kind == WIRED:
                if device.fix is not None and (
                    wired is None or (wired.fix is not None and device.fix[0] > wired.fix[0])
                ):
                    wired = device
            elif device.fix is not None and (wireless is None or device.fix[0] > wireless[0]):
                wireless = device.fix
        if wired is None or wireless is None or wired.fix is None or wired.last_seen is None:
            return 0.0
        fix = wired.fix
        if len(fix) > 4 and fix[4] != 0.0:
            return 0.0  # last seen moving: where the car went from there is unknown
        if wireless[0] - wired.last_seen < self.config.left_behind_silence_s:
            return 0.0  # the wired tracker reported since, or had not been silent long
        bound = (
            distance_m(fix[1], fix[2], wireless[1], wireless[2])
            - self._slack[int(fix[3])][int(wireless[3])]
        )
        return round(bound, 1) if bound >= self.config.separation_apart_m else 0.0

    def _drives_vehicle(self, state: LoanState, device: DeviceState, ts: float) -> bool:
        if state.position is not None and ts <= state.position[0]:
            return False
        if device.kind == WIRELESS:
            window = self.config.offline_after_wired_s
            for other in state.devices.values():
                if other.kind == WIRED and other.fix is not None and ts - other.fix[0] <= window:
                    return False
        return True

    def _move_vehicle(self, state: LoanState, ping: GpsPing, ts: float, quality: int) -> bool:
        dirty = state.position is None
        lat, lon = ping.lat, ping.lon
        state.position = [ts, lat, lon, quality]
        places = self.places
        if places is not None and state.place_gen != places.generation:
            # The places changed since the clearances were computed (a place was drawn,
            # edited or deleted): look again.
            state.place_gen = places.generation
            state.place_check = None
            state.clear_zone = None
        state.position_event = ping.event_id
        zone = state.clear_zone
        if zone is None or (abs(zone[0] - lat) + abs(zone[1] - lon)) * _BOUND_PER_DEG >= zone[2]:
            zone = state.clear_zone = self._clear_zone(state, lat, lon)
        if zone is not None:
            # Within every check's clearance (most pings: a parked car): each check below would
            # answer "unchanged", and only the place check records something (the visit).
            if quality != FIX_LBS and self.places is not None and state.place_id:
                _record_visit(state, state.place_id, state.place_kind, ts)
            return dirty
        return self._move_checks(state, ping, ts, quality) or dirty

    def _clear_zone(self, state: LoanState, lat: float, lon: float) -> list[float] | None:
        """How far from (lat, lon) the region, place and stationary checks all still pass, or
        None if one of them does not pass here. By the triangle inequality: a point within
        ``room`` of here is within each check's clearance of the check's centre."""
        anchor = state.anchor
        if anchor is None:
            return None
        # The margin (against rounding) first; give up as soon as one check would not pass.
        room = self.config.stationary_radius_m - _ZONE_MARGIN_M
        room -= distance_m(anchor[0], anchor[1], lat, lon)
        if room <= 0.0:
            return None
        for active, check in (
            (state.region is not None, state.region_check),
            (self.places is not None, state.place_check),
        ):
            if not active:
                continue
            if check is None:
                return None
            room = min(room, check[2] - _ZONE_MARGIN_M - distance_m(check[0], check[1], lat, lon))
            if room <= 0.0:
                return None
        return [lat, lon, room]

    def _move_checks(self, state: LoanState, ping: GpsPing, ts: float, quality: int) -> bool:
        state.clear_zone = None  # a check may move its centre or clearance
        dirty = False
        if state.region is not None:
            dirty |= self._region(state, ping, ts, quality)
        if quality != FIX_LBS:  # a cell-tower fix is too coarse for lots and parking
            if self.places is not None:
                dirty |= self._place(state, ping, ts)
            dirty |= self._stationary(state, ping.lat, ping.lon, ts)
        return dirty

    def region_of(self, state: LoanState) -> HomeRegion | None:
        if state.region is None:
            return None
        if state.region_obj is None:
            state.region_obj = home_region(tuple(state.region))
        region: HomeRegion = state.region_obj
        return region

    def _region(self, state: LoanState, ping: GpsPing, ts: float, quality: int) -> bool:
        lat, lon = ping.lat, ping.lon
        check = state.region_check
        if check is not None and distance_m(check[0], check[1], lat, lon) < check[2]:
            return False
        region = self.region_of(state)
        assert region is not None
        reading = region.read(lat, lon)
        margin = self.config.region_margin_m
        leave_margin = self.config.region_margin_lbs_m if quality == FIX_LBS else margin
        if state.inside is False:
            inside = reading.outside_m == 0.0
        else:
            inside = reading.outside_m <= leave_margin
        if inside:  # leaves when beyond border + margin (GPS margin: the conservative one)
            to_switch = (
                margin - reading.outside_m if reading.outside_m else reading.inside_m + margin
            )
        else:  # comes back when inside the border
            to_switch = reading.outside_m
        state.region_check = [lat, lon, round(max(0.0, to_switch), 1)]
        if inside == state.inside:
            return False
        state.inside = inside
        state.outside_since = None if inside else ts
        state.region_event = ping.event_id
        return True

    def _place(self, state: LoanState, ping: GpsPing, ts: float) -> bool:
        assert self.places is not None
        lat, lon = ping.lat, ping.lon
        check = state.place_check
        if check is not None and distance_m(check[0], check[1], lat, lon) < check[2]:
            if state.place_id:
                _record_visit(state, state.place_id, state.place_kind, ts)
            return False
        found = self.places.locate(
            lat, lon, state.place_id or None, self.config.place_exit_margin_m
        )
        state.place_check = [lat, lon, round(found.clearance_m, 1)]
        place_id = found.place.id if found.place is not None else ""
        if found.place is not None:
            _record_visit(state, place_id, found.place.kind.value, ts)
        if place_id == state.place_id:
            return False
        if state.place_id:
            state.place_left = [state.place_id, state.place_kind, state.place_since, ts]
        since = ts if place_id else None
        left = state.place_left
        if left is not None and place_id:
            if left[0] == place_id and ts - left[3] <= self.config.occupancy_leave_grace_s:
                since = left[2]  # back within the grace: the same stay
            state.place_left = None
        state.place_id = place_id
        state.place_kind = found.place.kind.value if found.place is not None else ""
        state.place_since = since
        state.place_event = ping.event_id
        state.cars_at_place = 1 if place_id else 0  # until the cross-loan count arrives
        return True

    def counted_place(self, state: LoanState, now: float) -> str | None:
        """The place the car counts toward in the cross-loan occupancy at ``now``: where it has
        stayed occupancy_min_dwell_s, or left less than occupancy_leave_grace_s ago after
        such a stay."""
        dwell = self.config.occupancy_min_dwell_s
        since = state.place_since
        if state.place_id and since is not None:
            return state.place_id if now - since >= dwell else None
        left = state.place_left
        if (
            left is not None
            and left[2] is not None
            and left[3] - left[2] >= dwell
            and now - left[3] < self.config.occupancy_leave_grace_s
        ):
            return str(left[0])
        return None

    def _stationary(self, state: LoanState, lat: float, lon: float, ts: float) -> bool:
        anchor = state.anchor
        if anchor is None:
            state.anchor = [lat, lon, ts]
            return True
        if distance_m(anchor[0], anchor[1], lat, lon) <= self.config.stationary_radius_m:
            return False
        stay = ts - anchor[2]
        # vehicle.stationary_for drops to 0: a change if the stay reached a threshold.
        dirty = stay >= self.min_stationary
        if stay < self.config.usual_min_stay_s:
            # Nothing to learn (most moves: a driving car): the resident points stay as they
            # are, so of their signals only vehicle.at_usual_place may change, with where the
            # car is (vehicle.away_from_resident_for is 0 wherever the car was at a resident
            # point, and runs on from the same instant where it was at none).
            at_usual = bool(state.usual) and self.at_usual_place(state)
            if at_usual:
                state.resident_seen = ts  # leaving a resident point: last seen at one now
            state.anchor = [lat, lon, ts]
            return dirty or at_usual != (bool(state.usual) and self.at_usual_place(state))
        before = self._resident_key(state, ts)
        self._learn_usual(state, anchor[0], anchor[1], anchor[2], ts)
        if self.at_usual_place(state):
            # Leaving a resident point (perhaps one this very stay made resident): last seen
            # at one now.
            state.resident_seen = ts
        state.anchor = [lat, lon, ts]
        # What was learned (a point made resident or forgotten) and where the car went.
        return dirty or before != self._resident_key(state, ts)

    def _resident_key(self, state: LoanState, ts: float) -> tuple[bool, int, int, int]:
        """The resident-point signals at ``ts`` as rules see them (see derive()):
        vehicle.at_usual_place, vehicle.resident_points and vehicle.away_from_resident_for
        reduced to its side of each threshold."""
        at_usual = bool(state.usual) and self.at_usual_place(state)
        after = self.config.usual_after_s
        residents = sum(1 for p in state.usual if p[2] >= after)
        seen = state.resident_seen
        away = max(0.0, ts - seen) if seen is not None and not at_usual else 0.0
        ths = self.duration_thresholds["vehicle.away_from_resident_for"]
        return at_usual, residents, bisect_left(ths, away), bisect_right(ths, away)

    def _learn_usual(
        self, state: LoanState, lat: float, lon: float, start: float, end: float
    ) -> None:
        """Resident points (常驻点): where the car parks, with the seconds parked there in
        total and at night (22:00-06:00, loan time zone). A stay counts if it lasted
        usual_min_stay_s; the usual_places_kept points parked longest are kept."""
        stay = end - start
        if stay < self.config.usual_min_stay_s:
            return
        night = night_seconds(start, end, state.timezone)
        radius = self.config.stationary_radius_m
        # Only the recent past: a point not parked at for resident_window_s is forgotten.
        horizon = end - self.config.resident_window_s
        state.usual[:] = [p for p in state.usual if len(p) < 5 or p[4] >= horizon]
        for place in state.usual:
            if distance_m(place[0], place[1], lat, lon) <= radius:
                place[2] = round(place[2] + stay)
                before = place[3] if len(place) > 3 else 0  # (older states kept no night hours)
                place[3:] = [round(before + night), round(end)]
                break
        else:
            state.usual.append(
                [round(lat, 5), round(lon, 5), round(stay), round(night), round(end)]
            )
        state.usual.sort(key=lambda p: -p[2])
        del state.usual[self.config.usual_places_kept :]

    def at_usual_place(self, state: LoanState) -> bool:
        """The car is parked at a resident point (one where it parked usual_after_s in all)."""
        anchor = state.anchor
        if anchor is None:
            return False
        return self._at_resident_point(state, anchor[0], anchor[1])

    def _at_resident_point(self, state: LoanState, lat: float, lon: float) -> bool:
        """Whether (lat, lon) is within the stationary radius of a resident point."""
        radius = self.config.stationary_radius_m
        # A latitude difference alone farther than the radius rules a point out (the distance
        # is at least the meridian arc), without the haversine.
        lat_reach = radius / _LAT_BOUND_PER_DEG
        after = self.config.usual_after_s
        for p in state.usual:
            if (
                p[2] >= after
                and abs(p[0] - lat) <= lat_reach
                and distance_m(p[0], p[1], lat, lon) <= radius
            ):
                return True
        return False

    def resident_points(self, state: LoanState) -> list[dict[str, Any]]:
        """The learned resident points: position and hours parked there (night, day)."""
        out = []
        for p in state.usual:
            if p[2] < self.config.usual_after_s:
                continue
            night = p[3] if len(p) > 3 else 0
            out.append(
                {
                    "lat": p[0],
                    "lon": p[1],
                    "parked_hours": round(p[2] / 3600.0, 1),
                    "night_hours": round(night / 3600.0, 1),
                    "day_hours": round((p[2] - night) / 3600.0, 1),
                    "kind": "night" if night * 2 >= p[2] else "day",
                }
            )
        return out

    def _separation(
        self, state: LoanState, device: DeviceState, previous: list[float] | None
    ) -> bool:
        """Compare the fix just accepted with the other kind's newest fix (see EngineConfig for
        pairs, their bounds and the hysteresis). Returns whether the signal may have changed."""
        fix = device.fix
        assert fix is not None
        other_kind = WIRELESS if device.kind == WIRED else WIRED
        other: list[float] | None = None
        for candidate in state.devices.values():
            fix_ = candidate.fix
            if candidate.kind == other_kind and fix_ is not None:
                other = fix_ if other is None or fix_[0] > other[0] else other
        if other is None:
            return False
        if device.kind == WIRED:
            wired, wireless, before = fix, other, previous
        else:
            wired, wireless, before = other, fix, None
        verdict = self._pair(wired, wireless, before)
        if verdict is None:
            return False
        apart, bound = verdict
        if not apart and not state.separated_m:
            state.sep = None  # agreeing while not separated: any streak of apart pairs ends
            return False
        config = self.config
        sep = state.sep
        mode = 1.0 if apart else -1.0
        pair_at = max(wired[0], wireless[0])
        if sep is None or sep[0] != mode:
            sep = state.sep = [mode, 1.0, pair_at, wired[0], wireless[0], bound]
        elif wired[0] != sep[3] and wireless[0] != sep[4]:  # independent: no fix shared
            sep[1] += 1.0
            sep[3], sep[4] = wired[0], wireless[0]
            sep[5] = min(sep[5], bound)
        else:
            return False
        confirmed = sep[1] >= config.separation_pairs and (
            pair_at - sep[2] >= config.separation_min_span_s
        )
        before_m = state.separated_m
        if apart and confirmed:
            state.separated_m = round(sep[5], 1)
        elif not apart and confirmed:
            state.separated_m = 0.0
            state.sep = None  # agreement settled: nothing more to remember
        ths = self.separation_km
        old_km, new_km = before_m / 1000.0, state.separated_m / 1000.0
        return (bisect_left(ths, old_km), bisect_right(ths, old_km)) != (
            bisect_left(ths, new_km),
            bisect_right(ths, new_km),
        )

    def _pair(
        self, wired: list[float], wireless: list[float], before: list[float] | None
    ) -> tuple[bool, float] | None:
        """(apart, lower bound of the separation in metres) of a wired and a wireless fix, or
        None when they are not comparable or the pair is inconclusive."""
        config = self.config
        skew = abs(wired[0] - wireless[0])
        wired_speed = wired[4] if len(wired) > 4 else -1.0
        parked_skew = config.separation_parked_skew_s
        if wired[0] <= wireless[0] and wired_speed == 0.0 and skew <= parked_skew:
            motion_m = 0.0  # parked, and a tracker reports at once when the car sets off
        elif skew <= config.separation_max_skew_s:
            speeds = [f[4] for f in (wired, wireless, before) if f is not None and len(f) > 4]
            known = [v for v in speeds if v >= 0.0]
            kmh = (
                max(known) * config.separation_speed_factor + config.separation_speed_floor_kmh
                if known
                else config.separation_unknown_speed_kmh
            )
            motion_m = kmh / 3.6 * skew
        else:
            return None
        accuracy = self._slack[int(wired[3])][int(wireless[3])]
        distance = distance_m(wired[1], wired[2], wireless[1], wireless[2])
        bound = distance - accuracy - motion_m
        if bound >= config.separation_apart_m:
            return True, bound
        if bound <= config.separation_together_m and motion_m < 1_000.0:
            return False, 0.0
        return None

    def _history(self, state: LoanState, ping: GpsPing, ts: float, quality: int | None) -> bool:
        """A buffered (backfill) ping: remember the alarms it carries (whether or not they
        still hold; see _late_alarms) and the risk place it shows, nothing else. Depends on the
        ping alone (no drift verdict, no hysteresis), so applying it again is a no-op."""
        remembered = False
        for alarm in ping.alarms:
            remembered |= _remember_alarm(state, ts, alarm.value)
        if ping.device_kind is DeviceKind.WIRED:
            remembered |= self._buffer_spot(state, ping.lat, ping.lon, ts)
            remembered |= self._unlearn_buffered_gap(state, ping, ts)
        if quality in (None, FIX_LBS) or self.places is None:
            return remembered
            return False
        found = self.places.locate(ping.lat, ping.lon)
        if found.place is None:
            return remembered
        return _record_visit(state, found.place.id, found.place.kind.value, ts) or remembered

    def _buffer_spot(self, state: LoanState, lat: float, lon: float, ts: float) -> bool:
        """Remember where a wired tracker's buffered upload came from (an underground garage,
        a dead zone): its silences there do not count (device.wired_overdue). Idempotent."""
        spots = state.buffer_spots
        radius = self.config.buffer_spot_radius_m
        for spot in spots:
            if distance_m(spot[0], spot[1], lat, lon) <= radius:
                if ts <= spot[2]:
                    return False
                spot[2] = ts
                break
        else:
            kept = self.config.buffer_spots_kept
            if len(spots) >= kept and ts <= spots[kept - 1][2]:
                return False  # older than every spot kept (so a redelivery changes nothing)
            spots.append([round(lat, 5), round(lon, 5), ts])
        spots.sort(key=lambda s: -s[2])
        del spots[self.config.buffer_spots_kept :]
        return True

    # ------------------------------------------------------------------ derive

    def derive(self, state: LoanState, now: float, out: dict[str, Any]) -> None:
        out["vehicle.known"] = state.position is not None
        out["vehicle.has_home_region"] = state.region is not None
        outside = state.inside is False
        out["vehicle.outside_home_region"] = outside
        since = state.outside_since
        out["vehicle.outside_home_region_for"] = max(0.0, now - since) if outside and since else 0.0
        place_id = state.place_id
        at_place = bool(place_id)
        out["vehicle.at_risk_place"] = at_place
        out["vehicle.risk_place_kind"] = state.place_kind
        out["vehicle.risk_place_id"] = place_id
        place_since = state.place_since
        out["vehicle.risk_place_dwell"] = (
            max(0.0, now - place_since) if at_place and place_since is not None else 0.0
        )
        config = self.config
        visits = state.visits
        if visits:
            window_start = now - config.risk_visit_window_s
            out["vehicle.risk_place_visits"] = len({v[0] for v in visits if v[3] >= window_start})
        else:
            out["vehicle.risk_place_visits"] = 0
        out["vehicle.cars_at_place"] = state.cars_at_place if at_place else 0
        anchor = state.anchor
        out["vehicle.stationary_for"] = max(0.0, now - anchor[2]) if anchor else 0.0
        at_usual = bool(state.usual) and self.at_usual_place(state)
        out["vehicle.at_usual_place"] = at_usual
        residents = 0
        for p in state.usual:
            residents += p[2] >= config.usual_after_s
        out["vehicle.resident_points"] = residents
        seen = state.resident_seen
        out["vehicle.away_from_resident_for"] = (
            max(0.0, now - seen) if seen is not None and not at_usual else 0.0
        )

        last_by_kind = _last_seen_by_kind(state)
        has_wired = WIRED in last_by_kind
        last = last_by_kind.get(WIRED)
        out["device.has_wired"] = has_wired
        offline_for = max(0.0, now - last) if last is not None else 0.0
        out["device.offline_for.wired"] = offline_for
        wired_offline = has_wired and offline_for >= config.offline_after_wired_s
        out["device.offline.wired"] = wired_offline
        has_wireless = WIRELESS in last_by_kind
        last = last_by_kind.get(WIRELESS)
        out["device.has_wireless"] = has_wireless
        offline_for = max(0.0, now - last) if last is not None else 0.0
        out["device.offline_for.wireless"] = offline_for
        wireless_offline = has_wireless and offline_for >= config.offline_after_wireless_s
        out["device.offline.wireless"] = wireless_offline
        out["device.all_offline"] = (has_wired or has_wireless) and (
            (wired_offline or not has_wired) and (wireless_offline or not has_wireless)
        )
        newest: float | None = None
        for value in last_by_kind.values():
            if value is not None and (newest is None or value > newest):
                newest = value
        out["device.silent_for"] = max(0.0, now - newest) if newest is not None else 0.0
        hold = config.alarm_hold_s
        alarms: set[str] = set()
        for device in state.devices.values():
            if device.alarms:
                for alarm, raised in device.alarms.items():
                    if alarm_active(alarm, raised, now, hold):
                        alarms.add(alarm)
        out["device.alarms"] = sorted(alarms) if alarms else []
        overdue_at = self.wired_overdue_at(state) if has_wired else None
        out["device.wired_overdue"] = overdue_at is not None and now >= overdue_at
        due = self.wireless_overdue_at(state) if has_wireless else None
        out["device.wireless_overdue"] = due is not None and now >= due
        out["devices.separated_km"] = state.separated_m / 1000.0
        out["devices.wired_left_behind_km"] = (
            self.left_behind_m(state) / 1000.0 if has_wired and has_wireless else 0.0
        )
        # One kind silent while the other demonstrably reports (a tracker that never reported
        # proves nothing).
        silent = ""
        if has_wired and has_wireless and wired_offline != wireless_offline:
            other = WIRELESS if wired_offline else WIRED
            if any(d.kind == other and d.last_seen is not None for d in state.devices.values()):
                silent = WIRED if wired_offline else WIRELESS
        out["devices.silent_kind"] = silent

    def deadlines(self, state: LoanState, now: float) -> list[float]:
        """Instants after ``now`` at which a time-based vehicle/device variable crosses a
        threshold or an alarm or a visit expires."""
        out: list[float] = []
        thresholds = self.duration_thresholds

        def first_after(name: str, start: float) -> None:
            for threshold in thresholds[name]:
                instant = start + threshold + EPSILON
                if instant > now:
                    out.append(instant)
                    return

        if state.inside is False and state.outside_since is not None:
            first_after("vehicle.outside_home_region_for", state.outside_since)
        if state.place_id and state.place_since is not None:
            first_after("vehicle.risk_place_dwell", state.place_since)
            counted = state.place_since + self.config.occupancy_min_dwell_s + EPSILON
            if counted > now:
                out.append(counted)  # starts counting toward the place (Engine.place_of)
        left = state.place_left
        if left is not None:
            grace_end = left[3] + self.config.occupancy_leave_grace_s + EPSILON
            if grace_end > now:
                out.append(grace_end)
        if state.anchor:
            first_after("vehicle.stationary_for", state.anchor[2])
        if state.resident_seen is not None:  # (an early wake-up if at a resident point: harmless)
            first_after("vehicle.away_from_resident_for", state.resident_seen)
        last_by_kind = _last_seen_by_kind(state)
        last = last_by_kind.get(WIRED)
        if last is not None:
            first_after("device.offline_for.wired", last)
            overdue_at = self.wired_overdue_at(state)
            if overdue_at is not None and overdue_at + EPSILON > now:
                out.append(overdue_at + EPSILON)
        last = last_by_kind.get(WIRELESS)
        if last is not None:
            first_after("device.offline_for.wireless", last)
            due = self.wireless_overdue_at(state)
            if due is not None and due + EPSILON > now:
                out.append(due + EPSILON)
        newest: float | None = None
        for value in last_by_kind.values():
            if value is not None and (newest is None or value > newest):
                newest = value
        if newest is not None:
            first_after("device.silent_for", newest)
        hold = self.config.alarm_hold_s
        for device in state.devices.values():
            if device.alarms:
                for alarm, raised in device.alarms.items():
                    if alarm not in LEVEL_ALARMS and raised + hold + EPSILON > now:
                        out.append(raised + hold + EPSILON)
        if state.visits:
            window = self.config.risk_visit_window_s
            for visit in state.visits:
                if visit[3] + window + EPSILON > now:
                    out.append(visit[3] + window + EPSILON)
        return out


NIGHT_START_H, NIGHT_END_H = 22, 6


def night_seconds(start: float, end: float, timezone: str) -> float:
    """Seconds of [start, end) that fall between 22:00 and 06:00 local time."""
    total = 0.0
    day = local_day(start, timezone)
    last = local_day(end, timezone)
    while day <= last + 1:
        midnight = day_start(day, timezone)
        lo, hi = (
            max(start, midnight - (24 - NIGHT_START_H) * 3600.0),
            min(end, midnight + NIGHT_END_H * 3600.0),
        )
        if hi > lo:
            total += hi - lo
        day += 1
    return total


def _last_seen_by_kind(state: LoanState) -> dict[str, float | None]:
    """Newest ping per tracker kind; a tracker that never reported counts from its binding."""
    out: dict[str, float | None] = {}
    for device in state.devices.values():
        seen = device.last_seen if device.last_seen is not None else device.bound_at
        current = out.get(device.kind)
        if device.kind not in out or (seen is not None and (current is None or seen > current)):
            out[device.kind] = seen
    return out


def _newest_reporting(state: LoanState, kind: str) -> DeviceState | None:
    """The tracker of this kind that reported last (None: none of that kind has reported)."""
    newest: DeviceState | None = None
    for device in state.devices.values():
        if (
            device.kind == kind
            and device.last_seen is not None
            and (newest is None or device.last_seen > (newest.last_seen or 0.0))
        ):
            newest = device
    return newest


def _newest_seen(state: LoanState) -> float:
    """The newest report of any tracker (a tracker that never reported: its binding)."""
    newest = float("-inf")
    for device in state.devices.values():
        seen = device.last_seen if device.last_seen is not None else device.bound_at
        if seen is not None and seen > newest:
            newest = seen
    return newest


def _remember_alarm(state: LoanState, ts: float, alarm: str) -> bool:
    """An alarm from buffered data: history (newest 3), whether it fired or newer data had
    cleared it. Order-independent."""
    entry = [ts, alarm]
    if entry in state.alarm_history:
        return False
    state.alarm_history.append(entry)
    state.alarm_history.sort(key=lambda e: -float(e[0]))
    del state.alarm_history[3:]
    return entry in state.alarm_history


def _record_visit(state: LoanState, place_id: str, kind: str, ts: float) -> bool:
    """Remember a risk-place visit (first and last time seen there). Order-independent."""
    for visit in state.visits:
        if visit[0] == place_id:
            if visit[2] <= ts <= visit[3]:
                return False
            visit[2] = min(visit[2], ts)
            visit[3] = max(visit[3], ts)
            return True
    entry = [place_id, kind, ts, ts]
    state.visits.append(entry)
    state.visits.sort(key=lambda v: -v[3])
    del state.visits[4:]
    return entry in state.visits  # an old visit that would be dropped again changes nothing
