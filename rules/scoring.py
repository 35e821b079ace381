"""Risk score 0-100 per loan, with the reasons that make it up.

A transparent points table, not a trained model: each family (payment, contact, vehicle,
trackers) adds points for what lenders' collection teams treat as 失联 precursors, capped per
family so no single family can reach "critical" alone — the score is high only when signals
from several families line up, which is the pattern that precedes a loss. docs/rules.md has the
table and the reasoning; the caps sum to 100.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HOUR = 3600.0
DAY = 86400.0

FAMILY_CAPS = {"payment": 30, "contact": 25, "vehicle": 25, "tracker": 20}


@dataclass(frozen=True, slots=True)
class Reason:
    family: str
    code: str
    points: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "code": self.code,
            "points": self.points,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class RiskScore:
    score: int
    reasons: tuple[Reason, ...]


def _payment(s: Mapping[str, Any]) -> list[Reason]:
    dpd = int(s["payment.days_past_due"])
    out: list[Reason] = []
    if dpd > 0:
        points = 10 if dpd <= 3 else 18 if dpd <= 15 else 24 if dpd <= 30 else 30
        out.append(Reason("payment", "days_past_due", points, f"{dpd} days past due"))
        if s["payment.first_delinquency"]:
            # 首逾: a borrower who misses early and has never paid late before is more often
            # a fraud/skip case than a cash-flow one.
            out.append(Reason("payment", "first_delinquency", 6, "first missed payment"))
    if s["payment.failed_debits"] >= 2:
        out.append(
            Reason("payment", "failed_debits", 4, f"{s['payment.failed_debits']} failed debits")
        )
    return out


def _contact(s: Mapping[str, Any]) -> list[Reason]:
    out: list[Reason] = []
    failures = int(s["contact.consecutive_failures"])
    if failures >= 3:
        points = 8 if failures < 6 else 12
        out.append(Reason("contact", "consecutive_failures", points, f"{failures} failed contacts"))
    line = int(s["contact.unreachable_line"])
    if line >= 1:
        points = 8 if line < 3 else 13
        out.append(Reason("contact", "unreachable_line", points, f"phone dead {line}x in a row"))
    if s["contact.parties_failed"] >= 2:
        out.append(Reason("contact", "parties_failed", 5, "guarantor/emergency contact fail too"))
    return out


def _vehicle(s: Mapping[str, Any]) -> list[Reason]:
    out: list[Reason] = []
    if s["vehicle.outside_home_region"]:
        long_stay = s["vehicle.outside_home_region_for"] >= DAY
        out.append(
            Reason(
                "vehicle",
                "outside_home_region",
                12 if long_stay else 8,
                "outside home region" + (" for over a day" if long_stay else ""),
            )
        )
    kind = s["vehicle.risk_place_kind"]
    if kind:
        points = {"second_pledge_lot": 15, "pawn_shop": 12, "used_car_market": 10}.get(kind, 6)
        out.append(Reason("vehicle", "at_risk_place", points, f"at a {kind}"))
    elif s["vehicle.risk_place_visits"] > 0:
        out.append(Reason("vehicle", "risk_place_visits", 5, "visited a risk place in 30 days"))
    if s["vehicle.stationary_for"] >= 3 * DAY and not s["vehicle.at_usual_place"]:
        out.append(Reason("vehicle", "parked_unusual", 5, "parked 3+ days at an unusual place"))
    return out


def _tracker(s: Mapping[str, Any]) -> list[Reason]:
    out: list[Reason] = []
    tamper = {"power_cut", "removal", "tamper", "antenna_cut"} & set(s["device.alarms"])
    if tamper:
        out.append(Reason("tracker", "alarm", 12, "alarm: " + ", ".join(sorted(tamper))))
    if s["device.all_offline"]:
        out.append(Reason("tracker", "all_offline", 10, "all trackers offline"))
    elif s["devices.silent_kind"]:
        out.append(Reason("tracker", "one_silent", 8, f"{s['devices.silent_kind']} tracker silent"))
    if s["devices.separated_km"] >= 1.0:
        out.append(Reason("tracker", "separated", 10, "wired and wireless trackers apart"))
    return out


def risk_score(signals: Mapping[str, Any]) -> RiskScore:
    """Score from the state variables (the same flat map rule conditions read)."""
    reasons: list[Reason] = []
    total = 0
    for family, rule in (
        ("payment", _payment),
        ("contact", _contact),
        ("vehicle", _vehicle),
        ("tracker", _tracker),
    ):
        found = rule(signals)
        total += min(FAMILY_CAPS[family], sum(r.points for r in found))
        reasons.extend(found)
    reasons.sort(key=lambda r: -r.points)
    return RiskScore(min(100, total), tuple(reasons))
