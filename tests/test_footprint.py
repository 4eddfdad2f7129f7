"""The footprint model, with numbers worked by hand in the comments."""

from __future__ import annotations

import pytest

from jobcarbon.config import parse_config
from jobcarbon.errors import FactorError, InputError
from jobcarbon.footprint import Method, PowerProfile, Uncertainty, compute_footprint
from jobcarbon.records import Component, JobState, MeasuredEnergy
from jobcarbon.site import Constant, HourlySeries, MonthlyPue, SiteFactors
from tests.conftest import make_job, utc
from tests.support.config import make_config

A_1KW_GPU = PowerProfile(gpu_model="X", gpu_tdp_w=1000.0, gpu_idle_w=100.0)


def site(pue: float = 1.0, intensity: float = 100.0, pue_uncertainty: float = 0.0) -> SiteFactors:
    return SiteFactors("s", Constant(pue), Constant(intensity), pue_uncertainty)


def test_green_algorithms_formula() -> None:
    # Green Algorithms (Lannelongue et al. 2021): cores × W/core + GPUs × W + GB × 0.3725 W/GB,
    # × hours × PUE × intensity. 8 cores × 12 W = 96 W; 1 GPU at full use = 250 W;
    # 64 GB × 0.3725 = 23.84 W; total 369.84 W × 10 h = 3.6984 kWh IT;
    # × PUE 1.67 = 6.176328 kWh; × 475 g/kWh = 2933.7558 g.
    job = make_job(
        cpu_count=8,
        memory_gb=64,
        gpu_utilization=1.0,
        start_time=utc(2026, 10, 1, 0),
        end_time=utc(2026, 10, 1, 10),
    )
    power = PowerProfile("X", 250.0, 37.5, 12.0, 3.6, 0.3725)
    fp = compute_footprint(job, power, site(1.67, 475.0))
    assert fp.energy_gpu_kwh == pytest.approx(2.5)
    assert fp.energy_cpu_kwh == pytest.approx(0.96)
    assert fp.energy_memory_kwh == pytest.approx(0.2384)
    assert fp.energy_it_kwh == pytest.approx(3.6984)
    assert fp.energy_facility_kwh == pytest.approx(6.176328)
    assert fp.co2e_g == pytest.approx(2933.7558)
    assert fp.pue == pytest.approx(1.67)
    assert fp.intensity_g_per_kwh == pytest.approx(475.0)
    assert fp.method is Method.ESTIMATED
    assert fp.gpu_seconds == 36000 and fp.cpu_seconds == 8 * 36000


def test_gpu_power_with_known_utilisation() -> None:
    # idle 100 W + 0.4 × (1000 − 100) W = 460 W for 1 h = 0.46 kWh; × 100 g/kWh = 46 g
    fp = compute_footprint(make_job(gpu_utilization=0.4), A_1KW_GPU, site())
    assert fp.energy_gpu_kwh == pytest.approx(0.46)
    assert fp.co2e_g == pytest.approx(46.0)
    # known utilisation: ±10 % TDP-table error → 41.4 g to 50.6 g
    assert (fp.co2e_g_low, fp.co2e_g_high) == pytest.approx((41.4, 50.6))


def test_range_with_unknown_utilisation_and_pue_uncertainty() -> None:
    # unknown utilisation: central at TDP (1 kWh), low at idle (0.1 kWh), high TDP × 1.1.
    # PUE 1.5 ± 10 %: low 1.35, high 1.65. intensity 100.
    fp = compute_footprint(make_job(), A_1KW_GPU, site(1.5, 100.0, 0.10))
    assert fp.co2e_g == pytest.approx(150.0)
    assert fp.co2e_g_low == pytest.approx(0.1 * 1.35 * 100)
    assert fp.co2e_g_high == pytest.approx(1.1 * 1.65 * 100)


def test_pue_low_bound_never_below_one() -> None:
    fp = compute_footprint(make_job(gpu_utilization=1.0), A_1KW_GPU, site(1.02, 100.0, 0.10))
    # low = 0.9 kWh × max(1.0, 1.02 × 0.9) × 100 = 90 g
    assert fp.co2e_g_low == pytest.approx(90.0)


