"""Writes recording.jsonl and labels.jsonl: a small, readable backtest example (Chengdu).

Run: .venv/bin/python tests/data/rules/make_recording.py

Loans:
- skip-seed: misses the 03-05 instalment, phone powered off, drives out of region -> 失联 03-09.
- skip-lot: parks at a 二押点, the tracker is removed there -> 失联 03-08.
- cluster-a/b/c: three cars at the same used-car market at once (one is also overdue).
- good-home: pays, stays home; its tracker uploads a buffered (backfill) batch late.
- good-trip: pays, drives out of region for a day.
- early-pings: its tracker reports before the Loan is registered (pings held until bound).
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import orjson

CST = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=CST)
HOME = (30.66, 104.07)
FAR = (31.50, 104.07)
LOT = (30.7142, 104.0335)  # cd-2p-001
MARKET = (30.7268, 104.0521)  # cd-ucm-001
HERE = Path(__file__).parent
ids = itertools.count()
records: list[tuple[dt.datetime, int, dict[str, Any]]] = []  # (arrival, tie-break, record)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def emit(arrival: dt.datetime, topic: str, value: dict[str, Any]) -> None:
    records.append((arrival, next(ids), {"topic": topic, "value": value}))


def loan(loan_id: str, n: int, arrival: dt.datetime = T0) -> None:
    emit(
        arrival,
        "loans",
        {
            "loan_id": loan_id,
            "borrower": {"name": "示例", "phone": f"+86138000000{n:02d}"},
            "vehicle": {"vin": f"LSVAB12C3DE4567{n:02d}", "plate": f"川A1234{n}"},
            "devices": [
                {"device_id": f"{loan_id}-W", "kind": "wired"},
                {"device_id": f"{loan_id}-X", "kind": "wireless"},
            ],
            "home_region": {"center": list(HOME), "radius_km": 30},
            "schedule": [
                {"installment_no": k, "due_date": f"2024-{2 + k:02d}-05", "amount": 3500}
                for k in range(1, 7)
            ],
        },
    )


def ping(
    loan_id: str,
    hours: float,
    where: tuple[float, float],
    kind: str = "wired",
    arrival: float | None = None,
    **extra: Any,
) -> None:
    value = {
        "event_id": f"g{next(ids)}",
        "device_id": f"{loan_id}-{'W' if kind == 'wired' else 'X'}",
        "vendor": "example",
        "ts": at(hours).isoformat(),
        "lat": where[0],
        "lon": where[1],
        "device_kind": kind,
        **extra,
    }
    emit(at(arrival if arrival is not None else hours), "gps.raw", value)


def track(
    loan_id: str,
    start: float,
    end: float,
    where: tuple[float, float],
    every: float = 1.0,
    **extra: Any,
) -> None:
    """Wired pings every `every` hours; the hidden wireless tracker, riding in the same car,
    reports once a day (at hours divisible by 24)."""
    h = start
    while h < end:
        ping(loan_id, h, where, **extra)
        if h % 24 == 0 and not extra:
            ping(loan_id, h, where, kind="wireless")
        h += every


def pay(loan_id: str, hours: float, number: int = 1) -> None:
    emit(
        at(hours),
        "payments",
        {
            "event_id": f"pay{next(ids)}",
            "loan_id": loan_id,
            "ts": at(hours).isoformat(),
            "type": "payment_received",
            "installment_no": number,
            "amount": 3500,
        },
    )


def call(loan_id: str, hours: float, outcome: str, party: str = "borrower") -> None:
    emit(
        at(hours),
        "contacts",
        {
            "event_id": f"c{next(ids)}",
            "loan_id": loan_id,
            "ts": at(hours).isoformat(),
            "party": party,
            "channel": "call",
            "outcome": outcome,
        },
    )


def main() -> None:
    overdue = 112.0  # 2024-03-06 00:00 CST: instalment 1 (due 03-05) is past due
    labels = []

    loan("skip-seed", 1)
    track("skip-seed", 0, 118, HOME, every=2)
    for n, outcome in enumerate(["no_answer", "powered_off", "powered_off", "suspended"]):
        call("skip-seed", overdue + 2 + 3 * n, outcome)
    track("skip-seed", 124, 190, FAR, every=2)
    labels.append({"loan_id": "skip-seed", "unreachable_at": at(190).isoformat()})

    loan("skip-lot", 2)
    track("skip-lot", 0, 150, HOME, every=2)
    track("skip-lot", 150, 158, LOT, every=0.5)
    ping("skip-lot", 158, LOT, alarms=["removal"])
    labels.append({"loan_id": "skip-lot", "unreachable_at": at(170).isoformat()})

    for n, name in enumerate(["cluster-a", "cluster-b", "cluster-c"]):
        loan(name, 3 + n)
        pay(name, 50) if name != "cluster-c" else None
        track(name, 0, 100 + n, HOME, every=2)
        track(name, 100 + n, 140, MARKET, every=1)
        track(name, 140, 200, HOME, every=2)

    loan("good-home", 6)
    pay("good-home", 60)
    track("good-home", 0, 48, HOME, every=1)
    # Buffered upload: hours 48-60 (including a stop at the lot) arrive at hour 61, after the
    # live pings of hours 60-61 were already delivered.
    track("good-home", 60, 240, HOME, every=1)
    for h in range(48, 60):
        ping("good-home", h, LOT if 50 <= h < 53 else HOME, arrival=61.5, backfill=True)

    loan("good-trip", 7)
    pay("good-trip", 30)
    track("good-trip", 0, 60, HOME, every=1)
    track("good-trip", 60, 84, FAR, every=1)
    track("good-trip", 84, 240, HOME, every=1)

    track("early-pings", 0, 24, HOME, every=1)
    loan("early-pings", 8, arrival=at(24))
    pay("early-pings", 30)
    track("early-pings", 24, 240, HOME, every=2)

    records.sort(key=lambda r: (r[0], r[1]))
    with (HERE / "recording.jsonl").open("wb") as out:
        for _, _, record in records:
            out.write(orjson.dumps(record) + b"\n")
    with (HERE / "labels.jsonl").open("wb") as out:
        for label in labels:
            out.write(orjson.dumps(label) + b"\n")


if __name__ == "__main__":
    main()
