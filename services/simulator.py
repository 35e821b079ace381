"""A deterministic simulator of a used-car loan portfolio: loans, GPS pings, payments, contacts.

One generator core (`Simulation`) and several sinks:

- recordings for backtests (`simulate_recording`, DESIGN §4 lines in arrival order, plus labels);
- Kafka for demos (`produce_records`, paced by a rate and/or mapped onto the wall clock);
- `mixed_stream`, a fast flat stream of serialized records for benchmarks.

Everything is seeded: each loan draws from its own `random.Random(f"{seed}:{index}:...")`, so the
same seed gives byte-identical output, and a loan depends only on the seed, its index and its
scenario, not on how many other loans are simulated alongside it.

Values are built as plain dicts in the shape of the `rules.events` models (and checked against
them by the tests) rather than as model instances: constructing a pydantic model per ping would
make the generator, not the system under test, the bottleneck of a benchmark.
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import orjson

from rules.events import (
    Alarm,
    Channel,
    DeviceKind,
    Fix,
    Label,
    LoanStatus,
    Outcome,
    Party,
    PaymentType,
)
from rules.places import Place, PlaceKind, load_places

# Asia/Shanghai has been UTC+8 all year since 1991 (no DST): a fixed offset is exact and much
# faster to format than a ZoneInfo.
CN_TZ = timezone(timedelta(hours=8))
TIMEZONE_NAME = "Asia/Shanghai"
DEFAULT_START = datetime(2026, 3, 2, tzinfo=CN_TZ)  # a Monday
DAY = 86_400.0
HOUR = 3_600.0
EARTH_RADIUS_KM = 6371.0088
KM_PER_DEG_LAT = 111.32

# --------------------------------------------------------------------------------------------
# Geography


@dataclass(frozen=True, slots=True)
class City:
    name: str
    lat: float
    lon: float
    plate_prefix: str = ""


PORTFOLIO_CITIES: tuple[City, ...] = (
    City("Chengdu", 30.66, 104.06, "川A"),
    City("Shenzhen", 22.54, 114.06, "粤B"),
    City("Zhengzhou", 34.75, 113.62, "豫A"),
)

# Where an absconding car is driven to: real cities, so the track stays on land.
DESTINATION_CITIES: tuple[City, ...] = (
    City("Chongqing", 29.56, 106.55),
    City("Guiyang", 26.65, 106.63),
    City("Kunming", 25.04, 102.71),
    City("Xi'an", 34.34, 108.94),
    City("Lanzhou", 36.06, 103.83),
    City("Guangzhou", 23.13, 113.26),
    City("Changsha", 28.23, 112.94),
    City("Nanning", 22.82, 108.37),
    City("Xiamen", 24.48, 118.09),
    City("Nanchang", 28.68, 115.86),
    City("Wuhan", 30.59, 114.31),
    City("Hefei", 31.82, 117.23),
    City("Jinan", 36.65, 117.12),
    City("Taiyuan", 37.87, 112.55),
    City("Shijiazhuang", 38.04, 114.51),
    City("Beijing", 39.90, 116.41),
)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def offset_km(lat: float, lon: float, north_km: float, east_km: float) -> tuple[float, float]:
    """The point `north_km`/`east_km` away (flat-earth approximation, fine below ~100 km)."""
    return (
        lat + north_km / KM_PER_DEG_LAT,
        lon + east_km / (KM_PER_DEG_LAT * math.cos(math.radians(lat))),
    )


def _bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return (math.degrees(math.atan2(y, x)) + 360.0) % 360.0


def _toward(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    b = math.radians(bearing_deg)
    return offset_km(lat, lon, km * math.cos(b), km * math.sin(b))


# --------------------------------------------------------------------------------------------
# Risk places (二押点, pawn shops, used-car markets): the rule engine's `rules.places.Place`


_GENERATED_PLACE_NAMES = {
    PlaceKind.SECOND_PLEDGE_LOT: "{city}{n}号二押停车场（模拟）",
    PlaceKind.PAWN_SHOP: "{city}{n}号典当行（模拟）",
    PlaceKind.USED_CAR_MARKET: "{city}{n}号二手车市场（模拟）",
}
# The rule catalog's place list (a directory of .csv / .geojson files).
CATALOG_PLACES = Path(__file__).resolve().parent.parent / "rules" / "catalog" / "places"


def generate_places(seed: int, cities: Sequence[City] = PORTFOLIO_CITIES) -> tuple[Place, ...]:
    """Plausible risk places 5–25 km from each city centre, two of each kind per city."""
    places: list[Place] = []
    for city in cities:
        rng = random.Random(f"{seed}:places:{city.name}")
        for kind, pattern in _GENERATED_PLACE_NAMES.items():
            for n in (1, 2):
                lat, lon = _toward(city.lat, city.lon, rng.uniform(0, 360), rng.uniform(5, 25))
                places.append(
                    Place(
                        id=f"sim-{city.name.lower()}-{kind.value}-{n}",
                        kind=kind,
                        name=pattern.format(city=city.name, n=n),
                        lat=round(lat, 6),
                        lon=round(lon, 6),
                        radius_m=round(rng.uniform(150, 400)),
                    )
                )
    return tuple(places)


def catalog_places(path: Path = CATALOG_PLACES) -> tuple[Place, ...]:
    """The catalog's risk places (file or directory), or none if it has no place list yet."""
    if not path.exists():
        return ()
    return load_places(path).places


def write_places_csv(places: Iterable[Place], path: Path) -> None:
    """A place file `rules.places.load_places` reads (the catalog's CSV columns)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "kind", "name", "lat", "lon", "radius_m"))
        for p in places:
            writer.writerow((p.id, p.kind.value, p.name, p.lat, p.lon, p.radius_m))


def _places_near(places: Sequence[Place], city: City, within_km: float = 80.0) -> list[Place]:
    """Where a borrower would take the car: not impound lots (that is the lender taking it)."""
    return [
        p
        for p in places
        if p.kind is not PlaceKind.IMPOUND_LOT
        and distance_km(p.lat, p.lon, city.lat, city.lon) <= within_km
    ]


# --------------------------------------------------------------------------------------------
# Scenarios and configuration


class Scenario(StrEnum):
    PUNCTUAL = "punctual"
    LATE_PAYER = "late_payer"
    # Noise that must not alert.
    BORDER_DRIFT = "border_drift"
    SHORT_TRIP = "short_trip"
    MISSED_CALL = "missed_call_then_reached"
    TRACKER_GAP = "tracker_gap_backfill"
    WIRELESS_ONLY = "wireless_only"  # a punctual borrower whose car has only a wireless tracker
    TRAVELLER = "traveller"  # business trips of 2–5 days to another city
    SEASONAL_WORKER = "seasonal_worker"  # works in another city for about a month
    HOLIDAY_TRIP = "holiday_trip"  # drives to the home town for a public holiday (春节, 劳动节…)
    REPAIR_SHOP = "repair_shop_near_risk_place"  # 1–3 days at a garage next to a risk place
    CAR_WASH = "car_wash_near_risk_place"  # weekly half-hour stops next to a risk place
    UNDERGROUND_GARAGE = "underground_garage"  # parks underground at work: no fix, buffered
    TRACKER_REBOOT = "tracker_reboot"  # the wired tracker reboots to its factory position
    BUFFERED_ALARM = "buffered_alarm"  # dead-zone buffers uploaded late, carrying old alarms
    PAYMENT_REVERSAL = "payment_reversal"  # a payment bounces, then is paid again
    CHANGED_PHONE = "changed_phone"  # the number goes invalid; reached again on a new one
    GUARANTOR_ANSWERS = "guarantor_answers"  # borrower dark for days; the guarantor pays
    CLOSED = "closed"  # paid off mid-window, then the trackers are removed
    CHARGED_OFF = "charged_off"  # written off before the window: in recovery, not an alert
    # Skips: the loan becomes unreachable at a labelled time.
    SKIP_OUT_OF_REGION = "skip_missed_unreachable_out_of_region"
    SKIP_TRACKER_CUT = "skip_tracker_cut_at_risk_place"
    SKIP_RISK_PLACE_DWELL = "skip_risk_place_dwell"
    SKIP_SEPARATED = "skip_trackers_separated"
    SKIP_OFFLINE_OUT_OF_REGION = "skip_offline_out_of_region"
    SKIP_FRAUD_RING = "skip_fraud_ring"  # several financed cars gathered at one lot

    @property
    def is_skip(self) -> bool:
        return self in SKIP_SCENARIOS


SKIP_SCENARIOS: tuple[Scenario, ...] = (
    Scenario.SKIP_OUT_OF_REGION,
    Scenario.SKIP_TRACKER_CUT,
    Scenario.SKIP_RISK_PLACE_DWELL,
    Scenario.SKIP_SEPARATED,
    Scenario.SKIP_OFFLINE_OUT_OF_REGION,
    Scenario.SKIP_FRAUD_RING,
)
NOISE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario.BORDER_DRIFT,
    Scenario.SHORT_TRIP,
    Scenario.MISSED_CALL,
    Scenario.TRACKER_GAP,
    Scenario.WIRELESS_ONLY,
    Scenario.TRAVELLER,
    Scenario.SEASONAL_WORKER,
    Scenario.HOLIDAY_TRIP,
    Scenario.REPAIR_SHOP,
    Scenario.CAR_WASH,
    Scenario.UNDERGROUND_GARAGE,
    Scenario.TRACKER_REBOOT,
    Scenario.BUFFERED_ALARM,
    Scenario.PAYMENT_REVERSAL,
    Scenario.CHANGED_PHONE,
    Scenario.GUARANTOR_ANSWERS,
    Scenario.CLOSED,
    Scenario.CHARGED_OFF,
)
# Where a tracker reboots to before its first fix: the vendor's factory default, or 0/0.
_FACTORY_POSITIONS = {
    "concox": (22.5769, 113.9213),
    "jimi": (22.5431, 114.0579),
    "huabao": (0.0, 0.0),
    "seeworld": (23.1291, 113.2644),
}
# Public holidays (first day, days) around which borrowers drive to their home towns.
HOLIDAYS: tuple[tuple[date, int], ...] = (
    (date(2026, 2, 15), 9),  # 春节
    (date(2026, 4, 4), 3),  # 清明
    (date(2026, 5, 1), 5),  # 劳动节
    (date(2026, 6, 19), 3),  # 端午
    (date(2026, 10, 1), 7),  # 国庆
    (date(2027, 2, 5), 9),  # 春节
)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    loans: int = 200
    days: float = 30.0
    seed: int = 1
    start: datetime = DEFAULT_START
    skip_fraction: float = 0.05
    late_fraction: float = 0.10
    noise_fraction: float = 0.30
    # Per record: re-sent with the same event_id / delivered up to two minutes late.
    duplicate_rate: float = 0.002
    out_of_order_rate: float = 0.005
    # Risk places to park skipping cars at; None: generated near each city.
    places: tuple[Place, ...] | None = None
    cities: tuple[City, ...] = PORTFOLIO_CITIES

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.loans < 0 or self.days <= 0:
            raise ValueError("loans must be >= 0 and days > 0")
        fractions = (self.skip_fraction, self.late_fraction, self.noise_fraction)
        if any(not 0.0 <= f <= 1.0 for f in fractions) or sum(fractions) > 1.0:
            raise ValueError("skip, late and noise fractions must be in [0, 1] and sum to <= 1")
        if not self.cities:
            raise ValueError("at least one city is needed")


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record of the simulation: unprefixed topic, key, value, and its two times."""

    topic: str
    key: str
    value: dict[str, Any]
    event_time: float  # epoch seconds: when it happened
    arrival: float  # epoch seconds: when it reaches Kafka (later for backfill and delays)

    def value_bytes(self) -> bytes:
        return orjson.dumps(self.value)

    def line(self) -> bytes:
        """The DESIGN §4 recording line (without the newline)."""
        return orjson.dumps({"topic": self.topic, "value": self.value})


