"""The ledger on real SQLite files: idempotent writes, whole batches, schema versions."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobcarbon.errors import LedgerError
from jobcarbon.footprint import AccountedJob, Footprint, Method
from jobcarbon.ledger import POSTGRES, SCHEMA_VERSION, Filters, Ledger, Running
from jobcarbon.records import JobState
from jobcarbon.site import MarketSource
from tests.conftest import make_job, utc
from tests.support.config import make_config

ROOT = Path(__file__).resolve().parents[1]


def accounted(job_id: str, co2e_g: float = 100.0, **job_fields: object) -> AccountedJob:
    job = make_job(job_id=job_id, **job_fields)
    footprint = Footprint(
        gpu_seconds=job.gpu_seconds,
        cpu_seconds=job.cpu_seconds,
        energy_gpu_kwh=1.0,
        energy_cpu_kwh=0.0,
        energy_memory_kwh=0.0,
        energy_facility_kwh=1.5,
        co2e_g=co2e_g,
        co2e_g_low=co2e_g / 2,
        co2e_g_high=co2e_g * 2,
        method=Method.ESTIMATED,
        co2e_market_g=co2e_g,
        co2e_market_g_low=co2e_g / 2,
        co2e_market_g_high=co2e_g * 2,
        market_source=MarketSource.LOCATION_BASED,
    )
    return AccountedJob(job, footprint, "X", "s1", "tables-test")


def test_writing_the_same_jobs_twice_counts_them_once(ledger_location: str | Path) -> None:
    batch = [accounted(str(i)) for i in range(10)]
    with Ledger(ledger_location) as ledger:
        first = ledger.write(batch)
        second = ledger.write(batch)
        assert (first.written, first.unchanged) == (10, 0)
        assert (second.written, second.unchanged) == (0, 10)
        assert ledger.count() == 10
        assert ledger.totals().co2e_kg == pytest.approx(1.0)


def test_a_changed_record_replaces_the_old_row(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted("1", 100.0)])
        result = ledger.write([accounted("1", 250.0, state=JobState.FAILED)])
        assert result.written == 1
        assert ledger.count() == 1
        (row,) = ledger.jobs()
        assert (row["co2e_g"], row["state"]) == (250.0, "failed")


def test_same_job_id_on_two_clusters_is_two_jobs(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted("7", cluster="a"), accounted("7", cluster="b")])
        assert ledger.count() == 2


def test_a_failing_batch_leaves_nothing_behind(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted("1")])
        good = accounted("2")
        # the second row violates NOT NULL (name), after the first was already inserted
        bad = replace(accounted("3"), job=replace(make_job(job_id="3"), name=None))  # type: ignore[arg-type]
        with pytest.raises(LedgerError, match="cannot write 2 job"):
            ledger.write([good, bad])
        assert [r["job_id"] for r in ledger.jobs()] == ["1"]


def test_summary_groups_and_filters(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write(
            [
                accounted("1", 100.0, user="alice", project="p1"),
                accounted("2", 300.0, user="bob", project="p1"),
                accounted(
                    "3",
                    600.0,
                    user="bob",
                    project="p2",
                    start_time=utc(2026, 11, 1, 10),
                    end_time=utc(2026, 11, 1, 11),
                ),
            ]
        )
        by_user = {r.key: r for r in ledger.summary("user")}
        assert by_user["bob"].co2e_kg == pytest.approx(0.9)
        assert by_user["bob"].jobs == 2
        assert by_user["alice"].gpu_hours == pytest.approx(1.0)
        october = ledger.summary("project", Filters(month="2026-10"))
        assert [(r.key, r.co2e_kg) for r in october] == [("p1", pytest.approx(0.4))]
        assert ledger.totals(Filters(user="bob", month="2026-11")).jobs == 1
        since = Filters(since=utc(2026, 10, 15))
        assert [r["job_id"] for r in ledger.jobs(since)] == ["3"]
        with pytest.raises(LedgerError, match="cannot group by"):
            ledger.summary("job_id")  # type: ignore[arg-type]


def test_never_started_job_belongs_to_its_submit_month(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write(
            [accounted("1", 0.0, start_time=None, end_time=None, state=JobState.CANCELLED)]
        )
        (row,) = ledger.jobs()
        assert row["month"] == "2026-10" and row["end_time"] is None


def test_newer_schema_is_refused_not_damaged(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerError, match="newer than this jobcarbon"):
        Ledger(path)


def test_missing_ledger_without_migrate(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(tmp_path / "absent.db", migrate=False)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(LedgerError, match="not"):
        Ledger(path)


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from tests.test_ledger import accounted
    from jobcarbon.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    for batch in range(1000):
        ledger.write([accounted(f"{batch}-{i}") for i in range(200)])
        print(batch, flush=True)
        time.sleep(0.01)
""")


