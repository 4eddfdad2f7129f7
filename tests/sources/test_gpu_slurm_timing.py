"""A Slurm job whose GPU samples are not all in Prometheus yet waits, retried like a job
whose end record has not reached slurmdbd (tests/sources/test_collector.py), in a real
Prometheus, 2.42 and 3.x, that receives the later samples while the collector waits
(``PrometheusWithHistory.add``).

Job 7 is tests/sources/test_collector.py's scripted sacct job: one A100 from 10:00 to
11:00 UTC, no Slurm energy. The collector's clock starts 30 s after the job's end; it
waits up to ``gpu_wait_s`` 60 s after the end; a scrape may lag 60 s (the default).

Hand-worked:
- the GPU draws 200 W for 50 min, then 500 W for the last 10: 200 × 3000 + 500 × 600 =
  900,000 J = 0.25 kWh. Scaled from the first 50 minutes alone it would have been
  200 W × 3600 s = 720,000 J = 0.2 kWh: waiting for the last samples matters.
- samples that never get past 10:30 span 1800 s of the 3600 s run (less than 80 %):
  once the wait is over the job keeps its estimate, the A100's 400 W TDP (no busy share
  known) × 1 h = 0.4 kWh.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobcarbon.config import parse_config
from jobcarbon.daemons.collector import SWEEP_WATERMARK, Collector
from jobcarbon.errors import ConfigError
from jobcarbon.ledger import Ledger
from jobcarbon.sources.slurm.runner import Sacct
from jobcarbon.sources.slurm.spool import Spool
from tests.sources.test_collector import CONFIG, ScriptedSacct
from tests.support.config import make_config, merged
from tests.support.net import free_port
from tests.support.prometheus_server import PrometheusWithHistory, Series
from tests.support.prometheus_versions import VERSIONS, Prometheus

START = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
SPLIT = START + timedelta(minutes=50)
STEP_S = 30
WAIT_S = 60


def counter(first: datetime, last: datetime) -> Series:
    """Job 7's GPU counter (mJ) from ``first`` to ``last``: 200 W up to 10:50, 500 W after."""
    split_s = SPLIT.timestamp()
    samples = []
    t = first.timestamp()
    while t <= last.timestamp():
        mj = 5e9 + 200_000 * (min(t, split_s) - START.timestamp())
        samples.append((t, mj + 500_000 * max(t - split_s, 0)))
        t += STEP_S
    labels = {"gpu": "0", "UUID": "GPU-h", "Hostname": "gpu-1", "hpc_job": "7"}
    return Series(labels, samples, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")


@contextlib.contextmanager
def collector(
    tmp_path: Path, url: str, spooled: bool = True
) -> Iterator[tuple[Collector, Spool, Ledger, list[float]]]:
    """A collector for job 7 (its epilog's entry written 5 s after the end, unless not
    ``spooled``), its clock 30 s after the end."""
    spool = Spool(tmp_path / "spool")
    spool.create()
    if spooled:
        (spool.new / "7").write_text("JOB_ID=7\n")
        os.utime(spool.new / "7", (END.timestamp() + 5,) * 2)
    sacct = ScriptedSacct(AllocTRES="cpu=1,mem=1G,node=1,gres/gpu=1")
    sacct.state = "COMPLETED"
    hardware = [{"match": {"partition": "cpu"}, "gpu_model": "A100 SXM4 80 GB"}]
    config = merged(
        CONFIG,
        {
            "clusters": {"c1": {"hardware": hardware}},
            "slurm": {"prometheus_url": url, "gpu_wait_s": WAIT_S},
        },
    )
    now = [END.timestamp() + 30]
    with Ledger(tmp_path / "ledger.db") as ledger:
        yield (
            Collector(parse_config(config), ledger, Sacct(run=sacct), spool, lambda: now[0]),
            spool,
            ledger,
            now,
        )


@pytest.mark.parametrize("version", VERSIONS)
def test_a_job_waits_for_its_last_samples_and_is_measured_with_them(
    version: Prometheus, tmp_path: Path
) -> None:
    with (
        PrometheusWithHistory([counter(START, SPLIT)], version=version) as prometheus,
        collector(tmp_path, prometheus.url) as (jobs, spool, ledger, now),
    ):
        for _ in range(2):  # asked again and again, as a job not final in accounting
            report = jobs.collect_once(sweep=False)
            assert report.pending == 1 and report.accounted.written == 0
            assert not list(ledger.jobs()) and (spool.new / "7").exists()
            wait = jobs.seconds_to_next_round()
            assert 0 < wait <= 2  # retry_first_s 1, then 2 (with jitter below)
            now[0] += wait
        prometheus.add([counter(SPLIT + timedelta(seconds=STEP_S), END)])  # the last 10 min
        report = jobs.collect_once(sweep=False)
        assert report.accounted.written == 1 and report.pending == 0
        (row,) = ledger.jobs()
        assert row["method"] == "mixed" and row["energy_gpu_kwh"] == pytest.approx(0.25)
        assert not list(spool.new.iterdir())
        assert "gpu_samples_late" not in ledger.ingest_errors()


@pytest.mark.parametrize("version", VERSIONS)
def test_a_job_whose_samples_never_come_is_estimated_after_the_wait(
    version: Prometheus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobcarbon")
    half = START + timedelta(minutes=30)
    with (
        PrometheusWithHistory([counter(START, half)], version=version) as prometheus,
        collector(tmp_path, prometheus.url) as (jobs, spool, ledger, now),
    ):
        assert jobs.collect_once(sweep=False).pending == 1
        now[0] = END.timestamp() + WAIT_S
        report = jobs.collect_once(sweep=False)
        assert report.accounted.written == 1 and report.pending == 0 and not report.given_up
        (row,) = ledger.jobs()
        assert row["method"] == "estimated" and row["energy_gpu_kwh"] == pytest.approx(0.4)
        assert not list(spool.new.iterdir())
        errors = ledger.ingest_errors()
        assert errors["gpu_samples_late"] == 1 and errors["gpu_energy_refused"] == 1
        assert "job 7: the samples of GPU GPU-h end 1800 s before the run's end" in caplog.text
        assert "cover 1800 s of the 3600 s run" in caplog.text
        now[0] += 300
        jobs.collect_once()  # the sweep reads job 7 again: not counted again
        assert ledger.ingest_errors() == errors


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sweep_keeps_its_watermark_before_a_job_that_waits(
    version: Prometheus, tmp_path: Path
) -> None:
    with (
        PrometheusWithHistory([counter(START, SPLIT)], version=version) as prometheus,
        collector(tmp_path, prometheus.url, spooled=False) as (jobs, _spool, ledger, now),
    ):
        assert jobs.collect_once().accounted.written == 0  # the sweep alone reads job 7
        assert ledger.watermark(SWEEP_WATERMARK) == int(END.timestamp())
        prometheus.add([counter(SPLIT + timedelta(seconds=STEP_S), END)])
        now[0] += 10
        assert jobs.collect_once().accounted.written == 1
        (row,) = ledger.jobs()
        assert row["energy_gpu_kwh"] == pytest.approx(0.25)
        assert ledger.watermark(SWEEP_WATERMARK) == int(now[0])


def test_prometheus_unreachable_is_no_reason_to_wait(tmp_path: Path) -> None:
    with collector(tmp_path, f"http://127.0.0.1:{free_port()}") as (jobs, spool, ledger, _now):
        report = jobs.collect_once(sweep=False)  # 30 s after the end: accounted at once
        assert report.accounted.written == 1 and report.pending == 0
        (row,) = ledger.jobs()
        assert row["method"] == "estimated" and row["energy_gpu_kwh"] == pytest.approx(0.4)
        assert ledger.ingest_errors()["prometheus"] == 1
        assert not list(spool.new.iterdir())


def test_a_wait_the_spool_would_give_up_on_is_refused_naming_both_keys() -> None:
    slurm = {"prometheus_url": "http://prometheus:9090", "gpu_wait_s": 600}
    with pytest.raises(ConfigError) as err:
        parse_config(make_config(slurm={**slurm, "give_up_after_s": 600}))
    assert "slurm: gpu_wait_s (600) must be less than give_up_after_s (600)" in str(err.value)
    parse_config(make_config(slurm={**slurm, "give_up_after_s": 601}))  # less: fine
