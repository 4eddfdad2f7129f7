"""What each tested Slurm's sacct prints, read back as jobcarbon reads it.

``tests/data/slurm/<version>/`` holds the output of the collector's own sweep call on
Slurm 22.05 (bookworm), 24.11 (trixie) and 26.05 (sid), for the same jobs, captured
by ``python -m tests.support.slurm_capture`` (each directory's NOTE names the commands and
the job ids). Expected values come from the jobs' sbatch arguments in the NOTE.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobcarbon.records import JobRecord, JobState
from jobcarbon.sources.slurm.fields import SACCT_FIELDS
from jobcarbon.sources.slurm.runner import Sacct
from jobcarbon.sources.slurm.sacct import SacctRow, read_parsable, read_rows

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
VERSIONS = sorted(p.name for p in DATA.iterdir() if p.is_dir())


def test_three_versions_are_captured() -> None:
    assert [v.split(".")[0] for v in VERSIONS] == ["22", "24", "26"]


def test_every_captured_file_has_its_note() -> None:
    # tests/data/README.md names the files at the top, each version's NOTE its own:
    # the Slurm it came from and the command that printed it
    readme = (DATA.parent / "README.md").read_text().splitlines()
    for path in DATA.parent.iterdir():
        if path.is_file() and path.name != "README.md":
            (row,) = [line for line in readme if line.startswith(f"| `{path.name}` |")]
            _, origin, command = row.split(" | ")
            assert origin.startswith("Slurm 22.05") and "sacct" in command, row
    for version in VERSIONS:
        note = (DATA / version / "NOTE").read_text()
        assert note.startswith(f"Slurm {version} ")
        commands = dict(
            line.strip().split(": ", 1) for line in note.splitlines() if line.startswith("  sacct-")
        )
        assert set(commands) == {p.name for p in (DATA / version).iterdir()} - {"NOTE"}
        assert all(
            c.startswith("TZ=UTC SLURM_TIME_FORMAT=standard sacct ") for c in commands.values()
        )


def job_ids(version: str) -> dict[str, str]:
    """The NOTE's ``Job ids: name=id, ...`` line."""
    line = next(x for x in (DATA / version / "NOTE").read_text().splitlines() if "Job ids:" in x)
    return dict(item.split("=") for item in line.split(":", 1)[1].strip().split(", "))


def sweep_lines(version: str) -> list[str]:
    return (DATA / version / "sacct-sweep.txt").read_text().splitlines()


def records(version: str) -> dict[str, JobRecord]:
    items = list(read_parsable(sweep_lines(version), cluster="testcl"))
    assert [i for i in items if not isinstance(i, JobRecord)] == []
    return {r.job_id: r for r in items if isinstance(r, JobRecord)}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_field_jobcarbon_asks_for_is_still_there(version: str) -> None:
    available = set((DATA / version / "sacct-helpformat.txt").read_text().split())
    assert set(SACCT_FIELDS) <= available
    assert sweep_lines(version)[0].split("^|^") == list(SACCT_FIELDS)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sweep_reads_as_the_jobs_that_ran(version: str) -> None:
    ids = job_ids(version)
    rows = records(version)
    array = ids["bob-array"]
    assert set(rows) == {
        ids["gpu2"],
        f"{array}_0",
        f"{array}_1",
        ids["bob-failed"],
        ids["multistep"],
        ids["bob-odd-name"],
        ids["pending-cancelled"],
    }
    # --gres=gpu:a100:2 -c 2 --mem=100 (MB)
    gpu2 = rows[ids["gpu2"]]
    assert (gpu2.state, gpu2.user, gpu2.project) == (JobState.COMPLETED, "alice", "physics")
    assert (gpu2.gpu_count, gpu2.gpu_model, gpu2.cpu_count) == (2, "a100", 2)
    assert gpu2.memory_gb == pytest.approx(100 / 1024)
    for task in (f"{array}_0", f"{array}_1"):
        assert (rows[task].gpu_count, rows[task].user, rows[task].project) == (1, "bob", "biology")
    assert rows[ids["bob-failed"]].state is JobState.FAILED
    assert rows[ids["bob-odd-name"]].name == "a|b 'c' $(d)"
    cancelled = rows[ids["pending-cancelled"]]
    assert (cancelled.state, cancelled.gpu_seconds) == (JobState.CANCELLED, 0)
    # a job cancelled while pending: 22.05 prints Start = End, 24.11 on Start=None
    assert cancelled.start_time == (cancelled.end_time if version < "24" else None)


@pytest.mark.parametrize("version", VERSIONS)
def test_steps_fold_into_their_job(version: str) -> None:
    job = job_ids(version)["multistep"]
    (row,) = [
        r
        for r in read_rows(sweep_lines(version))
        if isinstance(r, SacctRow) and r.job_id_raw == job
    ]
    # srun true; srun true in a batch job without Contain: batch, 0 and 1, no extern
    assert sorted(s["JobID"] for s in row.steps) == sorted(
        f"{job}.{s}" for s in ("batch", "0", "1")
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_the_version_as_the_collector_reads_it(version: str) -> None:
    printed = (DATA / version / "sacct-version.txt").read_text()

    def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, printed, "")

    assert Sacct(run=run).version() == version


@pytest.mark.parametrize("version", [v for v in VERSIONS if v >= "24"])
def test_jobs_are_keyed_by_their_id_not_their_sluid(version: str) -> None:
    """24.11 on gives each job a SLUID (26.05 also the OriginalSLUID of a requeued
    or revived one); JobIDRaw, which jobcarbon keys by, is still the numeric id."""
    lines = (DATA / version / "sacct-sluid.txt").read_text().splitlines()
    header, *rows = (line.split("|") for line in lines)
    jobs = [dict(zip(header, row, strict=True)) for row in rows]
    assert len(jobs) == 6  # the pending-cancelled job needs --state to be listed
    assert all(job["JobIDRaw"].isdigit() for job in jobs)
    sluids = [job["SLUID"] for job in jobs]
    assert all(sluid.startswith("s") for sluid in sluids) and len(set(sluids)) == len(jobs)
    # none was requeued: each is its own original
    assert all(job.get("OriginalSLUID", job["SLUID"]) == job["SLUID"] for job in jobs)
    keys = set(records(version))
    assert all((j["JobID"] if "_" in j["JobID"] else j["JobIDRaw"]) in keys for j in jobs)
