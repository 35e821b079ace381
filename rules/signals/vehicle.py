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

from rules.config import EngineConfig
from rules.events.gps import Alarm, DeviceKind, Fix, GpsPing
from rules.geo import HomeRegion, distance_m
from rules.places import PlaceIndex
from rules.state import FIX_GPS, FIX_LBS, FIX_WIFI, DeviceState, LoanState

FIX_QUALITY = {Fix.GPS: FIX_GPS, Fix.WIFI: FIX_WIFI, Fix.LBS: FIX_LBS, Fix.NONE: None}
# Alarms that describe a condition the tracker keeps reporting while it lasts; cleared by a
# newer ping without them. Every other alarm is an event, active for `alarm_hold_s`.
LEVEL_ALARMS = frozenset({Alarm.POWER_CUT.value, Alarm.LOW_BATTERY.value})
WIRED = DeviceKind.WIRED.value
WIRELESS = DeviceKind.WIRELESS.value
EPSILON = 0.001  # deadlines fall just after a threshold, where both > and >= hold


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
        offline_thresholds = [
            *thresholds.get("device.offline_for.wired", ()),
            *thresholds.get("device.offline_for.wireless", ()),
            *thresholds.get("device.silent_for", ()),
            config.offline_after_wired_s,
            config.offline_after_wireless_s,
        ]
        # A ping after a silence at least this long may change an offline variable.
        self.min_gap = min(offline_thresholds)
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
        quality = FIX_QUALITY[ping.fix]
        if device.last_seen is not None and ts <= device.last_seen:
            self.stats["late_pings"] += 1
            return self._history(state, ping, ts, quality), False
        previous = device.last_seen if device.last_seen is not None else device.bound_at
        dirty = new_device or previous is None or ts - previous >= self.min_gap
        device.last_seen = ts
        device.last_event = ping.event_id
        if self._alarms(device, ping, ts):
            dirty = True
        if quality is not None:
            if self._plausible(device, ping, ts, quality):
                device.fix = [ts, ping.lat, ping.lon, quality]
                if self._drives_vehicle(state, device, ts):
                    dirty |= self._move_vehicle(state, ping, ts, quality)
                dirty |= self._separation(state)
            else:
                self.stats["drift_discarded"] += 1
        return True, dirty

    def _alarms(self, device: DeviceState, ping: GpsPing, ts: float) -> bool:
        hold = self.config.alarm_hold_s
        active_before = {
            a for a, raised in device.alarms.items() if a in LEVEL_ALARMS or ts - raised <= hold
        }
        reported = {a.value for a in ping.alarms}
        for alarm in list(device.alarms):
            expired = alarm not in LEVEL_ALARMS and ts - device.alarms[alarm] > hold
            if (alarm in LEVEL_ALARMS and alarm not in reported) or expired:
                del device.alarms[alarm]
        for alarm in reported:
            device.alarms[alarm] = ts
        if reported - active_before:
            device.alarm_event = ping.event_id
        return active_before != set(device.alarms)

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
        return gap / max(ts - fix[0], 1.0) * 3.6 <= self.config.max_speed_kmh

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
        state.position = [ts, ping.lat, ping.lon, quality]
        state.position_event = ping.event_id
        if state.region is not None:
            dirty |= self._region(state, ping, ts, quality)
        if quality != FIX_LBS:  # a cell-tower fix is too coarse for lots and parking
            if self.places is not None:
                dirty |= self._place(state, ping, ts)
            dirty |= self._stationary(state, ping.lat, ping.lon, ts)
        return dirty

    def region_of(self, state: LoanState) -> HomeRegion | None:
        from rules.geo import home_region

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
        state.place_id = place_id
        state.place_kind = found.place.kind.value if found.place is not None else ""
        state.place_since = ts if place_id else None
        state.place_event = ping.event_id
        state.cars_at_place = 1 if place_id else 0  # until the cross-loan count arrives
        return True

    def _stationary(self, state: LoanState, lat: float, lon: float, ts: float) -> bool:
        anchor = state.anchor
        if anchor is None:
            state.anchor = [lat, lon, ts]
            return True
        if distance_m(anchor[0], anchor[1], lat, lon) <= self.config.stationary_radius_m:
            return False
        stay = ts - anchor[2]
        usual_before = self.at_usual_place(state)
        self._learn_usual(state, anchor[0], anchor[1], stay)
        state.anchor = [lat, lon, ts]
        return stay >= self.min_stationary or usual_before != self.at_usual_place(state)

    def _learn_usual(self, state: LoanState, lat: float, lon: float, stay: float) -> None:
        if stay < self.config.usual_min_stay_s:
            return
        radius = self.config.stationary_radius_m
        for place in state.usual:
            if distance_m(place[0], place[1], lat, lon) <= radius:
                place[2] = round(place[2] + stay)
                break
        else:
            state.usual.append([round(lat, 5), round(lon, 5), round(stay)])
        state.usual.sort(key=lambda p: -p[2])
        del state.usual[self.config.usual_places_kept :]

    def at_usual_place(self, state: LoanState) -> bool:
        anchor = state.anchor
        if anchor is None:
            return False
        radius = self.config.stationary_radius_m
        return any(
            p[2] >= self.config.usual_after_s
            and distance_m(p[0], p[1], anchor[0], anchor[1]) <= radius
            for p in state.usual
        )

    def _separation(self, state: LoanState) -> bool:
        wired = _newest_fix(state, WIRED)
        wireless = _newest_fix(state, WIRELESS)
        skew = self.config.separation_max_skew_s
        if wired is None or wireless is None or abs(wired[0] - wireless[0]) > skew:
            return False  # not comparable: the last comparison stands
        separated = round(distance_m(wired[1], wired[2], wireless[1], wireless[2]), 1)
        before, state.separated_m = state.separated_m, separated
        ths = self.separation_km
        old_km, new_km = before / 1000.0, separated / 1000.0
        return (bisect_left(ths, old_km), bisect_right(ths, old_km)) != (
            bisect_left(ths, new_km),
            bisect_right(ths, new_km),
        )

    def _history(self, state: LoanState, ping: GpsPing, ts: float, quality: int | None) -> bool:
        """A late ping: remember risk places it shows, nothing else."""
        if quality in (None, FIX_LBS) or self.places is None:
            return False
        found = self.places.locate(ping.lat, ping.lon)
        if found.place is None:
            return False
        return _record_visit(state, found.place.id, found.place.kind.value, ts)

    # ------------------------------------------------------------------ derive

    def derive(self, state: LoanState, now: float, out: dict[str, Any]) -> None:
        out["vehicle.known"] = state.position is not None
        out["vehicle.has_home_region"] = state.region is not None
        outside = state.inside is False
        out["vehicle.outside_home_region"] = outside
        since = state.outside_since
        out["vehicle.outside_home_region_for"] = max(0.0, now - since) if outside and since else 0.0
        at_place = bool(state.place_id)
        out["vehicle.at_risk_place"] = at_place
        out["vehicle.risk_place_kind"] = state.place_kind
        out["vehicle.risk_place_id"] = state.place_id
        place_since = state.place_since
        out["vehicle.risk_place_dwell"] = (
            max(0.0, now - place_since) if at_place and place_since is not None else 0.0
        )
        window_start = now - self.config.risk_visit_window_s
        out["vehicle.risk_place_visits"] = len({v[0] for v in state.visits if v[3] >= window_start})
        out["vehicle.cars_at_place"] = state.cars_at_place if at_place else 0
        anchor = state.anchor
        out["vehicle.stationary_for"] = max(0.0, now - anchor[2]) if anchor else 0.0
        out["vehicle.at_usual_place"] = self.at_usual_place(state)

        config = self.config
        last_by_kind = _last_seen_by_kind(state)
        for kind, threshold in (
            (WIRED, config.offline_after_wired_s),
            (WIRELESS, config.offline_after_wireless_s),
        ):
            last = last_by_kind.get(kind)
            out[f"device.has_{kind}"] = kind in last_by_kind
            offline_for = max(0.0, now - last) if last is not None else 0.0
            out[f"device.offline_for.{kind}"] = offline_for
            out[f"device.offline.{kind}"] = kind in last_by_kind and offline_for >= threshold
        kinds = [k for k in (WIRED, WIRELESS) if k in last_by_kind]
        out["device.all_offline"] = bool(kinds) and all(out[f"device.offline.{k}"] for k in kinds)
        seen = [v for v in last_by_kind.values() if v is not None]
        out["device.silent_for"] = max(0.0, now - max(seen)) if seen else 0.0
        hold = config.alarm_hold_s
        alarms: set[str] = set()
        for device in state.devices.values():
            for alarm, raised in device.alarms.items():
                if alarm in LEVEL_ALARMS or now - raised <= hold:
                    alarms.add(alarm)
        out["device.alarms"] = sorted(alarms)
        out["devices.separated_km"] = state.separated_m / 1000.0
        # One kind silent while the other demonstrably reports (a tracker that never reported
        # proves nothing).
        reported = {d.kind for d in state.devices.values() if d.last_seen is not None}
        silent = ""
        if len(kinds) == 2:
            if out["device.offline.wired"] and not out["device.offline.wireless"]:
                silent = WIRED if WIRELESS in reported else ""
            elif out["device.offline.wireless"] and not out["device.offline.wired"]:
                silent = WIRELESS if WIRED in reported else ""
        out["devices.silent_kind"] = silent

    def deadlines(self, state: LoanState, now: float) -> list[float]:
        """Instants after ``now`` at which a time-based vehicle/device variable crosses a
        threshold or an alarm or a visit expires."""
        starts: list[tuple[str, float | None]] = [
            (
                "vehicle.outside_home_region_for",
                state.outside_since if state.inside is False else None,
            ),
            ("vehicle.risk_place_dwell", state.place_since if state.place_id else None),
            ("vehicle.stationary_for", state.anchor[2] if state.anchor else None),
        ]
        last_by_kind = _last_seen_by_kind(state)
        for kind in (WIRED, WIRELESS):
            starts.append((f"device.offline_for.{kind}", last_by_kind.get(kind)))
        seen = [v for v in last_by_kind.values() if v is not None]
        starts.append(("device.silent_for", max(seen) if seen else None))
        out: list[float] = []
        for name, start in starts:
            if start is None:
                continue
            for threshold in self.duration_thresholds[name]:
                instant = start + threshold + EPSILON
                if instant > now:
                    out.append(instant)
                    break
        hold = self.config.alarm_hold_s
        for device in state.devices.values():
            for alarm, raised in device.alarms.items():
                if alarm not in LEVEL_ALARMS and raised + hold + EPSILON > now:
                    out.append(raised + hold + EPSILON)
        window = self.config.risk_visit_window_s
        for visit in state.visits:
            if visit[3] + window + EPSILON > now:
                out.append(visit[3] + window + EPSILON)
        return out


def _newest_fix(state: LoanState, kind: str) -> list[float] | None:
    best: list[float] | None = None
    for device in state.devices.values():
        if (
            device.kind == kind
            and device.fix is not None
            and (best is None or device.fix[0] > best[0])
        ):
            best = device.fix
    return best


def _last_seen_by_kind(state: LoanState) -> dict[str, float | None]:
    """Newest ping per tracker kind; a tracker that never reported counts from its binding."""
    out: dict[str, float | None] = {}
    for device in state.devices.values():
        seen = device.last_seen if device.last_seen is not None else device.bound_at
        current = out.get(device.kind)
        if device.kind not in out or (seen is not None and (current is None or seen > current)):
            out[device.kind] = seen
    return out


def _record_visit(state: LoanState, place_id: str, kind: str, ts: float) -> bool:
    """Remember a risk-place visit (first and last time seen there). Order-independent."""
    for visit in state.visits:
        if visit[0] == place_id:
            if visit[2] <= ts <= visit[3]:
                return False
            visit[2] = min(visit[2], ts)
            visit[3] = max(visit[3], ts)
            return True
    state.visits.append([place_id, kind, ts, ts])
    state.visits.sort(key=lambda v: -v[3])
    del state.visits[4:]
    return True
