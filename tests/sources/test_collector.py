"""The collector's retry schedule, with sacct's answers scripted.

The real chain (epilog, slurmctld, slurmdbd, sacct) is tested in
``test_slurm_cluster.py``; here sacct is a function that answers in its own output
format (``--parsable2`` with jobcarbon's delimiter) so that the clock can be driven
by hand and every retry counted.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobcarbon.backoff import backoff_s
from jobcarbon.config import parse_config
from jobcarbon.ledger import Ledger
from jobcarbon.sources.sacct import DELIMITER, SACCT_FIELDS
from jobcarbon.sources.slurm import Collector, Sacct, Spool

CONFIG = {
    "sites": {"s": {"pue": 1.0, "grid": {"intensity_g_per_kwh": 100}}},
    "clusters": {"c1": {"site": "s"}},
    "slurm": {"retry_first_s": 1, "retry_max_s": 8, "give_up_after_s": 100, "poll_interval_s": 60},
}


def sacct_line(job_id: str, state: str, end: str) -> str:
    cells = dict.fromkeys(SACCT_FIELDS, "")
    cells.update(
        JobIDRaw=job_id,
        JobID=job_id,
        Cluster="c1",
        User="alice",
        Account="proj",
        Partition="cpu",
        State=state,
        Submit="2026-10-01T09:00:00",
        Start="2026-10-01T10:00:00",
        End=end,
        ElapsedRaw="3600",
        AllocTRES="cpu=1,mem=1G,node=1",
    )
    return DELIMITER.join(cells[f] for f in SACCT_FIELDS)


class ScriptedSacct:
    """Answers ``sacct --jobs=...`` with the state the test has set; counts calls."""

    def __init__(self) -> None:
        self.state = "RUNNING"
        self.calls = 0
        self.down = False

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls += 1
        if self.down:
            return subprocess.CompletedProcess(
                args, 1, "", "sacct: error: Problem talking to the database: Connection refused"
            )
        end = "2026-10-01T11:00:00" if self.state == "COMPLETED" else "Unknown"
        lines = [DELIMITER.join(SACCT_FIELDS), sacct_line("7", self.state, end)]
        return subprocess.CompletedProcess(args, 0, "\n".join(lines) + "\n", "")


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    spool = Spool(tmp_path / "spool")
    spool.create()
    (spool.new / "7").write_text("JOB_ID=7\n")
    sacct = ScriptedSacct()
    now = [(spool.new / "7").stat().st_mtime]
    ledger = Ledger(tmp_path / "ledger.db")
    collector = Collector(
        parse_config(CONFIG), ledger, Sacct(run=sacct), spool, clock=lambda: now[0]
    )
    collector.rng = random.Random(3)
    yield collector, sacct, now, spool
    ledger.close()


def test_backoff_doubles_up_to_its_cap_with_jitter_below() -> None:
    rng = random.Random(1)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 60.0), (200, 60.0)]:
        delays = [backoff_s(attempt, 0.5, 60.0, rng) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full


def test_a_job_not_final_yet_is_asked_again_later_and_later(rig: Any) -> None:
    collector, sacct, now, spool = rig
    waits = []
    for _ in range(5):
        report = collector.collect_once(sweep=False)
        assert report.pending == 1 and report.accounted.written == 0
        waits.append(collector.seconds_to_next_round())
        due, calls = now[0] + waits[-1], sacct.calls
        now[0] += waits[-1] / 2  # not due yet: sacct is not asked
        collector.collect_once(sweep=False)
        assert sacct.calls == calls
        now[0] = due
    # retry_first_s 1 doubling to retry_max_s 8, each less up to half its jitter
    for wait, full in zip(waits, [1, 2, 4, 8, 8], strict=True):
        assert full / 2 <= wait <= full
    sacct.state = "COMPLETED"
    report = collector.collect_once(sweep=False)
    assert report.accounted.written == 1 and report.pending == 0
    assert not list(spool.new.iterdir())


def test_a_job_never_final_is_given_up_naming_it(rig: Any) -> None:
    collector, _sacct, now, spool = rig
    collector.collect_once(sweep=False)
    now[0] += 101
    report = collector.collect_once(sweep=False)
    assert report.given_up and report.given_up[0].startswith("job 7: not complete")
    assert (spool.failed / "7").exists()
    assert "gave up" in (spool.failed / "7.reason").read_text()


def test_sacct_failing_is_retried_with_growing_waits(rig: Any) -> None:
    collector, sacct, _now, spool = rig
    sacct.down = True
    waits = []
    for _ in range(4):
        report = collector.collect_once()
        assert report.errors and "Connection refused" in report.errors[0]
        waits.append(collector.seconds_to_next_round())
    # two failing calls per round (spool, sweep): attempts 2, 4, 6, 8 → 2, 8, 8, 8 s full
    for wait, full in zip(waits, [2, 8, 8, 8], strict=True):
        assert full / 2 <= wait <= full
    assert (spool.new / "7").exists()
    sacct.down, sacct.state = False, "COMPLETED"
    report = collector.collect_once()
    assert report.accounted.written == 1 and not report.errors
    assert collector.seconds_to_next_round() == 60  # back to the poll interval


def test_an_array_task_waits_for_its_own_record_then_counts_once(tmp_path: Path) -> None:
    # sacct's two answers for task 1_32 (JobIDRaw 153), captured on Slurm 22.05:
    # slurmdbd's placeholder first, then the task's own record (tests/data/README.md)
    header, placeholder, own = (
        (Path(__file__).resolve().parents[1] / "data" / "sacct-22.05-array-task-pair.txt")
        .read_text()
        .splitlines()
    )
    answer = [placeholder]

    def sacct(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, f"{header}\n{answer[0]}\n", "")

    spool = Spool(tmp_path / "spool")
    spool.create()
    # as slurm/epilog writes it for an array task
    (spool.new / "153").write_text("job_id=153\narray_job_id=1\narray_task_id=32\n")
    now = [(spool.new / "153").stat().st_mtime]
    a100 = {"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}
    config = parse_config({**CONFIG, "clusters": {"testcl": {"site": "s", "hardware": [a100]}}})
    with Ledger(tmp_path / "ledger.db") as ledger:
        collector = Collector(config, ledger, Sacct(run=sacct), spool, clock=lambda: now[0])
        report = collector.collect_once()  # neither the spool's ask nor the sweep takes it
        assert (report.pending, report.accounted.written, report.accounted.failed) == (1, 0, 0)
        now[0] += collector.seconds_to_next_round()
        answer[0] = own
        report = collector.collect_once()
        assert (report.pending, report.accounted.written, report.accounted.unchanged) == (0, 1, 1)
        assert not report.accounted.problems
        assert [(r["job_id"], r["job_id_raw"], r["partition"]) for r in ledger.jobs()] == [
            ("1_32", "153", "gpu")
        ]
        assert not list(spool.new.iterdir())
