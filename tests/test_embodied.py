"""Embodied emissions amortised per job as the SCI does: node × share × run time ÷ lifetime."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobcarbon import embodied, factors
from jobcarbon.embodied import EmbodiedSettings, amortise, job_embodied, resolve
from jobcarbon.errors import FactorError
from jobcarbon.records import JobRecord
from tests.conftest import make_job, utc


def job(hours: float, gpus: float = 0.0, cores: int = 0) -> JobRecord:
    start = utc(2026, 3, 1)
    return make_job(
        start_time=start, end_time=start + timedelta(hours=hours), gpu_count=gpus, cpu_count=cores
    )


def test_gpu_job_gets_its_gpus_share_of_the_node_over_its_lifetime() -> None:
    # The example: an 8-GPU node of X = 4677 kgCO2e over 4 years, a 2-GPU job
    # of 10 h: 4677 × 2/8 × 10/(4 × 8,766) kg = 4677 × 0.25 × 10 / 35,064
    # = 0.333461670 kg = 333.461670 g.
    node = resolve(EmbodiedSettings(node_kg=4677, gpus_per_node=8, lifetime_years=4))
    result = job_embodied(job(10, gpus=2), node)
    assert result.configured
    assert result.co2e_g == pytest.approx(333.461670)
    assert result.share == 0.25 and result.share_of == "gpus"
    # the site's figure has no spread of its own; the range is the sources' lifetimes:
    # low over 6 years (BLOOM): 4677 × 0.25 × 10 / 52,596 = 0.222307780 kg; high over
    # 4 years (CCF), the site's own.
    assert result.co2e_g_low == pytest.approx(222.307780)
    assert result.co2e_g_high == pytest.approx(333.461670)
    assert result.node == "site config"


def test_cpu_job_gets_its_cores_share_of_the_node() -> None:
    # A CPU-only job of 24 cores for 48 h on a node of N = 96 cores, 1,500 kgCO2e, 5
    # years: 1500 × 24/96 × 48/(5 × 8,766) = 1500 × 0.25 × 48 / 43,830 = 0.410678 kg.
    # Range: low over 6 years: 1500 × 0.25 × 48 / 52,596 = 0.342231 kg; high over 4:
    # 1500 × 0.25 × 48 / 35,064 = 0.513347 kg.
    node = resolve(
        EmbodiedSettings(node_kg=1500, gpus_per_node=8, cores_per_node=96, lifetime_years=5)
    )
    result = job_embodied(job(48, cores=24), node)
    assert result.share_of == "cores" and result.share == 0.25
    assert result.co2e_g == pytest.approx(410.677618)
    assert result.co2e_g_low == pytest.approx(342.231348)
    assert result.co2e_g_high == pytest.approx(513.347023)


def test_amortisation_does_not_stop_at_end_of_life() -> None:
    # One GPU of an 8-GPU node of 4000 kg with a 1-year lifetime, for 2 years
    # (17,532 h): 4000 × 1/8 × 17,532/8,766 = 1000 kg, twice the GPU's 500 kg share:
    # a job on old hardware is still charged, never free.
    node = resolve(EmbodiedSettings(node_kg=4000, gpus_per_node=8, lifetime_years=1))
    result = amortise(node, gpus=1, cores=0, run_seconds=17_532 * 3600)
    assert result.co2e_g == pytest.approx(1_000_000)


def test_not_configured_is_zero_and_says_so() -> None:
    result = job_embodied(job(10, gpus=2), None)
    assert result == embodied.NOT_CONFIGURED
    assert not result.configured
    assert (result.co2e_g, result.co2e_g_low, result.co2e_g_high) == (0.0, 0.0, 0.0)
    assert result.node == "not configured"


def test_a_bundled_node_brings_its_gpus_lifetime_spread_and_source() -> None:
    # CCF's p4d.24xlarge host (8 x A100): 4676.79 kg over 4 years; 8 GPUs for 10 h:
    # 4676.79 × 10 / 35,064 = 1.333787 kg (a 365.25-day year; CCF's own 360-day year
    # would give 4676.79 × 10 / 34,560 = 1.353 kg).
    node = resolve(EmbodiedSettings(node="P4D 24xlarge"))
    assert (node.gpus_per_node, node.lifetime_years) == (8, 4.0)
    result = amortise(node, gpus=8, cores=0, run_seconds=10 * 3600)
    assert result.co2e_g == pytest.approx(1333.787)
    assert result.node == "aws p4d.24xlarge"
    assert "Apache-2.0" in result.source and "2021" in result.source
    # GCP's e2-standard-2 host runs on several CPU generations; CCF gives a host for
    # each (1155.46 to 1255.46 kg) and their mean, 1230.46 (coefficients-gcp-embodied-
    # mean.csv): the range is theirs and the lifetimes'. 4 of 32 cores for 100 h:
    # low 1155.46 × 0.125 × 100 / 52,596 = 0.2746074 kg (6 y), high 1255.46 × 0.125 ×
    # 100 / 35,064 = 0.447560 kg (4 y).
    e2 = resolve(EmbodiedSettings(node="gcp e2-standard-2", cores_per_node=32))
    assert (e2.node_kg_low, e2.node_kg, e2.node_kg_high) == (1155.46, 1230.46, 1255.46)
    spread = amortise(e2, gpus=0, cores=4, run_seconds=100 * 3600)
    assert spread.co2e_g_low == pytest.approx(274.6074)
    assert spread.co2e_g_high == pytest.approx(447.560)


def test_a_bundled_accelerator_is_one_card() -> None:
    # BLOOM: 150 kg per A100 over 6 years; 4 GPUs for 24 h at a 5-year lifetime:
    # 150 × 4 × 24 / (5 × 8,766) = 0.328542 kg.
    node = resolve(EmbodiedSettings(node="A100 (BLOOM)", lifetime_years=5))
    assert node.gpus_per_node == 1
    assert amortise(node, gpus=4, cores=0, run_seconds=24 * 3600).co2e_g == pytest.approx(328.542)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (EmbodiedSettings(), "exactly one of node_kg or node"),
        (EmbodiedSettings(node_kg=1, node="p4d"), "exactly one of node_kg or node"),
        (EmbodiedSettings(node_kg=4677, gpus_per_node=8), r"aurora\.lifetime_years is needed"),
        (EmbodiedSettings(node_kg=-3, lifetime_years=4), r"aurora\.node_kg must be > 0, got -3"),
        (EmbodiedSettings(node="p4d", lifetime_years=0), r"aurora\.lifetime_years must be > 0"),
        (EmbodiedSettings(node="nonesuch"), "unknown embodied entry 'nonesuch'"),
    ],
)
def test_bad_settings_name_the_key(settings: EmbodiedSettings, message: str) -> None:
    with pytest.raises(FactorError, match=message):
        resolve(settings, where="aurora")


def test_a_job_the_node_cannot_share_out_is_refused() -> None:
    cpu_node = resolve(EmbodiedSettings(node="aws c5.large"))
    with pytest.raises(FactorError, match=r"aws c5\.large, a node without GPUs"):
        amortise(cpu_node, gpus=1, cores=0, run_seconds=3600)
    with pytest.raises(FactorError, match="cores_per_node is needed"):
        amortise(cpu_node, gpus=0, cores=2, run_seconds=3600)


def test_every_bundled_node_resolves() -> None:
    for entry in factors.embodied_table():
        assert factors.find_embodied(entry.name) == entry
        node = resolve(EmbodiedSettings(node=entry.name))
        assert node.node_kg_low <= node.node_kg <= node.node_kg_high, entry
        assert node.lifetime_years in (4.0, 6.0), entry