def test_hourly_series_is_integrated_not_sampled_at_start() -> None:
    # 1 kW from 10:30 to 13:15: 0.5 kWh at 100 + 1 kWh at 200 + 1 kWh at 400 + 0.25 kWh at 800
    # = 50 + 200 + 400 + 200 = 850 g. Sampling at the start would give 2.75 × 100 = 275 g.
    hours = {
        int(utc(2026, 10, 1, h).timestamp()) // 3600: v
        for h, v in [(10, 100.0), (11, 200.0), (12, 400.0), (13, 800.0)]
    }
    series = SiteFactors("s", Constant(1.0), HourlySeries(hours), 0.0)
    job = make_job(start_time=utc(2026, 10, 1, 10, 30), end_time=utc(2026, 10, 1, 13, 15))
    fp = compute_footprint(job, A_1KW_GPU, series)
    assert fp.energy_facility_kwh == pytest.approx(2.75)
    assert fp.co2e_g == pytest.approx(850.0)
    sampled = compute_footprint(job, A_1KW_GPU, site(1.0, 100.0))
    assert sampled.co2e_g == pytest.approx(275.0)
    assert fp.intensity_g_per_kwh == pytest.approx(850.0 / 2.75)


def test_series_gap_without_fallback_names_the_hour() -> None:
    series = SiteFactors("s", Constant(1.0), HourlySeries({}, None, "grid.csv"), 0.0)
    with pytest.raises(FactorError, match="2026-10-01T10:00:00"):
        compute_footprint(make_job(), A_1KW_GPU, series)
    with_fallback = SiteFactors("s", Constant(1.0), HourlySeries({}, 55.0), 0.0)
    assert compute_footprint(make_job(), A_1KW_GPU, with_fallback).co2e_g == pytest.approx(55.0)


def test_monthly_pue_split_across_months() -> None:
    # 1 kW from 2026-09-30 23:00 to 2026-10-01 01:00: 1 kWh in September (PUE 1.2, the default)
    # and 1 kWh in October (PUE 1.4) → 2.6 kWh facility; × 100 g/kWh = 260 g.
    pue = MonthlyPue(1.2, {"2026-10": 1.4})
    job = make_job(start_time=utc(2026, 9, 30, 23), end_time=utc(2026, 10, 1, 1))
    fp = compute_footprint(job, A_1KW_GPU, SiteFactors("s", pue, Constant(100.0), 0.0))
    assert fp.energy_facility_kwh == pytest.approx(2.6)
    assert fp.co2e_g == pytest.approx(260.0)
    assert fp.pue == pytest.approx(1.3)


def test_measured_node_energy_replaces_the_estimate() -> None:
    # Estimate: GPU 1 kWh, CPU 4 × 50 W = 0.2 kWh, memory 0 → measured 3.6 MJ = 1 kWh is
    # split 5/6 : 1/6. × PUE 1.5 × 100 g/kWh = 150 g, ± 5 % measurement error.
    job = make_job(cpu_count=4, measured=(MeasuredEnergy(3.6e6, frozenset(Component)),))
    power = PowerProfile("X", 1000.0, 100.0, 50.0, 15.0, 0.0)
    fp = compute_footprint(job, power, site(1.5, 100.0))
    assert fp.method is Method.MEASURED
    assert fp.energy_it_kwh == pytest.approx(1.0)
    assert fp.energy_gpu_kwh == pytest.approx(5 / 6)
    assert fp.energy_cpu_kwh == pytest.approx(1 / 6)
    assert fp.co2e_g == pytest.approx(150.0)
    assert (fp.co2e_g_low, fp.co2e_g_high) == pytest.approx((142.5, 157.5))


def test_measurement_of_cpu_only_leaves_gpu_estimated() -> None:
    # RAPL-style: CPU and memory measured at 0.5 kWh, GPU estimated at 1 kWh → 1.5 kWh IT.
    covers = frozenset({Component.CPU, Component.MEMORY})
    job = make_job(cpu_count=4, memory_gb=10, measured=(MeasuredEnergy(1.8e6, covers),))
    power = PowerProfile("X", 1000.0, 100.0, 50.0, 15.0, 0.5)
    fp = compute_footprint(job, power, site())
    assert fp.method is Method.MIXED
    assert fp.energy_gpu_kwh == pytest.approx(1.0)
    assert fp.energy_cpu_kwh + fp.energy_memory_kwh == pytest.approx(0.5)
    # estimate split: CPU 0.2 kWh, memory 0.005 kWh → CPU share 0.2 / 0.205
    assert fp.energy_cpu_kwh == pytest.approx(0.5 * 0.2 / 0.205)


