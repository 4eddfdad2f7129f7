"""Measured GPU energy for jobs that really ran on the Slurm test cluster
(tests/support/slurm_cluster.py): their ids in dcgm-exporter's ``hpc_job`` label and
their start and end from sacct, in a real Prometheus (2.42 and 3.x); the collector reads
both. The jobs run once; each Prometheus version gets their history.

Hand-worked from each job's run (sacct's Start to End, whole seconds, a sample every
second): one GPU at 250 W uses 250 × run_s J; two at 300 W each, 600 × run_s J.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobcarbon.config import parse_config
from jobcarbon.daemons.collector import Collector
from jobcarbon.ledger import Ledger
from jobcarbon.sources.slurm.runner import Sacct
from jobcarbon.sources.slurm.sacct import SacctRow, parse_time
from jobcarbon.sources.slurm.spool import Spool
from tests.support.config import make_config
from tests.support.prometheus_server import PrometheusWithHistory, Series
from tests.support.prometheus_versions import VERSIONS, Prometheus
from tests.support.slurm_cluster import CLUSTER, SlurmCluster, start_or_show_logs, temporary_cluster

WATTS = {"one": 250.0, "two": 300.0}
GPUS = {"one": 1, "two": 2}
J_PER_KWH = 3.6e6


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with temporary_cluster("jobcarbon-gpu-") as slurm:
        start_or_show_logs(slurm)
        yield slurm


def counter(uuid: str, job_id: str, watts: float, start: datetime, end: datetime) -> Series:
    first = start.timestamp()
    samples = [
        (first + k, 5e9 + watts * 1000 * k) for k in range(int((end - start).total_seconds()) + 1)
    ]
    labels = {"gpu": "0", "UUID": uuid, "Hostname": "node1", "hpc_job": job_id}
    return Series(labels, samples, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")


Runs = dict[str, tuple[str, datetime, datetime]]  # name → job id, start, end (sacct)


@pytest.fixture(scope="module")
def ran(cluster: SlurmCluster) -> Iterator[tuple[Runs, Sacct]]:
    """Two jobs run on the cluster, one GPU and two; their runs as sacct has them."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("SLURM_CONF", str(cluster.root / "slurm.conf"))  # sacct on the host
        ids = {
            name: cluster.sbatch(
                "alice", f"--gres=gpu:a100:{gpus}", "-c", "1", "--mem=100", "--wrap", "sleep 4"
            )
            for name, gpus in GPUS.items()
        }
        cluster.wait_idle(timeout=120)
        sacct = Sacct(cluster.suite.sacct_wrapper(cluster.root / "slurm.conf"))
        by_id = {}
        for row in sacct.jobs(sorted(ids.values())):
            assert isinstance(row, SacctRow)
            start, end = parse_time(row.cells["Start"]), parse_time(row.cells["End"])
            assert start is not None and end is not None
            by_id[row.cells["JobIDRaw"]] = (start, end)
        yield {name: (job_id, *by_id[job_id]) for name, job_id in ids.items()}, sacct


@pytest.mark.integration
@pytest.mark.parametrize("version", VERSIONS)
def test_jobs_that_ran_on_slurm_get_their_measured_gpu_energy(
    ran: tuple[Runs, Sacct],
    version: Prometheus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster: SlurmCluster,
) -> None:
    runs, sacct = ran
    monkeypatch.setenv("SLURM_CONF", str(cluster.root / "slurm.conf"))  # sacct on the host
    history = [
        counter(f"GPU-{job_id}-{g}", job_id, WATTS[name], start, end)
        for name, (job_id, start, end) in runs.items()
        for g in range(GPUS[name])
    ]
    config = make_config(
        cluster=CLUSTER,
        sites={"s1": {"pue": 1.0}},
        clusters={
            CLUSTER: {"hardware": [{"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}]}
        },
    )
    spool = Spool(tmp_path / "spool")
    spool.create()
    with PrometheusWithHistory(history, version=version) as prometheus:
        config["slurm"] = {"prometheus_url": prometheus.url}
        with Ledger(tmp_path / "ledger.db") as ledger:
            collector = Collector(parse_config(config), ledger, sacct, spool)
            now = datetime.now(UTC)
            collector.account_window(now - timedelta(hours=1), now + timedelta(minutes=1))
            rows = {str(r["job_id"]): r for r in ledger.jobs()}
            errors = ledger.ingest_errors()
    for name, (job_id, start, end) in runs.items():
        run_s = (end - start).total_seconds()
        assert rows[job_id]["method"] == "mixed"
        assert rows[job_id]["energy_gpu_kwh"] == pytest.approx(
            WATTS[name] * GPUS[name] * run_s / J_PER_KWH
        )
    assert "prometheus" not in errors and "gpu_energy_refused" not in errors
