"""Event sequences shared by pipeline tests and benchmarks (the seed 失联 case and friends)."""

from __future__ import annotations

import datetime as dt
import math

from rules.events import ContactAttempt, GpsPing, InputEvent, Loan, PaymentEvent

CST = dt.timezone(dt.timedelta(hours=8))
CHENGDU = (30.66, 104.06)


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=CST)


def offset(lat: float, lon: float, north_km: float, east_km: float) -> tuple[float, float]:
    return (
        lat + north_km / 111.0,
        lon + east_km / (111.0 * math.cos(math.radians(lat))),
    )


def loan(
    loan_id: str, devices: list[tuple[str, str]] | None = None, due: str = "2026-03-01"
) -> Loan:
    return Loan.model_validate(
        {
            "loan_id": loan_id,
            "borrower": {"name": "张三", "phone": "+8613800138000"},
            "vehicle": {"vin": "LSVAU2180N2123456", "plate": "川A12345"},
            "devices": [
                {"device_id": d, "kind": k} for d, k in (devices or [(f"{loan_id}-w", "wired")])
            ],
            "home_region": {"center": list(CHENGDU), "radius_km": 30},
            "schedule": [
                {"installment_no": 1, "due_date": due, "amount": 3200},
                {"installment_no": 2, "due_date": "2026-04-01", "amount": 3200},
            ],
        }
    )


def ping(device: str, when: dt.datetime, east_km: float, n: int, **extra: object) -> GpsPing:
    lat, lon = offset(*CHENGDU, 0.0, east_km)
    return GpsPing.model_validate(
        {
            "event_id": f"{device}-p{n}", "device_id": device, "vendor": "test",
            "ts": when.isoformat(), "lat": lat, "lon": lon, "speed_kmh": 60.0,
            "device_kind": "wired", "acc_on": True, **extra,
        }
    )  # fmt: skip


def contact(loan_id: str, when: dt.datetime, outcome: str, n: int) -> ContactAttempt:
    return ContactAttempt.model_validate(
        {
            "event_id": f"{loan_id}-c{n}", "loan_id": loan_id, "ts": when.isoformat(),
            "party": "borrower", "channel": "call", "outcome": outcome,
        }
    )  # fmt: skip


def payment(loan_id: str, when: dt.datetime, installment: int = 1) -> PaymentEvent:
    return PaymentEvent.model_validate(
        {
            "event_id": f"{loan_id}-pay{installment}", "loan_id": loan_id, "ts": when.isoformat(),
            "type": "payment_received", "installment_no": installment, "amount": 3200,
        }
    )  # fmt: skip


def seed_case(loan_id: str) -> tuple[Loan, list[InputEvent]]:
    """Instalment 1 (due 1 March) missed, phone powered off, car leaves Chengdu and stays out.

    Returns the loan and the events after it, in arrival order. The seed rule holds from
    2 March 11:00 and fires after its 30 min `for`.
    """
    device = f"{loan_id}-w"
    events: list[InputEvent] = [ping(device, at(1, 10), 2.0, 0)]
    events += [contact(loan_id, at(2, 9, 30), "powered_off", 1)]
    events += [contact(loan_id, at(2, 10), "suspended", 2)]
    # drive east at 60 km/h: inside for the first half hour, then out (30 km radius)
    events += [
        ping(device, at(2, 10) + dt.timedelta(minutes=10 * i), 2.0 + 10.0 * i, i + 1)
        for i in range(1, 13)
    ]
    return loan(loan_id), events


def cure(loan_id: str) -> list[InputEvent]:
    """The payment that cures the seed case (and a ping that moves event time on)."""
    return [payment(loan_id, at(2, 12, 30))]
