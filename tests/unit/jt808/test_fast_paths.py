"""The gateway's cheaper equivalents give exactly what the plain versions give."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.jt808 import codec
from services.jt808.mapping import local_time

pytestmark = pytest.mark.unit


def test_local_time_equals_replacing_the_zone_including_folds() -> None:
    rng = random.Random(3)
    zones = [ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/London"), timezone(timedelta(hours=-5))]
    start = datetime(2024, 1, 1)
    for n in range(2_000):
        naive = start + timedelta(minutes=rng.randint(0, 60 * 24 * 730))
        if n % 50 == 0:  # London's autumn hour, both folds
            naive = datetime(2024, 10, 27, 1, 30, fold=n % 100 // 50)
        zone = zones[n % len(zones)]
        location = codec.Location(
            alarm_flags=0, status_flags=0, lat=0.0, lon=0.0, altitude_m=0, speed_kmh=0.0,
            heading=0, time=naive, raw_time="", items=(), fixed=b"",
        )  # fmt: skip
        assert local_time(location, zone) == naive.replace(tzinfo=zone)
        assert local_time(location, zone).fold == naive.fold  # type: ignore[union-attr]