def test_rapls_cpu_and_memory_and_the_gpus_measured_apart_each_replace_their_own() -> None:
    # RAPL's 0.5 kWh split between CPU (est. 0.2 kWh) and memory (est. 0.005 kWh) as
    # above; the GPUs' 0.3 kWh (DCGM) is the GPU's whole, not a share of a 0.8 kWh sum
    # (a share would give 0.8 × 1 / 1.205 = 0.664 kWh to the GPU)
    rapl = MeasuredEnergy(1.8e6, frozenset({Component.CPU, Component.MEMORY}))
    gpus = MeasuredEnergy(1.08e6, frozenset({Component.GPU}))
    job = make_job(cpu_count=4, memory_gb=10, measured=(rapl, gpus))
    power = PowerProfile("X", 1000.0, 100.0, 50.0, 15.0, 0.5)
    fp = compute_footprint(job, power, site())
    assert fp.method is Method.MEASURED
    assert fp.energy_gpu_kwh == pytest.approx(0.3)
    assert fp.energy_cpu_kwh == pytest.approx(0.5 * 0.2 / 0.205)
    assert fp.energy_it_kwh == pytest.approx(0.8)


@pytest.mark.parametrize(
    "state",
    [
        JobState.FAILED,
        JobState.TIMEOUT,
        JobState.CANCELLED,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
    ],
)
def test_unsuccessful_jobs_that_ran_are_counted(state: JobState) -> None:
    fp = compute_footprint(make_job(state=state), A_1KW_GPU, site())
    assert fp.co2e_g == pytest.approx(100.0)


def test_job_that_never_started_costs_zero() -> None:
    job = make_job(state=JobState.CANCELLED, start_time=None)
    fp = compute_footprint(job, PowerProfile(), site())
    assert (fp.energy_facility_kwh, fp.co2e_g, fp.co2e_g_high, fp.gpu_seconds) == (0, 0, 0, 0)


def test_gpu_job_without_gpu_power_is_an_error_naming_the_partition() -> None:
    with pytest.raises(FactorError, match="partition 'gpu'"):
        compute_footprint(make_job(), PowerProfile(), site())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"end_time": utc(2026, 10, 1, 9)}, "before start_time"),
        ({"gpu_count": -1}, "gpu_count"),
        ({"gpu_utilization": 1.5}, "gpu_utilization"),
        ({"end_time": utc(2028, 1, 1)}, "longer than 366 days"),
    ],
)
def test_impossible_records_are_refused_with_the_field(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(InputError, match=field):
        compute_footprint(make_job(**overrides), A_1KW_GPU, site())


def test_uncertainty_is_configurable() -> None:
    fp = compute_footprint(make_job(gpu_utilization=1.0), A_1KW_GPU, site(), Uncertainty(tdp=0.2))
    assert (fp.co2e_g_low, fp.co2e_g_high) == pytest.approx((80.0, 120.0))


@pytest.mark.parametrize(("cpu_energy_from", "cpu_kwh"), [("allocation", 0.096), ("usage", 0.0456)])
def test_cpu_energy_from_allocation_or_usage(cpu_energy_from: str, cpu_kwh: float) -> None:
    # 8 allocated cores for 1 h, TotalCPU 2 core-hours; 12 W/core, idle 0.3 × 12 = 3.6 W.
    # allocation: 8 × 12 W × 1 h = 96 Wh. usage: 2 busy cores × 12 W = 24 W and the
    # 6 idle ones × 3.6 W = 21.6 W: 45.6 W × 1 h = 45.6 Wh
    config = parse_config(
        make_config(clusters={"c1": {"site": "s1", "cpu_energy_from": cpu_energy_from}})
    )
    job = make_job(gpu_count=0, cpu_count=8, cpu_used_seconds=2 * 3600.0)
    fp = compute_footprint(job, config.clusters["c1"].power_profile(job), site())
    assert fp.energy_cpu_kwh == pytest.approx(cpu_kwh)
    assert fp.cpu_seconds == 8 * 3600  # the allocation's core-seconds, either way


def test_cpu_energy_from_usage_without_cpu_time_charges_the_allocation() -> None:
    # pyslurm, or a job with no steps: no CPU time known, so 8 × 12 W × 1 h
    config = parse_config(make_config(clusters={"c1": {"site": "s1", "cpu_energy_from": "usage"}}))
    job = make_job(gpu_count=0, cpu_count=8)
    fp = compute_footprint(job, config.clusters["c1"].power_profile(job), site())
    assert fp.energy_cpu_kwh == pytest.approx(0.096)
