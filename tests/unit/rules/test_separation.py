"""Wired vs wireless separation (defect 1 of issue 12): pairs of fixes taken at nearly the same
instant, bounded by speed and accuracy, confirmed by independent pairs, cleared with hysteresis."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.events import GpsPing
from tests.unit.rules.rules_factories import HOME, at, firing, ping, run, start

pytestmark = pytest.mark.unit

APART = (HOME[0] + 0.05, HOME[1])  # ~5.6 km north
NEAR = (HOME[0] + 0.001, HOME[1])  # ~110 m


def north(km: float, base: tuple[float, float] = HOME) -> tuple[float, float]:
    return (base[0] + km / 111.2, base[1])


def wired(minute: float, where: tuple[float, float], speed: float | None = 0.0) -> GpsPing:
    return ping(at(minutes=minute), where, speed_kmh=speed)


def wireless(minute: float, where: tuple[float, float], fix: str = "gps") -> GpsPing:
    return ping(at(minutes=minute), where, device="X1", kind="wireless", fix=fix)


def parked(start_min: int, end_min: int, where: tuple[float, float] = HOME) -> list[GpsPing]:
    return [wired(m, where) for m in range(start_min, end_min, 10)]


def commute(start_min: int, minutes: int, kmh: float = 60.0) -> list[GpsPing]:
    """Driving north from HOME, the wired tracker reporting every minute."""
    return [wired(start_min + m, north(kmh * m / 60.0), kmh) for m in range(minutes)]


def separated_after(events: list[GpsPing], hours: float = 12.0) -> float:
    engine, state = start()
    run(engine, state, sorted(events, key=lambda e: e.ts), until=at(hours))
    value: float = engine.signals(state, at(hours))["devices.separated_km"]
    return value


CASES = [
    # The failing shape: a moving car's wired fix compared with a wireless fix 15 min older
    # (15 km back along the road) used to "separate" every commute.
    pytest.param([*commute(0, 40), wireless(5, north(5)), wireless(35, north(5))], 0.0,
                 id="commute-wireless-fix-minutes-old"),
    # Same instant, 1 km apart while driving at 60 km/h one minute apart: within the motion.
    pytest.param([*commute(0, 40), wireless(10.5, north(11.5)), wireless(30.5, north(31.5))], 0.0,
                 id="moving-within-speed-allowance"),
    pytest.param([*parked(0, 130), wireless(5, APART), wireless(65, APART)],
                 pytest.approx(5.46, abs=0.05), id="parked-two-independent-pairs"),
    pytest.param([*parked(0, 130), wireless(5, APART)], 0.0, id="one-pair-is-not-enough"),
    pytest.param([*parked(0, 130), wireless(5, APART), wireless(15, APART)], 0.0,
                 id="two-pairs-under-30-min"),
    pytest.param([*parked(0, 130), wireless(5, APART), wireless(15, APART), wireless(45, APART)],
                 pytest.approx(5.46, abs=0.05), id="three-pairs-spanning-40-min"),
    # Both pairs use the wireless fix at minute 5 (the wired fix before it and one just after).
    pytest.param([*parked(0, 60), wired(5.5, HOME, None), wireless(5, APART)], 0.0,
                 id="pairs-sharing-a-fix-are-one"),
    # A cell-tower (LBS) wireless fix 1.2 km off is within its accuracy.
    pytest.param([*parked(0, 130), wireless(5, north(1.2), "lbs"), wireless(65, north(1.2), "lbs")],
                 0.0, id="lbs-fix-within-accuracy"),
    # Disagreeing and agreeing pairs alternate: no streak, no separation.
    pytest.param([*parked(0, 250), *(wireless(5 + 60 * n, APART if n % 2 else NEAR)
                                     for n in range(4))], 0.0, id="alternating"),
]  # fmt: skip


@pytest.mark.parametrize(("events", "expected"), CASES)
def test_separation(events: list[GpsPing], expected: Any) -> None:
    assert separated_after(events) == expected


@pytest.mark.parametrize(
    ("after_minutes", "agreeing", "separated"),
    [
        pytest.param(200, 0, True, id="stays-separated"),
        pytest.param(200, 1, True, id="one-agreeing-pair-holds-it"),
        pytest.param(200, 2, False, id="two-agreeing-pairs-clear-it"),
    ],
)
def test_separation_clears_only_after_agreement_persists(
    after_minutes: int, agreeing: int, separated: bool
) -> None:
    events = [*parked(0, 400), wireless(5, APART), wireless(65, APART)]
    events += [wireless(after_minutes + 5 + 60 * n, NEAR) for n in range(agreeing)]
    assert (separated_after(events) > 0) is separated


# ------------------------------------------------------------------ property


DAY_MIN = 30 * 60


@st.composite
def normal_days(draw: st.DrawFn) -> list[GpsPing]:
    """A car parking and driving for ~30 h; a healthy wired tracker (every minute moving with
    the speed it measures, every 10–30 min parked, at once when the ignition changes) and a
    healthy wireless one (a few GPS or cell-tower fixes, within their accuracy)."""
    t = 0.0  # minutes
    lat, lon = HOME
    path: list[tuple[float, float, float, float, float, float]] = []  # t0, t1, lat, lon, v, dir
    while t < DAY_MIN:
        stay = draw(st.floats(10, 600))
        path.append((t, t + stay, lat, lon, 0.0, 0.0))
        t += stay
        minutes = draw(st.floats(5, 60))
        kmh = draw(st.floats(20, 120))
        heading = math.radians(draw(st.floats(0, 360)))
        path.append((t, t + minutes, lat, lon, kmh, heading))
        km = kmh * minutes / 60.0
        lat += km * math.cos(heading) / 111.2
        lon += km * math.sin(heading) / (111.2 * math.cos(math.radians(lat)))
        t += minutes

    def where(minute: float) -> tuple[tuple[float, float], float]:
        for t0, t1, la, lo, v, h in path:
            if t0 <= minute < t1 or t1 == path[-1][1]:
                km = v * (minute - t0) / 60.0
                return (
                    (
                        la + km * math.cos(h) / 111.2,
                        lo + km * math.sin(h) / (111.2 * math.cos(math.radians(la))),
                    ),
                    v,
                )
        raise AssertionError(minute)

    events: list[GpsPing] = []
    for t0, t1, _, _, v, _ in path:
        m = t0
        while m < min(t1, DAY_MIN):
            pos, _ = where(m)
            measured = v * draw(st.floats(0.7, 1.15)) if v else 0.0
            events.append(wired(m, pos, round(measured, 1)))
            m += 1.0 if v else draw(st.floats(10, 30))
    for m in draw(st.lists(st.floats(0, DAY_MIN - 1), min_size=2, max_size=8, unique=True)):
        pos, _ = where(m)
        lbs = draw(st.booleans())
        noise_km = draw(st.floats(0, 1.0 if lbs else 0.04))
        angle = math.radians(draw(st.floats(0, 360)))
        noisy = (
            pos[0] + noise_km * math.cos(angle) / 111.2,
            pos[1] + noise_km * math.sin(angle) / (111.2 * math.cos(math.radians(pos[0]))),
        )
        events.append(wireless(m, noisy, "lbs" if lbs else "gps"))
    events.sort(key=lambda e: e.ts)
    return events


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(events=normal_days())
def test_a_car_driving_and_parking_with_healthy_trackers_never_separates(
    events: list[GpsPing],
) -> None:
    engine, state = start()
    alerts = []
    for event in events:
        alerts += engine.apply(state, event, event.ts)
        assert state.separated_m == 0.0
    alerts += engine.advance(state, events[-1].ts + dt.timedelta(hours=1))
    assert "trackers-separated" not in firing(alerts)
