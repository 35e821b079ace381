"""Engine tuning: thresholds that are facts about trackers and GPS, not business rules.

Business thresholds (how many days overdue, how long at a lot) live in the rule files. These are
passed in by whoever builds the engine; ``rules/`` reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class EngineConfig:
    # A wired tracker heartbeats every few minutes even when parked; a wireless one (battery,
    # hidden) reports once or twice a day.
    offline_after_wired_s: float = 6 * HOUR
    offline_after_wireless_s: float = 48 * HOUR
    # Home-region hysteresis: leave only when this far beyond the border; come back when inside.
    region_margin_m: float = 500.0
    region_margin_lbs_m: float = 2_000.0  # cell-tower fixes are off by a kilometre or more
    region_simplify_m: float = 100.0
    # Risk places: enter inside the radius, leave beyond radius + margin.
    place_exit_margin_m: float = 100.0
    # Stationary: not moved more than this from where it stopped (GPS/Wi-Fi fixes only).
    stationary_radius_m: float = 300.0
    # Learned usual parking places: stays of at least min_stay count; usual after usual_after.
    usual_min_stay_s: float = 2 * HOUR
    usual_after_s: float = 24 * HOUR
    usual_places_kept: int = 4
    # Resident points not parked at for this long are forgotten (learned from recent stays).
    resident_window_s: float = 30 * DAY
    # Drift: faster than this between two fixes (after accuracy slack) is an impossible jump.
    max_speed_kmh: float = 250.0
    accuracy_gps_m: float = 50.0
    accuracy_wifi_m: float = 200.0
    accuracy_lbs_m: float = 1_500.0
    # removal/tamper/... are one-shot alarms: active this long after the last one.
    alarm_hold_s: float = 24 * HOUR
    # Wired vs wireless. A *pair* is a wired and a wireless fix taken at nearly the same instant
    # (within separation_max_skew_s; a wired fix reporting the car parked — speed 0 — stands
    # until the tracker's next report, since trackers report at once when the ignition turns,
    # so it pairs with a later wireless fix for up to separation_parked_skew_s). A pair's
    # separation is a lower bound: distance minus both fixes' accuracy minus how far the car
    # could have moved between them (the reported speed x 1.5 + 20 km/h, or 130 km/h when no
    # speed is known). A pair is *apart* when that bound is >= separation_apart_m and
    # *together* when that bound is <= separation_together_m and the allowance for motion is
    # under 1 km. `devices.separated_km` turns on only after separation_pairs independent apart
    # pairs (no fix shared) spanning >= separation_min_span_s, and off only after as many
    # together pairs (hysteresis); inconclusive pairs change nothing.
    separation_max_skew_s: float = 120.0
    separation_parked_skew_s: float = 45 * 60.0
    separation_apart_m: float = 1_000.0
    separation_together_m: float = 250.0
    separation_pairs: int = 2
    separation_min_span_s: float = 30 * 60.0
    separation_speed_factor: float = 1.5
    separation_speed_floor_kmh: float = 20.0
    separation_unknown_speed_kmh: float = 130.0
    # Left behind (devices.wired_left_behind_km): a wireless fix taken after the wired tracker
    # has been silent this long, away from the wired tracker's last (parked) fix by at least
    # separation_apart_m beyond both fixes' accuracy.
    left_behind_silence_s: float = HOUR
    # Overdue wired tracker (device.wired_overdue): silent for cadence_factor times its own
    # longest regular parked reporting interval (at least cadence_floor_s), its last fix a
    # parked one at a resident point where none of its silences has ended in a buffered upload.
    # The interval is the longest gap between consecutive live parked reports (shorter than the
    # wired offline threshold), decaying with a half-life of cadence_half_life_s, learned from
    # cadence_min_gaps gaps; once learned a gap counts at most twice the current value, so one
    # dead zone moves it little while a tracker that sleeps after the ignition goes off (10 min,
    # then 2 h) or is reconfigured is followed within its first long stop. A gap whose fixes
    # come up later as a buffered upload is unlearned. Places a buffered upload came from
    # (underground garages, dead zones) are remembered per car within buffer_spot_radius_m,
    # the newest buffer_spots_kept.
    cadence_factor: float = 3.0
    cadence_floor_s: float = HOUR
    cadence_min_gaps: int = 12
    cadence_half_life_s: float = 7 * DAY
    # Overdue wireless tracker (device.wireless_overdue): a wireless tracker wakes up at fixed
    # times of the day (once to a few times). A *slot* is a time of day its live reports come
    # at (each report joins the nearest slot within wireless_slot_tolerance_s, moving its time
    # toward it, or starts one); its score decays with a half-life of
    # wireless_slot_half_life_s and grows by one per report (one per wake-up: a retry within
    # twice the tolerance does not count). A slot whose score reached wireless_slot_score and
    # that had a report within wireless_slot_stale_s before the tracker's last report is part of
    # its schedule: a daily slot joins at its 5th report and leaves 2 days after its reports
    # stop (a reconfigured schedule), while a retried or off-schedule alarm report, a few times
    # a month, never joins. The tracker is overdue
    # wireless_overdue_margin_s after the first scheduled slot after its last report passes
    # without a report. The newest wireless_slots_kept slots are kept, and a slot is dropped
    # once it has had no report for wireless_slot_stale_s (it is in no schedule then).
    wireless_slot_tolerance_s: float = 30 * 60.0
    wireless_slot_half_life_s: float = 3 * DAY
    wireless_slot_score: float = 3.0
    wireless_slot_stale_s: float = 2 * DAY
    wireless_overdue_margin_s: float = 90 * 60.0
    wireless_slots_kept: int = 8
    buffer_spot_radius_m: float = 300.0
    buffer_spots_kept: int = 4
    # After buffered (backfill) or late data, wait this long for a live fix before evaluating,
    # so a stale position never raises a live alert that the next live ping would clear.
    backfill_settle_s: float = 300.0
    # An event older than the loan's clock by more than this is late (history only).
    late_tolerance_s: float = 60.0
    # An event that entered Kafka more than this after its event time is late (history only),
    # however soon or long after that the worker reads it (rules/clock.py).
    allowed_lateness_s: float = 300.0
    # Events further than this ahead of `now` are rejected (a tracker with a broken clock).
    max_future_skew_s: float = DAY
    risk_visit_window_s: float = 30 * DAY
    # Cross-loan occupancy (PlaceOccupancy, the cluster rule) counts a car at a risk place only
    # after it has stayed this long, and only a counted car is given the count: a car driving
    # past, a wash, a test drive or a look round a market (minutes to an hour) is not
    # collateral at the lot, and neither raises its own cluster alert nor tips the parked
    # cars' count over a threshold and back (issue 12: car-wash visits at a ring's lot made
    # the ring's and the visitor's cluster warnings fire and resolve with every visit).
    occupancy_min_dwell_s: float = 2 * HOUR
    # A car that leaves a place and is back within this long continues its stay (dwell and
    # occupancy); it keeps counting toward the place meanwhile.
    occupancy_leave_grace_s: float = 15 * 60.0
    # Duplicate filter: hashes of the latest event ids kept per loan.
    seen_event_ids: int = 12
    # contact.recent_failures: failures of the current streak (since the last reach) no older
    # than this. Rules that take "the borrower does not answer" as corroboration of a tracker
    # or vehicle anomaly read it: collectors chasing a dark borrower call daily, while a
    # reminder call missed weeks ago stays in consecutive_failures until someone is reached.
    contact_recent_s: float = 3 * DAY
