"""How SQLite and PostgreSQL spell what the ledger's statements need, and how a
migration script of each splits into statements.

A batch is staged in a temporary table, rows already in the ledger as given are
dropped from it, its change to the totals is netted per label set in a second one
(minus the rows about to be replaced, plus the staged ones: one grouped statement
each) and folded into the totals: the net columns get the change, ``<column>_added``
what rose and ``<column>_removed`` what fell, so those two never decrease (the
exporter's counters; two float sums, as net + removed could round below its last
value). Then the staged rows are upserted. The statements
are the same on both backends but for a few spellings (``_Dialect``).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from ..errors import LedgerError
from ..records import PLACEHOLDER_JOB_NAME
from .rows import JOB_COLUMNS

#: What the totals count per label set, and each one's sum over jobs rows: the net
#: (what the jobs rows sum to now), ``<name>_added`` and ``<name>_removed`` (cumulative:
#: what batches added and took away, so each only ever grows; the exporter serves them).
COUNTED = {
    "jobs": "COUNT(*)",
    "gpu_seconds": "SUM(gpu_seconds)",
    "cpu_seconds": "SUM(cpu_seconds)",
    "energy_gpu_kwh": "SUM(energy_gpu_kwh)",
    "energy_cpu_kwh": "SUM(energy_cpu_kwh)",
    "energy_memory_kwh": "SUM(energy_memory_kwh)",
    "energy_overhead_kwh": (
        "SUM(energy_facility_kwh - energy_gpu_kwh - energy_cpu_kwh - energy_memory_kwh)"
    ),
    "energy_facility_kwh": "SUM(energy_facility_kwh)",
    "co2e_g": "SUM(co2e_g)",
    "co2e_market_g": "COALESCE(SUM(co2e_market_g), 0)",
}
_CUMULATIVE = tuple(f"{c}_{way}" for c in COUNTED for way in ("added", "removed"))
#: The per-connection table a batch's change per label set is netted in first.
_BATCH_TOTALS = (
    'CREATE TEMP TABLE IF NOT EXISTS batch_totals (cluster TEXT, "user" TEXT, '
    "project TEXT, partition TEXT, gpu_model TEXT, state TEXT, method TEXT, "
    + ", ".join(f"{c} {'BIGINT' if c == 'jobs' else 'DOUBLE PRECISION'}" for c in COUNTED)
    + ", last_end_time BIGINT, "
    'PRIMARY KEY (cluster, "user", project, partition, gpu_model, state, method))'
)
_TOTALS_KEY = 'cluster, "user", project, partition, gpu_model, state, method'
_TOTALS_LABELS = "cluster, \"user\", project, partition, COALESCE(gpu_model, ''), state, method"

# A row written from slurmdbd's placeholder record (PLACEHOLDER_JOB_NAME, no partition;
# keyed by JobIDRaw, as the record showed no array form): the job's own row replaces it.
_PLACEHOLDER_ROW = f"partition = '' AND name = '{PLACEHOLDER_JOB_NAME}'"
_PLACEHOLDERS_OF_STAGED = (
    f"{_PLACEHOLDER_ROW} AND (cluster, job_id) IN (SELECT cluster, job_id_raw FROM staged "
    "WHERE job_id_raw <> job_id AND partition <> '')"
)


def quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def sqlite_statements(script: str) -> Iterator[str]:
    """The statements of a SQLite script, as SQLite itself ends them (a trigger's body
    holds semicolons of its own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        raise LedgerError(f"incomplete statement in a migration: {buffer.strip()[:60]}")


# What a PostgreSQL statement ends at, and what hides a semicolon from the end:
# a string ('it''s'), a quoted name, a comment, or a dollar-quoted body ($fn$ ... $fn$).
_POSTGRES_TOKEN = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|(\$\w*\$).*?\1|;", re.DOTALL
)


def postgres_statements(script: str) -> Iterator[str]:
    """The statements of a PostgreSQL script, split at the semicolons outside strings,
    quoted names, comments and dollar-quoted bodies (``sqlite3.complete_statement``
    knows SQLite's grammar, not PostgreSQL's: it would cut a ``$$`` body apart)."""
    start = 0
    for token in _POSTGRES_TOKEN.finditer(script):
        if token.group() == ";":
            yield script[start : token.end()]
            start = token.end()
    rest = _POSTGRES_TOKEN.sub("", script[start:]).strip()  # comments may follow the last
    if rest:
        raise LedgerError(f"incomplete statement in a migration: {rest[:60]}")


