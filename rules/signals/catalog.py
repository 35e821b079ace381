"""The per-loan state variables rule conditions can read, with their CEL types.

This table is the contract between rule authors and the engine (docs/rules.md renders the same
list). ``time_based`` marks variables that change as time passes with no event; conditions may
only compare those with constants, so the engine can compute the exact instant each comparison
flips and wake the loan then instead of re-evaluating on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SignalType = Literal["bool", "int", "double", "duration", "string", "list", "timestamp"]

ROOTS = ("payment", "contact", "vehicle", "device", "devices")


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    type: SignalType
    doc: str
    time_based: bool = False
    nullable: bool = False


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        # payment
        Signal(
            "payment.days_past_due",
            "int",
            "Days since the end (loan time zone) of the due date of the oldest unpaid instalment; "
            "0 when nothing is overdue. Counted from the schedule, so it grows with no event.",
            time_based=True,
        ),
        Signal(
            "payment.missed_installments",
            "int",
            "Instalments whose due date has passed and that are not fully paid.",
            time_based=True,
        ),
        Signal(
            "payment.overdue_amount",
            "double",
            "Unpaid amount of the missed instalments.",
            time_based=True,
        ),
        Signal(
            "payment.first_delinquency",
            "bool",
            "Overdue now and never overdue-then-cured before (首逾: the first missed payment).",
            time_based=True,
        ),
        Signal(
            "payment.failed_debits",
            "int",
            "payment_failed events since the last payment_received.",
        ),
        # contact
        Signal(
            "contact.consecutive_failures",
            "int",
            "Failed attempts (any party, any channel) since the last reached/promise_to_pay. "
            "delivered is neutral. Saturates at 32.",
        ),
        Signal(
            "contact.recent_failures",
            "int",
            "Failed attempts of the current streak (since the last reached/promise_to_pay) made "
            "in the last 3 days. consecutive_failures keeps a failure until someone is reached, "
            "however old; this is the borrower not answering now (a reminder call missed last "
            "week does not count).",
            time_based=True,
        ),
        Signal(
            "contact.unreachable_line",
            "int",
            "Latest run of borrower attempts whose line was dead (powered_off, suspended, "
            "number_invalid), unbroken by any other borrower outcome.",
        ),
        Signal(
            "contact.parties_failed",
            "int",
            "Distinct parties (borrower, guarantor, emergency_contact) with a failure in the "
            "current streak.",
        ),
        Signal("contact.ever_reached", "bool", "Someone has been reached at least once."),
        Signal(
            "contact.last_reached_at",
            "timestamp",
            "Time of the last reached/promise_to_pay, null if never (guard with ever_reached).",
            nullable=True,
        ),
        Signal(
            "contact.unreachable_for",
            "duration",
            "Time since the first failure of the current streak; 0s without a streak.",
            time_based=True,
        ),
        # vehicle
        Signal("vehicle.known", "bool", "At least one accepted position fix."),
        Signal("vehicle.has_home_region", "bool", "The loan has a home region."),
        Signal(
            "vehicle.outside_home_region",
            "bool",
            "Outside the home region, with hysteresis: leaves when beyond the border by the margin "
            "(500 m GPS, 2 km cell-tower fixes), returns when back inside the border.",
        ),
        Signal(
            "vehicle.outside_home_region_for",
            "duration",
            "Time since the first fix of the current stay outside; 0s when inside.",
            time_based=True,
        ),
        Signal(
            "vehicle.at_risk_place",
            "bool",
            "Within a risk place's radius or polygon (leaves at +100 m).",
        ),
        Signal(
            "vehicle.risk_place_kind",
            "string",
            "second_pledge_lot | pawn_shop | used_car_market | impound_lot, '' when none.",
        ),
        Signal("vehicle.risk_place_id", "string", "Id of the current risk place, '' when none."),
        Signal(
            "vehicle.risk_place_dwell",
            "duration",
            "Time since the first fix at the current risk place; 0s when none.",
            time_based=True,
        ),
        Signal(
            "vehicle.risk_place_visits",
            "int",
            "Distinct risk places visited in the last 30 days, including buffered (backfill) data.",
            time_based=True,
        ),
        Signal(
            "vehicle.cars_at_place",
            "int",
            "Financed cars (all loans) at the current risk place, this one included; from the "
            "cross-loan PlaceOccupancy aggregate. 0 when not at a risk place.",
        ),
        Signal(
            "vehicle.stationary_for",
            "duration",
            "Time since the vehicle last moved more than 300 m (GPS/Wi-Fi fixes only).",
            time_based=True,
        ),
        Signal(
            "vehicle.at_usual_place",
            "bool",
            "Parked at a resident point (常驻点): where this car has already parked >= 24 h in "
            "total (learned per loan from stays of 2 h or more).",
        ),
        Signal(
            "vehicle.resident_points",
            "int",
            "Resident points learned for this car (places it parked >= 24 h in total, counting "
            "stays of 2 h or more; points not parked at for 30 days are forgotten; the 4 "
            "longest kept, each with its night 22:00-06:00 and day hours).",
        ),
        Signal(
            "vehicle.away_from_resident_for",
            "duration",
            "Time since the car was last at one of its resident points; 0s while at one, and 0s "
            "before it has any (nothing learned yet proves nothing).",
            time_based=True,
        ),
        # device
        Signal("device.has_wired", "bool", "A wired tracker is bound to the loan."),
        Signal("device.has_wireless", "bool", "A wireless tracker is bound to the loan."),
        Signal(
            "device.offline_for.wired",
            "duration",
            "Time since the last ping of any wired tracker (since binding if none yet); 0s "
            "without a wired tracker.",
            time_based=True,
        ),
        Signal(
            "device.offline_for.wireless",
            "duration",
            "As offline_for.wired, for wireless trackers.",
            time_based=True,
        ),
        Signal(
            "device.offline.wired",
            "bool",
            "offline_for.wired beyond the wired threshold (default 6 h).",
            time_based=True,
        ),
        Signal(
            "device.offline.wireless",
            "bool",
            "offline_for.wireless beyond the wireless threshold (default 48 h: they report "
            "once or twice a day).",
            time_based=True,
        ),
        Signal(
            "device.all_offline",
            "bool",
            "Every bound tracker is offline by its kind's threshold.",
            time_based=True,
        ),
        Signal(
            "device.silent_for",
            "duration",
            "Time since the last ping from any tracker of the loan.",
            time_based=True,
        ),
        Signal(
            "device.wired_overdue",
            "bool",
            "The wired tracker is overdue by its own cadence: silent for 3 times its longest "
            "regular parked reporting interval (learned per tracker; at least 1 h), its last fix "
            "a parked one at a resident point where none of its silences has ended in a buffered "
            "upload "
            "(underground garage, dead zone). False until the interval is learned (12 parked "
            "reports). Marks the loan for evaluation when the wired tracker reports after 1 h of "
            "silence or the car parks; turns on by deadline.",
            time_based=True,
        ),
        Signal(
            "device.wireless_overdue",
            "bool",
            "The wireless tracker missed its own schedule: 90 min past the first time of day it "
            "reports at after its last report, with no report since. The times are learned per "
            "tracker: a time of day (within 30 min) joins the schedule at its 5th daily report "
            "there and leaves it when 2 days pass without one. False until a schedule is "
            "learned. Marks the loan for evaluation when the tracker reports after missing its "
            "time or a time joins its schedule; turns on by deadline.",
            time_based=True,
        ),
        Signal(
            "device.alarms",
            "list",
            "Active alarms of any tracker: power_cut and low_battery while the latest ping "
            "reports them; removal, tamper, antenna_cut and others for 24 h after the last one.",
            time_based=True,
        ),
        # devices: the trackers of one car compared with each other
        Signal(
            "devices.separated_km",
            "double",
            "Confirmed separation of the wired and wireless trackers (a lower bound: distance "
            "minus both fixes' accuracy and the car's possible motion between them), once two "
            "independent pairs of fixes taken at nearly the same instant, >= 30 min apart, "
            "disagree by >= 1 km; back to 0 only after two agreeing pairs. 0 otherwise.",
        ),
        Signal(
            "devices.wired_left_behind_km",
            "double",
            "The car drove off without its wired tracker: the wireless tracker's newest fix, "
            "taken after the wired tracker had been silent for an hour (a wired tracker reports "
            "at once when the ignition turns on, then every minute while driving), lies this "
            "far from the wired tracker's last fix, a parked one (a lower bound: distance minus "
            "both fixes' accuracy). 0 when the wired tracker has reported since, or the fixes "
            "agree within 1 km.",
        ),
        Signal(
            "devices.silent_kind",
            "string",
            "'wired' or 'wireless' when that kind is offline while the other kind has reported "
            "and is not offline; '' otherwise.",
            time_based=True,
        ),
    )
}

# Map-valued parents: a condition must name a key (device.offline_for.wired), not the map.
MAP_PARENTS = {"device.offline_for", "device.offline"}
