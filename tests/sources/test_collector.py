"""The collector's retry schedule, with sacct's answers scripted.

The real chain (epilog, slurmctld, slurmdbd, sacct) is tested in
``test_slurm_cluster.py``; here sacct is a function that answers in its own output
format (``--parsable2`` with jobcarbon's delimiter) so that the clock can be driven
by hand and every retry counted.
"""

from __future__ import annotations

import random
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.backoff import backoff_s
from jobcarbon.cli import main
from jobcarbon.config import parse_config
from jobcarbon.daemons.backfill import Backfill
from jobcarbon.daemons.collector import SWEEP_FOUND_GRACE_S, Collector
from jobcarbon.daemons.reload import Reloader
from jobcarbon.errors import ConfigError
from jobcarbon.ledger import Ledger
from jobcarbon.sources.slurm.fields import DELIMITER, SACCT_FIELDS
from jobcarbon.sources.slurm.runner import Sacct
from jobcarbon.sources.slurm.spool import Spool
from tests.support.config import make_config, merged

#: PUE 1.0: a job's facility energy is its IT energy
CONFIG = make_config(
    sites={"s1": {"pue": 1.0}},
    slurm={"retry_first_s": 1, "retry_max_s": 8, "give_up_after_s": 100, "poll_interval_s": 60},
)


def sacct_line(job_id: str, state: str, end: str, **extra: str) -> str:
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
    cells.update(extra)
    return DELIMITER.join(cells[f] for f in SACCT_FIELDS)


class ScriptedSacct:
    """Answers ``sacct --jobs=...`` with the state the test has set; counts calls."""

    def __init__(self, **extra: str) -> None:
        self.state = "RUNNING"
        self.calls = 0
        self.down = False
        self.extra = extra  # other cells of job 7

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls += 1
        if self.down:
            return subprocess.CompletedProcess(
                args, 1, "", "sacct: error: Problem talking to the database: Connection refused"
            )
        end = "2026-10-01T11:00:00" if self.state in ("COMPLETED", "CANCELLED") else "Unknown"
        lines = [DELIMITER.join(SACCT_FIELDS), sacct_line("7", self.state, end, **self.extra)]
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


def test_the_sweep_counts_the_jobs_it_alone_found(rig: Any) -> None:
    collector, sacct, now, spool = rig
    sacct.state = "COMPLETED"
    collector.collect_once()  # the spool's entry accounts job 7: the sweep finds it known
    now[0] += SWEEP_FOUND_GRACE_S
    collector.collect_once()
    assert collector.ledger.gauges().get("slurm.sweep_found_jobs.true", 0) == 0
    collector.ledger.close()
    collector.ledger = Ledger(spool.root.parent / "other.db")  # a ledger without it
    collector.collect_once()  # no spool entry: the sweep accounts it, and waits for one
    now[0] += SWEEP_FOUND_GRACE_S - 1
    collector.collect_once()  # found again, known by now: noted once
    assert "slurm.sweep_found_jobs.true" not in collector.ledger.gauges()
    now[0] += 1  # no entry came in the grace: the epilog was silent
    collector.collect_once()
    assert collector.ledger.gauges()["slurm.sweep_found_jobs.true"] == 1
    assert "slurm.sweep_found_jobs.false" not in collector.ledger.gauges()


def test_a_late_epilog_entry_is_no_failure(rig: Any) -> None:
    collector, sacct, now, spool = rig
    sacct.state = "COMPLETED"
    (spool.new / "7").unlink()
    collector.collect_once()  # the sweep is first (a site epilog still running)
    (spool.new / "7").write_text("JOB_ID=7\n")
    now[0] += 10
    collector.collect_once()  # the entry: unchanged in the ledger, and done with
    now[0] += SWEEP_FOUND_GRACE_S
    collector.collect_once()
    assert not list(spool.new.iterdir())
    assert "slurm.sweep_found_jobs.true" not in collector.ledger.gauges()


