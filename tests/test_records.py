"""JobRecord.validate: every impossible record named, whichever check finds it."""

from __future__ import annotations

from datetime import timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from jobcarbon.errors import InputError
from jobcarbon.records import Component, MeasuredEnergy
from tests.conftest import make_job, utc

CPU = frozenset({Component.CPU})
CPU_AND_MEMORY = frozenset({Component.CPU, Component.MEMORY})


@pytest.mark.parametrize(
    "zone", [timezone(timedelta(0)), ZoneInfo("UTC"), ZoneInfo("Etc/UTC")], ids=str
)
def test_times_in_any_zone_of_offset_zero_are_utc(zone: object) -> None:
    # not the UTC object sources use, but the same instant: accepted
    start = utc(2026, 10, 1, 10).astimezone(zone)  # type: ignore[arg-type]
    make_job(start_time=start, submit_time=start).validate()


@pytest.mark.parametrize("field", ["submit_time", "start_time", "end_time"])
def test_a_time_with_an_offset_is_refused_by_name(field: str) -> None:
    cest = timezone(timedelta(hours=2))
    moment = utc(2026, 10, 1, 10, 30).astimezone(cest)
    with pytest.raises(InputError, match=f"job c1/1: {field} must be UTC, got datetime"):
        make_job(**{field: moment}).validate()


@pytest.mark.parametrize("field", ["gpu_count", "cpu_count", "memory_gb", "node_count"])
@pytest.mark.parametrize("value", [-1, float("nan")])
def test_a_negative_or_nan_count_is_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(InputError, match=f"{field} must be >= 0, got {value!r}"):
        make_job(**{field: value}).validate()


def test_one_measurement_or_several_apart_are_fine_overlapping_ones_are_not() -> None:
    make_job(measured=(MeasuredEnergy(3.6e6, CPU_AND_MEMORY),)).validate()
    gpu = MeasuredEnergy(1.0, frozenset({Component.GPU}))
    make_job(measured=(MeasuredEnergy(1.0, CPU_AND_MEMORY), gpu)).validate()
    twice = (MeasuredEnergy(1.0, CPU_AND_MEMORY), MeasuredEnergy(2.0, CPU))
    with pytest.raises(InputError, match=r"overlap \(cpu\): that energy would count twice"):
        make_job(measured=twice).validate()
