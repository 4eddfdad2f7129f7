"""Measured GPU energy for Slurm jobs, from dcgm-exporter's counter (``hpc_job`` label)
and jobstats' power gauge (``jobid`` label), in a real Prometheus filled by promtool
(tests/support/prometheus_server.py), Debian's 2.42 and 3.x
(tests/support/prometheus_versions.py). The reader is the pod path's.

Hand-worked (1 h runs, a sample every 30 s from start to end):
- job 101, on two nodes, one GPU each: 250 W and 300 W → 900,000 + 1,080,000 =
  1,980,000 J; busy 80 % and 40 % → 0.6.
- job 102, its scrapes starting 10 min late (50 of 60 min, ≥ 80 %): 200 W over the
  samples' 3000 s, scaled to the 3600 s run → 720,000 J.
- job 7, through the collector: one GPU at 250 W → 900,000 J = 0.25 kWh.
- job 201 (jobstats): power rising linearly from 100,000 to 300,000 mW: trapezoids are
  exact for a line, 200 W on average → 720,000 J; duty cycle 50 % → 0.5.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobcarbon.config import parse_config
from jobcarbon.daemons.collector import Collector
from jobcarbon.errors import InputError
from jobcarbon.ledger import Ledger
from jobcarbon.records import Component, JobRecord, JobState, MeasuredEnergy
from jobcarbon.sources.dcgm import (
    DcgmEnergy,
    GpuJob,
    Measurement,
    slurm_gpu_energy,
    with_measurement,
)
from jobcarbon.sources.slurm.runner import Sacct
from jobcarbon.sources.slurm.spool import Spool
from tests.sources.test_collector import CONFIG, ScriptedSacct
from tests.support.config import make_config, merged
from tests.support.net import free_port
from tests.support.prometheus_server import PrometheusWithHistory, Series
from tests.support.prometheus_versions import VERSIONS

START = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
STEP_S = 30
DCGM_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
JOBSTATS_POWER = "nvidia_gpu_power_usage_milliwatts"


def grid(start: datetime = START, end: datetime = END) -> list[float]:
    first, last = start.timestamp(), end.timestamp()
    return [first + k * STEP_S for k in range(int((last - first) // STEP_S) + 1)]


def dcgm(
    uuid: str, job: str, watts: float, host: str = "gpu-1", start: datetime = START, **kw: object
) -> Series:
    """dcgm-exporter's mJ counter of one GPU (from 5e9 mJ at the first sample)."""
    times = grid(start, kw.pop("end", END))  # type: ignore[arg-type]
    reset = kw.pop("reset_at", None)
    samples = [
        (
            t,
            (watts * 1000 * (t - reset))
            if reset and t >= reset
            else 5e9 + watts * 1000 * (t - times[0]),
        )
        for t in times
    ]
    labels = {"gpu": "0", "UUID": uuid, "Hostname": host, "hpc_job": job}
    return Series(labels, samples, DCGM_ENERGY)


def busy(energy: Series, percent: float, name: str) -> Series:
    return Series(energy.labels, [(t, percent) for t, _ in energy.samples], name)


def jobstats(uuid: str, job: str, milliwatts: list[float]) -> Series:
    labels = {"minor_number": "0", "name": "NVIDIA A100", "uuid": uuid, "jobid": job}
    return Series(labels, list(zip(grid(), milliwatts, strict=False)), JOBSTATS_POWER)


