"""How SQLite and PostgreSQL spell what the ledger's statements need, and how a
migration script of each splits into statements.

A batch is staged in a temporary table, rows already in the ledger as given are
dropped from it, the totals lose the rows about to be replaced and gain the staged
ones (one grouped statement each), and the staged rows are upserted. The statements
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
                f"INSERT INTO staged ({quoted(JOB_COLUMNS)}, recorded_at) "
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
            # their usage (the condition reads columns the two tables share)
            "delete_placeholder_usage": f"DELETE FROM job_usage WHERE {_PLACEHOLDERS_OF_STAGED}",
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
    "sqlite",
    sqlite_statements,
    _sqlite_params,
    (
        "CREATE TEMP TABLE IF NOT EXISTS staged AS SELECT * FROM jobs WHERE false",
        "CREATE UNIQUE INDEX IF NOT EXISTS temp.staged_key ON staged (cluster, job_id)",
    ),
    clear_stage="DELETE FROM staged",  # SQLite truncates a table deleted without WHERE
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
    ),
    clear_stage="TRUNCATE staged",
    greatest="GREATEST",
    same="IS NOT DISTINCT FROM",
)