def format_ts(epoch_s: float) -> str:
    """RFC 3339 with the +08:00 offset, whole seconds (what trackers and loan systems send)."""
    return datetime.fromtimestamp(int(epoch_s), CN_TZ).isoformat()


# --------------------------------------------------------------------------------------------
# Borrowers and vehicles

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于"
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰涛明超华平刚桂英辉鹏飞玲霞斌波宇浩凯健俊帆琳婷雪梅兰峰亮建国志红"
)
_PHONE_PREFIXES: tuple[str, ...] = (
    "130",
    "131",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
)
_PHONE_PREFIXES += ("158", "159", "166", "176", "177", "180", "181", "186", "187", "189")
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # ISO 3779: no I, O, Q
_VIN_VALUE = {
    c: v for v, cs in enumerate(("", "AJ", "BKS", "CLT", "DMU", "ENV", "FW", "GPX")) for c in cs
}
_VIN_VALUE.update({"H": 8, "Y": 8, "R": 9, "Z": 9})
_VIN_VALUE.update({str(d): d for d in range(10)})
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_CHINESE_WMIS = ("LSV", "LFV", "LGB", "LVS", "LHG", "LVG", "LBV", "LGX", "LGW", "LZW")
_MODEL_YEARS = "CDEFGHJKLMN"  # 2012–2022: used cars
_PLATE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_WIRED_VENDORS = ("concox", "jimi", "huabao", "seeworld")
# Manual payers called before a due date (还款提醒), and the share of those calls answered.
REMINDER_CALLED, REMINDER_ANSWERED = 0.4, 0.7
# A wireless wake-up without coverage: lost until the next configured hour, or retried.
WIRELESS_LOST, WIRELESS_RETRIED = 0.02, 0.05
_WIRELESS_VENDORS = ("jimi-wl", "seeworld-wl", "thinkrace")


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 / GB 16735 check character (position 9) of a 17-character VIN."""
    total = sum(_VIN_VALUE[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def _vin(rng: random.Random) -> str:
    body = (
        rng.choice(_CHINESE_WMIS)
        + "".join(rng.choice(_VIN_CHARS) for _ in range(5))
        + "0"
        + rng.choice(_MODEL_YEARS)
        + rng.choice(_VIN_CHARS)
        + "".join(rng.choice("0123456789") for _ in range(6))
    )
    return body[:8] + vin_check_digit(body) + body[9:]


def _name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))


def _phone(rng: random.Random) -> str:
    return f"+86 {rng.choice(_PHONE_PREFIXES)}{rng.randrange(10**8):08d}"


def _plate(rng: random.Random, prefix: str) -> str:
    # "川A·12345" written without the dot; a letter or two in the serial, as real plates have.
    serial = [rng.choice("0123456789") for _ in range(5)]
    for _ in range(rng.choice((0, 1, 1, 2))):
        serial[rng.randrange(5)] = rng.choice(_PLATE_CHARS[:24])
    return prefix + "".join(serial)


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    return date(day.year + month0 // 12, month0 % 12 + 1, min(day.day, 28))


def _local_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=CN_TZ).timestamp()


def _local_date(epoch_s: float) -> date:
    return datetime.fromtimestamp(epoch_s, CN_TZ).date()


def _circle_polygon(lat: float, lon: float, radius_km: float, sides: int) -> dict[str, Any]:
    ring = []
    for k in range(sides):
        plat, plon = _toward(lat, lon, 360.0 * k / sides, radius_km)
        ring.append([round(plon, 6), round(plat, 6)])  # GeoJSON order: [lon, lat]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


# --------------------------------------------------------------------------------------------
# The plan of one loan: everything decided up front, so labels are known before any event.

_POLYGON_SIDES = 24


@dataclass(slots=True)
class _Plan:
    index: int
    loan_id: str
    scenario: Scenario
    city: City
    value: dict[str, Any]  # the Loan record
    center: tuple[float, float]
    radius_km: float
    inner_radius_km: float  # of the region as drawn (a polygon sits inside its circle)
    home: tuple[float, float]
    work: tuple[float, float]
    wired_id: str
    wireless_id: str | None
    wired_vendor: str
    wireless_vendor: str
    parked_interval_s: float
    wireless_hours: tuple[float, ...]
    home_noise_m: float
    home_fix: Fix
    avoid: list[Place]
    business: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    # Skips and trips.
    departure: float | None = None  # leaves home for the skip trip
    target: tuple[float, float] | None = None
    target_speed_kmh: float = 90.0
    parks_forever: bool = False  # stays at the target (risk place) to the end
    wired_stop: float = math.inf
    wireless_stop: float = math.inf
    # (time, "w"/"x", alarms, battery, where: None = the target)
    alarm_pings: list[tuple[float, str, tuple[Alarm, ...], float, tuple[float, float] | None]] = (
        field(default_factory=list)
    )
    unreachable_at: float | None = None
    missed_due: date | None = None  # the seed case's missed instalment, before it leaves
    trip_days: dict[date, tuple[float, float]] = field(default_factory=dict)
    gaps: list[tuple[float, float, float]] = field(default_factory=list)
    gap_alarms: dict[int, Alarm] = field(default_factory=dict)  # gap index -> buffered alarm
    wireless_only: bool = False
    # Stays away from home: (leave, back or inf, where, parked there rather than living there)
    away: list[tuple[float, float, tuple[float, float], bool]] = field(default_factory=list)
    washes: list[tuple[float, tuple[float, float]]] = field(default_factory=list)  # weekly
    garage_at_work: bool = False  # underground at work: no fix, pings buffered until it leaves
    reboots: list[float] = field(default_factory=list)
    ring: tuple[str, int, int] | None = None  # fraud ring: (group, member, city index)
    closed_at: float | None = None


def _assign_scenarios(config: SimulationConfig) -> list[Scenario]:
    """Exact counts per scenario (fractions of small portfolios still get their skips)."""
    n = config.loans
    order = list(range(n))
    random.Random(f"{config.seed}:portfolio").shuffle(order)
    scenarios = [Scenario.PUNCTUAL] * n
    n_skip = round(n * config.skip_fraction)
    n_late = round(n * config.late_fraction)
    n_noise = min(n - n_skip - n_late, round(n * config.noise_fraction))
    for rank, index in enumerate(order):
        if rank < n_skip:
            scenarios[index] = SKIP_SCENARIOS[rank % len(SKIP_SCENARIOS)]
        elif rank < n_skip + n_late:
            scenarios[index] = Scenario.LATE_PAYER
        elif rank < n_skip + n_late + n_noise:
            scenarios[index] = NOISE_SCENARIOS[(rank - n_skip - n_late) % len(NOISE_SCENARIOS)]
    return scenarios


# Skips whose first act is the car's or a tracker's (parked at a lot, a tracker gone quiet, a
# drive away) while instalments are paid up and no call is due: the borrower goes dark then, but
# is *unreachable* only from the first collection attempt that fails (docs/simulator.md).
LABELLED_AT_FIRST_FAILED = frozenset(
    {
        Scenario.SKIP_RISK_PLACE_DWELL,
        Scenario.SKIP_FRAUD_RING,
        Scenario.SKIP_SEPARATED,
        Scenario.SKIP_OFFLINE_OUT_OF_REGION,
    }
)


def _rings(scenarios: Sequence[Scenario], cities: int) -> dict[int, tuple[str, int, int]]:
    """Fraud-ring loans in groups of two to four, each group in its first member's city:
    index -> (group, member, city index)."""
    members = [i for i, s in enumerate(scenarios) if s is Scenario.SKIP_FRAUD_RING]
    groups = [members[k : k + 4] for k in range(0, len(members), 4)]
    if len(groups) > 1 and len(groups[-1]) == 1:  # no ring of one: it joins the one before
        lone = groups.pop()
        groups[-1].extend(lone)
    return {
        index: (f"ring-{n}", rank, group[0] % cities)
        for n, group in enumerate(groups)
        for rank, index in enumerate(group)
    }


class _Planner:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.start = config.start.timestamp()
        self.end = self.start + config.days * DAY
        self.start_date = _local_date(self.start)
        self.end_date = _local_date(self.end)
        places = config.places if config.places is not None else ()
        generated = generate_places(config.seed, config.cities)
        self.places_by_city = {
            city.name: _places_near(places, city) or _places_near(generated, city)
            for city in config.cities
        }
        self.rings: dict[int, tuple[str, int, int]] = {}
        # Every place the engine must know: the given list and the generated ones it lacked.
        extra = [p for ps in self.places_by_city.values() for p in ps if p not in places]
        self.places: tuple[Place, ...] = (*places, *dict.fromkeys(extra))

    def plan(self, index: int, scenario: Scenario) -> _Plan:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{index}:plan")
        ring = self.rings.get(index)
        city = cfg.cities[ring[2] if ring is not None else index % len(cfg.cities)]
        loan_id = f"loan-{index + 1:06d}"
        radius = float(rng.randint(30, 60))
        center = _toward(city.lat, city.lon, rng.uniform(0, 360), rng.uniform(0, 3))
        polygon = rng.random() < 0.2
        inner = radius * math.cos(math.pi / _POLYGON_SIDES) if polygon else radius
        avoid = self.places_by_city[city.name]
        if scenario is Scenario.BORDER_DRIFT:
            # Parked a few hundred metres inside the border: GPS noise crosses it all night.
            home = _toward(*center, rng.uniform(0, 360), inner - rng.uniform(0.15, 0.4))
        else:
            home = _point_in_region(rng, center, center, (0.5, 12.0), inner, avoid)
        work = _point_in_region(rng, center, home, (3.0, 15.0), inner, avoid)
        has_wireless = scenario is Scenario.SKIP_SEPARATED or rng.random() < 0.7
        # Wireless-only cars: the portfolio's own kind, and some travellers and skips.
        draw = rng.random()
        wireless_only = scenario is Scenario.WIRELESS_ONLY or (
            scenario
            in (
                Scenario.TRAVELLER,
                Scenario.SKIP_OUT_OF_REGION,
                Scenario.SKIP_OFFLINE_OUT_OF_REGION,
                Scenario.SKIP_TRACKER_CUT,
            )
            and draw < 0.3
        )
        has_wireless = has_wireless or wireless_only
        wired_id = f"dev-{index + 1}-w"
        wireless_id = f"dev-{index + 1}-x" if has_wireless else None
        devices = [] if wireless_only else [{"device_id": wired_id, "kind": DeviceKind.WIRED.value}]
        if wireless_id is not None:
            devices.append({"device_id": wireless_id, "kind": DeviceKind.WIRELESS.value})
        region: dict[str, Any] = (
            _circle_polygon(*center, radius, _POLYGON_SIDES)
            if polygon
            else {"center": [round(center[0], 6), round(center[1], 6)], "radius_km": radius}
        )
        schedule = self._schedule(rng, scenario)
        value: dict[str, Any] = {
            "schema_version": 1,
            "loan_id": loan_id,
            "status": "charged_off" if scenario is Scenario.CHARGED_OFF else "active",
            "borrower": {"name": _name(rng), "phone": _phone(rng)},
            "vehicle": {"vin": _vin(rng), "plate": _plate(rng, city.plate_prefix or "川A")},
            "devices": devices,
            "home_region": region,
            "schedule": [
                {"installment_no": no, "due_date": due.isoformat(), "amount": amount}
                for no, due, amount in schedule
            ],
            "timezone": TIMEZONE_NAME,
            # the lender's branch in the borrower's city (routing, silences, queue filters)
            "labels": {"branch": city.name.lower()},
        }
        underground = rng.random() < 0.15
        plan = _Plan(
            index=index,
            loan_id=loan_id,
            scenario=scenario,
            city=city,
            value=value,
            center=center,
            radius_km=radius,
            inner_radius_km=inner,
            home=home,
            work=work,
            wired_id=wired_id,
            wireless_id=wireless_id,
            wired_vendor=rng.choice(_WIRED_VENDORS),
            wireless_vendor=rng.choice(_WIRELESS_VENDORS),
            parked_interval_s=rng.choice((600.0, 900.0, 1200.0, 1800.0)),
            wireless_hours=tuple(
                sorted(
                    rng.sample(
                        (7.5, 9.0, 12.0, 15.0, 19.0, 21.5),
                        rng.choice((1, 2, 3)) if wireless_only else 3,
                    )
                )
            ),
            home_noise_m=250.0 if scenario is Scenario.BORDER_DRIFT else 8.0,
            home_fix=Fix.LBS if underground and scenario is not Scenario.BORDER_DRIFT else Fix.GPS,
            avoid=avoid,
            wireless_only=wireless_only,
            ring=ring,
        )
        if wireless_only:
            plan.wired_stop = -math.inf  # no wired tracker: it never reports
        if underground and plan.home_fix is Fix.LBS:
            plan.home_noise_m = 120.0  # cell-tower fix in an underground garage
        self._behave(plan, rng, schedule)
        return plan

    def _schedule(self, rng: random.Random, scenario: Scenario) -> list[tuple[int, date, float]]:
        # Loans funded in the month before the window: the first instalment falls inside it, so
        # no instalment before the window is left without a payment event.
        latest = 30
        if scenario is Scenario.SKIP_OUT_OF_REGION:
            # The seed case needs an instalment to miss, with days left to see what follows.
            latest = max(1, min(30, (_local_date(self.end - 4.5 * DAY) - self.start_date).days))
        first_due = self.start_date + timedelta(days=rng.randint(1, latest))
        count = rng.choice((12, 18, 24, 36))
        principal = rng.randrange(40_000, 200_000, 1000)
        amount = round(principal * (1 + 0.012 * count) / count, 2)
        return [(no + 1, _add_months(first_due, no), amount) for no in range(count)]

    # -- behaviour ------------------------------------------------------------------------

    def _behave(
        self, plan: _Plan, rng: random.Random, schedule: list[tuple[int, date, float]]
    ) -> None:
        in_window = [s for s in schedule if self.start_date <= s[1] <= self.end_date]
        scenario = plan.scenario
        if scenario.is_skip and not self._plan_skip(plan, rng, in_window):
            # Window too short for this skip: one that needs no missed instalment, or none.
            scenario = plan.scenario = Scenario.SKIP_TRACKER_CUT
            if not self._plan_skip(plan, rng, in_window):
                scenario = plan.scenario = Scenario.PUNCTUAL
        if scenario is Scenario.SHORT_TRIP:
            self._plan_trips(plan, rng)
        elif scenario in (Scenario.TRACKER_GAP, Scenario.BUFFERED_ALARM):
            self._plan_gaps(plan, rng)
            if scenario is Scenario.BUFFERED_ALARM:
                # Alarms raised in the dead zone come up with the buffer, long after the fact:
                # a jump-start's power cut, a knock, a low battery; all over by upload time.
                for n in range(len(plan.gaps)):
                    plan.gap_alarms[n] = rng.choice(
                        (Alarm.POWER_CUT, Alarm.VIBRATION, Alarm.LOW_BATTERY, Alarm.POWER_CUT)
                    )
        elif scenario in (Scenario.TRAVELLER, Scenario.SEASONAL_WORKER, Scenario.HOLIDAY_TRIP):
            self._plan_away(plan, rng)
        elif scenario is Scenario.REPAIR_SHOP:
            self._plan_repair(plan, rng)
        elif scenario is Scenario.CAR_WASH:
            self._plan_washes(plan, rng)
        elif scenario is Scenario.UNDERGROUND_GARAGE:
            plan.garage_at_work = True
        elif scenario is Scenario.TRACKER_REBOOT:
            span = self.end - self.start
            plan.reboots = sorted(
                self.start + rng.uniform(0.05, 0.95) * span for _ in range(rng.randint(1, 3))
            )
        elif scenario is Scenario.CLOSED:
            self._plan_closure(plan, rng)
        self._plan_business(plan, rng, in_window)
        plan.business.sort(key=lambda item: item[0])

    def _day_time(self, rng: random.Random, day: date, hours: tuple[float, float]) -> float:
        return _local_midnight(day) + rng.uniform(*hours) * HOUR

    def _plan_skip(
        self, plan: _Plan, rng: random.Random, in_window: list[tuple[int, date, float]]
    ) -> bool:
        span = self.end - self.start
        if span < 2 * DAY:
            return False
        scenario = plan.scenario
        if scenario is Scenario.SKIP_OUT_OF_REGION:
            # The seed case: an instalment is missed first, then the car leaves 1–3 days later.
            # Calls fail for a day or two before it goes.
            missed = [s for s in in_window if _local_midnight(s[1]) + 4.5 * DAY < self.end]
            if not missed:
                return False
            plan.missed_due = rng.choice(missed)[1]
            day = plan.missed_due + timedelta(days=rng.randint(2, 3))
        else:
            # Labelled at the first failed call (2–24 h after the act, in calling hours): leave
            # room for it before the window ends, or the label would fall outside the run.
            room = 3.0 if scenario in LABELLED_AT_FIRST_FAILED else 1.5
            first = self.start_date + timedelta(days=max(1, int(0.2 * span / DAY)))
            last = _local_date(self.end - room * DAY)
            day = first + timedelta(days=rng.randint(0, max(0, (last - first).days)))
        if scenario is Scenario.SKIP_FRAUD_RING:
            # The ring's cars arrive at one lot within a day and a half of each other.
            assert plan.ring is not None
            group, member, _ = plan.ring
            ring_rng = random.Random(f"{self.config.seed}:ring:{group}")
            lots = [p for p in plan.avoid if p.kind is PlaceKind.SECOND_PLEDGE_LOT] or plan.avoid
            place = ring_rng.choice(lots)
            first = self.start_date + timedelta(days=max(1, int(0.2 * span / DAY)))
            last = _local_date(self.end - 4.0 * DAY)  # + a day for the last member's arrival
            ring_day = first + timedelta(days=ring_rng.randint(0, max(0, (last - first).days)))
            day = ring_day + timedelta(days=min(member, 1) * rng.randint(0, 1))
        if scenario in (
            Scenario.SKIP_TRACKER_CUT,
            Scenario.SKIP_RISK_PLACE_DWELL,
            Scenario.SKIP_FRAUD_RING,
        ):
            if scenario is not Scenario.SKIP_FRAUD_RING:
                place = rng.choice(plan.avoid)
            plan.target = _toward(place.lat, place.lon, rng.uniform(0, 360), place.radius_m / 3e3)
            plan.target_speed_kmh = rng.uniform(30, 45)
            plan.parks_forever = True
            dur = self._drive_s(plan.home, plan.target, plan.target_speed_kmh)
            plan.departure = self._day_time(rng, day, (8.0, 20.0))
            arrival = plan.departure + dur
            if scenario is Scenario.SKIP_RISK_PLACE_DWELL:
                plan.unreachable_at = arrival
            elif scenario is Scenario.SKIP_FRAUD_RING:
                plan.unreachable_at = arrival
                if rng.random() < 0.5:  # the lot's own people take the wired tracker out
                    cut = arrival + rng.uniform(2.0, 10.0) * HOUR
                    plan.wired_stop = cut
                    plan.alarm_pings.append((cut, "w", (Alarm.POWER_CUT,), 95.0, None))
            elif plan.wireless_only:
                # Only a wireless tracker to find: it is pulled out and goes silent.
                assert plan.wireless_id is not None
                removed = arrival + rng.uniform(0.5, 5.0) * HOUR
                plan.unreachable_at = removed
                plan.alarm_pings.append((removed, "x", (Alarm.REMOVAL,), 40.0, None))
                plan.wireless_stop = removed + 1.0
            else:
                cut = arrival + rng.uniform(0.5, 5.0) * HOUR
                plan.unreachable_at = cut
                plan.wired_stop = cut  # from here on only the alarm pings below
                # Trackers keep a backup battery: a few alarm pings after the main power goes.
                for k, battery in enumerate((96.0, 91.0, 85.0)):
                    plan.alarm_pings.append(
                        (cut + 300.0 * k, "w", (Alarm.POWER_CUT,), battery, None)
                    )
                if plan.wireless_id is not None and rng.random() < 0.6:
                    removed = cut + rng.uniform(10, 60) * 60
                    plan.alarm_pings.append((removed, "x", (Alarm.REMOVAL,), 40.0, None))
                    plan.wireless_stop = removed + 1.0
            return True
        # Far away: another city 150–700 km off (a day's drive at most).
        dest = rng.choice(
            [
                c
                for c in DESTINATION_CITIES
                if 150 <= distance_km(c.lat, c.lon, *plan.home) <= 700 and c.name != plan.city.name
            ]
        )
        plan.target = _toward(dest.lat, dest.lon, rng.uniform(0, 360), rng.uniform(1, 6))
        plan.target_speed_kmh = rng.uniform(80, 105)
        dur = self._drive_s(plan.home, plan.target, plan.target_speed_kmh)
        latest = max(6.0, 23.0 - dur / HOUR)
        if scenario is Scenario.SKIP_SEPARATED:
            # The wired tracker is cut at home first; the wireless one shows where the car goes.
            cut = self._day_time(rng, day, (6.0, max(6.5, latest - 4.0)))
            plan.wired_stop = cut
            plan.unreachable_at = cut
            plan.departure = cut + rng.uniform(1.0, min(4.0, max(1.0, latest - 6.0))) * HOUR
            return True
        plan.departure = self._day_time(rng, day, (6.0, max(6.5, latest)))
        plan.unreachable_at = self._crossing(plan, plan.departure, dur)
        if scenario is Scenario.SKIP_OFFLINE_OUT_OF_REGION:
            silent = plan.departure + dur + rng.uniform(1.0, 6.0) * HOUR
            plan.wired_stop = min(plan.wired_stop, silent)
            plan.wireless_stop = silent
        return True

    def _crossing(self, plan: _Plan, departure: float, duration: float) -> float:
        """When the straight drive from home to the target leaves the region (bisection)."""
        assert plan.target is not None
        lo, hi = 0.0, 1.0
        (lat0, lon0), (lat1, lon1) = plan.home, plan.target
        for _ in range(30):
            mid = (lo + hi) / 2
            lat, lon = lat0 + (lat1 - lat0) * mid, lon0 + (lon1 - lon0) * mid
            if distance_km(lat, lon, *plan.center) <= plan.inner_radius_km:
                lo = mid
            else:
                hi = mid
        return departure + duration * hi

    @staticmethod
    def _drive_s(a: tuple[float, float], b: tuple[float, float], speed_kmh: float) -> float:
        """How long `_Route.drive` takes (the same road factor), so labels match the track."""
        return max(300.0, distance_km(*a, *b) * _road_factor(speed_kmh) / speed_kmh * HOUR)

    def _plan_trips(self, plan: _Plan, rng: random.Random) -> None:
        """One to three day trips 15–50 km beyond the border, home the same evening."""
        days = max(1, int((self.end - self.start) / DAY))
        for _ in range(rng.randint(1, 3)):
            day = self.start_date + timedelta(days=rng.randrange(days))
            dest = rng.choice(DESTINATION_CITIES)
            bearing = _bearing(*plan.center, dest.lat, dest.lon)
            out = _toward(*plan.center, bearing, plan.radius_km + rng.uniform(15, 50))
            plan.trip_days[day] = out

    def _destination(
        self, plan: _Plan, rng: random.Random, km: tuple[float, float]
    ) -> tuple[float, float]:
        """A point in a real city `km` away from home (the nearest band that has one)."""
        cities = [
            c
            for c in DESTINATION_CITIES
            if km[0] <= distance_km(c.lat, c.lon, *plan.home) <= km[1] and c.name != plan.city.name
        ]
        if not cities:
            cities = sorted(DESTINATION_CITIES, key=lambda c: distance_km(c.lat, c.lon, *plan.home))
            cities = cities[len(cities) // 2 :]
        dest = rng.choice(cities)
        return _toward(dest.lat, dest.lon, rng.uniform(0, 360), rng.uniform(1, 6))

    def _plan_away(self, plan: _Plan, rng: random.Random) -> None:
        """Travellers (2–5 day trips), seasonal workers (about a month), holiday trips."""
        span_days = max(1, int((self.end - self.start) / DAY))
        trips: list[tuple[date, float]] = []
        if plan.scenario is Scenario.HOLIDAY_TRIP:
            holiday = next(
                (
                    (first, n)
                    for first, n in HOLIDAYS
                    if self.start_date < first and _local_midnight(first) + n * DAY < self.end
                ),
                None,
            )
            if holiday is not None:  # leave the day before, back on the last day or just after
                trips.append((holiday[0] - timedelta(days=1), holiday[1] + rng.randint(0, 2)))
            else:  # annual leave taken at another time
                trips.append(
                    (self.start_date + timedelta(days=rng.randrange(span_days)), rng.randint(5, 9))
                )
            km = (300.0, 1200.0)
        elif plan.scenario is Scenario.SEASONAL_WORKER:
            first = self.start_date + timedelta(days=rng.randint(1, max(1, span_days // 3)))
            trips.append((first, rng.randint(25, 35)))
            km = (300.0, 1200.0)
        else:
            day = self.start_date + timedelta(days=rng.randint(0, 3))
            for _ in range(rng.randint(1, 3)):
                length = rng.randint(2, 5)
                trips.append((day, length))
                day += timedelta(days=length + rng.randint(3, 10))
            km = (150.0, 700.0)
        for first, days in trips:
            leave = self._day_time(rng, first, (6.0, 10.0))
            back = leave + days * DAY + rng.uniform(-2, 4) * HOUR
            plan.away.append((leave, back, self._destination(plan, rng, km), False))

    def _near_place(self, plan: _Plan, rng: random.Random) -> tuple[float, float]:
        """A business next to a risk place: 0.5–2 radii from its centre (a third inside it)."""
        place = rng.choice(plan.avoid)
        return _toward(
            place.lat, place.lon, rng.uniform(0, 360), place.radius_m / 1e3 * rng.uniform(0.5, 2)
        )

    def _plan_repair(self, plan: _Plan, rng: random.Random) -> None:
        """1–3 days at a garage next to a risk place; the mechanic often disconnects the
        battery (the wired tracker's power-cut alarm, then it runs on its backup battery)."""
        span = self.end - self.start
        shop = self._near_place(plan, rng)
        leave = self._day_time(
            rng, _local_date(self.start + rng.uniform(0.1, 0.7) * span), (8.0, 15.0)
        )
        back = leave + rng.uniform(1.0, 3.0) * DAY
        plan.away.append((leave, back, shop, True))
        if rng.random() < 0.6:
            cut = leave + rng.uniform(1.0, 4.0) * HOUR
            plan.alarm_pings.append((cut, "w", (Alarm.POWER_CUT,), 97.0, shop))

    def _plan_washes(self, plan: _Plan, rng: random.Random) -> None:
        """A car wash next to a risk place, about weekly, 20–40 minutes."""
        wash = self._near_place(plan, rng)
        day = self.start_date + timedelta(days=rng.randint(0, 6))
        while _local_midnight(day) < self.end:
            t = self._day_time(rng, day, (8.0, 19.0))
            plan.away.append((t, t + rng.uniform(20, 40) * 60, wash, True))
            day += timedelta(days=rng.randint(5, 9))

    def _plan_closure(self, plan: _Plan, rng: random.Random) -> None:
        """Paid off early: the loan record turns `closed`; a day or so later the trackers are
        taken out (removal alarms, then silence) and the car goes wherever its owner likes."""
        span = self.end - self.start
        closed = self._day_time(
            rng, _local_date(self.start + rng.uniform(0.2, 0.6) * span), (9, 17)
        )
        plan.business.append(
            (float(int(closed)), "loans", {**plan.value, "status": LoanStatus.CLOSED.value})
        )
        plan.closed_at = closed
        removed = closed + rng.uniform(2, 30) * HOUR
        if not plan.wireless_only:
            plan.alarm_pings.append((removed, "w", (Alarm.REMOVAL,), 90.0, plan.home))
            plan.wired_stop = removed + 1
        if plan.wireless_id is not None:
            plan.alarm_pings.append((removed + 120, "x", (Alarm.REMOVAL,), 60.0, plan.home))
            plan.wireless_stop = removed + 121
        plan.away.append(
            (removed + DAY, removed + 4 * DAY, self._destination(plan, rng, (150, 700)), False)
        )

    def _plan_gaps(self, plan: _Plan, rng: random.Random) -> None:
        """Coverage gaps of 1–6 h: the wired tracker buffers its fixes and uploads them later.

        A gap is (start, end, upload): back in coverage the tracker goes on reporting live and
        sends the buffer (JT/T 808 0x0704) minutes after its next scheduled report, so the old
        pings arrive after newer ones.
        """
        for _ in range(rng.randint(1, 3)):
            g0 = rng.uniform(self.start, self.end - 7 * HOUR)
            g1 = g0 + rng.uniform(1.0, 6.0) * HOUR
            plan.gaps.append((g0, g1, g1 + plan.parked_interval_s + rng.uniform(60, 300)))
        plan.gaps.sort()

    # -- payments and contacts ------------------------------------------------------------

    def _plan_business(
        self, plan: _Plan, rng: random.Random, in_window: list[tuple[int, date, float]]
    ) -> None:
        counter = iter(range(1, 10_000))
        auto_debit = rng.random() < 0.4
        announces_due = rng.random() < 0.5
        scenario = plan.scenario
        gone_at = plan.unreachable_at if plan.unreachable_at is not None else math.inf

        def pay(
            t: float, kind: PaymentType, no: int, due: date, amount: float, again: str = ""
        ) -> None:
            if self.start <= t < self.end:
                value = {
                    "schema_version": 1,
                    "event_id": f"{plan.loan_id}-p{no}-{kind.value}{again}",
                    "loan_id": plan.loan_id,
                    "ts": format_ts(t),
                    "type": kind.value,
                    "installment_no": no,
                    "amount": amount,
                    "currency": "CNY",
                    "due_date": due.isoformat(),
                }
                plan.business.append((float(int(t)), "payments", value))

        def contact(t: float, party: Party, channel: Channel, outcome: Outcome) -> None:
            if self.start <= t < self.end:
                value = {
                    "schema_version": 1,
                    "event_id": f"{plan.loan_id}-c{next(counter)}",
                    "loan_id": plan.loan_id,
                    "ts": format_ts(t),
                    "party": party.value,
                    "channel": channel.value,
                    "outcome": outcome.value,
                }
                plan.business.append((float(int(t)), "contacts", value))

        special = rng.choice(in_window)[0] if in_window else None  # the instalment a case is about
        for no, due, amount in in_window:
            midnight = _local_midnight(due)
            if plan.closed_at is not None and midnight > plan.closed_at:
                break  # paid off: nothing falls due any more
            if announces_due:
                pay(midnight + 300, PaymentType.INSTALLMENT_DUE, no, due, amount)
            if scenario is Scenario.CHARGED_OFF:
                continue  # written off: in recovery, nothing is paid
            if not auto_debit and rng.random() < REMINDER_CALLED:
                # 还款提醒: a reminder call 1–3 days before the due date; some go unanswered and
                # nobody calls back (the borrower pays anyway).
                t = midnight - rng.randint(1, 3) * DAY + rng.uniform(9, 20) * HOUR
                luck = rng.random()
                if luck < REMINDER_ANSWERED:
                    outcome = Outcome.REACHED
                else:
                    outcome = Outcome.BUSY if luck > 0.92 else Outcome.NO_ANSWER
                if t < gone_at:
                    contact(t, Party.BORROWER, Channel.CALL, outcome)
            if scenario is Scenario.GUARANTOR_ANSWERS and no == special:
                # The borrower is in hospital / abroad: dark for days; the guarantor answers
                # every call and pays a few days late.
                paid_at = midnight + rng.randint(3, 6) * DAY + rng.uniform(10, 18) * HOUR
                if auto_debit:
                    pay(midnight + 10 * HOUR, PaymentType.PAYMENT_FAILED, no, due, amount)
                day = midnight + DAY
                while day + 9 * HOUR < paid_at:
                    t = day + rng.uniform(9, 12) * HOUR
                    dark = rng.choice((Outcome.POWERED_OFF, Outcome.NO_ANSWER))
                    contact(t, Party.BORROWER, Channel.CALL, dark)
                    answer = rng.choice((Outcome.REACHED, Outcome.PROMISE_TO_PAY))
                    answered = min(t + rng.uniform(0.5, 3) * HOUR, paid_at - 600)
                    contact(answered, Party.GUARANTOR, Channel.CALL, answer)
                    day += DAY
                pay(paid_at, PaymentType.PAYMENT_RECEIVED, no, due, amount)
                continue
            late = scenario is Scenario.LATE_PAYER and rng.random() < 0.85
            if late:
                paid_at = midnight + rng.randint(2, 7) * DAY + rng.uniform(9, 21) * HOUR
            elif auto_debit:
                paid_at = midnight + 10 * HOUR + rng.uniform(0, 3600)
            else:
                paid_at = midnight - rng.randint(0, 3) * DAY + rng.uniform(9, 22) * HOUR
            paid_at = max(paid_at, self.start + rng.uniform(0, 6) * HOUR)
            skip_missed = paid_at >= gone_at or due == plan.missed_due
            if (late or skip_missed) and auto_debit:
                pay(midnight + 10 * HOUR, PaymentType.PAYMENT_FAILED, no, due, amount)
            if skip_missed:
                continue
            pay(paid_at, PaymentType.PAYMENT_RECEIVED, no, due, amount)
            if scenario is Scenario.PAYMENT_REVERSAL and no == special:
                # The transfer bounces a day or three later; the borrower answers and pays again.
                reversed_at = paid_at + rng.uniform(1, 3) * DAY
                pay(reversed_at, PaymentType.PAYMENT_REVERSED, no, due, amount)
                call = reversed_at + rng.uniform(2, 20) * HOUR
                contact(call, Party.BORROWER, Channel.CALL, Outcome.NO_ANSWER)
                contact(
                    call + rng.uniform(1, 5) * HOUR,
                    Party.BORROWER,
                    Channel.CALL,
                    Outcome.PROMISE_TO_PAY,
                )
                repaid = reversed_at + rng.uniform(2, 5) * DAY
                pay(repaid, PaymentType.PAYMENT_RECEIVED, no, due, amount, again="-2")
            if late:
                self._collect_late(rng, contact, midnight, paid_at)
            elif rng.random() < 0.3:
                contact(midnight - DAY + 10 * HOUR, Party.BORROWER, Channel.SMS, Outcome.DELIVERED)

        if scenario is Scenario.CHANGED_PHONE:
            # A new SIM: the old number is invalid for a few days, then the borrower calls in.
            t = _local_midnight(_local_date(rng.uniform(self.start, self.end - 4 * DAY)))
            dark_days = rng.randint(2, 3)
            for d in range(dark_days):
                for _ in range(rng.randint(1, 2)):
                    call = t + d * DAY + rng.uniform(9, 18) * HOUR
                    contact(call, Party.BORROWER, Channel.CALL, Outcome.NUMBER_INVALID)
                contact(t + d * DAY + 20 * HOUR, Party.BORROWER, Channel.SMS, Outcome.UNDELIVERED)
            back = t + dark_days * DAY + rng.uniform(9, 18) * HOUR
            contact(back, Party.BORROWER, Channel.CALL, Outcome.REACHED)
        if scenario is Scenario.CHARGED_OFF:
            # The recovery team calls weekly and gets nowhere; no alert is wanted for it.
            day = self.start + rng.uniform(0, 7) * DAY
            while day < self.end:
                dark = rng.choice((Outcome.POWERED_OFF, Outcome.NO_ANSWER, Outcome.NUMBER_INVALID))
                contact(day, Party.BORROWER, Channel.CALL, dark)
                day += rng.uniform(6, 8) * DAY
        if scenario is Scenario.MISSED_CALL:
            t = rng.uniform(self.start, self.end - DAY)
            t = _local_midnight(_local_date(t)) + rng.uniform(9, 17) * HOUR
            contact(t, Party.BORROWER, Channel.CALL, Outcome.NO_ANSWER)
            contact(t + rng.uniform(1, 6) * HOUR, Party.BORROWER, Channel.CALL, Outcome.REACHED)
        if plan.departure is not None:
            self._collect_skip(plan, rng, contact)

    @staticmethod
    def _collect_late(
        rng: random.Random,
        contact: Callable[[float, Party, Channel, Outcome], None],
        due_midnight: float,
        paid_at: float,
    ) -> None:
        day = due_midnight + DAY
        first = True
        while day + 9 * HOUR < paid_at:
            t = day + rng.uniform(9, 12) * HOUR
            contact(t, Party.BORROWER, Channel.CALL, rng.choice((Outcome.NO_ANSWER, Outcome.BUSY)))
            if not first or rng.random() < 0.5:
                answer = rng.choice((Outcome.REACHED, Outcome.PROMISE_TO_PAY))
                contact(t + rng.uniform(2, 7) * HOUR, Party.BORROWER, Channel.CALL, answer)
            first = False
            day += DAY * rng.choice((1, 2))

    def _collect_skip(
        self,
        plan: _Plan,
        rng: random.Random,
        contact: Callable[[float, Party, Channel, Outcome], None],
    ) -> None:
        """Daily collection attempts that never reach the borrower again."""
        assert plan.unreachable_at is not None
        if plan.missed_due is not None:
            day = _local_midnight(plan.missed_due) + DAY
        else:
            # Lenders react to a tracker alarm or a missed instalment within a day or so.
            day = _local_midnight(_local_date(plan.unreachable_at + rng.uniform(2, 24) * HOUR))
        attempt = 0
        gone = plan.unreachable_at
        first_failed: float | None = None
        while day < self.end:
            for _ in range(rng.randint(2, 3)):
                t = day + rng.uniform(9, 20) * HOUR
                if plan.missed_due is None and t < gone + 2 * HOUR:
                    continue  # the lender reacts 2–24 h after the act, never before it
                first_failed = t if first_failed is None else min(first_failed, t)
                if attempt == 0:
                    outcome = Outcome.NO_ANSWER
                elif attempt < 4:
                    outcome = rng.choice((Outcome.POWERED_OFF, Outcome.NO_ANSWER))
                else:
                    outcome = rng.choice(
                        (Outcome.POWERED_OFF, Outcome.SUSPENDED, Outcome.NUMBER_INVALID)
                    )
                contact(t, Party.BORROWER, Channel.CALL, outcome)
                attempt += 1
            other = rng.choice((Party.GUARANTOR, Party.EMERGENCY_CONTACT))
            t = day + rng.uniform(14, 19) * HOUR
            outcome = rng.choice((Outcome.NO_ANSWER, Outcome.REJECTED, Outcome.BUSY))
            if plan.missed_due is not None or t >= gone + 2 * HOUR:
                contact(t, other, Channel.CALL, outcome)
            if plan.missed_due is not None or day + 20 * HOUR >= gone + 2 * HOUR:
                contact(day + 20 * HOUR, Party.BORROWER, Channel.SMS, Outcome.UNDELIVERED)
            day += DAY
        # The borrower went dark at `gone` (payments stop, the phone is off), but nobody can
        # tell until someone tries: unreachable from the first attempt that fails.
        in_window = first_failed is not None and first_failed < self.end
        if plan.scenario in LABELLED_AT_FIRST_FAILED and in_window:
            plan.unreachable_at = first_failed


def _point_in_region(
    rng: random.Random,
    center: tuple[float, float],
    near: tuple[float, float],
    km: tuple[float, float],
    inner_radius: float,
    avoid: Sequence[Place],
) -> tuple[float, float]:
    """A point km[0]–km[1] from `near`, well inside the region, away from risk places.

    From a home at the border most such points are outside: then anywhere in the inner half.
    """
    point = center
    for attempt in range(60):
        if attempt < 30:
            point = _toward(*near, rng.uniform(0, 360), rng.uniform(*km))
        else:
            point = _toward(*center, rng.uniform(0, 360), rng.uniform(0, 0.5 * inner_radius))
        inside = distance_km(*point, *center) <= 0.75 * inner_radius
        if inside and all(distance_km(*point, p.lat, p.lon) > 1.5 for p in avoid):
            return point
    return center


# --------------------------------------------------------------------------------------------
# Where the car is: a day at a time, as stays and straight drives.


@dataclass(frozen=True, slots=True)
class _Segment:
    t0: float
    t1: float
    a: tuple[float, float]
    b: tuple[float, float]
    speed_kmh: float  # 0: parked
    noise_m: float
    fix: Fix
    dead: bool = False  # no coverage (underground): no fix; the wired tracker buffers

    def at(self, t: float) -> tuple[float, float]:
        if self.a == self.b:
            return self.a
        f = (t - self.t0) / (self.t1 - self.t0)
        return self.a[0] + (self.b[0] - self.a[0]) * f, self.a[1] + (self.b[1] - self.a[1]) * f


def _road_factor(speed_kmh: float) -> float:
    """Roads are ~30% longer than the straight line in town (~15% between cities): the car
    covers the line slower."""
    return 1.3 if speed_kmh < 60 else 1.15


class _Route:
    """Appends stays and drives from a moving cursor (time, position)."""

    def __init__(self, t: float, pos: tuple[float, float], plan: _Plan) -> None:
        self.t, self.pos, self.plan = t, pos, plan
        self.segments: list[_Segment] = []

    def stay(self, until: float, dead: bool = False) -> None:
        if until > self.t:
            at_home = self.pos == self.plan.home
            noise = self.plan.home_noise_m if at_home else 8.0
            fix = self.plan.home_fix if at_home else Fix.GPS
            if dead:
                noise, fix = 0.0, Fix.NONE
            segment = _Segment(self.t, until, self.pos, self.pos, 0.0, noise, fix, dead)
            self.segments.append(segment)
            self.t = until

    def drive(self, to: tuple[float, float], speed_kmh: float) -> None:
        road = _road_factor(speed_kmh)
        duration = max(300.0, distance_km(*self.pos, *to) * road / speed_kmh * HOUR)
        effective = distance_km(*self.pos, *to) * road / (duration / HOUR)
        self.segments.append(
            _Segment(self.t, self.t + duration, self.pos, to, max(5.0, effective), 10.0, Fix.GPS)
        )
        self.t += duration
        self.pos = to


def _errand(plan: _Plan, rng: random.Random, home: tuple[float, float]) -> tuple[float, float]:
    # Around the current home: after a skip that is the new city, outside the region.
    if home != plan.home:
        return _toward(*home, rng.uniform(0, 360), rng.uniform(2, 15))
    return _point_in_region(rng, plan.center, home, (2.0, 20.0), plan.inner_radius_km, plan.avoid)


def _track(plan: _Plan, rng: random.Random, start: float, end: float) -> Iterator[_Segment]:
    home, work = plan.home, plan.work
    day = _local_date(start)
    route = _Route(_local_midnight(day), home, plan)
    away = sorted(plan.away)
    parked_away = False  # at a garage rather than living elsewhere
    while route.t < end:
        midnight = _local_midnight(day)
        next_midnight = midnight + DAY
        at = midnight
        # A stay away that is under way, or one that starts today.
        current = away[0] if away and away[0][0] < next_midnight else None
        if plan.departure is not None and midnight <= plan.departure < next_midnight:
            assert plan.target is not None
            route.stay(plan.departure)
            route.drive(plan.target, plan.target_speed_kmh)
            if plan.parks_forever:
                route.stay(end)
            else:
                # A new life elsewhere: the car keeps moving, but around the new city.
                home = plan.target
                work = _toward(*home, rng.uniform(0, 360), rng.uniform(3, 10))
        elif current is not None and current[0] >= midnight:
            leave, back, where, parked = current
            route.stay(leave)
            route.drive(where, rng.uniform(25, 45) if parked else rng.uniform(80, 100))
            if back < next_midnight:  # out and back the same day (a car wash): that long there
                route.stay(route.t + (back - leave))
                route.drive(plan.home, rng.uniform(25, 45))
                away.pop(0)
            elif parked:
                parked_away = True
            else:
                home = where
                work = _toward(*home, rng.uniform(0, 360), rng.uniform(3, 10))
        elif current is not None and current[1] < next_midnight:
            _, back, _, _ = current
            route.stay(max(back, at + rng.uniform(7, 10) * HOUR) if not parked_away else back)
            route.drive(plan.home, rng.uniform(25, 45) if parked_away else rng.uniform(80, 100))
            home, work, parked_away = plan.home, plan.work, False
            away.pop(0)
        elif parked_away:
            route.stay(next_midnight)
        elif day in plan.trip_days:
            route.stay(at + rng.uniform(8, 10) * HOUR)
            route.drive(plan.trip_days[day], rng.uniform(70, 95))
            route.stay(route.t + rng.uniform(1, 3) * HOUR)
            route.drive(home, rng.uniform(70, 95))
        elif day.weekday() < 5 and rng.random() < 0.9:
            route.stay(at + rng.uniform(7, 9) * HOUR)
            route.drive(work, rng.uniform(25, 45))
            route.stay(at + rng.uniform(17.5, 19.5) * HOUR, dead=plan.garage_at_work)
            if rng.random() < 0.3:
                route.drive(_errand(plan, rng, home), rng.uniform(25, 45))
                route.stay(route.t + rng.uniform(0.5, 1.5) * HOUR)
            route.drive(home, rng.uniform(25, 45))
        else:
            leave = at + rng.uniform(9, 11) * HOUR
            for _ in range(rng.choice((0, 1, 1, 2))):
                route.stay(leave)
                route.drive(_errand(plan, rng, home), rng.uniform(25, 45))
                route.stay(route.t + rng.uniform(1, 3) * HOUR)
                route.drive(home, rng.uniform(25, 45))
                leave = route.t + rng.uniform(1, 3) * HOUR
                if leave > at + 20 * HOUR:
                    break
        route.stay(next_midnight)
        for segment in route.segments:
            if segment.t1 > start and segment.t0 < end:
                yield segment
        route.segments.clear()
        day += timedelta(days=1)


# --------------------------------------------------------------------------------------------
# The core: per-loan event streams merged by arrival time.

# (event time, topic, key, value, arrival forced by a delayed upload or None)
_Raw = tuple[float, str, str, dict[str, Any], float | None]
_M_PER_DEG = KM_PER_DEG_LAT * 1000.0


def _first(item: _Raw) -> float:
    return item[0]


def _first_of(item: tuple[float, Any, Any, Any, Any]) -> float:
    return item[0]


def _arrival(record: Record) -> float:
    return record.arrival


class Simulation:
    """A planned portfolio: loans, labels and scenarios up front; events generated lazily."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._planner = _Planner(config)
        self.start = self._planner.start
        self.end = self._planner.end
        scenarios = _assign_scenarios(config)
        self._planner.rings = _rings(scenarios, len(config.cities))
        self._plans = [self._planner.plan(i, s) for i, s in enumerate(scenarios)]

    @property
    def places(self) -> tuple[Place, ...]:
        """The risk places of this run: the configured list plus the places generated for the
        cities it does not cover. Give all of them to the engine (``PlaceIndex(sim.places)``,
        or ``write_places_csv`` for `skipwatch backtest --places` and the worker)."""
        return self._planner.places

    @property
    def loans(self) -> list[dict[str, Any]]:
        """Loan record values, in loan order."""
        return [p.value for p in self._plans]

    @property
    def scenarios(self) -> dict[str, Scenario]:
        return {p.loan_id: p.scenario for p in self._plans}

    @property
    def labels(self) -> list[Label]:
        """Ground truth of the skips: one label per skip loan, ordered by when it became
        unreachable, with its kind (the scenario)."""
        return [label for label in self.truth if label.unreachable_at is not None]

    @property
    def truth(self) -> list[Label]:
        """Ground truth of every loan: skips first (by ``unreachable_at``), then the others in
        loan order with ``unreachable_at`` None; ``kind`` is the scenario."""
        labelled = [p for p in self._plans if p.unreachable_at is not None]
        labelled.sort(key=lambda p: (p.unreachable_at, p.loan_id))
        good = [p for p in self._plans if p.unreachable_at is None]
        return [
            Label(
                loan_id=p.loan_id,
                unreachable_at=(
                    datetime.fromtimestamp(int(p.unreachable_at), CN_TZ)
                    if p.unreachable_at is not None
                    else None
                ),
                kind=p.scenario.value,
            )
            for p in (*labelled, *good)
        ]

    def records(self) -> Iterator[Record]:
        """Every record in arrival order: the loans first, then all events interleaved."""
        registered = self.start - 60.0
        for plan in self._plans:
            yield Record("loans", plan.loan_id, plan.value, registered, registered)
        yield from heapq.merge(*(self._events(p) for p in self._plans), key=_arrival)

    def _events(self, plan: _Plan) -> Iterator[Record]:
        """One loan's records in arrival order.

        Arrival is never before event time, so once the next event's time is t, every pending
        record arriving by t is final: a small heap per loan is enough to reorder.
        """
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{plan.index}:delivery")
        pending: list[tuple[float, int, Record]] = []
        seq = 0
        raws = heapq.merge(
            self._pings(plan),
            self._alarm_pings(plan),
            ((t, topic, plan.loan_id, value, None) for t, topic, value in plan.business),
            key=_first,
        )
        for t, topic, key, value, forced in raws:
            while pending and pending[0][0] <= t:
                yield heapq.heappop(pending)[2]
            arrival = forced if forced is not None else t + rng.uniform(0.2, 3.0)
            if topic == "gps.raw" and forced is None and rng.random() < cfg.out_of_order_rate:
                arrival += rng.uniform(5.0, 120.0)
            seq += 1
            heapq.heappush(pending, (arrival, seq, Record(topic, key, value, t, arrival)))
            if rng.random() < cfg.duplicate_rate:
                again = arrival + rng.uniform(1.0, 300.0)
                seq += 1
                heapq.heappush(pending, (again, seq, Record(topic, key, value, t, again)))
        while pending:
            yield heapq.heappop(pending)[2]

    def _pings(self, plan: _Plan) -> Iterator[_Raw]:
        rng = random.Random(f"{self.config.seed}:{plan.index}:track")
        start, end = self.start, self.end
        wired, wireless = plan.wired_id, plan.wireless_id
        next_wired = start + rng.uniform(0, plan.parked_interval_s)
        last_wired = -1
        wired_seq = wireless_seq = 0
        wireless_times = self._wireless_times(plan, rng)
        next_wireless = next(wireless_times)
        wireless_battery = rng.uniform(45, 100)
        prev_moving = False
        gap_uploads = dict.fromkeys(plan.gaps, 0)
        reboots, reboot_left = list(plan.reboots), 0
        factory = _FACTORY_POSITIONS.get(plan.wired_vendor, (0.0, 0.0))
        for seg in _track(plan, rng, start, end):
            lo, hi = max(seg.t0, start), min(seg.t1, end)
            moving = seg.speed_kmh > 0
            batch: list[_Raw] = []
            heading = round(_bearing(*seg.a, *seg.b), 1) if moving else None
            # Trackers report at once when the ignition changes, then on their own cadence.
            t = lo if moving or prev_moving else max(next_wired, lo)
            while t < hi and t < plan.wired_stop:
                ts = max(int(t), last_wired + 1)
                last_wired = ts
                wired_seq += 1
                lat, lon = self._jitter(rng, seg.at(t), seg.noise_m)
                fix = seg.fix.value
                speed = round(seg.speed_kmh * rng.uniform(0.7, 1.15), 1) if moving else 0.0
                if reboots and t >= reboots[0]:
                    reboots.pop(0)
                    reboot_left = rng.randint(2, 4)
                if reboot_left:
                    # Rebooted: the first reports carry the firmware's default position, some
                    # flagged as a GPS fix, before the receiver gets a real one.
                    reboot_left -= 1
                    lat, lon = factory
                    fix = rng.choice((Fix.GPS, Fix.NONE)).value
                forced = None
                alarms: list[str] = []
                for n, gap in enumerate(plan.gaps):
                    if gap[0] <= t < gap[1]:
                        gap_uploads[gap] += 1
                        forced = gap[2] + gap_uploads[gap] * 0.01
                        if gap_uploads[gap] == 2 and n in plan.gap_alarms:
                            alarms = [plan.gap_alarms[n].value]
                if seg.dead:  # underground: buffered until the car drives out
                    forced = seg.t1 + 30.0 + wired_seq * 1e-4
                value = {
                    "schema_version": 1,
                    "event_id": f"{wired}-{wired_seq}",
                    "device_id": wired,
                    "vendor": plan.wired_vendor,
                    "ts": format_ts(ts),
                    "lat": lat,
                    "lon": lon,
                    "speed_kmh": speed,
                    "heading": heading,
                    "fix": fix,
                    "acc_on": moving,
                    "battery_pct": 100.0,
                    "device_kind": DeviceKind.WIRED.value,
                    "alarms": alarms,
                    "backfill": forced is not None,
                }
                batch.append((float(ts), "gps.raw", wired, value, forced))
                t += 60.0 if moving else plan.parked_interval_s + rng.uniform(-20, 20)
            if not moving:
                next_wired = t
            prev_moving = moving
            while next_wireless < hi:
                if wireless is not None and lo <= next_wireless < plan.wireless_stop:
                    wireless_seq += 1
                    indoor = rng.random() < 0.15
                    lat, lon = self._jitter(
                        rng, seg.at(next_wireless), 200.0 if indoor else max(seg.noise_m, 10.0)
                    )
                    wireless_fix = Fix.LBS if indoor else Fix.GPS
                    if seg.dead:  # no satellites underground: the last known position
                        (lat, lon), wireless_fix = seg.a, Fix.NONE
                    days_in = (next_wireless - start) / DAY
                    value = {
                        "schema_version": 1,
                        "event_id": f"{wireless}-{wireless_seq}",
                        "device_id": wireless,
                        "vendor": plan.wireless_vendor,
                        "ts": format_ts(next_wireless),
                        "lat": lat,
                        "lon": lon,
                        "speed_kmh": None,
                        "heading": None,
                        "fix": wireless_fix.value,
                        "acc_on": None,
                        "battery_pct": round(max(5.0, wireless_battery - 0.15 * days_in), 1),
                        "device_kind": DeviceKind.WIRELESS.value,
                        "alarms": [],
                        "backfill": False,
                    }
                    batch.append((float(int(next_wireless)), "gps.raw", wireless, value, None))
                next_wireless = next(wireless_times)
            batch.sort(key=_first)
            yield from batch

    def _wireless_times(self, plan: _Plan, rng: random.Random) -> Iterator[float]:
        """A few reports a day at the device's configured hours, ±10 minutes. Like real NB-IoT /
        2G wireless trackers, a wake-up without coverage is retried 5–40 min later (5 %) or lost
        until the next configured hour (2 %)."""
        midnight = _local_midnight(_local_date(self.start))
        while True:
            for hour in plan.wireless_hours:
                luck = rng.random()
                if luck < WIRELESS_LOST:
                    continue
                late = rng.uniform(300, 2400) if luck < WIRELESS_LOST + WIRELESS_RETRIED else 0.0
                yield midnight + hour * HOUR + rng.uniform(-600, 600) + late
            midnight += DAY

    def _alarm_pings(self, plan: _Plan) -> Iterator[_Raw]:
        for t, which, alarms, battery, where in sorted(plan.alarm_pings, key=_first_of):
            position = where if where is not None else plan.target
            if not self.start <= t < self.end or position is None:
                continue
            wired = which == "w"
            device = plan.wired_id if wired else plan.wireless_id
            assert device is not None
            lat, lon = position
            value = {
                "schema_version": 1,
                "event_id": f"{device}-alarm-{int(t)}",
                "device_id": device,
                "vendor": plan.wired_vendor if wired else plan.wireless_vendor,
                "ts": format_ts(t),
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "speed_kmh": 0.0 if wired else None,
                "heading": None,
                "fix": Fix.GPS.value,
                "acc_on": False if wired else None,
                "battery_pct": battery,
                "device_kind": (DeviceKind.WIRED if wired else DeviceKind.WIRELESS).value,
                "alarms": [a.value for a in alarms],
                "backfill": False,
            }
            yield float(int(t)), "gps.raw", device, value, None

    @staticmethod
    def _jitter(
        rng: random.Random, point: tuple[float, float], noise_m: float
    ) -> tuple[float, float]:
        lat = point[0] + rng.gauss(0.0, noise_m) / _M_PER_DEG
        lon = point[1] + rng.gauss(0.0, noise_m) / (_M_PER_DEG * math.cos(math.radians(point[0])))
        return round(lat, 6), round(lon, 6)


def simulate(
    loans: int = 200,
    days: float = 30.0,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    skip_fraction: float = 0.05,
    **options: Any,
) -> Simulation:
    """Plan a portfolio; `options` are the other `SimulationConfig` fields."""
    return Simulation(
        SimulationConfig(
            loans=loans, days=days, seed=seed, start=start, skip_fraction=skip_fraction, **options
        )
    )


def simulate_recording(
    loans: int = 200,
    days: float = 30.0,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    skip_fraction: float = 0.05,
    **options: Any,
) -> Iterator[Record | Label]:
    """The recording in arrival order (loans, then events), followed by the ground-truth labels."""
    simulation = simulate(loans, days, seed, start, skip_fraction, **options)
    yield from simulation.records()
    yield from simulation.labels


# --------------------------------------------------------------------------------------------
# Live mode: event time mapped onto the wall clock


@dataclass(frozen=True, slots=True)
class TimeWarp:
    """Simulated time on the wall clock: `sim_start` at `wall_start`, `speed` times faster."""

    sim_start: float
    wall_start: float
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be > 0")

    def wall(self, sim_t: float) -> float:
        return self.wall_start + (sim_t - self.sim_start) / self.speed

    def wall_date(self, day: str) -> str:
        """A due date moved like its noon: calendar dates compress with the clock."""
        noon = _local_midnight(date.fromisoformat(day)) + 12 * HOUR
        return _local_date(self.wall(noon)).isoformat()


def live_records(records: Iterable[Record], warp: TimeWarp) -> Iterator[Record]:
    """Records restamped onto the wall clock (times, due dates) with run-unique event ids.

    Event ids get a run tag so that a second demo run is not dropped as a repeat of the first by
    the pipeline's idempotency check; duplicates within a run keep sharing their id.
    """
    run_tag = f"{int(warp.wall_start):x}"
    for record in records:
        value = dict(record.value)
        if record.topic == "loans":
            value["schedule"] = [
                {**item, "due_date": warp.wall_date(item["due_date"])} for item in value["schedule"]
            ]
        else:
            value["ts"] = format_ts(warp.wall(record.event_time))
            value["event_id"] = f"{value['event_id']}@{run_tag}"
            if value.get("due_date"):
                value["due_date"] = warp.wall_date(value["due_date"])
        yield replace(
            record,
            value=value,
            event_time=warp.wall(record.event_time),
            arrival=warp.wall(record.arrival),
        )


# --------------------------------------------------------------------------------------------
# Kafka sink


class ProducerLike(Protocol):
    """What `produce_records` needs of an `aiokafka.AIOKafkaProducer`."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Awaitable[Any]: ...


def send_delay(
    *, sent: int, elapsed: float, rate: float | None = None, due_at: float | None = None
) -> float:
    """Seconds to wait before sending record number `sent` (0-based).

    `rate` caps the average at that many records a second since the start; `due_at` is when the
    record is due, in seconds after the start (live mode). Both hold: the later one wins.
    """
    target = sent / rate if rate else 0.0
    if due_at is not None:
        target = max(target, due_at)
    return max(0.0, target - elapsed)


async def produce_records(
    records: Iterable[Record],
    producer: ProducerLike,
    *,
    topic_prefix: str,
    rate: float | None = None,
    live_from: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    progress: Callable[[int, Record], None] | None = None,
    window: int = 2000,
    recover: Callable[[BaseException], Awaitable[bool]] | None = None,
) -> int:
    """Send records in order, keyed per DESIGN §3; wait for every ack; return how many were sent.

    `live_from` (wall-clock epoch seconds) sends each record when the wall clock reaches its
    `arrival` (use `live_records` first); `rate` caps records per second. At most `window`
    sends are in flight, so a slow broker slows the simulator instead of filling memory.
    `recover(error)`, when a window's sends fail, waits for a producer that can persist again
    (True) and the window is sent again (a record Kafka had taken comes twice; the worker drops
    the copy by event id), or gives up (False: the error is raised).
    """
    started = clock()
    sent = 0
    in_flight: list[Awaitable[Any]] = []
    window_records: list[Record] = []

    async def settle() -> None:
        nonlocal in_flight
        while True:
            try:
                await asyncio.gather(*in_flight)
                break
            except Exception as exc:
                if recover is None or not await recover(exc):
                    raise
                in_flight = [
                    await producer.send(
                        topic_prefix + r.topic, value=r.value_bytes(), key=r.key.encode()
                    )
                    for r in window_records
                ]
        in_flight = []
        window_records.clear()

    for record in records:
        due_at = None if live_from is None else record.arrival - live_from
        wait = send_delay(sent=sent, elapsed=clock() - started, rate=rate, due_at=due_at)
        if wait > 0:
            await sleep(wait)
        in_flight.append(
            await producer.send(
                topic_prefix + record.topic, value=record.value_bytes(), key=record.key.encode()
            )
        )
        window_records.append(record)
        sent += 1
        if len(in_flight) >= window:
            await settle()
        if progress is not None:
            progress(sent, record)
    await settle()
    return sent


# --------------------------------------------------------------------------------------------
# Benchmark fast path: pre-serialized templates instead of per-record dicts and model logic.

_TEMPLATE_LOANS = 1024
_PING = (
    b'{"schema_version":1,"event_id":"%s-m%d","device_id":"%s","vendor":"bench","ts":"%s",'
    b'"lat":%.6f,"lon":%.6f,%s,"fix":"gps","battery_pct":100.0,"device_kind":"wired",'
    b'"alarms":[],"backfill":false}'
)
_PARKED = b'"speed_kmh":0.0,"heading":null,"acc_on":false'
_MOVING = b'"speed_kmh":38.5,"heading":90.0,"acc_on":true'
_CONTACT = (
    b'{"schema_version":1,"event_id":"%s-mc%d","loan_id":"%s","ts":"%s",'
    b'"party":"%s","channel":"%s","outcome":"%s"}'
)
_PAYMENT = (
    b'{"schema_version":1,"event_id":"%s-mp%d","loan_id":"%s","ts":"%s",'
    b'"type":"payment_received","installment_no":%d,"amount":%.2f,"currency":"CNY",'
    b'"due_date":"%s"}'
)
_CONTACT_MIX = tuple(
    (party.value.encode(), channel.value.encode(), outcome.value.encode())
    for party, channel, outcome in (
        (Party.BORROWER, Channel.CALL, Outcome.REACHED),
        (Party.BORROWER, Channel.CALL, Outcome.NO_ANSWER),
        (Party.BORROWER, Channel.CALL, Outcome.BUSY),
        (Party.BORROWER, Channel.CALL, Outcome.PROMISE_TO_PAY),
        (Party.BORROWER, Channel.CALL, Outcome.POWERED_OFF),
        (Party.BORROWER, Channel.SMS, Outcome.DELIVERED),
        (Party.GUARANTOR, Channel.CALL, Outcome.NO_ANSWER),
        (Party.EMERGENCY_CONTACT, Channel.CALL, Outcome.REACHED),
    )
)


def mixed_stream(
    loans: int,
    events: int,
    seed: int = 1,
    *,
    start: datetime = DEFAULT_START,
    topic_prefix: str = "",
    duplicate_rate: float = 0.005,
) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value JSON) for `loans` loans, then `events` events, fast (for benchmarks).

    Loans are the simulator's own, planned for up to 1,024 template loans and stamped with each
    loan's ids (so 100k loans take a second, not a minute). Events: ~90% pings (each wired
    tracker in turn, about once a minute of event time, within ~1 km of home; 2% of the cars
    live 200 km outside their region), 5% contacts, 5% payments, `duplicate_rate` repeats.
    Values are built from string templates: a dict plus orjson per record would cap this at
    well under the 200k records/s a benchmark needs so that the generator is not what it measures.
    """
    if loans <= 0:
        return
    config = SimulationConfig(loans=loans, seed=seed, start=start, skip_fraction=0)
    planner = _Planner(config)
    rng = random.Random(f"{seed}:mixed")
    topic_loans, topic_gps = topic_prefix + "loans", topic_prefix + "gps.raw"
    topic_payments, topic_contacts = topic_prefix + "payments", topic_prefix + "contacts"

    templates: list[tuple[bytes, tuple[float, float], tuple[int, float, bytes]]] = []
    for index in range(min(loans, _TEMPLATE_LOANS)):
        plan = planner.plan(index, Scenario.PUNCTUAL)
        stamped = dict(plan.value, loan_id="{L}")
        stamped["devices"] = [
            {**d, "device_id": d["device_id"].replace(f"-{index + 1}-", "-{N}-")}
            for d in stamped["devices"]
        ]
        first = stamped["schedule"][0]
        due = (first["installment_no"], first["amount"], first["due_date"].encode())
        templates.append((orjson.dumps(stamped), plan.home, due))

    homes: list[tuple[float, float]] = []
    loan_keys: list[bytes] = []
    first_dues: list[tuple[int, float, bytes]] = []
    for index in range(loans):
        template, home, first_due = templates[index % len(templates)]
        loan_keys.append(b"loan-%06d" % (index + 1))
        first_dues.append(first_due)
        far = rng.random() < 0.02
        homes.append(_toward(*home, rng.uniform(0, 360), 200.0) if far else home)
        value_bytes = template.replace(b"{L}", loan_keys[-1]).replace(b"{N}", b"%d" % (index + 1))
        yield topic_loans, loan_keys[-1], value_bytes

    device_keys = [b"dev-%d-w" % (i + 1) for i in range(loans)]
    t0 = int(start.timestamp())
    step = 60.0 / loans  # each wired tracker about once a minute
    cached_second, ts = -1, b""
    random_ = rng.random
    last: tuple[str, bytes, bytes] | None = None
    ping_no = 0
    for n in range(events):
        if last is not None and random_() < duplicate_rate:
            yield last
            continue
        second = t0 + int(n * step)
        if second != cached_second:
            cached_second, ts = second, format_ts(second).encode()
        draw = random_()
        if draw < 0.9:
            i = ping_no % loans
            ping_no += 1
            lat, lon = homes[i]
            device = device_keys[i]
            value = _PING % (
                device,
                ping_no,
                device,
                ts,
                lat + (random_() - 0.5) * 0.02,
                lon + (random_() - 0.5) * 0.02,
                _MOVING if draw < 0.1 else _PARKED,
            )
            last = topic_gps, device, value
        else:
            i = int(random_() * loans)
            loan_id = loan_keys[i]
            if draw < 0.95:
                party, channel, outcome = _CONTACT_MIX[int(random_() * len(_CONTACT_MIX))]
                value = _CONTACT % (loan_id, n, loan_id, ts, party, channel, outcome)
                last = topic_contacts, loan_id, value
            else:
                number, amount, due_date = first_dues[i]
                value = _PAYMENT % (loan_id, n, loan_id, ts, number, amount, due_date)
                last = topic_payments, loan_id, value
        yield last
