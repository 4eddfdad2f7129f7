"""The lowest-carbon start over a forecast (jobcarbon.forecast.best_start), worked by hand.

Times are seconds from T0 (2026-03-01 00:00 UTC); slots are (start, length, g/kWh).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from jobcarbon.errors import InputError
from jobcarbon.forecast import best_start

T0 = 1_772_323_200  # 2026-03-01T00:00:00Z
H = 3600
HALF = 1800


class Slot(NamedTuple):
    start_s: int
    period_s: int
    intensity_g_per_kwh: float


def slots(values: list[float], period_s: int, first_s: int = T0) -> list[Slot]:
    return [Slot(first_s + i * period_s, period_s, v) for i, v in enumerate(values)]


#: eight hourly slots
HOURLY = slots([300, 250, 100, 80, 120, 400, 90, 90], H)


def test_a_three_hour_run_over_eight_hourly_slots() -> None:
    # Starts whose 3 h fit in the 8 h: 0..5 h. Their means:
    #   0 h (now): (300 + 250 + 100) / 3 = 216.67    3 h: (80 + 120 + 400) / 3 = 200
    #   1 h:       (250 + 100 + 80) / 3  = 143.33    4 h: (120 + 400 + 90) / 3 = 203.33
    #   2 h:       (100 + 80 + 120) / 3  = 100       5 h: (400 + 90 + 90) / 3  = 193.33
    best = best_start(HOURLY, 3 * H, T0, 24 * H)
    assert best.start_s == T0 + 2 * H
    assert best.mean_g_per_kwh == pytest.approx(100.0)
    assert best.now_mean_g_per_kwh == pytest.approx(650 / 3)
    assert best.saving_percent == pytest.approx(100 * (650 / 3 - 100) / (650 / 3))  # 53.85 %
    assert best.latest_start_s == T0 + 5 * H  # 6 h and 7 h would run past the forecast
    assert not best.starts_now


def test_now_part_way_through_a_slot_and_a_run_that_ends_part_way() -> None:
    # now = 00:30: the run from now covers half of slot 0 and, at its end, half of slot 3:
    # (0.5 × 300 + 250 + 100 + 0.5 × 80) / 3 = 540 / 3 = 180
    best = best_start(HOURLY, 3 * H, T0 + HALF, 24 * H)
    assert best.now_mean_g_per_kwh == pytest.approx(180.0)
    assert (best.start_s, best.mean_g_per_kwh) == (T0 + 2 * H, pytest.approx(100.0))
    assert best.saving_percent == pytest.approx(100 * 80 / 180)  # 44.4 %

    # 2.5 h from each slot start: the last half hour weighs half a slot
    #   now (00:00): (300 + 250 + 0.5 × 100) / 2.5 = 240
    #   1 h: (250 + 100 + 0.5 × 80) / 2.5 = 156     2 h: (100 + 80 + 0.5 × 120) / 2.5 = 96
    #   3 h: (80 + 120 + 0.5 × 400) / 2.5 = 160     4 h: (120 + 400 + 0.5 × 90) / 2.5 = 226
    #   5 h: (400 + 90 + 0.5 × 90) / 2.5 = 214      (6 h would end at 8.5 h)
    partial = best_start(HOURLY, 2 * H + HALF, T0, 24 * H)
    assert (partial.start_s, partial.mean_g_per_kwh) == (T0 + 2 * H, pytest.approx(96.0))
    assert partial.now_mean_g_per_kwh == pytest.approx(240.0)
    assert partial.latest_start_s == T0 + 5 * H


#: eight half hours, as NESO publishes them
HALF_HOURS = slots([200, 180, 60, 40, 50, 220, 30, 300], HALF)


def test_half_hour_slots_and_the_latest_start() -> None:
    # now = 00:10, a 1.5 h run. From now: 20 min of 200, 30 of 180, 30 of 60, 10 of 40:
    # (20 × 200 + 30 × 180 + 30 × 60 + 10 × 40) / 90 = 11 600 / 90 = 128.89
    # From the half-hour starts: 00:30 (180 + 60 + 40) / 3 = 93.33, 01:00 (60 + 40 + 50) / 3
    # = 50, 01:30 103.33, 02:00 100, 02:30 183.33; 03:00 would end past 04:00.
    now = T0 + 600
    best = best_start(HALF_HOURS, 3 * HALF, now, 4 * H)
    assert (best.start_s, best.mean_g_per_kwh) == (T0 + 2 * HALF, pytest.approx(50.0))
    assert best.now_mean_g_per_kwh == pytest.approx(11_600 / 90)
    assert best.saving_percent == pytest.approx(100 * (11_600 / 90 - 50) / (11_600 / 90))  # 61.2 %
    assert best.latest_start_s == T0 + 5 * HALF

    # starting within 45 min of now (by 00:55): now or 00:30, and 00:30 is cleaner
    soon = best_start(HALF_HOURS, 3 * HALF, now, 45 * 60)
    assert (soon.start_s, soon.mean_g_per_kwh) == (T0 + HALF, pytest.approx(280 / 3))


def test_a_run_that_does_not_fit() -> None:
    # the half hours reach 04:00; from 00:10 that is 3 h 50 min, less than a 4 h run
    with pytest.raises(
        InputError,
        match=r"a run of 4 h does not fit in the forecast, which reaches 3\.833 h past now",
    ):
        best_start(HALF_HOURS, 4 * H, T0 + 600, 24 * H)
    with pytest.raises(InputError, match="reaches 0 h past now"):
        best_start([], H, T0, 24 * H)


def test_a_run_across_a_gap_is_not_a_candidate() -> None:
    # hours 0-7 without hour 3 (a slot the provider left out): 2 h runs may start at 0, 1,
    # 4, 5, 6; (0 h: 275, 1 h: 175, 4 h: 260, 5 h: 245, 6 h: 90)
    holed = [s for s in HOURLY if s.start_s != T0 + 3 * H]
    best = best_start(holed, 2 * H, T0, 24 * H)
    assert (best.start_s, best.mean_g_per_kwh) == (T0 + 6 * H, pytest.approx(90.0))
    # a run from now that crosses the gap cannot be compared
    late = best_start(holed, 2 * H, T0 + 2 * H + HALF, 24 * H)
    assert late.now_mean_g_per_kwh is None and late.saving_percent is None


def test_now_is_best_and_ties_go_to_the_earliest() -> None:
    falling_then_flat = slots([100, 100, 100, 300], H)
    best = best_start(falling_then_flat, 2 * H, T0, 24 * H)
    assert best.starts_now and best.start_s == T0  # 1 h is as clean (100): now wins
    assert best.saving_percent == 0.0


def test_a_forecast_that_begins_after_now() -> None:
    later = slots([200, 100, 150], H, first_s=T0 + H)
    best = best_start(later, H, T0 + 600, 24 * H)
    assert best.now_mean_g_per_kwh is None and best.saving_percent is None
    assert (best.start_s, best.mean_g_per_kwh) == (T0 + 2 * H, 100.0)


def test_five_minute_slots_and_a_repeated_slot() -> None:
    # WattTime's resolution: 12 five-minute slots of 100 then 12 of 40 (the last one
    # repeated with 40, as an edge served twice); a 30 min run is cleanest from 01:00
    five = [*slots([100.0] * 12 + [40.0] * 12, 300), Slot(T0 + 23 * 300, 300, 40.0)]
    best = best_start(five, 1800, T0 + 100, 24 * H)
    assert (best.start_s, best.mean_g_per_kwh) == (T0 + H, pytest.approx(40.0))
    assert best.now_mean_g_per_kwh == pytest.approx(100.0)
    assert best.latest_start_s == T0 + 18 * 300  # 01:30 is the last start a 30 min run fits