@pytest.fixture(scope="module", params=VERSIONS)
def prometheus(request: pytest.FixtureRequest) -> Iterator[PrometheusWithHistory]:
    two_nodes = [dcgm("GPU-a", "101", 250, "gpu-1"), dcgm("GPU-b", "101", 300, "gpu-2")]
    ramp = jobstats("GPU-j", "201", [100_000 + 200_000 * k / 120 for k in range(121)])
    history = [
        *two_nodes,
        busy(two_nodes[0], 80, "DCGM_FI_DEV_GPU_UTIL"),
        busy(two_nodes[1], 40, "DCGM_FI_DEV_GPU_UTIL"),
        dcgm("GPU-c", "102", 200, start=START + timedelta(minutes=10)),
        dcgm("GPU-d", "103", 200, reset_at=(START + timedelta(minutes=30)).timestamp()),
        dcgm("GPU-e", "104", 150),
        dcgm("GPU-e", "105", 150, start=START + timedelta(minutes=20)),  # shares GPU-e
        dcgm("GPU-f", "106", 250, end=START + timedelta(minutes=30)),
        dcgm("GPU-g", "107", 5000),  # no GPU draws 5 kW
        ramp,
        busy(ramp, 50, "nvidia_gpu_duty_cycle"),
        jobstats("GPU-k", "202", [3_000_000] * 121),  # 3 kW
        dcgm("GPU-h", "7", 250),  # the collector's job 7 (tests/sources/test_collector.py)
    ]
    with PrometheusWithHistory(history, version=request.param) as server:
        yield server


def reader(url: str, exporter: str = "dcgm", **slurm: object) -> DcgmEnergy:
    config = parse_config(
        make_config(slurm={"prometheus_url": url, "gpu_exporter": exporter, **slurm})
    )
    energy = slurm_gpu_energy(config.slurm)
    assert energy is not None
    return energy


def job(job_id: str, gpus: float = 1) -> GpuJob:
    return GpuJob((job_id,), START, END, gpus)


def test_dcgm_counter_of_a_two_node_job_and_a_late_scrape(
    prometheus: PrometheusWithHistory,
) -> None:
    calls: list[str] = []

    def fetch(url: str, timeout_s: float) -> bytes:
        calls.append(url)
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()
            return body

    energy = reader(prometheus.url)
    energy.fetch = fetch
    two_nodes, late = energy.measure_batch([job("101", 2), job("102")])
    assert two_nodes.energy is not None
    assert two_nodes.energy.energy_j == pytest.approx(1_980_000)
    assert two_nodes.energy.covers == frozenset({Component.GPU})
    assert two_nodes.gpu_utilization == pytest.approx(0.6)
    assert late.energy is not None and late.energy.energy_j == pytest.approx(720_000)
    assert len(calls) == 3  # energy, the GPUs' other jobs, busy share: once for the batch


def test_jobstats_power_gauge_integrated(prometheus: PrometheusWithHistory) -> None:
    (measured,) = reader(prometheus.url, "jobstats").measure_batch([job("201")])
    assert measured.energy is not None and measured.energy.energy_j == pytest.approx(720_000)
    assert measured.gpu_utilization == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("exporter", "gpu_job", "reason"),
    [
        ("dcgm", job("103"), "the counter of GPU GPU-d was reset during the run"),
        ("dcgm", job("104"), "GPU GPU-e served other jobs during the run"),
        ("dcgm", job("106"), "the samples of GPU GPU-f cover 1800 s of the 3600 s run"),
        ("dcgm", job("101", 3), "has 2 GPU(s) for the job, which holds 3"),
        ("dcgm", job("999"), "has 0 GPU(s) for the job, which holds 1"),
        ("dcgm", job("107"), "GPU GPU-g would have drawn 5000 W on average"),
        ("jobstats", job("202"), "GPU GPU-k would have drawn 3000 W on average"),
        ("dcgm", GpuJob(("101",), START, END, 2, mig=True), "a MIG slice"),
    ],
)
def test_every_refusal_keeps_the_estimate_and_says_why(
    prometheus: PrometheusWithHistory, exporter: str, gpu_job: GpuJob, reason: str
) -> None:
    (measured,) = reader(prometheus.url, exporter).measure_batch([gpu_job])
    assert measured.energy is None and not measured.unreachable
    assert reason in measured.reason
    assert measured.gpu_utilization is None


