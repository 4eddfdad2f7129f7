"""``jobcarbon summary`` and ``jobcarbon export``: the ledger's jobs, grouped or row by row."""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

import click

from .common import _open_ledger, _table, date_option, month_option

if TYPE_CHECKING:
    from ..ledger import Dimension, SummaryRow


@click.command()
@click.option(
    "--by",
    type=click.Choice(
        ["user", "project", "cluster", "partition", "gpu_model", "state", "month", "site", "method"]
    ),
    default="project",
    show_default=True,
)
@month_option()
@click.option("--cluster", help="Only this cluster.")
@click.option("--user", help="Only this user.")
@click.option("--project", help="Only this project.")
@click.pass_context
def summary(
    ctx: click.Context,
    by: Dimension,
    month: str | None,
    cluster: str | None,
    user: str | None,
    project: str | None,
) -> None:
    """A table of jobs, GPU-hours, energy and emissions, grouped by one dimension.

    Jobs pending grid data (an hour of their run not synced from their site's
    provider yet, its fallback used) are counted below the table.
    """
    from dataclasses import replace

    from ..ledger import Filters

    filters = Filters(month=month, cluster=cluster, user=user, project=project)
    with _open_ledger(ctx) as ledger:
        rows = ledger.summary(by, filters)
        total = ledger.totals(filters)
        pending = ledger.count(replace(filters, pending=True))
    _summary_table(by, rows, total, f"month {month}" if month else "all time")
    if pending:
        click.echo(
            f"{pending:,} job(s) pending grid data: an hour of their run is not synced from "
            "their site's provider yet, so its fallback intensity is counted; they are "
            "accounted again when a sync brings it"
        )


def _summary_table(by: str, rows: list[SummaryRow], total: SummaryRow, caption: str) -> None:
    from ..quantity import co2e, co2e_range, energy, significant

    formatted = [
        (
            r.key,
            f"{r.jobs:,}",
            significant(r.gpu_hours),
            str(energy(r.energy_kwh)),
            str(co2e(r.co2e_kg)),
            co2e_range(r.co2e_kg_low, r.co2e_kg_high),
        )
        for r in [*rows, total]
    ]
    formatted[-1] = ("total", *formatted[-1][1:])
    _table([by, "jobs", "GPU-h", "energy", "CO2e", "likely range"], formatted, caption)


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@date_option("--since", "Jobs ending at or after (UTC).")
@date_option("--until", "Jobs ending before (UTC).")
@click.option("--user", help="Only this user.")
@click.option("--project", help="Only this project.")
@click.option("--cluster", help="Only this cluster.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File [default: stdout].")
@click.pass_context
def export(
    ctx: click.Context,
    fmt: str,
    since: datetime | None,
    until: datetime | None,
    user: str | None,
    project: str | None,
    cluster: str | None,
    output: TextIO,
) -> None:
    """Stream job rows with their footprint and the factors version used
    (intensity_pending 1: an hour of the run took its provider's fallback, not synced yet).

    A reader that stops early (``| head``) ends the export quietly, with exit code
    141 as a command killed by SIGPIPE has.
    """
    import contextlib
    import os
    import signal

    from ..export import write_csv, write_json
    from ..ledger import Filters

    filters = Filters(since=since, until=until, user=user, project=project, cluster=cluster)
    writer = write_csv if fmt == "csv" else write_json
    with _open_ledger(ctx) as ledger, contextlib.closing(_generator(ledger.jobs(filters))) as rows:
        try:
            count = writer(rows, output)
            output.flush()
        except BrokenPipeError:
            # nothing more can be written: point stdout at /dev/null so that Python's
            # own flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
    click.echo(f"exported {count} job(s)", err=True)


def _generator(rows: Iterator[dict[str, object]]) -> Generator[dict[str, object], None, None]:
    """``Ledger.jobs``'s rows, which a generator yields, so that the export can close it."""
    assert isinstance(rows, Generator)
    return rows
