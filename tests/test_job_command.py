"""`jobcarbon job`, run as the job's owner on a real Slurm cluster (tests/support/slurm_cluster.py).

The cluster sets ``PrivateData=jobs``, so sacct shows each user only their own jobs;
the command is run as alice and bob themselves (``runuser``), as on a login node. The
ledger is filled by the collector, as in production, and read back here as root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcarbon.ledger import Filters, Ledger
from tests.conftest import ROOT
from tests.support.config import make_config, merged
from tests.support.net import wait_for
from tests.support.slurm_cluster import (
    CLUSTER,
    SlurmCluster,
    start_or_show_logs,
    temporary_cluster,
)

#: PUE 1.2 and 250 g/kWh: an A100 SXM4 80 GB (400 W) for one hour is 0.4 kWh of IT
#: energy, 0.48 kWh with PUE, 120 g CO2e.
CONFIG = make_config(
    site="lab",
    cluster=CLUSTER,
    sites={"lab": {"grid": {"intensity_g_per_kwh": 250}}},
    clusters={
        CLUSTER: {"hardware": [{"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}]}
    },
    ledger={"url": "sqlite:///ledger.db"},
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with temporary_cluster("jobcarbon-job-", private_data="jobs") as slurm:
        start_or_show_logs(slurm)
        yield slurm


@pytest.fixture(scope="module")
def config_file(cluster: SlurmCluster) -> Path:
    path = cluster.root.parent / "config.yaml"
    path.write_text(yaml.safe_dump(merged(CONFIG, {"slurm": {"sweep_first_lookback_s": 3600}})))
    path.chmod(0o644)
    return path


def jobcarbon(
    cluster: SlurmCluster, config: Path, *args: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "jobcarbon", "--config", str(config), *args]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env={**cluster.env, "PYTHONPATH": str(ROOT / "plugin")},
        cwd="/tmp",
    )


def job_json(cluster: SlurmCluster, config: Path, job_id: str, user: str) -> dict[str, Any]:
    result = jobcarbon(cluster, config, "job", job_id, "--json", user=user)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def final_in_sacct(cluster: SlurmCluster, job_id: str) -> bool:
    out = cluster.run("sacct", "-n", "-X", "-P", "-j", job_id, "--format=State,End").stdout
    lines = [line.split("|") for line in out.splitlines() if line]
    return bool(lines) and all(
        state.split()[0] not in ("RUNNING", "PENDING") and end != "Unknown" for state, end in lines
    )


def collect(cluster: SlurmCluster, config: Path) -> None:
    """The collector's sweep as root, as the service runs it."""
    result = jobcarbon(cluster, config, "slurm", "collect", "--once")
    assert result.returncode in (0, 1), result.stderr


@pytest.fixture(scope="module")
def jobs(cluster: SlurmCluster, config_file: Path) -> dict[str, str]:
    ids = {
        "alice": cluster.sbatch(
            "alice", "--gres=gpu:a100:2", "-c", "2", "--mem=200", "-J", "train", "--wrap", "sleep 3"
        ),
        "array": cluster.sbatch(
            "alice", "--array=0-2", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "sleep 1"
        ),
        "requeued": cluster.sbatch(
            "alice", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "sleep 6"
        ),
    }
    wait_for(
        "the job to be requeued to start",
        lambda: "RUNNING" in cluster.run("squeue", "-h", "-j", ids["requeued"], "-o", "%T").stdout,
        60,
        0.3,
    )
    cluster.run("scontrol", "requeue", ids["requeued"])
    cluster.wait_idle(180)
    wait_for("the end records", lambda: all(final_in_sacct(cluster, i) for i in ids.values()), 60)
    collect(cluster, config_file)
    return ids


def test_alice_sees_her_job_and_it_equals_the_ledger(
    cluster: SlurmCluster, config_file: Path, jobs: dict[str, str]
) -> None:
    data = job_json(cluster, config_file, jobs["alice"], "alice")
    (run,) = data["runs"]
    assert run["user"] == "alice" and run["name"] == "train" and run["gpu_count"] == 2
    assert run["gpu_model"] == "A100 SXM4 80 GB" and not run["so_far"]
    with Ledger(cluster.root.parent / "ledger.db") as ledger:
        (row,) = ledger.jobs(Filters(job_ids=(jobs["alice"],)))
    assert run["co2e_g"] == pytest.approx(row["co2e_g"], rel=1e-9)
    assert run["energy_facility_kwh"] == pytest.approx(row["energy_facility_kwh"], rel=1e-9)
    # by hand from sacct's own run time: 2 × 400 W + 2 cores × 12 W + 200 MB × 0.3725 W/GB
    seconds = run["gpu_hours"] * 3600 / 2
    it_w = 2 * 400 + 2 * 12 + 200 / 1024 * 0.3725
    assert run["co2e_g"] == pytest.approx(it_w * seconds / 3.6e6 * 1.2 * 250)
    # alice cannot open the root-owned ledger: it says so, and the figure stands alone
    assert data["ledger"].startswith("not reachable")
    text = jobcarbon(cluster, config_file, "job", jobs["alice"], user="alice")
    assert text.returncode == 0, text.stderr
    assert "A100 SXM4 80 GB" in text.stdout and "advice:" in text.stdout
    assert "estimated (no energy counter" in text.stdout