def test_prometheus_unreachable_every_job_of_the_batch_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    answers = reader(url, prometheus_timeout_s=2).measure_batch([job("101"), job("102")])
    assert [a.unreachable for a in answers] == [True, True]
    assert all(a.energy is None and a.reason.startswith(f"Prometheus at {url}") for a in answers)


def _record(*measured: MeasuredEnergy) -> JobRecord:
    return JobRecord(
        "c1",
        "101",
        "alice",
        "p",
        "gpu",
        JobState.COMPLETED,
        START,
        START,
        END,
        gpu_count=2,
        measured=measured,
    )


def test_the_gpus_energy_is_counted_once_next_to_slurms() -> None:
    gpu = Measurement(MeasuredEnergy(1_980_000, frozenset({Component.GPU})), gpu_utilization=0.6)
    # no node counter: the GPUs measured, CPU and memory estimated (method mixed)
    assert with_measurement(_record(), gpu).measured == (gpu.energy,)
    # IPMI's node counter already holds the GPUs: its energy kept, the busy share taken
    ipmi = MeasuredEnergy(3_000_000, frozenset(Component))
    combined = with_measurement(_record(ipmi), gpu)
    assert combined.measured == (ipmi,) and combined.gpu_utilization == 0.6
    # so does a counter of the GPUs alone (acct_gather_energy/gpu): Slurm's kept
    slurm_gpus = MeasuredEnergy(2_000_000, frozenset({Component.GPU}))
    assert with_measurement(_record(slurm_gpus), gpu).measured == (slurm_gpus,)
    # a counter of CPU and memory only (RAPL): the GPUs' energy next to it, each its own
    rapl = MeasuredEnergy(1_200_000, frozenset({Component.CPU, Component.MEMORY}))
    both = with_measurement(_record(rapl), gpu)
    assert both.measured == (rapl, gpu.energy)
    both.validate()  # no component measured twice
    with pytest.raises(InputError, match=r"measured energies overlap \(gpu\)"):
        _record(ipmi, gpu.energy).validate()


def _collect(
    tmp_path: Path, url: str, energy_j: str = "", covers: str = "node", written: int = 1
) -> tuple[dict[str, object], dict[str, int]]:
    """Job 7 (one A100, 10:00 to 11:00 UTC; Slurm's ConsumedEnergyRaw ``energy_j``, read
    as ``slurm_energy_covers: covers``) from the spool and the sweep, into the ledger
    ledger.db in ``tmp_path`` (``written``: rows the run writes)."""
    spool = Spool(tmp_path / "spool")
    spool.create()
    (spool.new / "7").write_text("JOB_ID=7\n")
    sacct = ScriptedSacct(AllocTRES="cpu=1,mem=1G,node=1,gres/gpu=1", ConsumedEnergyRaw=energy_j)
    sacct.state = "COMPLETED"
    hardware = [{"match": {"partition": "cpu"}, "gpu_model": "A100 SXM4 80 GB"}]
    config = merged(
        CONFIG,
        {
            "clusters": {"c1": {"hardware": hardware, "slurm_energy_covers": covers}},
            "slurm": {"prometheus_url": url, "gpu_wait_s": 60},  # below give_up_after_s 100
        },
    )
    with Ledger(tmp_path / "ledger.db") as ledger:
        collector = Collector(parse_config(config), ledger, Sacct(run=sacct), spool)
        report = collector.collect_once()
        assert report.accounted.written == written and report.pending == 0
        assert not list(spool.new.iterdir())  # not lost, and done with
        (row,) = ledger.jobs()
        return row, ledger.ingest_errors()


def test_the_collector_accounts_a_job_with_its_measured_gpus(
    prometheus: PrometheusWithHistory, tmp_path: Path
) -> None:
    row, errors = _collect(tmp_path, prometheus.url)
    assert row["job_id"] == "7" and row["method"] == "mixed"  # CPU and memory estimated
    assert row["energy_gpu_kwh"] == pytest.approx(0.25)
    assert "prometheus" not in errors