def test_a_crash_between_batches_leaves_whole_batches(ledger_location: str | Path) -> None:
    """SIGKILL a writer mid-run: the ledger is intact and holds only whole batches."""
    path = ledger_location
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(ROOT)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugin")},
    )
    assert writer.stdout is not None
    for _ in range(5):
        writer.stdout.readline()  # five batches committed
    time.sleep(0.003)  # land somewhere inside a later batch
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with Ledger(path) as ledger:
        assert ledger.integrity_ok()
        count = ledger.count()
        assert count >= 5 * 200
        assert count % 200 == 0
        ledger.write([accounted("after-crash")])
        assert ledger.count() == count + 1


def totals_from_rows(ledger: Ledger) -> dict[tuple[str, ...], tuple[int, float]]:
    """The totals per label set, summed from the job rows themselves."""
    sums: dict[tuple[str, ...], tuple[int, float]] = {}
    for row in ledger.jobs():
        labels = tuple(
            str(row[c] or "")
            for c in ("cluster", "user", "project", "partition", "gpu_model", "state", "method")
        )
        jobs, co2e = sums.get(labels, (0, 0.0))
        sums[labels] = (jobs + 1, co2e + float(row["co2e_g"]))
    return sums


def running_totals(ledger: Ledger) -> dict[tuple[str, ...], tuple[int, float]]:
    return {a.labels: (a.jobs, a.co2e_g) for a in ledger.aggregates()}


def test_running_totals_follow_new_changed_moved_and_repeated_jobs(
    ledger_location: str | Path,
) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted(str(i), 10.0 * i, user=f"u{i % 3}") for i in range(30)])
        seq_before = ledger.changed_aggregates(0)[1]
        # job 3 changes user (moves label set), job 4 changes state, job 5 twice in one
        # batch (the last one counts), job 6 unchanged, job 99 new
        result = ledger.write(
            [
                accounted("3", 30.0, user="someone-else"),
                accounted("4", 40.0, user="u1", state=JobState.FAILED),
                accounted("5", 1.0, user="u2"),
                accounted("5", 55.0, user="u2"),
                accounted("6", 60.0, user="u0"),
                accounted("99", 7.0, user="u0"),
            ]
        )
        assert (result.written, result.unchanged) == (4, 2)
        assert running_totals(ledger) == totals_from_rows(ledger)  # sums of whole numbers: exact
        assert ledger.count() == 31
        changed, seq_after = ledger.changed_aggregates(seq_before)
        assert seq_after > seq_before
        # the label sets touched: u0 (3 left it, 99 came), someone-else, u1 (4), u2 (5)
        assert {a.user for a in changed} == {"u0", "u1", "u2", "someone-else"}
        assert ledger.write([accounted("6", 60.0, user="u0")]).written == 0
        assert ledger.changed_aggregates(seq_after) == ([], seq_after)


def test_a_ledger_from_the_trigger_era_migrates_with_its_totals(tmp_path: Path) -> None:
    from jobcarbon.ledger import MIGRATIONS
    from jobcarbon.ledger.dialect import sqlite_statements

    path = tmp_path / "l.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2, 3):
        for statement in sqlite_statements(MIGRATIONS[version]):
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    # a v3 ledger: written through its triggers, as jobcarbon of that schema did
    db.execute(
        "INSERT INTO jobs SELECT 'c1', '900', 'alice', 'proj', 'gpu', 'completed', '', 0, 0, "
        "3600, '1970-01', 1, 'X', 0, 0, 1, 3600, 0, 1, 0, 0, 1, 1.5, 500, 250, 1000, 1.5, "
        "333.3, 'estimated', 's1', 'v', 'd', 0"
    )
    db.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert running_totals(ledger) == {
            ("c1", "alice", "proj", "gpu", "X", "completed", "estimated"): (1, 500.0)
        }
        ledger.write([accounted("1"), accounted("900", 20.0)])
        assert running_totals(ledger) == totals_from_rows(ledger)  # sums of whole numbers: exact


