"""The `sbatch --begin` value `jobcarbon grid forecast` prints, given to a real sbatch
(tests/support/slurm_cluster.py): sbatch reads it in its own local time zone (``TZ``),
so the job becomes eligible at the forecast's best start in UTC; a UTC form is refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.grid_fakes import FakeProvider, serving
from tests.support.slurm_cluster import SlurmCluster, start_or_show_logs, temporary_cluster
from tests.test_grid_forecast import UK_VALUES, run


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with temporary_cluster("jobcarbon-forecast-") as slurm:
        start_or_show_logs(slurm)
        yield slurm


def sbatch_in(slurm: SlurmCluster, zone: str, begin: str) -> subprocess.CompletedProcess[str]:
    """``sbatch --begin=<begin>`` of a held job, run as alice with ``TZ=<zone>``."""
    args = ["sbatch", "--parsable", "--hold", "--chdir=/tmp", "--output=/dev/null"]
    return subprocess.run(
        slurm.suite.command([*args, f"--begin={begin}", "--wrap=true"], "alice"),
        env={**slurm.env, "TZ": zone},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.integration
def test_sbatch_starts_the_job_at_the_best_start(cluster: SlurmCluster, tmp_path: Path) -> None:
    with serving(FakeProvider("uk-carbon-intensity", forecast_g_per_kwh=UK_VALUES)) as fake:
        shown = run(
            fake, tmp_path, "--duration", "1h30m", "--within", "6h", "--json",
            "--timezone", "America/New_York",
        )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    facts = json.loads(shown.output)
    assert facts["timezone"].startswith("America/New_York (E")  # EST or EDT

    submitted = sbatch_in(cluster, "America/New_York", facts["sbatch_begin"])
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        # scontrol runs with TZ=UTC (the cluster's environment): it shows the UTC start
        line = cluster.run("scontrol", "show", "--oneliner", "job", job_id).stdout
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        assert fields["EligibleTime"] == facts["best_start"].removesuffix("Z"), line
    finally:
        cluster.run("scancel", job_id, check=False)

    # the same instant with its offset, as ISO 8601 would write it: not a form sbatch takes
    refused = sbatch_in(cluster, "UTC", facts["best_start"])
    assert refused.returncode != 0
    assert "Invalid --begin specification" in refused.stderr
