"""Hourly integration of PUE and intensity: the fast path against the hour-by-hour one.

The reference below is the loop ``compute_footprint`` ran before the series were
integrated with list slices: one step per UTC hour, each sampling PUE and intensity at
its start. The fast path must agree with it within 1e-12 relative on random runs.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from jobcarbon.errors import FactorError
from jobcarbon.footprint import PowerProfile, compute_footprint
from jobcarbon.records import JobRecord
from jobcarbon.site import Constant, HourlySeries, MonthlyPue, SiteFactors, hour_segments
from tests.conftest import make_job, utc

POWER = PowerProfile("X", 400.0, 60.0, 12.0, 3.6, 0.3725)
T0 = utc(2026, 1, 1)
FIRST_HOUR = int(T0.timestamp()) // 3600


def hour_by_hour(site: SiteFactors, job: JobRecord, it: tuple[float, float, float]) -> list[float]:
    """(facility kWh, CO2e central, low, high) as the loop before the fast path gave them."""
    assert job.start_time is not None and job.end_time is not None
    run_s = job.run_seconds
    facility = central = low = high = 0.0
    for start, seconds in hour_segments(job.start_time, job.end_time):
        share = seconds / run_s
        pue = site.pue.at(start)
        weight = share * site.intensity_g_per_kwh.at(start)
        facility += it[0] * share * pue
        central += it[0] * pue * weight
        low += it[1] * max(1.0, pue * (1 - site.pue_uncertainty)) * weight
        high += it[2] * pue * (1 + site.pue_uncertainty) * weight
    return [facility, central, low, high]


def random_series(rng: random.Random, fallback: float | None) -> HourlySeries:
    """Four months of hours from T0, with a few gaps of several hours."""
    by_hour = {FIRST_HOUR + h: rng.uniform(20.0, 900.0) for h in range(24 * 120)}
    for _ in range(5):
        gap_start = FIRST_HOUR + rng.randrange(24 * 120)
        for h in range(gap_start, gap_start + rng.randint(1, 9)):
            by_hour.pop(h, None)
    return HourlySeries(by_hour, fallback, "random")


def random_moment(rng: random.Random, span_h: float) -> datetime:
    return T0 + timedelta(microseconds=rng.randrange(int(span_h * 3600e6)))


def test_fast_path_matches_hour_by_hour_on_random_runs() -> None:
    rng = random.Random(16)
    pue_schedules = [Constant(1.3), MonthlyPue(1.2, {"2026-02": 1.4, "2026-03": 1.1})]
    compared = 0
    for trial in range(600):
        fallback = rng.choice([None, 333.0])
        series = random_series(rng, fallback)
        pue = pue_schedules[trial % 2]
        site = SiteFactors("s", pue, series, 0.07)
        # Runs of a second to 80 days, starting anywhere from 10 days before the series
        # (so the fallback, or the error, covers hours outside it) to its end.
        start = random_moment(rng, 24 * 120) - timedelta(days=10)
        length = timedelta(seconds=rng.choice([1, 59, 3600, 7200]) * rng.uniform(0.5, 2.0))
        length *= rng.choice([1, 3, 24, 77, 24 * 80 // 2])
        job = make_job(start_time=start, end_time=start + length, gpu_utilization=0.6)
        bare = compute_footprint(job, POWER, SiteFactors("s", Constant(1.0), Constant(1.0), 0.0))
        it = (bare.co2e_g, bare.co2e_g_low, bare.co2e_g_high)  # × PUE 1 × 1 g/kWh = IT kWh
        try:
            expected = hour_by_hour(site, job, it)
        except FactorError as err:
            with pytest.raises(FactorError) as raised:
                compute_footprint(job, POWER, site)
            assert str(raised.value) == str(err)  # the same first missing hour
            continue
        fp = compute_footprint(job, POWER, site)
        got = [fp.energy_facility_kwh, fp.co2e_g, fp.co2e_g_low, fp.co2e_g_high]
        for g, e in zip(got, expected, strict=True):
            assert g == pytest.approx(e, rel=1e-12, abs=0.0)
        compared += 1
    assert compared > 300  # most runs are covered, not errors


def test_integral_by_hand_across_a_gap_with_fallback() -> None:
    # Hours 10 and 13 of 2026-10-01 hold 100 and 400 g/kWh; 11 and 12 fall back to 50.
    # 10:45 → 13:30: 900 s × 100 + 2 × 3600 s × 50 + 1800 s × 400 = 90000 + 360000 + 720000.
    hour = int(utc(2026, 10, 1, 10).timestamp()) // 3600
    series = HourlySeries({hour: 100.0, hour + 3: 400.0}, 50.0)
    assert series.integral(utc(2026, 10, 1, 10, 45), utc(2026, 10, 1, 13, 30)) == 1_170_000.0
    # Entirely outside the series: 2 h × 3600 s × 50.
    assert series.integral(utc(2026, 9, 1, 0), utc(2026, 9, 1, 2)) == 360_000.0
    assert series.integral(utc(2026, 9, 1, 2), utc(2026, 9, 1, 2)) == 0.0


def test_integral_without_fallback_names_the_first_missing_hour() -> None:
    hour = int(utc(2026, 10, 1, 10).timestamp()) // 3600
    series = HourlySeries({hour: 100.0, hour + 3: 400.0}, None, "grid.csv")
    with pytest.raises(FactorError, match="2026-10-01T11:00:00"):
        series.integral(utc(2026, 10, 1, 10, 30), utc(2026, 10, 1, 13, 30))
    with pytest.raises(FactorError, match="2026-10-01T14:00:00"):
        series.integral(utc(2026, 10, 1, 13, 30), utc(2026, 10, 1, 14, 30))
    with pytest.raises(FactorError, match="2026-10-01T09:00:00"):
        series.integral(utc(2026, 10, 1, 9, 30), utc(2026, 10, 1, 10, 30))
    # Within one hour that has a value: 1800 s × 400.
    assert series.integral(utc(2026, 10, 1, 13, 0), utc(2026, 10, 1, 13, 30)) == 720_000.0


def test_covers_says_whether_a_run_needs_the_fallback() -> None:
    # hours 10, 11 and 13 of 2026-10-01 have values; 12 and everything outside do not
    hour = int(utc(2026, 10, 1, 10).timestamp()) // 3600
    series = HourlySeries({hour: 100.0, hour + 1: 90.0, hour + 3: 400.0}, 50.0)
    assert series.covers(utc(2026, 10, 1, 10, 15), utc(2026, 10, 1, 12))  # ends as 12 starts
    assert not series.covers(utc(2026, 10, 1, 10, 15), utc(2026, 10, 1, 12, 0, 1))  # the gap
    assert series.covers(utc(2026, 10, 1, 13), utc(2026, 10, 1, 14))
    assert not series.covers(utc(2026, 10, 1, 13, 30), utc(2026, 10, 1, 14, 30))  # past the last
    assert not series.covers(utc(2026, 10, 1, 9, 59), utc(2026, 10, 1, 10, 30))  # before the first
    assert series.covers(utc(2026, 10, 1, 12, 30), utc(2026, 10, 1, 12, 30))  # an empty run
    assert not HourlySeries({}, 50.0).covers(utc(2026, 10, 1, 10), utc(2026, 10, 1, 11))


def test_monthly_pue_pieces_cut_at_month_starts() -> None:
    pue = MonthlyPue(1.2, {"2026-12": 1.4})
    pieces = list(pue.pieces(utc(2026, 11, 30, 12), utc(2027, 1, 1, 6)))
    assert pieces == [
        (utc(2026, 11, 30, 12), utc(2026, 12, 1)),
        (utc(2026, 12, 1), utc(2027, 1, 1)),
        (utc(2027, 1, 1), utc(2027, 1, 1, 6)),
    ]
