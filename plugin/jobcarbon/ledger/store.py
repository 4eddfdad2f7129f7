"""The store: the ``Ledger`` class, one row per job with its footprint, and its readers
and writers.

SQLite in WAL mode, so the exporter and reports read while a collector writes.
Writes are idempotent upserts keyed by (cluster, job_id): a job written twice is
counted once, a changed record replaces the old row. Each batch is one
transaction, so a crash between (or inside) batches leaves whole batches only.
The schema is versioned and migrated on open (``schema``). Jobs belong to the UTC
month in which they ended (``month``), or were submitted if they never ended.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import astuple, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import LedgerError
from ..footprint import AccountedJob
from .connect import connect
from .dialect import POSTGRES, quoted
from .grid import GridStore
from .pending import PendingJobs
from .rows import (
    EXPORT_COLUMNS,
    FAILED_STATES,
    Aggregate,
    Dimension,
    FactorsUsed,
    Filters,
    Habits,
    MailSent,
    Running,
    SummaryRow,
    WriteResult,
    check_dimension,
    epoch,
    ledger_row,
)
from .schema import check_version, migrate_schema, schema_version
from .usage import JOB_AND_USAGE_ROWS, UsageStore, usage_row

# A SummaryRow's figures: `summary`, `grouped` and `totals` read them alike, so a
# monthly e-mail and `jobcarbon summary` print the same numbers.
_SUMMARY_SUMS = (
    "COUNT(*), COALESCE(SUM(gpu_seconds), 0) / 3600.0, COALESCE(SUM(energy_facility_kwh), 0), "
    "COALESCE(SUM(co2e_g), 0) / 1000.0, COALESCE(SUM(co2e_g_low), 0) / 1000.0, "
    "COALESCE(SUM(co2e_g_high), 0) / 1000.0, COALESCE(SUM(co2e_market_g), 0) / 1000.0, "
    "COALESCE(SUM(co2e_market_g_low), 0) / 1000.0, COALESCE(SUM(co2e_market_g_high), 0) / 1000.0, "
    "COALESCE(SUM(co2e_embodied_g), 0) / 1000.0, COALESCE(SUM(co2e_embodied_g_low), 0) / 1000.0, "
    "COALESCE(SUM(co2e_embodied_g_high), 0) / 1000.0, COUNT(co2e_embodied_g)"
)

#: a MailSent's columns in the e-mail log
_MAIL_SENT = "recipient, address, message_id, sent_at, energy_kwh, co2e_kg"


class Ledger(UsageStore, GridStore, PendingJobs):
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
        connection = connect(
            location, create=migrate, busy_timeout_s=busy_timeout_s, password=password
        )
        self._connection = connection
        self.dialect = connection.dialect
        self.where = connection.where
        self._db: Any = connection.db
        self._errors = connection.errors
        self._run = connection.run
        self._run_many = connection.run_many
        self._query = connection.query
        self._stream = connection.stream
        self.merged_placeholders = 0  # rows ``migrate`` merged (schema v7)
        try:
            self.merged_placeholders = check_version(connection, migrate)
        except BaseException:
            connection.close()
            raise

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @property
    def schema_version(self) -> int:
        return schema_version(self._connection)

    def migrate(self) -> None:
        """Apply the pending migrations (``schema.migrate_schema``)."""
        self.merged_placeholders = migrate_schema(self._connection)

    def write(self, batch: Sequence[AccountedJob], now: datetime | None = None) -> WriteResult:
        """Upsert a batch in one transaction: all of it lands, or none of it."""
        return self.write_rows(
            [ledger_row(a) for a in batch], [usage_row(a.job) for a in batch], now
        )

    def write_rows(
        self,
        rows: Sequence[tuple[Any, ...]],
        usage: Sequence[tuple[Any, ...]],
        now: datetime | None = None,
    ) -> WriteResult:
        """``write`` for jobs already made rows by ``ledger_row`` and ``usage_row`` (the
        two lists in the same order)."""
        recorded_at = epoch(now or datetime.now(UTC))
        # a job given twice in one batch: the later record wins
        latest = {(row[0], row[1]): i for i, row in enumerate(rows)}
        kept = range(len(rows)) if len(latest) == len(rows) else sorted(latest.values())
        written = self.write_job_rows(
            [(*rows[i], recorded_at) for i in kept], [usage[i] for i in kept]
        )
        return WriteResult(written=written, unchanged=len(rows) - written)

    def write_job_rows(self, rows: list[tuple[Any, ...]], usage: Sequence[tuple[Any, ...]]) -> int:
        """Job rows as ``job_rows`` reads them (JOB_COLUMNS and recorded_at, one per job,
        recorded_at kept) and their usage rows, in one transaction; how many job rows
        were new or changed."""
        with self.writing(f"{len(rows)} job(s) "):
            written = self._write_staged(rows)
            self._write_usage(usage)
        return written

    def replace_footprints(self, rows: list[tuple[Any, ...]]) -> int:
        """Job rows (JOB_COLUMNS and recorded_at) of jobs whose usage stays as it is,
        inside ``writing``: the footprints and their totals; how many changed."""
        return self._write_staged(rows)

    def _write_staged(self, rows: list[tuple[Any, ...]]) -> int:
        """The jobs and their totals, inside the caller's transaction; rows written."""
        statements = self.dialect.write_statements
        for statement in (*self.dialect.stage, *self.dialect.clear_stage):
            self._run(statement)
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
                self._run(statements["remove_placeholders"])
                self._run(statements["delete_placeholders"])
                self._run(statements["delete_placeholder_usage"])
            self._run(statements["remove_replaced"])
            self._run(statements["add_staged"])
            self._run(statements["fold_batch"], seq)
            self._run(statements["upsert_staged"])
        return written

    def watermark(self, name: str) -> int | None:
        """A named position (epoch seconds) a source has reached, or None."""
        row = self._query("SELECT value FROM watermarks WHERE name = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    def watermarks(self) -> dict[str, int]:
        """Every watermark, by name."""
        rows = self._query("SELECT name, value FROM watermarks", []).fetchall()
        return {name: int(value) for name, value in rows}

    def set_watermark(self, name: str, value: int) -> None:
        """Move a watermark forward (never back: concurrent sweeps cannot rewind it)."""
        try:
            self._run(self.dialect.write_statements["watermark"], [name, value])
        except self._errors as err:
            raise LedgerError(f"cannot write watermark {name!r} to {self.where}: {err}") from err

    def aggregates(self) -> list[Aggregate]:
        """The running totals per label combination, kept by ``write`` batch by batch:
        every label set that ever held a job (one that holds none now still has what
        was added and removed, which the exporter's counters keep serving).

        Reading them costs the same whatever the number of jobs: this is what the
        Prometheus exporter serves.
        """
        sql = f"SELECT {quoted(Aggregate.__dataclass_fields__)} FROM totals WHERE jobs_added != 0"
        return [Aggregate(*row) for row in self._query(sql, [])]

    def changed_aggregates(self, after: int) -> tuple[list[Aggregate], int]:
        """Totals changed since change number ``after`` (with emptied ones), and the latest.

        Every batch that changes a label set's totals gives it a new change number
        (``seq``; totals made by the migration itself start at 0), so a reader
        that keeps the totals it has seen only fetches what changed since.
        """
        columns = quoted(Aggregate.__dataclass_fields__)
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
        with self.writing("running jobs "):
            self._run("DELETE FROM running WHERE cluster = ?", [cluster])
            self._run_many(
                f"INSERT INTO running ({quoted(Running.__dataclass_fields__)}) "
                f"VALUES ({', '.join('?' * len(Running.__dataclass_fields__))})",
                [
                    astuple(replace(row, updated_at=updated_at))
                    for row in rows
                    if row.cluster == cluster
                ],
            )

    def running(self) -> list[Running]:
        sql = f"SELECT {quoted(Running.__dataclass_fields__)} FROM running ORDER BY 1, 2, 3, 4"
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
        check_dimension(by)
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
        check_dimension(outer)
        check_dimension(inner)
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
        check_dimension(outer)
        where, params = filters.where()
        columns = EXPORT_COLUMNS
        sql = (
            f"SELECT * FROM (SELECT COALESCE(\"{outer}\", '(none)') AS outer_key, "
            f'{quoted(columns)}, ROW_NUMBER() OVER (PARTITION BY "{outer}" '
            f"ORDER BY co2e_g DESC, cluster, job_id) AS place FROM jobs{where}) AS ranked "
            "WHERE place <= ? ORDER BY outer_key, place"
        )
        result: dict[str, list[dict[str, Any]]] = {}
        for key, *row, _place in self._query(sql, [*params, count]):
            result.setdefault(key, []).append(dict(zip(columns, row, strict=True)))
        return result

    def habits(self, outer: Dimension, filters: Filters = Filters()) -> dict[str, Habits]:
        """Failed, cancelled and measured-busy GPU time for every value of ``outer``."""
        check_dimension(outer)
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
        check_dimension(outer)
        where, params = replace(filters, with_energy=True).where()
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

    def market_sources(
        self, outer: Dimension, filters: Filters = Filters()
    ) -> dict[str, dict[str, int]]:
        """For every value of ``outer``, how many jobs' market-based figure came from each
        source (``site.MarketSource``), most first. Jobs without energy are left out."""
        check_dimension(outer)
        where, params = replace(filters, with_energy=True).where()
        sql = (
            f"SELECT COALESCE(\"{outer}\", '(none)'), market_source, COUNT(*) FROM jobs{where} "
            "GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"
        )
        result: dict[str, dict[str, int]] = {}
        for key, source, jobs in self._query(sql, params):
            result.setdefault(key, {})[source] = int(jobs)
        return result

    def embodied_sources(
        self, outer: Dimension, filters: Filters = Filters()
    ) -> dict[str, dict[str, int]]:
        """For every value of ``outer``, how many jobs' embodied figure came from each node
        figure (a bundled entry's name, or "site config"), most first. Jobs not configured
        (no embodied figure) are left out: ``SummaryRow.not_configured_jobs`` counts them."""
        check_dimension(outer)
        where, params = filters.where()
        where = f"{where} AND" if where else " WHERE"
        sql = (
            f"SELECT COALESCE(\"{outer}\", '(none)'), embodied_source, COUNT(*) FROM jobs{where} "
            "embodied_source IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"
        )
        result: dict[str, dict[str, int]] = {}
        for key, source, jobs in self._query(sql, params):
            result.setdefault(key, {})[source] = int(jobs)
        return result

    def mail_sent(self, month: str, audience: str) -> dict[str, MailSent]:
        """The last message of a month the SMTP server accepted for each recipient."""
        rows = self._query(
            f"SELECT {_MAIL_SENT} FROM mail_log WHERE month = ? AND audience = ? ORDER BY message",
            [month, audience],
        )
        return {row[0]: MailSent(*row) for row in rows}  # the latest of each stays

    def mail_log(self) -> list[tuple[str, str, MailSent]]:
        """Every message in the e-mail log in the order sent, re-sends included:
        (month, audience, message)."""
        rows = self._query(
            f"SELECT month, audience, {_MAIL_SENT} FROM mail_log ORDER BY message", []
        )
        return [(row[0], row[1], MailSent(*row[2:])) for row in rows.fetchall()]

    def log_mail(self, month: str, audience: str, sent: MailSent) -> None:
        """Record a message the SMTP server accepted, beside those sent before it."""
        try:
            self._run(
                f"INSERT INTO mail_log (month, audience, {_MAIL_SENT}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [month, audience, *astuple(sent)],
            )
        except self._errors as err:
            raise LedgerError(f"cannot log a sent e-mail in {self.where}: {err}") from err

    def jobs(self, filters: Filters = Filters()) -> Iterator[dict[str, Any]]:
        """Stream job rows (as column → value) in end-time order, without loading them all."""
        where, params = filters.where()
        columns = EXPORT_COLUMNS
        sql = f"SELECT {quoted(columns)} FROM jobs{where} ORDER BY end_time, cluster, job_id"
        for row in self._stream(sql, params):
            yield dict(zip(columns, row, strict=True))

    def job_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every job row as written (JOB_COLUMNS, recorded_at) followed by its usage row
        (USAGE_COLUMNS), streamed: what ``write_job_rows`` takes, split (``copy_ledger``
        moves a ledger with the two)."""
        return self._stream(JOB_AND_USAGE_ROWS, [])

    def integrity_ok(self) -> bool:
        if self.dialect is POSTGRES:  # PostgreSQL checks its pages itself (checksums, WAL)
            return bool(self._query("SELECT 1", []).fetchone()[0] == 1)
        return bool(self._query("PRAGMA integrity_check", []).fetchone()[0] == "ok")


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
