"""Measured GPU energy for jobs that really ran on the Slurm test cluster
(tests/support/slurm_cluster.py): their ids in dcgm-exporter's ``hpc_job`` label and
their start and end from sacct, in a real Prometheus; the collector reads both.

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
from tests.support.slurm_cluster import CLUSTER, SlurmCluster, start_or_show_logs, temporary_cluster

WATTS = {"one": 250.0, "two": 300.0}
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


@pytest.mark.integration
def test_jobs_that_ran_on_slurm_get_their_measured_gpu_energy(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(cluster.root / "slurm.conf"))  # sacct on the host
    ids = {
        "one": cluster.sbatch(
            "alice", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "sleep 4"
        ),
        "two": cluster.sbatch(
            "alice", "--gres=gpu:a100:2", "-c", "1", "--mem=100", "--wrap", "sleep 4"
        ),
    }
    cluster.wait_idle(timeout=120)
    sacct = Sacct(cluster.suite.sacct_wrapper(cluster.root / "slurm.conf"))
    runs = {}
    for row in sacct.jobs(sorted(ids.values())):
        assert isinstance(row, SacctRow)
        runs[row.cells["JobIDRaw"]] = (parse_time(row.cells["Start"]), parse_time(row.cells["End"]))
    history = []
    for name, job_id in ids.items():
        start, end = runs[job_id]
        assert start is not None and end is not None
        gpus = 1 if name == "one" else 2
        history += [
            counter(f"GPU-{job_id}-{g}", job_id, WATTS[name], start, end) for g in range(gpus)
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
    with PrometheusWithHistory(history) as prometheus:
        config["slurm"] = {"prometheus_url": prometheus.url}
        with Ledger(tmp_path / "ledger.db") as ledger:
            collector = Collector(parse_config(config), ledger, sacct, spool)
            now = datetime.now(UTC)
            collector.account_window(now - timedelta(hours=1), now + timedelta(minutes=1))
            rows = {str(r["job_id"]): r for r in ledger.jobs()}
            errors = ledger.ingest_errors()
    for name, job_id in ids.items():
        start, end = runs[job_id]
        assert start is not None and end is not None
        run_s = (end - start).total_seconds()
        gpus = 1 if name == "one" else 2
        assert rows[job_id]["method"] == "mixed"
        assert rows[job_id]["energy_gpu_kwh"] == pytest.approx(
            WATTS[name] * gpus * run_s / J_PER_KWH
        )
    assert "prometheus" not in errors and "gpu_energy_refused" not in errors