def test_prometheus_unreachable_the_job_is_estimated_and_the_error_counted(
    tmp_path: Path,
) -> None:
    row, errors = _collect(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert row["job_id"] == "7" and row["method"] == "estimated"
    # the estimate: the A100's 400 W TDP (no busy share known) × 1 h = 0.4 kWh
    assert row["energy_gpu_kwh"] == pytest.approx(0.4)
    assert errors["prometheus"] == 2  # each failed call: the spool's batch, the sweep's


def test_prometheus_unreachable_when_the_job_is_read_again_its_measurement_stays(
    prometheus: PrometheusWithHistory, tmp_path: Path
) -> None:
    measured, _ = _collect(tmp_path, prometheus.url)
    assert measured["energy_gpu_kwh"] == pytest.approx(0.25)  # 250 W × 1 h
    # the job is read again (its spool entry anew, and the sweep) with Prometheus down:
    # the stored measurement is kept, not replaced by the 0.4 kWh TDP estimate
    again, errors = _collect(tmp_path, f"http://127.0.0.1:{free_port()}", written=0)
    assert again == measured
    assert errors["prometheus"] == 2  # still counted: each failed call


# Job 7's estimate (CONFIG: PUE 1.0, 100 g/kWh): the A100 at its 400 W TDP (no busy
# share in its series), 1 core × 12 W, 1 GB × 0.3725 W: 0.4 + 0.012 + 0.0003725 kWh.
CPU_SHARE = 12 / 12.3725  # of what CPU and memory use together, by their estimates


def test_ipmis_node_energy_wins_over_the_gpus_from_prometheus(
    prometheus: PrometheusWithHistory, tmp_path: Path
) -> None:
    # the node's 1.8 MJ = 0.5 kWh hold the GPUs: Prometheus's 0.25 kWh is not added
    row, _ = _collect(tmp_path, prometheus.url, energy_j="1800000", covers="node")
    assert row["method"] == "measured"
    assert row["energy_it_kwh"] == pytest.approx(0.5)
    assert row["energy_gpu_kwh"] == pytest.approx(0.5 * 0.4 / 0.4123725)  # split by estimate


def test_rapls_cpu_and_memory_next_to_the_gpus_from_prometheus(
    prometheus: PrometheusWithHistory, tmp_path: Path
) -> None:
    # RAPL's 180 kJ = 0.05 kWh are CPU and memory; the GPU's 250 W × 1 h = 0.25 kWh from
    # Prometheus: 0.30 kWh, every component measured, none twice
    row, _ = _collect(tmp_path, prometheus.url, energy_j="180000", covers="cpu_memory")
    assert row["method"] == "measured"
    assert row["energy_gpu_kwh"] == pytest.approx(0.25)
    assert row["energy_cpu_kwh"] == pytest.approx(0.05 * CPU_SHARE)
    assert row["energy_it_kwh"] == pytest.approx(0.30)
    assert row["co2e_g"] == pytest.approx(30.0)  # × PUE 1.0 × 100 g/kWh


def test_rapls_cpu_and_memory_next_to_the_gpus_estimate_without_prometheus(
    tmp_path: Path,
) -> None:
    # RAPL's 0.05 kWh measured, the GPU estimated at its TDP: 0.4 + 0.05 = 0.45 kWh
    unreachable = f"http://127.0.0.1:{free_port()}"
    row, errors = _collect(tmp_path, unreachable, energy_j="180000", covers="cpu_memory")
    assert row["method"] == "mixed"
    assert row["energy_gpu_kwh"] == pytest.approx(0.4)
    assert row["energy_cpu_kwh"] == pytest.approx(0.05 * CPU_SHARE)
    assert row["energy_it_kwh"] == pytest.approx(0.45)
    assert errors["prometheus"] == 2