def test_a_v4_ledger_gains_utilisation_and_the_mail_log(tmp_path: Path) -> None:
    from jobcarbon.ledger import MIGRATIONS, MailSent
    from jobcarbon.ledger.dialect import sqlite_statements

    path = tmp_path / "l.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2, 3, 4):
        for statement in sqlite_statements(MIGRATIONS[version]):
            db.execute(statement)
    db.execute("PRAGMA user_version = 4")
    db.close()
    with Ledger(path) as ledger:
        ledger.write([accounted("1", gpu_utilization=0.25), accounted("2")])
        assert [r["gpu_utilization"] for r in ledger.jobs()] == [0.25, None]
        assert ledger.mail_sent("2026-10", "user") == {}
        sent = MailSent("alice", "alice@example.org", "<m1@x>", 1_700_000_000)
        ledger.log_mail("2026-10", "user", sent)
        resent = MailSent("alice", "a@example.org", "<m2@x>", 1_700_000_600, 0.5, 0.2)
        ledger.log_mail("2026-10", "user", resent)
        assert ledger.mail_sent("2026-10", "user") == {"alice": resent}  # the latest
        assert ledger.mail_log() == [("2026-10", "user", sent), ("2026-10", "user", resent)]
        assert ledger.mail_sent("2026-10", "lead") == {}
        assert ledger.running() == []  # v6: the running pods' table


def start_together(script: str, arguments: list[list[str]]) -> list[subprocess.Popen[str]]:
    """One process per argument list running ``script``; all told "go" once all are ready."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, args[0], str(ROOT), *args[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "plugin")},
        )
        for args in arguments
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    return processes


OVERLAPPING_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from tests.test_ledger import accounted
    from jobcarbon.ledger import Ledger
    writer = int(sys.argv[3])
    ledger = Ledger(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # all start together
    # writer k writes jobs 100k .. 100k+399 in batches of 40: most jobs are written by
    # several writers, each giving other emissions (so rows really are replaced)
    for start in range(100 * writer, 100 * writer + 400, 40):
        ledger.write([
            accounted(str(i), co2e_g=float(i + writer), user=f"u{i % 7}")
            for i in range(start, start + 40)
        ])
""")


def test_four_writers_at_once_neither_lose_nor_double_a_job(
    ledger_location: str | Path,
) -> None:
    Ledger(ledger_location).close()  # created (and migrated) before the race
    writers = start_together(OVERLAPPING_WRITER, [[str(ledger_location), str(k)] for k in range(4)])
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0, 0]
    with Ledger(ledger_location) as ledger:
        assert ledger.count() == 700  # jobs 0 .. 699, each once
        assert running_totals(ledger) == totals_from_rows(ledger)
        for row in ledger.jobs():  # a job holds what one of the writers that wrote it gave
            i = int(row["job_id"])
            assert row["co2e_g"] - i in {k for k in range(4) if 100 * k <= i < 100 * k + 400}


MIGRATING_OPENER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from jobcarbon.ledger import Ledger
    print("ready", flush=True)
    sys.stdin.readline()
    with Ledger(sys.argv[1]) as ledger:
        print(ledger.schema_version)
