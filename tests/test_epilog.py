"""slurm/epilog run as slurmctld runs it: a job's environment, its exit status read.

Under slurmctld it is tested in tests/test_install.py (chained after a site epilog)
and tests/sources/test_slurm_cluster.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT

EPILOG = ROOT / "slurm" / "epilog"


def run_epilog(spool: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EPILOG)],
        env={"PATH": os.environ["PATH"], "JOBCARBON_SPOOL": str(spool), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def make_spool(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    for sub in ("new", "tmp", "failed"):
        (spool / sub).mkdir(parents=True)
    return spool


def test_the_sites_epilog_runs_first_and_its_exit_status_is_kept(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    seen = tmp_path / "seen"
    previous = tmp_path / "site-epilog"
    # it notes the job and whether jobcarbon's entry was there yet, then fails
    previous.write_text(
        f'#!/bin/sh\necho "$SLURM_JOB_ID $(ls {spool}/new | wc -l)" > {seen}\nexit 7\n'
    )
    previous.chmod(0o755)
    result = run_epilog(spool, SLURM_JOB_ID="42", JOBCARBON_PREVIOUS_EPILOG=str(previous))
    assert result.returncode == 7
    assert seen.read_text() == "42 0\n"  # with the job's environment, before the entry
    assert "job_id=42\n" in (spool / "new" / "42").read_text()


def test_without_a_previous_epilog_it_exits_0(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    assert run_epilog(spool, SLURM_JOB_ID="43").returncode == 0
    assert (spool / "new" / "43").exists()


def test_an_unwritable_spool_is_logged_beside_it_without_syslog(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool / "tmp").rmdir()  # the entry cannot be written
    result = run_epilog(spool, SLURM_JOB_ID="44")
    assert result.returncode == 0
    assert not (spool / "new" / "44").exists()
    log = spool / "epilog.log"
    if Path("/dev/log").is_socket():  # a syslog daemon takes the line instead
        assert not log.exists()
    else:
        line = log.read_text()
        assert "jobcarbon-epilog: job 44: cannot write a spool entry" in line
        assert line.endswith("the collector's sweep will still account it\n")