def test_a_job_cancelled_while_pending_is_the_sweeps_not_a_failure(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    # Slurm 22.05 gives a job cancelled while pending Start = End, no AllocTRES and no
    # nodes (tests/data/slurm/22.05.8/sacct-sweep.txt, job 6); it runs no epilog
    sacct = ScriptedSacct(
        Start="2026-10-01T11:00:00", ElapsedRaw="0", AllocTRES="", NodeList="None assigned"
    )
    sacct.state = "CANCELLED"
    now = [1e9]
    with Ledger(tmp_path / "ledger.db") as ledger:
        collector = Collector(
            parse_config(CONFIG), ledger, Sacct(run=sacct), spool, clock=lambda: now[0]
        )
        assert collector.collect_once().accounted.written == 1
        now[0] += SWEEP_FOUND_GRACE_S
        collector.collect_once()
        gauges = ledger.gauges()
    assert gauges["slurm.sweep_found_jobs.false"] == 1
    assert "slurm.sweep_found_jobs.true" not in gauges


def _gpu_config(rule: bool) -> Any:
    hardware = [{"match": {"partition": "cpu"}, "gpu_model": "A100 SXM4 80 GB"}] if rule else []
    return parse_config(merged(CONFIG, {"clusters": {"c1": {"hardware": hardware}}}))


def test_an_ingest_problem_counts_once_and_stops_when_the_config_is_fixed(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    sacct = ScriptedSacct(AllocTRES="cpu=1,mem=1G,node=1,gres/gpu=1")  # no GPU model
    sacct.state = "COMPLETED"
    now = [1e9]
    with Ledger(tmp_path / "ledger.db") as ledger:
        collector = Collector(
            _gpu_config(rule=False), ledger, Sacct(run=sacct), spool, clock=lambda: now[0]
        )
        reports = []
        for _ in range(3):  # three sweeps, each reading job 7 again
            reports.append(collector.collect_once())
            now[0] += 300
        assert [r.accounted.failed for r in reports] == [1, 0, 0]  # logged once
        assert "job c1/7" in str(reports[0].accounted.problems[0])
        assert ledger.ingest_errors()["account"] == 1
        # a hardware rule added, the config reloaded (SIGHUP): job 7 is accounted
        reloader = Reloader(lambda: _gpu_config(rule=True))
        reloader.request()
        assert reloader.take(collector.reload)
        report = collector.collect_once()
        assert report.accounted.written == 1 and report.accounted.failed == 0
        assert ledger.ingest_errors()["account"] == 1


def test_an_invalid_config_is_refused_on_reload_and_the_old_one_kept(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import signal

    collector = rig[0]
    before = collector.config

    def broken() -> Any:
        return parse_config(merged(CONFIG, {"slurm": {"poll_interval_s": -1}}))

    reloader = Reloader(broken).install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)  # what `systemctl reload` sends
        assert reloader.requested
        assert not reloader.take(collector.reload)
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert collector.config is before
    assert "config not reloaded, still using the one before" in caplog.text
    assert "slurm.poll_interval_s: Input should be greater than 0" in caplog.text
    with pytest.raises(ConfigError):
        broken()


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
    config = parse_config(
        make_config(
            cluster="testcl",
            sites=CONFIG["sites"],
            slurm=CONFIG["slurm"],
            clusters={"testcl": {"hardware": [a100]}},
        )
    )
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


def test_backfill_and_import_read_slurms_energy_as_the_cluster_says(tmp_path: Path) -> None:
    # job 7 on a RAPL cluster: one A100 for 1 h, Slurm's 180 kJ = 0.05 kWh its CPU and
    # memory; the GPU estimated at its 400 W TDP (no Prometheus): 0.45 kWh, mixed. Read
    # as a whole node (the default) the same 0.05 kWh would be all of it.
    rapl = {
        "hardware": [{"match": {"partition": "cpu"}, "gpu_model": "A100 SXM4 80 GB"}],
        "slurm_energy_covers": "cpu_memory",
    }
    cells = {"AllocTRES": "cpu=1,mem=1G,node=1,gres/gpu=1", "ConsumedEnergyRaw": "180000"}
    data = merged(CONFIG, {"clusters": {"c1": rapl}, "ledger": {"url": "sqlite:///import.db"}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    dump = tmp_path / "sacct.txt"
    line = sacct_line("7", "COMPLETED", "2026-10-01T11:00:00", **cells)
    dump.write_text(f"{DELIMITER.join(SACCT_FIELDS)}\n{line}\n")
    imported = CliRunner().invoke(
        main, ["--config", str(tmp_path / "config.yaml"), "slurm", "import", str(dump)]
    )
    assert imported.exit_code == 0, imported.output
    sacct = ScriptedSacct(**cells)
    sacct.state = "COMPLETED"
    spool = Spool(tmp_path / "spool")
    spool.create()
    with Ledger(tmp_path / "backfill.db") as backfilled:
        collector = Collector(parse_config(data), backfilled, Sacct(run=sacct), spool)
        since = datetime(2026, 10, 1, tzinfo=UTC)
        Backfill(collector, backfilled, since, since + timedelta(days=1), 86400).run()
        with Ledger(tmp_path / "import.db") as by_import:
            for ledger in (backfilled, by_import):
                (row,) = ledger.jobs()
                assert row["method"] == "mixed"
                assert row["energy_gpu_kwh"] == pytest.approx(0.4)
                assert row["energy_cpu_kwh"] + row["energy_memory_kwh"] == pytest.approx(0.05)
