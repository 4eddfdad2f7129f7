"""The ledger: one row per job with its footprint. The only module that speaks SQL.

SQLite in WAL mode, so the exporter and reports read while a collector writes.
Writes are idempotent upserts keyed by (cluster, job_id): a job written twice is
counted once, a changed record replaces the old row. Each batch is one
transaction, so a crash between (or inside) batches leaves whole batches only.
The schema is versioned in ``PRAGMA user_version`` and migrated on open; a ledger
from a newer jobcarbon is refused rather than damaged. Jobs belong to the UTC
month in which they ended (``month``), or were submitted if they never ended.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from . import access
from .config import Config
from .errors import LedgerError
from .footprint import AccountedJob
from .records import PLACEHOLDER_JOB_NAME

log = logging.getLogger("jobcarbon.ledger")

SCHEMA_VERSION = 7
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        cluster TEXT NOT NULL,
        job_id TEXT NOT NULL,
        user TEXT NOT NULL,
        project TEXT NOT NULL,
        partition TEXT NOT NULL,
        state TEXT NOT NULL,
        name TEXT NOT NULL,
        submit_time INTEGER NOT NULL,
        start_time INTEGER,
        end_time INTEGER,
        month TEXT NOT NULL,
        gpu_count REAL NOT NULL,
        gpu_model TEXT,
        cpu_count INTEGER NOT NULL,
        memory_gb REAL NOT NULL,
        node_count INTEGER NOT NULL,
        gpu_seconds REAL NOT NULL,
        cpu_seconds REAL NOT NULL,
        energy_gpu_kwh REAL NOT NULL,
        energy_cpu_kwh REAL NOT NULL,
        energy_memory_kwh REAL NOT NULL,
        energy_it_kwh REAL NOT NULL,
        energy_facility_kwh REAL NOT NULL,
        co2e_g REAL NOT NULL,
        co2e_g_low REAL NOT NULL,
        co2e_g_high REAL NOT NULL,
        pue REAL NOT NULL,
        intensity_g_per_kwh REAL NOT NULL,
        method TEXT NOT NULL,
        site TEXT NOT NULL,
        factors_version TEXT NOT NULL,
        row_digest TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (cluster, job_id)
    ) WITHOUT ROWID;
    CREATE INDEX jobs_month ON jobs (month);
    CREATE INDEX jobs_end_time ON jobs (end_time);
    """,
    2: """
    CREATE TABLE watermarks (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    3: """
    CREATE TABLE totals (
        cluster TEXT NOT NULL,
        user TEXT NOT NULL,
        project TEXT NOT NULL,
        partition TEXT NOT NULL,
        gpu_model TEXT NOT NULL,
        state TEXT NOT NULL,
        method TEXT NOT NULL,
        jobs INTEGER NOT NULL,
        gpu_seconds REAL NOT NULL,
        cpu_seconds REAL NOT NULL,
        energy_gpu_kwh REAL NOT NULL,
        energy_cpu_kwh REAL NOT NULL,
        energy_memory_kwh REAL NOT NULL,
        energy_facility_kwh REAL NOT NULL,
        co2e_g REAL NOT NULL,
        last_end_time INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (cluster, user, project, partition, gpu_model, state, method)
    ) WITHOUT ROWID;
    CREATE INDEX totals_by_seq ON totals (seq);
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO totals VALUES (
            NEW.cluster, NEW.user, NEW.project, NEW.partition,
            COALESCE(NEW.gpu_model, ''), NEW.state, NEW.method, 1,
            NEW.gpu_seconds, NEW.cpu_seconds, NEW.energy_gpu_kwh,
            NEW.energy_cpu_kwh, NEW.energy_memory_kwh, NEW.energy_facility_kwh,
            NEW.co2e_g, COALESCE(NEW.end_time, 0),
            (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
        ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
        DO UPDATE SET
            jobs = jobs + excluded.jobs,
            gpu_seconds = gpu_seconds + excluded.gpu_seconds,
            cpu_seconds = cpu_seconds + excluded.cpu_seconds,
            energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
            energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
            energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
            energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
            co2e_g = co2e_g + excluded.co2e_g,
            last_end_time = MAX(last_end_time, excluded.last_end_time),
            seq = excluded.seq;
    END;
    CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs BEGIN
        INSERT INTO totals VALUES (
            OLD.cluster, OLD.user, OLD.project, OLD.partition,
            COALESCE(OLD.gpu_model, ''), OLD.state, OLD.method, -1,
            -OLD.gpu_seconds, -OLD.cpu_seconds, -OLD.energy_gpu_kwh,
            -OLD.energy_cpu_kwh, -OLD.energy_memory_kwh, -OLD.energy_facility_kwh,
            -OLD.co2e_g, 0,
            (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
        ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
        DO UPDATE SET
            jobs = jobs + excluded.jobs,
            gpu_seconds = gpu_seconds + excluded.gpu_seconds,
            cpu_seconds = cpu_seconds + excluded.cpu_seconds,
            energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
            energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
            energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
            energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
            co2e_g = co2e_g + excluded.co2e_g,
            last_end_time = MAX(last_end_time, excluded.last_end_time),
            seq = excluded.seq;
        INSERT INTO totals VALUES (
            NEW.cluster, NEW.user, NEW.project, NEW.partition,
            COALESCE(NEW.gpu_model, ''), NEW.state, NEW.method, 1,
            NEW.gpu_seconds, NEW.cpu_seconds, NEW.energy_gpu_kwh,
            NEW.energy_cpu_kwh, NEW.energy_memory_kwh, NEW.energy_facility_kwh,
            NEW.co2e_g, COALESCE(NEW.end_time, 0),
            (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
        ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
        DO UPDATE SET
            jobs = jobs + excluded.jobs,
            gpu_seconds = gpu_seconds + excluded.gpu_seconds,
            cpu_seconds = cpu_seconds + excluded.cpu_seconds,
            energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
            energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
            energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
            energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
            co2e_g = co2e_g + excluded.co2e_g,
            last_end_time = MAX(last_end_time, excluded.last_end_time),
            seq = excluded.seq;
    END;
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
        INSERT INTO totals VALUES (
            OLD.cluster, OLD.user, OLD.project, OLD.partition,
            COALESCE(OLD.gpu_model, ''), OLD.state, OLD.method, -1,
            -OLD.gpu_seconds, -OLD.cpu_seconds, -OLD.energy_gpu_kwh,
            -OLD.energy_cpu_kwh, -OLD.energy_memory_kwh, -OLD.energy_facility_kwh,
            -OLD.co2e_g, 0,
            (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
        ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
        DO UPDATE SET
            jobs = jobs + excluded.jobs,
            gpu_seconds = gpu_seconds + excluded.gpu_seconds,
            cpu_seconds = cpu_seconds + excluded.cpu_seconds,
            energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
            energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
            energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
            energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
            co2e_g = co2e_g + excluded.co2e_g,
            last_end_time = MAX(last_end_time, excluded.last_end_time),
            seq = excluded.seq;
    END;
    INSERT INTO totals
        SELECT cluster, user, project, partition, COALESCE(gpu_model, ''), state, method,
            COUNT(*), SUM(gpu_seconds), SUM(cpu_seconds), SUM(energy_gpu_kwh),
            SUM(energy_cpu_kwh), SUM(energy_memory_kwh), SUM(energy_facility_kwh), SUM(co2e_g),
            COALESCE(MAX(end_time), 0), 0
        FROM jobs GROUP BY 1, 2, 3, 4, 5, 6, 7;
    CREATE TABLE ingest_errors (
        stage TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE gauges (
        name TEXT PRIMARY KEY,
        value REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # the totals are kept by ``Ledger.write``, a batch at a time, not row by row; an
    # unchanged row is found by comparing its columns, not a digest computed in Python
    4: """
    DROP TRIGGER jobs_count_insert;
    DROP TRIGGER jobs_count_update;
    DROP TRIGGER jobs_count_delete;
    ALTER TABLE jobs DROP COLUMN row_digest;
    """,
    # measured GPU utilisation (for the monthly e-mails' advice), and the e-mails sent:
    # one row per message the SMTP server accepted, so a re-run sends nothing twice
    5: """
    ALTER TABLE jobs ADD COLUMN gpu_utilization REAL;
    CREATE TABLE mail_log (
        month TEXT NOT NULL,
        audience TEXT NOT NULL,
        recipient TEXT NOT NULL,
        address TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        PRIMARY KEY (month, audience, recipient)
    ) WITHOUT ROWID;
    """,
    # the usage so far of jobs still running (the pod watcher's), one row per label
    # set, replaced cluster by cluster: the exporter's jobcarbon_running_* gauges
    6: """
    CREATE TABLE running (
        cluster TEXT NOT NULL,
        user TEXT NOT NULL,
        project TEXT NOT NULL,
        gpu_model TEXT NOT NULL,
        jobs INTEGER NOT NULL,
        gpus REAL NOT NULL,
        gpu_seconds REAL NOT NULL,
        energy_facility_kwh REAL NOT NULL,
        co2e_g REAL NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (cluster, user, project, gpu_model)
    ) WITHOUT ROWID;
    """,
    # the scheduler's own id where the key is another (an array task's JobIDRaw);
    # then ``merge_placeholders`` (DATA_MIGRATIONS) folds the rows doubled by slurmdbd's
    # placeholder record into the job's own
    7: """
    ALTER TABLE jobs ADD COLUMN job_id_raw TEXT;
    """,
}

# PostgreSQL ledgers start at the current schema, created in one step; later
# versions add their steps to both dictionaries.
POSTGRES_MIGRATIONS: dict[int, str] = {
    5: """
    CREATE TABLE jobs (
        cluster TEXT NOT NULL,
        job_id TEXT NOT NULL,
        "user" TEXT NOT NULL,
        project TEXT NOT NULL,
        partition TEXT NOT NULL,
        state TEXT NOT NULL,
        name TEXT NOT NULL,
        submit_time BIGINT NOT NULL,
        start_time BIGINT,
        end_time BIGINT,
        month TEXT NOT NULL,
        gpu_count DOUBLE PRECISION NOT NULL,
        gpu_model TEXT,
        cpu_count BIGINT NOT NULL,
        memory_gb DOUBLE PRECISION NOT NULL,
        node_count BIGINT NOT NULL,
        gpu_seconds DOUBLE PRECISION NOT NULL,
        cpu_seconds DOUBLE PRECISION NOT NULL,
        energy_gpu_kwh DOUBLE PRECISION NOT NULL,
        energy_cpu_kwh DOUBLE PRECISION NOT NULL,
        energy_memory_kwh DOUBLE PRECISION NOT NULL,
        energy_it_kwh DOUBLE PRECISION NOT NULL,
        energy_facility_kwh DOUBLE PRECISION NOT NULL,
        co2e_g DOUBLE PRECISION NOT NULL,
        co2e_g_low DOUBLE PRECISION NOT NULL,
        co2e_g_high DOUBLE PRECISION NOT NULL,
        pue DOUBLE PRECISION NOT NULL,
        intensity_g_per_kwh DOUBLE PRECISION NOT NULL,
        method TEXT NOT NULL,
        site TEXT NOT NULL,
        factors_version TEXT NOT NULL,
        recorded_at BIGINT NOT NULL,
        gpu_utilization DOUBLE PRECISION,
        PRIMARY KEY (cluster, job_id)
    );
    CREATE INDEX jobs_month ON jobs (month);
    CREATE INDEX jobs_end_time ON jobs (end_time);
    CREATE TABLE watermarks (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE totals (
        cluster TEXT NOT NULL,
        "user" TEXT NOT NULL,
        project TEXT NOT NULL,
        partition TEXT NOT NULL,
        gpu_model TEXT NOT NULL,
        state TEXT NOT NULL,
        method TEXT NOT NULL,
        jobs BIGINT NOT NULL,
        gpu_seconds DOUBLE PRECISION NOT NULL,
        cpu_seconds DOUBLE PRECISION NOT NULL,
        energy_gpu_kwh DOUBLE PRECISION NOT NULL,
        energy_cpu_kwh DOUBLE PRECISION NOT NULL,
        energy_memory_kwh DOUBLE PRECISION NOT NULL,
        energy_facility_kwh DOUBLE PRECISION NOT NULL,
        co2e_g DOUBLE PRECISION NOT NULL,
        last_end_time BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (cluster, "user", project, partition, gpu_model, state, method)
    );
    CREATE INDEX totals_by_seq ON totals (seq);
    CREATE TABLE ingest_errors (stage TEXT PRIMARY KEY, count BIGINT NOT NULL);
    CREATE TABLE gauges (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL);
    CREATE TABLE mail_log (
        month TEXT NOT NULL,
        audience TEXT NOT NULL,
        recipient TEXT NOT NULL,
        address TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sent_at BIGINT NOT NULL,
        PRIMARY KEY (month, audience, recipient)
    );
    """,
    6: """
    CREATE TABLE running (
        cluster TEXT NOT NULL,
        "user" TEXT NOT NULL,
        project TEXT NOT NULL,
        gpu_model TEXT NOT NULL,
        jobs BIGINT NOT NULL,
        gpus DOUBLE PRECISION NOT NULL,
        gpu_seconds DOUBLE PRECISION NOT NULL,
        energy_facility_kwh DOUBLE PRECISION NOT NULL,
        co2e_g DOUBLE PRECISION NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (cluster, "user", project, gpu_model)
    );
    """,
    7: """
    ALTER TABLE jobs ADD COLUMN job_id_raw TEXT;
    """,
}
#: Taken while a PostgreSQL ledger migrates, so that two processes starting together
#: migrate once, and by each writer for its batch (arbitrary numbers, the same in
#: every jobcarbon).
_MIGRATION_LOCK = 7_715_517
_WRITE_LOCK = 7_715_518

#: Columns written from an AccountedJob, in order (recorded_at is added at write time).
JOB_COLUMNS = (
    "cluster",
    "job_id",
    "user",
    "project",
    "partition",
    "state",
    "name",
    "submit_time",
    "start_time",
    "end_time",
    "month",
    "gpu_count",
    "gpu_model",
    "cpu_count",
    "memory_gb",
    "node_count",
    "gpu_seconds",
    "cpu_seconds",
    "energy_gpu_kwh",
    "energy_cpu_kwh",
    "energy_memory_kwh",
    "energy_it_kwh",
    "energy_facility_kwh",
    "co2e_g",
    "co2e_g_low",
    "co2e_g_high",
    "pue",
    "intensity_g_per_kwh",
    "method",
    "site",
    "factors_version",
    "gpu_utilization",
    "job_id_raw",
)
#: Columns a reader gets from ``Ledger.jobs``.
EXPORT_COLUMNS = JOB_COLUMNS
# A batch is staged in a temporary table, rows already in the ledger as given are
# dropped from it, the totals lose the rows about to be replaced and gain the staged
# ones (one grouped statement each), and the staged rows are upserted. The statements
# are the same on both backends but for a few spellings (``_Dialect``).
_TOTALS_SUMS = (
    "gpu_seconds",
    "cpu_seconds",
    "energy_gpu_kwh",
    "energy_cpu_kwh",
    "energy_memory_kwh",
    "energy_facility_kwh",
    "co2e_g",
)
_TOTALS_KEY = 'cluster, "user", project, partition, gpu_model, state, method'
_TOTALS_LABELS = "cluster, \"user\", project, partition, COALESCE(gpu_model, ''), state, method"
# A SummaryRow's figures: `summary`, `grouped` and `totals` read them alike, so a
# monthly e-mail and `jobcarbon summary` print the same numbers.
_SUMMARY_SUMS = (
    "COUNT(*), COALESCE(SUM(gpu_seconds), 0) / 3600.0, COALESCE(SUM(energy_facility_kwh), 0), "
    "COALESCE(SUM(co2e_g), 0) / 1000.0, COALESCE(SUM(co2e_g_low), 0) / 1000.0, "
    "COALESCE(SUM(co2e_g_high), 0) / 1000.0"
)


# A row written from slurmdbd's placeholder record (PLACEHOLDER_JOB_NAME, no partition;
# keyed by JobIDRaw, as the record showed no array form): the job's own row replaces it.
_PLACEHOLDER_ROW = f"partition = '' AND name = '{PLACEHOLDER_JOB_NAME}'"
_PLACEHOLDERS_OF_STAGED = (
    f"{_PLACEHOLDER_ROW} AND (cluster, job_id) IN (SELECT cluster, job_id_raw FROM staged "
    "WHERE job_id_raw <> job_id AND partition <> '')"
)


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


@dataclass(frozen=True)
class _Dialect:
    """How SQLite and PostgreSQL spell what the ledger's statements need."""

    stage: tuple[str, ...]  # create the per-connection staging table
    clear_stage: str  # empty it, space included (PostgreSQL never vacuums temp tables)
    greatest: str  # the larger of two values
    same: str  # equal, NULLs included

    @cached_property
    def write_statements(self) -> dict[str, str]:
        upsert = (
            f" ON CONFLICT ({_TOTALS_KEY}) DO UPDATE SET "
            + ", ".join(f"{c} = totals.{c} + excluded.{c}" for c in ("jobs", *_TOTALS_SUMS))
            + f", last_end_time = {self.greatest}(totals.last_end_time, excluded.last_end_time)"
            ", seq = excluded.seq"
        )
        unchanged = " AND ".join(
            f'j."{c}" = staged."{c}"'
            if c in ("cluster", "job_id")
            else f'j."{c}" {self.same} staged."{c}"'
            for c in JOB_COLUMNS
        )

        def subtract(where: str) -> str:  # the totals lose the jobs rows ``where``
            return (
                f"INSERT INTO totals SELECT {_TOTALS_LABELS}, -COUNT(*), "
                + ", ".join(f"-SUM({c})" for c in _TOTALS_SUMS)
                + f", 0, :seq FROM jobs WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6, 7{upsert}"
            )

        staged_keys = "(cluster, job_id) IN (SELECT cluster, job_id FROM staged)"
        return {
            "stage_rows": (
                f"INSERT INTO staged ({_quoted(JOB_COLUMNS)}, recorded_at) "
                f"VALUES ({', '.join('?' * len(JOB_COLUMNS))}, ?)"
            ),
            "drop_unchanged": (
                f"DELETE FROM staged WHERE EXISTS (SELECT 1 FROM jobs AS j WHERE {unchanged})"
            ),
            "remove_replaced": subtract(staged_keys),
            # a placeholder row of a job now staged whole under its own key
            "any_placeholders": (
                f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {_PLACEHOLDERS_OF_STAGED})"
            ),
            "remove_placeholders": subtract(_PLACEHOLDERS_OF_STAGED),
            "delete_placeholders": f"DELETE FROM jobs WHERE {_PLACEHOLDERS_OF_STAGED}",
            "delete_staged": f"DELETE FROM jobs WHERE {staged_keys}",
            "add_staged": (
                f"INSERT INTO totals SELECT {_TOTALS_LABELS}, COUNT(*), "
                + ", ".join(f"SUM({c})" for c in _TOTALS_SUMS)
                + ", COALESCE(MAX(end_time), 0), :seq FROM staged WHERE true"
                f" GROUP BY 1, 2, 3, 4, 5, 6, 7{upsert}"
            ),
            "upsert_staged": (
                "INSERT INTO jobs SELECT * FROM staged WHERE true ON CONFLICT (cluster, job_id) "
                "DO UPDATE SET "
                + ", ".join(f'"{c}" = excluded."{c}"' for c in (*JOB_COLUMNS[2:], "recorded_at"))
            ),
            "watermark": (
                "INSERT INTO watermarks (name, value) VALUES (?, ?) ON CONFLICT (name) "
                f"DO UPDATE SET value = {self.greatest}(watermarks.value, excluded.value)"
            ),
        }


SQLITE = _Dialect(
    (
        "CREATE TEMP TABLE IF NOT EXISTS staged AS SELECT * FROM jobs WHERE false",
        "CREATE UNIQUE INDEX IF NOT EXISTS temp.staged_key ON staged (cluster, job_id)",
    ),
    clear_stage="DELETE FROM staged",  # SQLite truncates a table deleted without WHERE
    greatest="MAX",
    same="IS",
)
POSTGRES = _Dialect(
    (
        "CREATE TEMP TABLE IF NOT EXISTS staged (LIKE jobs)",
        "CREATE UNIQUE INDEX IF NOT EXISTS staged_key ON staged (cluster, job_id)",
    ),
    clear_stage="TRUNCATE staged",
    greatest="GREATEST",
    same="IS NOT DISTINCT FROM",
)

Dimension = Literal[
    "user", "project", "cluster", "partition", "gpu_model", "state", "month", "site", "method"
]
DIMENSIONS: tuple[Dimension, ...] = (
    "user",
    "project",
    "cluster",
    "partition",
    "gpu_model",
    "state",
    "month",
    "site",
    "method",
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int  # new jobs and jobs whose record or footprint changed
    unchanged: int  # jobs already in the ledger exactly as given


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Running totals of the jobs sharing one combination of labels."""

    cluster: str
    user: str
    project: str
    partition: str
    gpu_model: str
    state: str
    method: str
    jobs: int
    gpu_seconds: float
    cpu_seconds: float
    energy_gpu_kwh: float
    energy_cpu_kwh: float
    energy_memory_kwh: float
    energy_facility_kwh: float
    co2e_g: float
    last_end_time: int

    @property
    def labels(self) -> tuple[str, str, str, str, str, str, str]:
        """The label set: cluster, user, project, partition, gpu_model, state, method."""
        return (
            self.cluster,
            self.user,
            self.project,
            self.partition,
            self.gpu_model,
            self.state,
            self.method,
        )

    def plus(self, other: Aggregate) -> Aggregate:
        """These labels with both totals added."""
        return replace(
            self,
            jobs=self.jobs + other.jobs,
            gpu_seconds=self.gpu_seconds + other.gpu_seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            energy_gpu_kwh=self.energy_gpu_kwh + other.energy_gpu_kwh,
            energy_cpu_kwh=self.energy_cpu_kwh + other.energy_cpu_kwh,
            energy_memory_kwh=self.energy_memory_kwh + other.energy_memory_kwh,
            energy_facility_kwh=self.energy_facility_kwh + other.energy_facility_kwh,
            co2e_g=self.co2e_g + other.co2e_g,
            last_end_time=max(self.last_end_time, other.last_end_time),
        )


@dataclass(frozen=True, slots=True)
class Running:
    """The usage so far of the jobs still running with one set of labels."""

    cluster: str
    user: str
    project: str
    gpu_model: str
    jobs: int
    gpus: float
    gpu_seconds: float
    energy_facility_kwh: float
    co2e_g: float
    updated_at: int = 0  # when its watcher wrote it (epoch seconds); set by set_running

    @property
    def labels(self) -> tuple[str, str, str, str]:
        return (self.cluster, self.user, self.project, self.gpu_model)

    def plus(self, other: Running) -> Running:
        return replace(
            self,
            jobs=self.jobs + other.jobs,
            gpus=self.gpus + other.gpus,
            gpu_seconds=self.gpu_seconds + other.gpu_seconds,
            energy_facility_kwh=self.energy_facility_kwh + other.energy_facility_kwh,
            co2e_g=self.co2e_g + other.co2e_g,
        )


@dataclass(frozen=True, slots=True)
class SummaryRow:
    key: str
    jobs: int
    gpu_hours: float
    energy_kwh: float
    co2e_kg: float
    co2e_kg_low: float
    co2e_kg_high: float


@dataclass(frozen=True, slots=True)
class Habits:
    """What a person's jobs did with their GPUs in a period, for advice on what to change."""

    gpu_hours: float
    failed_gpu_hours: float  # jobs that failed, timed out or ran out of memory
    failed_co2e_kg: float
    cancelled_gpu_hours: float
    measured_gpu_hours: float  # GPU-hours whose utilisation was measured
    busy_gpu_hours: float  # of those, the hours the GPUs were busy


@dataclass(frozen=True, slots=True)
class FactorsUsed:
    """The factors behind a person's emissions at one site, for one method."""

    site: str
    method: str
    jobs: int
    pue_min: float
    pue_max: float
    intensity_min_g_per_kwh: float
    intensity_max_g_per_kwh: float
    factors_version: str


@dataclass(frozen=True, slots=True)
class MailSent:
    """A message the SMTP server accepted."""

    recipient: str  # a user, or a project for its leads
    address: str
    message_id: str
    sent_at: int


#: Job states that count as wasted work in the monthly advice.
FAILED_STATES = ("failed", "timeout", "out_of_memory")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which jobs a query covers; ``None`` means any. Times are end-time bounds (UTC)."""

    since: datetime | None = None
    until: datetime | None = None
    month: str | None = None
    user: str | None = None
    project: str | None = None
    cluster: str | None = None
    months: tuple[str, ...] | None = None  # any of these months
    #: these jobs, each with its array tasks (``ID_N``) and earlier runs (``ID+run@T``)
    job_ids: tuple[str, ...] | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.job_ids is not None:
            matches = []
            for job_id in self.job_ids:
                like = re.sub(r"([\\%_])", r"\\\1", job_id)
                matches.append(
                    "job_id = ? OR job_id LIKE ? ESCAPE '\\' OR job_id LIKE ? ESCAPE '\\'"
                )
                params.extend([job_id, like + "\\_%", like + "+run@%"])
            clauses.append(f"({' OR '.join(matches) or 'FALSE'})")
        if self.months is not None:
            clauses.append(f"month IN ({', '.join('?' * len(self.months))})")
            params.extend(self.months)
        if self.since is not None:
            clauses.append("end_time >= ?")
            params.append(_epoch(self.since))
        if self.until is not None:
            clauses.append("end_time < ?")
            params.append(_epoch(self.until))
        for column in ("month", "user", "project", "cluster"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f'"{column}" = ?')
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _check_dimension(by: str) -> None:
    if by not in DIMENSIONS:
        raise LedgerError(f"cannot group by {by!r}; choose one of {', '.join(DIMENSIONS)}")


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration (triggers hold semicolons of their own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        raise LedgerError(f"incomplete statement in a migration: {buffer.strip()[:60]}")


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def ledger_row(accounted: AccountedJob) -> tuple[Any, ...]:
    """A job as the ledger stores it: its JOB_COLUMNS, in order (plain values that
    pickle cheaply: an import builds them in one process and writes them in another)."""
    job, fp = accounted.job, accounted.footprint
    month_source = job.end_time or job.submit_time
    return (
        job.cluster,
        job.job_id,
        job.user,
        job.project,
        job.partition,
        job.state.value,
        job.name,
        _epoch(job.submit_time),
        _epoch(job.start_time),
        _epoch(job.end_time),
        f"{month_source.year:04d}-{month_source.month:02d}",
        job.gpu_count,
        accounted.gpu_model if job.gpu_count > 0 else None,
        job.cpu_count,
        job.memory_gb,
        job.node_count,
        fp.gpu_seconds,
        fp.cpu_seconds,
        fp.energy_gpu_kwh,
        fp.energy_cpu_kwh,
        fp.energy_memory_kwh,
        fp.energy_it_kwh,
        fp.energy_facility_kwh,
        fp.co2e_g,
        fp.co2e_g_low,
        fp.co2e_g_high,
        fp.pue,
        fp.intensity_g_per_kwh,
        fp.method.value,
        accounted.site,
        accounted.factors_version,
        job.gpu_utilization,
        job.job_id_raw,
    )


class Ledger:
    """A ledger: a SQLite file, or a PostgreSQL database given by its URL.

    Use as a context manager, or call ``close()``. Writers are serialised (SQLite's
    write lock; on PostgreSQL an advisory lock), so concurrent collectors neither lose
    nor double a job; readers never wait for writers.
    """

    def __init__(
        self,
        location: str | Path,
        *,
        migrate: bool = True,
        busy_timeout_s: float = 30.0,
        password: str | None = None,
    ) -> None:
        text = str(location)
        self._streams = 0
        self.merged_placeholders = 0  # rows ``migrate`` merged (schema v7)
        self._db: Any
        if text.startswith(("postgresql://", "postgres://")):
            self.dialect = POSTGRES
            self.where = _redact(text)
            self._db, self._errors = _connect_postgres(text, password, busy_timeout_s, self.where)
        else:
            self.dialect = SQLITE
            self.path = Path(location)
            self.where = str(self.path)
            self._errors = (sqlite3.Error,)
            self._db = self._connect_sqlite(migrate, busy_timeout_s)
        self._check_version(migrate)

    def _connect_sqlite(self, migrate: bool, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            if migrate:
                _create_private(self.path)
            elif not self.path.exists():
                raise LedgerError(f"no ledger at {self.path}")
        except OSError as err:
            action = "create the ledger" if migrate else "open the ledger"
            raise LedgerError(access.describe(self.path, action, err, write=migrate)) from err
        try:
            db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            _wal_mode(db, busy_timeout_s)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA temp_store = MEMORY")  # the staged batch
        except sqlite3.Error as err:
            raise LedgerError(
                access.describe(self.path, "open the ledger", write=migrate) + f" ({err})"
            ) from err
        return db

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, params: Any = ()) -> Any:
        """Execute one statement in this backend's parameter style; the cursor."""
        if self.dialect is POSTGRES:
            return self._db.execute(_postgres_params(sql), params)
        return self._db.execute(sql, params)

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect is POSTGRES:
            with self._db.cursor() as cursor:
                cursor.executemany(_postgres_params(sql), rows)
        else:
            self._db.executemany(sql, rows)

    def _begin_write(self) -> None:
        if self.dialect is POSTGRES:
            self._run("BEGIN")
            # one writer at a time, as SQLite has it. An advisory lock, not a table lock:
            # readers are not blocked, and neither is autovacuum, which the totals' many
            # updates need (a table lock held by each batch starved it: 81 MB of dead rows
            # for 5,000 live ones after a million jobs, and 4.6 s batches)
            self._run(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
        else:
            self._run("BEGIN IMMEDIATE")

    @property
    def schema_version(self) -> int:
        if self.dialect is POSTGRES:
            (exists,) = self._run("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            if not exists:
                return 0
            row = self._run("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)
        return int(self._run("PRAGMA user_version").fetchone()[0])

    def _check_version(self, migrate: bool) -> None:
        try:
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger {self.where} has schema v{version}, newer than this jobcarbon "
                    f"understands (v{SCHEMA_VERSION}); upgrade jobcarbon"
                )
            if version < SCHEMA_VERSION:
                if not migrate:
                    raise LedgerError(
                        f"ledger {self.where} is at schema v{version}; "
                        f"run `jobcarbon ledger migrate`"
                    )
                self.migrate()
        except self._errors as err:
            raise LedgerError(f"ledger {self.where} is not readable: {err}") from err

    def migrate(self) -> None:
        """Apply the pending migrations, in one transaction that one process at a time runs."""
        postgres = self.dialect is POSTGRES
        if postgres:
            self._run("BEGIN")
            self._run(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            self._run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        else:
            self._run("BEGIN IMMEDIATE")
        try:
            version = self.schema_version  # re-read under the lock
            steps = POSTGRES_MIGRATIONS if postgres else MIGRATIONS
            for target in range(version + 1, SCHEMA_VERSION + 1):
                if target not in steps:
                    continue
                for statement in _statements(steps[target]):
                    self._run(statement)
                if target == 7:
                    self.merged_placeholders = self._merge_placeholders()
                if postgres:
                    self._run("DELETE FROM schema_version")
                    self._run("INSERT INTO schema_version VALUES (?)", [target])
            if not postgres:
                self._run(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._run("COMMIT")
        except BaseException:
            self._run("ROLLBACK")
            raise

    def _merge_placeholders(self) -> int:
        """Delete the rows doubled by slurmdbd's placeholder record (jobcarbon < 7 wrote
        them): keyed by JobIDRaw, no partition, JobName ``allocation``, beside the job's
        own row keyed ``<array>_<task>``. Rows before v7 keep no JobIDRaw, so a
        placeholder is matched to an array task row of the same cluster and user with
        the same submit, start and end times and allocation (the placeholder has
        them from the end message: seen on Slurm 22.05), whose array id is at most its
        raw id (a task's JobIDRaw is its array's id or a later one); each array task
        row takes one placeholder at most. A placeholder that matches none is the
        job's only row and stays (the next sweep or backfill replaces it). Inside
        ``migrate``'s transaction; the totals lose what is deleted. Returns how many."""
        pairs = self._run(
            "SELECT p.cluster, p.job_id, r.job_id FROM jobs AS p JOIN jobs AS r "
            'ON r.cluster = p.cluster AND r.end_time = p.end_time AND r."user" = p."user" '
            "AND r.submit_time = p.submit_time AND r.start_time = p.start_time "
            "AND r.gpu_count = p.gpu_count AND r.cpu_count = p.cpu_count "
            "AND r.partition <> '' AND r.job_id LIKE '%!_%' ESCAPE '!' "
            "WHERE p.partition = '' AND p.name = ? ORDER BY p.cluster, p.job_id, r.job_id",
            [PLACEHOLDER_JOB_NAME],
        ).fetchall()
        taken: set[tuple[str, str]] = set()
        doomed: dict[tuple[str, str], None] = {}
        for cluster, raw_id, task_id in pairs:
            array_id = task_id.split("_")[0]
            if (cluster, raw_id) in doomed or (cluster, task_id) in taken:
                continue
            if raw_id.isdigit() and array_id.isdigit() and int(array_id) <= int(raw_id):
                doomed[cluster, raw_id] = None
                taken.add((cluster, task_id))
        if not doomed:
            return 0
        statements = self.dialect.write_statements
        for statement in self.dialect.stage:
            self._run(statement)
        self._run(self.dialect.clear_stage)
        self._run_many(
            "INSERT INTO staged SELECT * FROM jobs WHERE cluster = ? AND job_id = ?", list(doomed)
        )
        (next_seq,) = self._run("SELECT COALESCE(MAX(seq), 0) + 1 FROM totals").fetchone()
        self._run(statements["remove_replaced"], {"seq": next_seq})
        self._run(statements["delete_staged"])
        self._run(self.dialect.clear_stage)
        log.warning(
            "ledger %s: merged %d array task row(s) doubled by slurmdbd's placeholder "
            "record into the task's own row",
            self.where,
            len(doomed),
        )
        return len(doomed)

    def write(self, batch: Sequence[AccountedJob], now: datetime | None = None) -> WriteResult:
        """Upsert a batch in one transaction: all of it lands, or none of it."""
        return self.write_rows([ledger_row(a) for a in batch], now)

    def write_rows(
        self, rows: Sequence[tuple[Any, ...]], now: datetime | None = None
    ) -> WriteResult:
        """``write`` for jobs already made rows by ``ledger_row``."""
        recorded_at = _epoch(now or datetime.now(UTC))
        # a job given twice in one batch: the later record wins
        unique = list({(row[0], row[1]): (*row, recorded_at) for row in rows}.values())
        written = self._write_rows(unique)
        return WriteResult(written=written, unchanged=len(rows) - written)

    def _write_rows(self, rows: list[tuple[Any, ...]]) -> int:
        """Job rows (JOB_COLUMNS and recorded_at, one per job) in one transaction."""
        try:
            self._begin_write()
            try:
                written = self._write_staged(rows)
                self._run("COMMIT")
            except BaseException:
                self._run("ROLLBACK")
                raise
        except self._errors as err:
            raise LedgerError(f"cannot write {len(rows)} job(s) to {self.where}: {err}") from err
        return written

    def _write_staged(self, rows: list[tuple[Any, ...]]) -> int:
        """The jobs and their totals, inside the caller's transaction; rows written."""
        statements = self.dialect.write_statements
        for statement in self.dialect.stage:
            self._run(statement)
        self._run(self.dialect.clear_stage)
        self._run_many(statements["stage_rows"], rows)
        if self.dialect is POSTGRES:  # row counts for the planner: index lookups into jobs
            self._run("ANALYZE staged")
        self._run(statements["drop_unchanged"])
        written = int(self._run("SELECT COUNT(*) FROM staged").fetchone()[0])
        if written:
            # one change number per batch: the exporter re-reads the label sets it touched
            (next_seq,) = self._run("SELECT COALESCE(MAX(seq), 0) + 1 FROM totals").fetchone()
            seq = {"seq": next_seq}
            if self._run(statements["any_placeholders"]).fetchone()[0]:  # one lookup, mostly
                self._run(statements["remove_placeholders"], seq)
                self._run(statements["delete_placeholders"])
            self._run(statements["remove_replaced"], seq)
            self._run(statements["add_staged"], seq)
            self._run(statements["upsert_staged"])
        return written

    def watermark(self, name: str) -> int | None:
        """A named position (epoch seconds) a source has reached, or None."""
        row = self._query("SELECT value FROM watermarks WHERE name = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    def set_watermark(self, name: str, value: int) -> None:
        """Move a watermark forward (never back: concurrent sweeps cannot rewind it)."""
        try:
            self._run(self.dialect.write_statements["watermark"], [name, value])
        except self._errors as err:
            raise LedgerError(f"cannot write watermark {name!r} to {self.where}: {err}") from err

    def aggregates(self) -> list[Aggregate]:
        """The running totals per label combination, kept by ``write`` batch by batch.

        Reading them costs the same whatever the number of jobs: this is what the
        Prometheus exporter serves.
        """
        sql = f"SELECT {_quoted(Aggregate.__dataclass_fields__)} FROM totals WHERE jobs != 0"
        return [Aggregate(*row) for row in self._query(sql, [])]

    def changed_aggregates(self, after: int) -> tuple[list[Aggregate], int]:
        """Totals changed since change number ``after`` (with emptied ones), and the latest.

        Every batch that changes a label set's totals gives it a new change number
        (``seq``; totals made by the migration itself start at 0), so a reader
        that keeps the totals it has seen only fetches what changed since.
        """
        columns = _quoted(Aggregate.__dataclass_fields__)
        rows = self._query(
            f"SELECT {columns}, seq FROM totals WHERE seq > ? ORDER BY seq", [after]
        ).fetchall()
        latest = rows[-1][-1] if rows else after
        return [Aggregate(*row[:-1]) for row in rows], int(latest)

    def set_running(
        self, cluster: str, rows: Sequence[Running], now: datetime | None = None
    ) -> None:
        """Replace ``cluster``'s usage so far of running jobs, in one transaction."""
        updated_at = int((now or datetime.now(UTC)).timestamp())
        try:
            self._begin_write()
            try:
                self._run("DELETE FROM running WHERE cluster = ?", [cluster])
                self._run_many(
                    f"INSERT INTO running ({_quoted(Running.__dataclass_fields__)}) "
                    f"VALUES ({', '.join('?' * len(Running.__dataclass_fields__))})",
                    [
                        astuple(replace(row, updated_at=updated_at))
                        for row in rows
                        if row.cluster == cluster
                    ],
                )
                self._run("COMMIT")
            except BaseException:
                self._run("ROLLBACK")
                raise
        except self._errors as err:
            raise LedgerError(f"cannot write running jobs to {self.where}: {err}") from err

    def running(self) -> list[Running]:
        sql = f"SELECT {_quoted(Running.__dataclass_fields__)} FROM running ORDER BY 1, 2, 3, 4"
        return [Running(*row) for row in self._query(sql, [])]

    def known_jobs(self, cluster: str, job_ids: Sequence[str]) -> set[str]:
        """Which of ``job_ids`` the ledger already holds for ``cluster``."""
        known: set[str] = set()
        for i in range(0, len(job_ids), 500):
            chunk = list(job_ids[i : i + 500])
            rows = self._query(
                f"SELECT job_id FROM jobs WHERE cluster = ? AND job_id IN "
                f"({', '.join('?' * len(chunk))})",
                [cluster, *chunk],
            )
            known.update(row[0] for row in rows)
        return known

    def add_ingest_errors(self, counts: dict[str, int]) -> None:
        """Add to the persistent count of records that failed, per stage."""
        try:
            self._run_many(
                "INSERT INTO ingest_errors (stage, count) VALUES (?, ?) ON CONFLICT (stage) "
                "DO UPDATE SET count = ingest_errors.count + excluded.count",
                [(stage, n) for stage, n in counts.items() if n],
            )
        except self._errors as err:
            raise LedgerError(f"cannot count ingest errors in {self.where}: {err}") from err

    def ingest_errors(self) -> dict[str, int]:
        return dict(self._query("SELECT stage, count FROM ingest_errors", []).fetchall())

    def set_gauge(self, name: str, value: float) -> None:
        try:
            self._run(
                "INSERT INTO gauges (name, value) VALUES (?, ?) ON CONFLICT (name) "
                "DO UPDATE SET value = excluded.value",
                [name, value],
            )
        except self._errors as err:
            raise LedgerError(f"cannot write gauge {name!r} to {self.where}: {err}") from err

    def gauges(self) -> dict[str, float]:
        return dict(self._query("SELECT name, value FROM gauges", []).fetchall())

    def data_version(self) -> tuple[int, int]:
        """Changes when anyone (this connection or another) commits to the ledger."""
        if self.dialect is POSTGRES:  # what the exporter serves: totals, errors, gauges
            row = self._query(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM totals), "
                "(SELECT COALESCE(string_agg(stage || '=' || count, ',' ORDER BY stage), '') "
                "FROM ingest_errors) || '/' || "
                "(SELECT COALESCE(string_agg(name || '=' || value, ',' ORDER BY name), '') "
                "FROM gauges) || '/' || "
                "(SELECT COALESCE(SUM(jobs + gpu_seconds), 0) FROM running)",
                [],
            ).fetchone()
            return int(row[0]), hash(row[1])
        row = self._query("PRAGMA data_version", []).fetchone()
        return int(row[0]), self._db.total_changes

    def count(self, filters: Filters = Filters()) -> int:
        where, params = filters.where()
        return int(self._query(f"SELECT COUNT(*) FROM jobs{where}", params).fetchone()[0])

    def summary(self, by: Dimension, filters: Filters = Filters()) -> list[SummaryRow]:
        """Totals grouped by one dimension, largest emissions first."""
        _check_dimension(by)
        where, params = filters.where()
        sql = (
            f"SELECT COALESCE(\"{by}\", '(none)'), {_SUMMARY_SUMS} FROM jobs{where} "
            "GROUP BY 1 ORDER BY 5 DESC, 1"
        )
        return [SummaryRow(*row) for row in self._query(sql, params)]

    def totals(self, filters: Filters = Filters()) -> SummaryRow:
        where, params = filters.where()
        row = self._query(f"SELECT 'all', {_SUMMARY_SUMS} FROM jobs{where}", params).fetchone()
        return SummaryRow(*row)

    def cpu_hours(self, filters: Filters = Filters()) -> float:
        """Allocated CPU core-hours of the jobs ``filters`` covers."""
        where, params = filters.where()
        sql = f"SELECT COALESCE(SUM(cpu_seconds), 0) / 3600.0 FROM jobs{where}"
        return float(self._query(sql, params).fetchone()[0])

    def grouped(
        self, outer: Dimension, inner: Dimension, filters: Filters = Filters()
    ) -> dict[str, list[SummaryRow]]:
        """``summary(inner)`` for every value of ``outer`` at once, largest emissions first."""
        _check_dimension(outer)
        _check_dimension(inner)
        where, params = filters.where()
        sql = (
            f"SELECT COALESCE(\"{outer}\", '(none)'), COALESCE(\"{inner}\", '(none)'), "
            f"{_SUMMARY_SUMS} FROM jobs{where} GROUP BY 1, 2 ORDER BY 1, 6 DESC, 2"
        )
        result: dict[str, list[SummaryRow]] = {}
        for key, *row in self._query(sql, params):
            result.setdefault(key, []).append(SummaryRow(*row))
        return result

    def largest_jobs(
        self, outer: Dimension, count: int, filters: Filters = Filters()
    ) -> dict[str, list[dict[str, Any]]]:
        """The ``count`` jobs with the largest emissions for every value of ``outer``."""
        _check_dimension(outer)
        where, params = filters.where()
        columns = EXPORT_COLUMNS
        sql = (
            f"SELECT * FROM (SELECT COALESCE(\"{outer}\", '(none)') AS outer_key, "
            f'{_quoted(columns)}, ROW_NUMBER() OVER (PARTITION BY "{outer}" '
            f"ORDER BY co2e_g DESC, cluster, job_id) AS place FROM jobs{where}) AS ranked "
            "WHERE place <= ? ORDER BY outer_key, place"
        )
        result: dict[str, list[dict[str, Any]]] = {}
        for key, *row, _place in self._query(sql, [*params, count]):
            result.setdefault(key, []).append(dict(zip(columns, row, strict=True)))
        return result

    def habits(self, outer: Dimension, filters: Filters = Filters()) -> dict[str, Habits]:
        """Failed, cancelled and measured-busy GPU time for every value of ``outer``."""
        _check_dimension(outer)
        where, params = filters.where()
        failed = "state IN (" + ", ".join(f"'{s}'" for s in FAILED_STATES) + ")"
        sql = (
            f"SELECT COALESCE(\"{outer}\", '(none)'), SUM(gpu_seconds) / 3600.0, "
            f"SUM(CASE WHEN {failed} THEN gpu_seconds ELSE 0 END) / 3600.0, "
            f"SUM(CASE WHEN {failed} THEN co2e_g ELSE 0 END) / 1000.0, "
            "SUM(CASE WHEN state = 'cancelled' THEN gpu_seconds ELSE 0 END) / 3600.0, "
            "SUM(CASE WHEN gpu_utilization IS NOT NULL THEN gpu_seconds ELSE 0 END) / 3600.0, "
            f"COALESCE(SUM(gpu_utilization * gpu_seconds), 0) / 3600.0 FROM jobs{where} "
            "GROUP BY 1"
        )
        return {key: Habits(*row) for key, *row in self._query(sql, params)}

    def factors_used(
        self, outer: Dimension, filters: Filters = Filters()
    ) -> dict[str, list[FactorsUsed]]:
        """The PUE and grid intensity ranges behind every value of ``outer``, by site.

        Jobs without energy (cancelled before they started) used no factors: left out.
        """
        _check_dimension(outer)
        where, params = filters.where()
        where = f"{where} AND" if where else " WHERE"
        where += " energy_facility_kwh > 0"
        sql = (
            f"SELECT COALESCE(\"{outer}\", '(none)'), site, method, COUNT(*), MIN(pue), "
            "MAX(pue), "
            "MIN(intensity_g_per_kwh), MAX(intensity_g_per_kwh), MAX(factors_version) "
            f"FROM jobs{where} GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC, 2, 3"
        )
        result: dict[str, list[FactorsUsed]] = {}
        for key, *row in self._query(sql, params):
            result.setdefault(key, []).append(FactorsUsed(*row))
        return result

    def mail_sent(self, month: str, audience: str) -> dict[str, MailSent]:
        """The messages of a month already accepted by the SMTP server, by recipient."""
        rows = self._query(
            "SELECT recipient, address, message_id, sent_at FROM mail_log "
            "WHERE month = ? AND audience = ?",
            [month, audience],
        )
        return {row[0]: MailSent(*row) for row in rows}

    def log_mail(self, month: str, audience: str, sent: MailSent) -> None:
        """Record a message the SMTP server accepted (a re-send replaces the record)."""
        try:
            self._run(
                "INSERT INTO mail_log VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (month, audience, recipient) DO UPDATE SET "
                "address = excluded.address, message_id = excluded.message_id, "
                "sent_at = excluded.sent_at",
                [month, audience, sent.recipient, sent.address, sent.message_id, sent.sent_at],
            )
        except self._errors as err:
            raise LedgerError(f"cannot log a sent e-mail in {self.where}: {err}") from err

    def jobs(self, filters: Filters = Filters()) -> Iterator[dict[str, Any]]:
        """Stream job rows (as column → value) in end-time order, without loading them all."""
        where, params = filters.where()
        columns = EXPORT_COLUMNS
        sql = f"SELECT {_quoted(columns)} FROM jobs{where} ORDER BY end_time, cluster, job_id"
        for row in self._stream(sql, params):
            yield dict(zip(columns, row, strict=True))

    def _job_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every job row as written (JOB_COLUMNS, recorded_at), for ``copy_ledger``."""
        sql = f"SELECT {_quoted(JOB_COLUMNS)}, recorded_at FROM jobs ORDER BY cluster, job_id"
        return self._stream(sql, [])

    def _stream(self, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of a query a thousand at a time (PostgreSQL: a server-side cursor)."""
        try:
            if self.dialect is POSTGRES:
                self._streams += 1  # each stream its own cursor: several may be open
                cursor = self._db.cursor(name=f"jobcarbon_{self._streams}", withhold=True)
                cursor.execute(_postgres_params(sql), params)
            else:
                cursor = self._db.execute(sql, params)
        except self._errors as err:
            raise LedgerError(f"cannot read ledger {self.where}: {err}") from err
        try:
            while chunk := cursor.fetchmany(1000):
                yield from (tuple(row) for row in chunk)
        finally:
            cursor.close()

    def integrity_ok(self) -> bool:
        if self.dialect is POSTGRES:  # PostgreSQL checks its pages itself (checksums, WAL)
            return bool(self._query("SELECT 1", []).fetchone()[0] == 1)
        return bool(self._query("PRAGMA integrity_check", []).fetchone()[0] == "ok")

    def _query(self, sql: str, params: Iterable[Any]) -> Any:
        try:
            return self._run(sql, list(params))
        except self._errors as err:
            raise LedgerError(f"cannot read ledger {self.where}: {err}") from err


@dataclass(frozen=True, slots=True)
class CopyResult:
    jobs: int  # job rows read from the source
    written: int  # of those, new or changed in the target
    source: SummaryRow
    target: SummaryRow

    @property
    def identical(self) -> bool:
        """The target holds as many jobs as the source, with the same sums."""
        a, b = self.source, self.target
        return a.jobs == b.jobs and all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
            for x, y in zip(
                (a.gpu_hours, a.energy_kwh, a.co2e_kg, a.co2e_kg_low, a.co2e_kg_high),
                (b.gpu_hours, b.energy_kwh, b.co2e_kg, b.co2e_kg_low, b.co2e_kg_high),
                strict=True,
            )
        )


def copy_ledger(
    source: Ledger,
    target: Ledger,
    batch_size: int = 5000,
    on_batch: Callable[[int], None] = lambda jobs: None,
) -> CopyResult:
    """Copy every job (its running totals follow), watermark, error count, gauge and
    e-mail log entry from ``source`` into ``target``, in batches; safe to run again."""
    jobs = written = 0
    batch: list[tuple[Any, ...]] = []
    for row in source._job_rows():
        batch.append(row)
        if len(batch) == batch_size:
            written += target._write_rows(batch)
            jobs += len(batch)
            on_batch(len(batch))
            batch = []
    if batch:
        written += target._write_rows(batch)
        jobs += len(batch)
        on_batch(len(batch))
    for name, value in source._query("SELECT name, value FROM watermarks", []).fetchall():
        target.set_watermark(name, int(value))
    for name, value in source.gauges().items():
        target.set_gauge(name, value)
    month_audiences = source._query("SELECT DISTINCT month, audience FROM mail_log", [])
    for month, audience in month_audiences.fetchall():
        for sent in source.mail_sent(month, audience).values():
            target.log_mail(month, audience, sent)
    copied_errors = target.ingest_errors()
    target.add_ingest_errors(
        {
            stage: max(0, n - copied_errors.get(stage, 0))  # again: only what is missing
            for stage, n in source.ingest_errors().items()
        }
    )
    return CopyResult(jobs, written, source.totals(), target.totals())


def _create_private(path: Path) -> None:
    """The ledger file, made 0640 (its directory 0750) if it does not exist: it names
    every user's jobs. SQLite gives its -wal and -shm files the mode of the main file."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o640))  # an existing file: as it is


def _wal_mode(db: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL. Processes creating one file at once can get "database is locked"
    here without SQLite's busy handler being asked: wait and try again, as it would."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def open_ledger(
    config: Config, *, migrate: bool | None = None, busy_timeout_s: float = 30.0
) -> Ledger:
    """The config's ledger; ``migrate`` defaults to ``ledger.migrate_on_start``."""
    return Ledger(
        config.ledger_location(),
        migrate=config.ledger.migrate_on_start if migrate is None else migrate,
        busy_timeout_s=busy_timeout_s,
        password=config.ledger_password(),
    )


@functools.lru_cache(maxsize=256)
def _postgres_params(sql: str) -> str:
    """``?`` and ``:name`` placeholders (SQLite's) in psycopg's ``%s`` style."""
    return re.sub(r":(\w+)", r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"^(\w+://[^/@:]+):[^/@]*@", r"\1:***@", url)


def _connect_postgres(
    url: str, password: str | None, timeout_s: float, where: str
) -> tuple[Any, tuple[type[BaseException], ...]]:
    try:
        import psycopg
    except ImportError as err:
        raise LedgerError(
            f"ledger {where} is PostgreSQL: install the driver with "
            "pip install 'jobcarbon[postgres]'"
        ) from err
    options: dict[str, Any] = {"connect_timeout": max(1, int(timeout_s))}
    if password:
        options["password"] = password
    try:
        connection = psycopg.connect(url, autocommit=True, **options)
        # a waiting writer gives up, as SQLite's busy timeout does
        connection.execute(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'")
    except psycopg.Error as err:
        raise LedgerError(f"cannot open ledger {where}: {err}") from err
    return connection, (psycopg.Error,)
