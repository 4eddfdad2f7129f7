"""The ledger's schema versions and their migration.

The steps are the ``.sql`` files under ``migrations/<backend>/`` (package data), named
``NNNN_<what>.sql`` for the version they make. SQLite keeps its version in ``PRAGMA
user_version``, PostgreSQL in a ``schema_version`` table; PostgreSQL ledgers start at
v5, created in one step. A ledger from a newer jobcarbon is refused rather than
damaged. Version 7 is followed by a data step, ``merge_placeholders``.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from ..errors import LedgerError
from ..records import PLACEHOLDER_JOB_NAME
from .connect import Connection
from .dialect import POSTGRES

log = logging.getLogger("jobcarbon.ledger")

SCHEMA_VERSION = 14
#: Taken while a PostgreSQL ledger migrates, so that two processes starting together
#: migrate once (an arbitrary number, the same in every jobcarbon).
_MIGRATION_LOCK = 7_715_517


def _migrations(backend: str) -> dict[int, str]:
    """The migration scripts of ``backend`` by the version each makes."""
    steps: dict[int, str] = {}
    for entry in resources.files(__package__).joinpath("migrations", backend).iterdir():
        found = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if found is None:
            raise LedgerError(f"migration {backend}/{entry.name} is not named NNNN_<what>.sql")
        steps[int(found.group(1))] = entry.read_text(encoding="utf-8")
    return dict(sorted(steps.items()))


MIGRATIONS = _migrations("sqlite")
POSTGRES_MIGRATIONS = _migrations("postgres")


def schema_version(connection: Connection) -> int:
    if connection.dialect is POSTGRES:
        (exists,) = connection.run("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not exists:
            return 0
        row = connection.run("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    return int(connection.run("PRAGMA user_version").fetchone()[0])


def check_version(connection: Connection, migrate: bool) -> int:
    """Refuse a ledger newer than this jobcarbon; migrate an older one if ``migrate``
    (else refuse it too). Returns the rows the migration merged (``merge_placeholders``)."""
    where = connection.where
    try:
        version = schema_version(connection)
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {where} has schema v{version}, newer than this jobcarbon "
                f"understands (v{SCHEMA_VERSION}); upgrade jobcarbon"
            )
        if version < SCHEMA_VERSION:
            if not migrate:
                raise LedgerError(
                    f"ledger {where} is at schema v{version}; run `jobcarbon ledger migrate`"
                )
            return migrate_schema(connection)
        return 0
    except connection.errors as err:
        raise LedgerError(f"ledger {where} is not readable: {err}") from err


def migrate_schema(connection: Connection) -> int:
    """Apply the pending migrations, in one transaction that one process at a time runs.
    Returns the rows ``merge_placeholders`` merged."""
    run = connection.run
    postgres = connection.dialect is POSTGRES
    if postgres:
        run("BEGIN")
        run(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    else:
        run("BEGIN IMMEDIATE")
    merged = 0
    try:
        version = schema_version(connection)  # re-read under the lock
        steps = POSTGRES_MIGRATIONS if postgres else MIGRATIONS
        for target in range(version + 1, SCHEMA_VERSION + 1):
            if target not in steps:
                continue
            for statement in connection.dialect.statements(steps[target]):
                run(statement)
            if target == 7:
                merged = merge_placeholders(connection)
            if postgres:
                run("DELETE FROM schema_version")
                run("INSERT INTO schema_version VALUES (?)", [target])
        if not postgres:
            run(f"PRAGMA user_version = {SCHEMA_VERSION}")
        run("COMMIT")
    except BaseException:
        run("ROLLBACK")
        raise
    return merged


def merge_placeholders(connection: Connection) -> int:
    """Delete the rows doubled by slurmdbd's placeholder record (jobcarbon < 7 wrote
    them): keyed by JobIDRaw, no partition, JobName ``allocation``, beside the job's
    own row keyed ``<array>_<task>``. Rows before v7 keep no JobIDRaw, so a
    placeholder is matched to an array task row of the same cluster and user with
    the same submit, start and end times and allocation (the placeholder has
    them from the end message: seen on Slurm 22.05), whose array id is at most its
    raw id (a task's JobIDRaw is its array's id or a later one); each array task
    row takes one placeholder at most. A placeholder that matches none is the
    job's only row and stays (the next sweep or backfill replaces it). Inside
    ``migrate_schema``'s transaction; v13's migration builds the totals from the jobs
    rows after it. Returns how many."""
    pairs = connection.run(
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
    connection.run_many("DELETE FROM jobs WHERE cluster = ? AND job_id = ?", list(doomed))
    log.warning(
        "ledger %s: merged %d array task row(s) doubled by slurmdbd's placeholder "
        "record into the task's own row",
        connection.where,
        len(doomed),
    )
    return len(doomed)