""")


def test_processes_starting_together_migrate_once(ledger_location: str | Path) -> None:
    openers = start_together(MIGRATING_OPENER, [[str(ledger_location)]] * 4)
    results = [opener.communicate(timeout=60) for opener in openers]
    assert [(out.strip(), err) for out, err in results] == [(str(SCHEMA_VERSION), "")] * 4
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted("1")])
        assert ledger.count() == 1


@pytest.mark.integration
def test_ledger_copy_moves_100k_jobs_to_postgresql_with_identical_totals(
    tmp_path: Path, postgres: Any
) -> None:
    from click.testing import CliRunner

    from jobcarbon.cli import main
    from jobcarbon.ledger import JOB_COLUMNS, MailSent, RecomputeRun, UsageScope

    source_path = tmp_path / "site.db"
    with Ledger(source_path) as source:
        for start in range(0, 100_000, 10_000):
            source.write(
                [
                    accounted(str(i), co2e_g=float(i % 997), user=f"u{i % 50}", project=f"p{i % 7}")
                    for i in range(start, start + 10_000)
                ]
            )
        source.set_watermark("slurm.sweep.c1", 1_790_000_000)
        source.set_gauge("slurm_spool_pending", 3.0)
        source.add_ingest_errors({"sacct": 2})
        source.log_mail("2026-10", "user", MailSent("u1", "u1@example.org", "<m@x>", 1))
        source.log_mail("2026-10", "user", MailSent("u1", "u1@example.org", "<m@x>", 9, 1.5, 0.6))
        with source.writing():
            source.save_recompute_run(RecomputeRun(None, 1, 2, "h", 7, "{}", "d", "t", "{}"))
    target_url = postgres.new_database()
    arguments = ["ledger", "copy", "--from", f"sqlite:///{source_path}", "--to", target_url]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert "copied 100,000 job(s)" in result.output
    assert "counts and totals identical" in result.output
    again = CliRunner().invoke(main, arguments)  # a second run changes nothing
    assert "(0 new or changed)" in again.output and again.exit_code == 0
    with Ledger(source_path) as source, Ledger(target_url) as target:
        assert target.count() == 100_000
        for by in ("user", "project"):
            assert target.summary(by) == pytest.approx(source.summary(by))
        assert running_totals(target) == running_totals(source)
        assert target.watermark("slurm.sweep.c1") == 1_790_000_000
        assert target.gauges() == {"slurm_spool_pending": 3.0}
        assert target.ingest_errors() == {"sacct": 2}
        assert target.mail_log() == source.mail_log()  # both messages, each once
        assert len(target.mail_log()) == 2
        assert [(r.host, r.pid) for r in target.recompute_runs()] == [("h", 7)]  # once
        assert target.usage_count(UsageScope()) == 100_000
        assert [r[len(JOB_COLUMNS) + 1 :] for r in target.job_rows()] == [
            r[len(JOB_COLUMNS) + 1 :] for r in source.job_rows()
        ]  # every job's usage, as it was


@pytest.mark.integration
def test_postgresql_over_tls_with_the_password_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobcarbon.config import parse_config
    from jobcarbon.ledger import open_ledger
    from tests.support.postgres_server import PASSWORD, PASSWORD_ROLE, PostgresServer
    from tests.support.smtp_server import self_signed

    cert, key = self_signed(tmp_path)
    server = PostgresServer().start(tls=(cert, key))
    try:
        url = (
            f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{server.port}/{PASSWORD_ROLE}"
            f"?sslmode=verify-full&sslrootcert={cert}"
        )
        config = parse_config(make_config(ledger={"url": url}))
        monkeypatch.setenv("JOBCARBON_LEDGER_PASSWORD", PASSWORD)
        with open_ledger(config) as ledger:
            ledger.write([accounted("1")])
            (encrypted,) = ledger._run(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert encrypted is True
        monkeypatch.delenv("JOBCARBON_LEDGER_PASSWORD")
        (tmp_path / "pg-password").write_text(PASSWORD + "\n")
        from_file = parse_config(
            make_config(ledger={"url": url, "password_file": str(tmp_path / "pg-password")})
        )
        with open_ledger(from_file) as ledger:
            assert ledger.count() == 1
        monkeypatch.setenv("JOBCARBON_LEDGER_PASSWORD", "wrong")
        with pytest.raises(LedgerError, match="password authentication failed") as refused:
            open_ledger(config)
        assert "wrong" not in str(refused.value)  # a password is never shown
    finally:
        server.stop()


def test_data_version_moves_with_every_write(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger, Ledger(ledger_location) as other:
        seen = [ledger.data_version()]
        other.set_gauge("slurm_spool_pending", 1.0)  # no ingest errors yet
        seen.append(ledger.data_version())
        other.set_gauge("slurm_spool_pending", 2.0)
        seen.append(ledger.data_version())
        other.add_ingest_errors({"sacct": 1})
        seen.append(ledger.data_version())
        other.write([accounted("1")])
        seen.append(ledger.data_version())
        other.set_running("c1", [Running("c1", "alice", "p", "A100", 1, 2.0, 600.0, 0.1, 40.0)])
        seen.append(ledger.data_version())
    assert len(set(seen)) == len(seen)


def test_running_usage_is_replaced_cluster_by_cluster(ledger_location: str | Path) -> None:
    first = Running("c1", "alice", "p", "A100", 2, 3.0, 900.0, 0.2, 80.0)
    other_cluster = Running("c2", "bob", "p", "", 1, 0.0, 0.0, 0.05, 20.0)
    with Ledger(ledger_location) as ledger:
        ledger.set_running("c1", [first])
        ledger.set_running("c2", [other_cluster])
        later = Running("c1", "carol", "q", "H100", 1, 1.0, 60.0, 0.01, 4.0)
        written_at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        ledger.set_running("c1", [later], now=written_at)  # alice's pods ended
        assert [replace(r, updated_at=0) for r in ledger.running()] == [later, other_cluster]
        assert ledger.running()[0].updated_at == written_at.timestamp()
        ledger.set_running("c2", [])
        assert [replace(r, updated_at=0) for r in ledger.running()] == [later]


def test_known_jobs_of_a_cluster(ledger_location: str | Path) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted(str(n)) for n in range(1200)])
        ledger.write([accounted("5", cluster="c2")])
        asked = [str(n) for n in range(1195, 1205)] + ["5"]  # more than one chunk of 500
        assert ledger.known_jobs("c1", [str(n) for n in range(1, 1201, 2)] + ["x"]) == {
            str(n) for n in range(1, 1200, 2)
        }
        assert ledger.known_jobs("c2", asked) == {"5"}


def placeholder(raw_id: str, **job_fields: object) -> AccountedJob:
    """A job as slurmdbd's placeholder record gave it (JobIDRaw, no partition, JobName
    ``allocation``: tests/data/sacct-22.05-array-task-pair.txt), written by jobcarbon < 7."""
    return accounted(raw_id, partition="", name="allocation", job_id_raw=raw_id, **job_fields)


def set_version(ledger: Ledger, version: int) -> None:
    if ledger.dialect is POSTGRES:
        ledger._run(f"UPDATE schema_version SET version = {version}")
    else:
        ledger._run(f"PRAGMA user_version = {version}")


def back_to_v13(ledger: Ledger) -> None:
    """The ledger as schema v13 had it: no embodied columns (v14)."""
    for column in (
        "co2e_embodied_g",
        "co2e_embodied_g_low",
        "co2e_embodied_g_high",
        "embodied_source",
    ):
        ledger._run(f"ALTER TABLE jobs DROP COLUMN {column}")
    set_version(ledger, 13)


def back_to_v12(ledger: Ledger) -> None:
    """The ledger as schema v12 had it: totals of the net only (no added, removed,
    overhead or market-based columns: v13), rebuilt from the jobs rows."""
    back_to_v13(ledger)
    real = "DOUBLE PRECISION" if ledger.dialect is POSTGRES else "REAL"
    sums = ("gpu_seconds", "cpu_seconds", "energy_gpu_kwh", "energy_cpu_kwh")
    sums += ("energy_memory_kwh", "energy_facility_kwh", "co2e_g")
    ledger._run("DROP TABLE totals")
    ledger._run(
        'CREATE TABLE totals (cluster TEXT NOT NULL, "user" TEXT NOT NULL, project TEXT '
        "NOT NULL, partition TEXT NOT NULL, gpu_model TEXT NOT NULL, state TEXT NOT NULL, "
        "method TEXT NOT NULL, jobs BIGINT NOT NULL, "
        + "".join(f"{c} {real} NOT NULL, " for c in sums)
        + "last_end_time BIGINT NOT NULL, seq BIGINT NOT NULL, "
        'PRIMARY KEY (cluster, "user", project, partition, gpu_model, state, method))'
    )
    ledger._run(
        'INSERT INTO totals SELECT cluster, "user", project, partition, '
        "COALESCE(gpu_model, ''), state, method, COUNT(*), "
        + "".join(f"SUM({c}), " for c in sums)
        + "COALESCE(MAX(end_time), 0), 0 FROM jobs GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    set_version(ledger, 12)


def back_to_v11(ledger: Ledger) -> None:
    """The ledger as schema v11 had it: one e-mail log row per recipient, no figures (v12)."""
    back_to_v12(ledger)
    ledger._run("DROP INDEX mail_log_month")
    if ledger.dialect is POSTGRES:
        ledger._run("ALTER TABLE mail_log DROP COLUMN message")
        ledger._run("ALTER TABLE mail_log DROP COLUMN energy_kwh")
        ledger._run("ALTER TABLE mail_log DROP COLUMN co2e_kg")
        ledger._run("ALTER TABLE mail_log ADD PRIMARY KEY (month, audience, recipient)")
    else:
        ledger._run("DROP TABLE mail_log")
        ledger._run(
            "CREATE TABLE mail_log (month TEXT NOT NULL, audience TEXT NOT NULL, "
            "recipient TEXT NOT NULL, address TEXT NOT NULL, message_id TEXT NOT NULL, "
            "sent_at INTEGER NOT NULL, PRIMARY KEY (month, audience, recipient)) WITHOUT ROWID"
        )
    set_version(ledger, 11)


def test_v12_keeps_the_mail_logged_before_it_without_figures(ledger_location: str | Path) -> None:
    from jobcarbon.ledger import MailSent

    with Ledger(ledger_location) as ledger:
        back_to_v11(ledger)
        ledger._run(
            "INSERT INTO mail_log VALUES ('2026-10', 'user', 'alice', 'a@example.org', "
            "'<m1@x>', 1700000000)"
        )
        ledger.migrate()
        first = MailSent("alice", "a@example.org", "<m1@x>", 1_700_000_000)  # no figures
        assert ledger.mail_sent("2026-10", "user") == {"alice": first}
        again = MailSent("alice", "a@example.org", "<m2@x>", 1_700_000_600, 1.8, 0.72)
        ledger.log_mail("2026-10", "user", again)
        assert ledger.mail_log() == [("2026-10", "user", first), ("2026-10", "user", again)]


def back_to_v10(ledger: Ledger) -> None:
    """The ledger as schema v10 had it: no market-based columns (v11)."""
    back_to_v11(ledger)
    for column in ("co2e_market_g", "co2e_market_g_low", "co2e_market_g_high", "market_source"):
        ledger._run(f"ALTER TABLE jobs DROP COLUMN {column}")
    if ledger.dialect is POSTGRES:
        ledger._run("UPDATE schema_version SET version = 10")
    else:
        ledger._run("PRAGMA user_version = 10")


def back_to_v8(ledger: Ledger) -> None:
    """The ledger as schema v8 had it: no provenance columns, usage, recompute runs (v9)."""
    for column in ("pue_source", "intensity_source", "intensity_version", "config_digest"):
        ledger._run(f"ALTER TABLE jobs DROP COLUMN {column}")
    ledger._run("DROP TABLE job_usage")
    ledger._run("DROP TABLE recompute_runs")
    if ledger.dialect is POSTGRES:
        ledger._run("UPDATE schema_version SET version = 8")
    else:
        ledger._run("PRAGMA user_version = 8")


def back_to_v6(ledger: Ledger) -> None:
    """The ledger as schema v6 had it: no job_id_raw column, no grid table (v8), no
    usage (v9), no intensity_pending (v10), no market-based columns (v11), no embodied
    columns (v12)."""
    back_to_v10(ledger)
    ledger._run("DROP INDEX jobs_intensity_pending")
    ledger._run("ALTER TABLE jobs DROP COLUMN intensity_pending")
    back_to_v8(ledger)
    ledger._run("ALTER TABLE jobs DROP COLUMN job_id_raw")
    ledger._run("DROP TABLE grid_hours")
    if ledger.dialect is POSTGRES:
        ledger._run("UPDATE schema_version SET version = 6")
    else:
        ledger._run("PRAGMA user_version = 6")


def test_a_v6_ledger_with_doubled_array_tasks_merges_them(ledger_location: str | Path) -> None:
    burst = {"submit_time": utc(2026, 12, 2, 3, 16, 47), "start_time": utc(2026, 12, 2, 3, 16, 52)}
    end = utc(2026, 12, 2, 3, 16, 54)
    with Ledger(ledger_location) as ledger:
        # what jobcarbon < 7 wrote in a burst (issue #25): tasks 1_30..1_32 (JobIDRaw
        # 151..153) twice each, task 1_33's real record never read (its placeholder, 154,
        # is its only row), a job its user named "allocation", an array task whose array
        # id (300) is above the placeholder's raw id (250): not the same job
        ledger.write(
            [
                *(placeholder(str(151 + i), end_time=end, **burst) for i in range(4)),
                *(accounted(f"1_{30 + i}", end_time=end, name="wrap", **burst) for i in range(3)),
                accounted("400", name="allocation", end_time=end, **burst),
                placeholder("250", end_time=end, **burst),
                accounted("300_1", end_time=end, name="wrap", **burst),
            ]
        )
        before = ledger.totals()
        assert before.jobs == 10
        back_to_v6(ledger)
    with Ledger(ledger_location) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert ledger.merged_placeholders == 3
        assert sorted(r["job_id"] for r in ledger.jobs()) == [
            "154", "1_30", "1_31", "1_32", "250", "300_1", "400"
        ]  # fmt: skip
        assert running_totals(ledger) == totals_from_rows(ledger)  # sums of whole numbers: exact
        after = ledger.totals()
        assert after.jobs == before.jobs - 3
        assert after.co2e_kg == pytest.approx(before.co2e_kg - 3 * 0.1)  # 100 g a job
        assert after.gpu_hours == pytest.approx(before.gpu_hours - 3 * 2 / 3600)  # 1 GPU, 2 s
        empty_partition = [a for a in ledger.aggregates() if a.partition == ""]
        assert [a.jobs for a in empty_partition] == [2]  # 154 and 250 stay
    with Ledger(ledger_location) as ledger:  # migrated once: opening again merges nothing
        assert ledger.merged_placeholders == 0 and ledger.count() == 7


def test_a_job_reaccounted_under_its_own_key_replaces_its_placeholder(
    ledger_location: str | Path,
) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([placeholder("153"), placeholder("154"), accounted("155", job_id_raw="155")])
        seq = ledger.changed_aggregates(0)[1]
        # the task's own record: keyed 1_32, with the raw id its placeholder was keyed by
        result = ledger.write([accounted("1_32", 120.0, name="wrap", job_id_raw="153")])
        assert (result.written, result.unchanged) == (1, 0)
        assert sorted(r["job_id"] for r in ledger.jobs()) == ["154", "155", "1_32"]
        assert running_totals(ledger) == totals_from_rows(ledger)
        assert ledger.totals().co2e_kg == pytest.approx(0.1 + 0.1 + 0.12)
        changed, _ = ledger.changed_aggregates(seq)
        assert {(a.partition, a.jobs) for a in changed} == {("", 1), ("gpu", 2)}
        # written again, or a whole job whose raw id is another row's key: nothing else goes
        assert ledger.write([accounted("1_32", 120.0, name="wrap", job_id_raw="153")]).written == 0
        ledger.write([accounted("2_0", name="wrap", job_id_raw="155")])
        assert ledger.count() == 4


# A PostgreSQL script with semicolons that end nothing: in a string, a quoted name, a
# comment and a dollar-quoted function body. sqlite3.complete_statement (the splitter
# used on the PostgreSQL migrations before) cuts the body apart at its first ";".
POSTGRES_SCRIPT = """
-- a comment; not a statement
CREATE TABLE "odd;name" (note TEXT DEFAULT 'a;b');
CREATE FUNCTION notes() RETURNS BIGINT AS $fn$
    SELECT 1; SELECT COUNT(*) FROM "odd;name";
$fn$ LANGUAGE sql;
INSERT INTO "odd;name" VALUES ('it''s; fine');
"""


def test_a_postgresql_script_splits_at_the_semicolons_that_end_statements(
    postgres: Any,
) -> None:
    from jobcarbon.ledger.dialect import postgres_statements, sqlite_statements

    statements = [s.strip() for s in postgres_statements(POSTGRES_SCRIPT)]
    assert len(statements) == 3
    assert statements[1].startswith("CREATE FUNCTION") and statements[1].endswith("sql;")
    assert statements[2] == "INSERT INTO \"odd;name\" VALUES ('it''s; fine');"
    assert len(list(sqlite_statements(POSTGRES_SCRIPT))) == 4  # the body cut in two
    with Ledger(str(postgres.new_database())) as ledger:
        for statement in postgres_statements(POSTGRES_SCRIPT):
            ledger._run(statement)
        # the function counts the one row the script inserted
        assert ledger._run('SELECT notes(), note FROM "odd;name"').fetchone() == (
            1,
            "it's; fine",
        )
    with pytest.raises(LedgerError, match="incomplete statement"):
        list(postgres_statements("CREATE TABLE t (x INT); SELECT 'no end;'"))
