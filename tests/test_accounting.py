"""Records → footprints → ledger: one bad record is reported and counted, the rest land;
the same in one process and on two (a forked child accounting, this process writing)."""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobcarbon.accounting import Accountant, ingest, ingest_on_two_cores
from jobcarbon.config import parse_config
from jobcarbon.errors import LedgerError, SourceError
from jobcarbon.ledger import Ledger
from jobcarbon.records import JobRecord, JobState, RecordProblem
from tests.conftest import make_job, utc
from tests.support.config import make_config

CONFIG = make_config(
    sites={"s1": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 200}}},
    clusters={
        "c1": {"hardware": [{"match": {"partition": "gpu"}, "gpu_model": "Tesla V100-PCIE-16GB"}]}
    },
)


@pytest.mark.parametrize("ingest", [ingest, ingest_on_two_cores])
def test_bad_records_are_counted_and_the_rest_written(ingest: Any, tmp_path: Path) -> None:
    accountant = Accountant(parse_config(CONFIG))
    items: list[JobRecord | RecordProblem] = [
        make_job(job_id="1"),
        RecordProblem("dump line 3", "13 fields where the header has 12"),
        make_job(job_id="2", partition="mystery"),  # GPUs, but no rule and no model
        make_job(job_id="3", end_time=utc(2026, 10, 1, 9)),  # ends before it starts
        make_job(job_id="4", cluster="unknown-cluster"),
        make_job(job_id="5", partition="mystery", start_time=None, state=JobState.CANCELLED),
        make_job(job_id="6"),
    ]
    with Ledger(tmp_path / "l.db") as ledger:
        report = ingest(items, accountant, ledger, batch_size=2)
        assert (report.seen, report.written, report.failed) == (7, 3, 4)
        messages = [str(p) for p in report.problems]
        assert messages[0] == "dump line 3: 13 fields where the header has 12"
        assert messages[1].startswith("job c1/2:") and "partition 'mystery'" in messages[1]
        assert messages[2].startswith("job c1/3:") and "before start_time" in messages[2]
        assert "cluster 'unknown-cluster' is not in the config" in messages[3]
        rows = {r["job_id"]: r for r in ledger.jobs()}
        assert set(rows) == {"1", "5", "6"}
        # V100 PCIe 300 W × 1 h = 0.3 kWh × PUE 1.5 × 200 g/kWh = 90 g
        assert rows["1"]["co2e_g"] == pytest.approx(90.0)
        assert rows["1"]["gpu_model"] == "Tesla V100-PCIE-16GB"
        assert rows["5"]["co2e_g"] == 0.0
        assert rows["1"]["factors_version"] == accountant.factors_version
        assert ledger.ingest_errors() == {"parse": 1, "account": 3}
        again = ingest(items, accountant, ledger)
        assert (again.written, again.unchanged) == (0, 3)


def jobs_then(failure: Exception | None, jobs: int = 5) -> Iterator[JobRecord]:
    """``jobs`` jobs, then the source fails: raises ``failure``, or dies (None)."""
    for n in range(jobs):
        yield make_job(job_id=str(n))
    if failure is None:
        os._exit(3)  # as if killed: no traceback, no goodbye
    raise failure


def test_a_failing_child_is_reported_with_its_traceback_after_its_batches(
    tmp_path: Path,
) -> None:
    accountant = Accountant(parse_config(CONFIG))
    with Ledger(tmp_path / "l.db") as ledger:
        with pytest.raises(SourceError) as raised:
            ingest_on_two_cores(
                jobs_then(OSError("Input/output error reading the dump")), accountant, ledger, 2
            )
        assert "the accounting process failed" in str(raised.value)
        assert "OSError: Input/output error reading the dump" in str(raised.value)
        assert "in jobs_then" in str(raised.value)  # where, for a bug report
        assert ledger.count() == 4  # the two whole batches before; the fifth job was pending


def test_a_child_that_dies_is_reported(tmp_path: Path) -> None:
    accountant = Accountant(parse_config(CONFIG))
    with Ledger(tmp_path / "l.db") as ledger:
        with pytest.raises(SourceError, match=r"ended without finishing \(exit code 3\)"):
            ingest_on_two_cores(jobs_then(None), accountant, ledger, 2)
        assert ledger.count() == 4


def test_a_writer_that_fails_stops_the_child(tmp_path: Path) -> None:
    accountant = Accountant(parse_config(CONFIG))
    with Ledger(tmp_path / "l.db") as setup:
        setup.count()  # created, migrated
    blocker = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the ledger
    endless = (make_job(job_id=str(n)) for n in itertools.count())
    with (
        Ledger(tmp_path / "l.db", busy_timeout_s=0.2) as ledger,
        pytest.raises(LedgerError, match="database is locked"),
    ):
        ingest_on_two_cores(endless, accountant, ledger, 100)
    blocker.execute("ROLLBACK")
    with pytest.raises(ChildProcessError):  # stopped and reaped: no child left behind
        os.waitpid(-1, os.WNOHANG)
