"""The ledger: one row per job with its footprint. The only package that speaks SQL.

Its face: the names the rest of jobcarbon imports. Inside, from the bottom up: ``rows``
(row types, ``Filters``, ``ledger_row``), ``grid`` (the grid table's hours),
``dialect`` (SQLite's and PostgreSQL's spellings, statement splitting), ``connect``
(opening either backend), ``schema`` (versions, the ``.sql`` migrations under
``migrations/``, ``migrate``), ``pending`` (the readers of the jobs waiting for grid
hours), ``store`` (the ``Ledger`` class, ``open_ledger``) and ``copy`` (``copy_ledger``);
``usage`` (a job's usage apart from its footprint, the recompute runs) is a part of
``Ledger``.
"""

from __future__ import annotations

from .copy import CopyResult, copy_ledger
from .dialect import POSTGRES, SQLITE
from .grid import GridHour
from .rows import (
    DIMENSIONS,
    EXPORT_COLUMNS,
    FAILED_STATES,
    JOB_COLUMNS,
    Aggregate,
    Dimension,
    FactorsUsed,
    Filters,
    Habits,
    MailSent,
    Running,
    SummaryRow,
    WriteResult,
    ledger_row,
)
from .schema import MIGRATIONS, POSTGRES_MIGRATIONS, SCHEMA_VERSION
from .store import Ledger, open_ledger
from .usage import (
    MISSING,
    USAGE_COLUMNS,
    ProvenanceCount,
    RecomputeRun,
    UsageScope,
    usage_record,
    usage_row,
)

__all__ = [
    "DIMENSIONS",
    "EXPORT_COLUMNS",
    "FAILED_STATES",
    "JOB_COLUMNS",
    "MIGRATIONS",
    "MISSING",
    "POSTGRES",
    "POSTGRES_MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLITE",
    "USAGE_COLUMNS",
    "Aggregate",
    "CopyResult",
    "Dimension",
    "FactorsUsed",
    "Filters",
    "GridHour",
    "Habits",
    "Ledger",
    "MailSent",
    "ProvenanceCount",
    "RecomputeRun",
    "Running",
    "SummaryRow",
    "UsageScope",
    "WriteResult",
    "copy_ledger",
    "ledger_row",
    "open_ledger",
    "usage_record",
    "usage_row",
]