@functools.lru_cache(maxsize=256)
def postgres_params(sql: str) -> str:
    """``?`` and ``:name`` placeholders (SQLite's) in psycopg's ``%s`` style."""
    return re.sub(r":(\w+)", r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


def _sqlite_params(sql: str) -> str:
    return sql


@dataclass(frozen=True)
class _Dialect:
    """How SQLite and PostgreSQL spell what the ledger's statements need."""

    name: str  # the backend: its migrations are under migrations/<name>/
    statements: Callable[[str], Iterator[str]]  # a script's statements
    params: Callable[[str], str]  # a statement in the driver's parameter style
    stage: tuple[str, ...]  # create the per-connection staging tables
    clear_stage: tuple[str, ...]  # empty them, space included (PostgreSQL never vacuums
    # temp tables)
    greatest: str  # the larger of two values
    same: str  # equal, NULLs included

    @cached_property
    def write_statements(self) -> dict[str, str]:
        unchanged = " AND ".join(
            f'j."{c}" = staged."{c}"'
            if c in ("cluster", "job_id")
            else f'j."{c}" {self.same} staged."{c}"'
            for c in JOB_COLUMNS
        )

        def net(sign: str, table: str, where: str) -> str:
            """The batch's change gains (sign "") or loses ("-") the rows of ``table``
            ``where``, netted per label set in batch_totals."""
            return (
                f"INSERT INTO batch_totals SELECT {_TOTALS_LABELS}, "
                + ", ".join(f"{sign}{total}" for total in COUNTED.values())
                + f", {'COALESCE(MAX(end_time), 0)' if sign == '' else '0'}"
                f" FROM {table} WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6, 7"
                f" ON CONFLICT ({_TOTALS_KEY}) DO UPDATE SET "
                + ", ".join(f"{c} = batch_totals.{c} + excluded.{c}" for c in COUNTED)
                + f", last_end_time = {self.greatest}"
                "(batch_totals.last_end_time, excluded.last_end_time)"
            )

        fold = (  # the netted change into totals: each column's rise to _added, fall to _removed
            f"INSERT INTO totals ({_TOTALS_KEY}, {', '.join(COUNTED)}, "
            f"{', '.join(_CUMULATIVE)}, last_end_time, seq) "
            f"SELECT {_TOTALS_KEY}, {', '.join(COUNTED)}, "
            + ", ".join(
                f"{self.greatest}(0, {'-' if way == 'removed' else ''}{c})"
                for c in COUNTED
                for way in ("added", "removed")
            )
            + f", last_end_time, :seq FROM batch_totals WHERE true ON CONFLICT ({_TOTALS_KEY})"
            " DO UPDATE SET "
            + ", ".join(f"{c} = totals.{c} + excluded.{c}" for c in (*COUNTED, *_CUMULATIVE))
            + f", last_end_time = {self.greatest}(totals.last_end_time, excluded.last_end_time)"
            ", seq = excluded.seq"
        )
        staged_keys = "(cluster, job_id) IN (SELECT cluster, job_id FROM staged)"
        return {
            "stage_rows": (
                f"INSERT INTO staged ({quoted(JOB_COLUMNS)}, recorded_at) "
                f"VALUES ({', '.join('?' * len(JOB_COLUMNS))}, ?)"
            ),
            "drop_unchanged": (
                f"DELETE FROM staged WHERE EXISTS (SELECT 1 FROM jobs AS j WHERE {unchanged})"
            ),
            "remove_replaced": net("-", "jobs", staged_keys),
            # a placeholder row of a job now staged whole under its own key
            "any_placeholders": (
                f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {_PLACEHOLDERS_OF_STAGED})"
            ),
            "remove_placeholders": net("-", "jobs", _PLACEHOLDERS_OF_STAGED),
            "delete_placeholders": f"DELETE FROM jobs WHERE {_PLACEHOLDERS_OF_STAGED}",
            # their usage (the condition reads columns the two tables share)
            "delete_placeholder_usage": f"DELETE FROM job_usage WHERE {_PLACEHOLDERS_OF_STAGED}",
            "delete_staged": f"DELETE FROM jobs WHERE {staged_keys}",
            "add_staged": net("", "staged", "true"),
            "fold_batch": fold,
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
    "sqlite",
    sqlite_statements,
    _sqlite_params,
    (
        "CREATE TEMP TABLE IF NOT EXISTS staged AS SELECT * FROM jobs WHERE false",
        "CREATE UNIQUE INDEX IF NOT EXISTS temp.staged_key ON staged (cluster, job_id)",
        _BATCH_TOTALS,
    ),
    # SQLite truncates a table deleted without WHERE
    clear_stage=("DELETE FROM staged", "DELETE FROM batch_totals"),
    greatest="MAX",
    same="IS",
)
POSTGRES = _Dialect(
    "postgres",
    postgres_statements,
    postgres_params,
    (
        "CREATE TEMP TABLE IF NOT EXISTS staged (LIKE jobs)",
        "CREATE UNIQUE INDEX IF NOT EXISTS staged_key ON staged (cluster, job_id)",
        _BATCH_TOTALS,
    ),
    clear_stage=("TRUNCATE staged, batch_totals",),
    greatest="GREATEST",
    same="IS NOT DISTINCT FROM",
)