def test_where_the_ledger_is_readable_it_is_shown_and_agrees(
    cluster: SlurmCluster, config_file: Path, jobs: dict[str, str]
) -> None:
    data = job_json(cluster, config_file, jobs["alice"], "root")
    assert data["ledger"] == "read"
    (run,) = data["runs"]
    assert run["ledger_co2e_g"] == pytest.approx(run["co2e_g"]) and run["agrees"] is True
    text = jobcarbon(cluster, config_file, "job", jobs["alice"])
    assert "agrees" in text.stdout


def test_bob_is_refused_alices_job_by_private_data(
    cluster: SlurmCluster, config_file: Path, jobs: dict[str, str]
) -> None:
    result = jobcarbon(cluster, config_file, "job", jobs["alice"], user="bob")
    assert result.returncode == 2
    assert f"Error: job {jobs['alice']} is not in Slurm's accounting as you may see it" in (
        result.stderr
    )
    assert "PrivateData=jobs" in result.stderr


def test_an_array_job_shows_its_tasks(
    cluster: SlurmCluster, config_file: Path, jobs: dict[str, str]
) -> None:
    data = job_json(cluster, config_file, jobs["array"], "root")
    ids = sorted(run["job_id"] for run in data["runs"])
    assert ids == [f"{jobs['array']}_{i}" for i in range(3)]
    assert all(run["agrees"] for run in data["runs"])
    text = jobcarbon(cluster, config_file, "job", jobs["array"], user="alice").stdout
    assert f"Total of the 3 runs or tasks of job {jobs['array']}" in text


def test_a_requeued_job_shows_each_run(
    cluster: SlurmCluster, config_file: Path, jobs: dict[str, str]
) -> None:
    data = job_json(cluster, config_file, jobs["requeued"], "root")
    states = sorted(run["state"].split()[0] for run in data["runs"])
    assert states == ["COMPLETED", "REQUEUED"]
    ids = {run["job_id"] for run in data["runs"]}
    assert jobs["requeued"] in ids and any(i.startswith(f"{jobs['requeued']}+run@") for i in ids)
    assert all(run["agrees"] for run in data["runs"])


def _ran_a_while(cluster: SlurmCluster, config: Path, job_id: str) -> bool:
    """Whether `jobcarbon job` shows some GPU time for a job that has just started. Until
    slurmdbd has its start record, sacct shows its placeholder (no partition), and the
    command says the record is not complete yet: the user asks again a moment later."""
    result = jobcarbon(cluster, config, "job", job_id, "--json", user="alice")
    if result.returncode != 0:
        assert "the accounting record is not complete yet" in result.stderr, result.stderr
        return False
    return bool(json.loads(result.stdout)["runs"][0]["gpu_hours"] > 0)


def test_a_running_job_shows_its_footprint_so_far(cluster: SlurmCluster, config_file: Path) -> None:
    job_id = cluster.sbatch("alice", "--gres=gpu:a100:1", "-c", "1", "--wrap", "sleep 60")
    try:
        wait_for(
            "the job to run",
            lambda: "RUNNING" in cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout,
            60,
            0.3,
        )
        wait_for("two seconds of run", lambda: _ran_a_while(cluster, config_file, job_id), 30, 1.0)
        (run,) = job_json(cluster, config_file, job_id, "alice")["runs"]
        assert run["state"] == "RUNNING" and run["so_far"] is True and run["end_time"]
        # one A100 (400 W) + 1 core (12 W) so far: 120 g per GPU-hour × 412/400, × 1.2 PUE
        assert run["co2e_g"] == pytest.approx(run["gpu_hours"] * 412 / 1000 * 1.2 * 250, rel=0.01)
        mine = jobcarbon(
            cluster, config_file, "job", "--mine", "--since", "1d", "--json", user="alice"
        )
        assert mine.returncode == 0, mine.stderr
        listed = {run["job_id"]: run for run in json.loads(mine.stdout)}
        assert listed[job_id]["so_far"] is True
        # alice's jobs of the module's fixture too, and nobody else's
        assert len(listed) >= 6 and {run["user"] for run in listed.values()} == {"alice"}
        table = jobcarbon(cluster, config_file, "job", "--mine", user="alice")
        assert job_id in table.stdout and "RUNNING" in table.stdout, table.stdout
    finally:
        cluster.run("scancel", job_id)
