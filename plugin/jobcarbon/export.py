"""Exports of job rows from the ledger, streamed: memory stays flat whatever the range."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from .ledger import EXPORT_COLUMNS

_TIME_COLUMNS = ("submit_time", "start_time", "end_time")


#: what ``embodied_source`` says of a job whose cluster has no embodied settings (the
#: embodied figures themselves stay empty: never a guess)
NOT_CONFIGURED = "not configured"


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    if row["co2e_embodied_g"] is None:
        row["embodied_source"] = NOT_CONFIGURED
    for column in _TIME_COLUMNS:
        value = row[column]
        row[column] = None if value is None else datetime.fromtimestamp(value, tz=UTC).isoformat()
    return row


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write rows as CSV with a header (even when empty); returns how many were written."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(_readable(row))
        count += 1
    return count


def write_json(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write rows as one JSON array, one object a line; returns how many were written."""
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(_readable(row), separators=(",", ":")))
        count += 1
    out.write("\n]\n")
    return count
