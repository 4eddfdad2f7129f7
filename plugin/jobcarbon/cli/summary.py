"""``jobcarbon summary`` and ``jobcarbon export``: the ledger's jobs, grouped or row by row."""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator, Mapping
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

    Emissions are Scope 2 both ways (GHG Protocol): location-based, the energy times the
    grid's average intensity; market-based, times what the site's contracts say for the
    year (`sites.<name>.market`). The caption says how many jobs' market-based figure
    had a stand-in: the residual mix, or the location-based figure.

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
        sources = ledger.market_sources(by, filters)
    caption = f"month {month}" if month else "all time"
    _summary_table(by, rows, total, f"{caption}; {market_caption(sources)}")
    if pending:
        click.echo(
            f"{pending:,} job(s) pending grid data: an hour of their run is not synced from "
            "their site's provider yet, so its fallback intensity is counted; they are "
            "accounted again when a sync brings it"
        )


def market_caption(sources: Mapping[str, Mapping[str, int]]) -> str:
    """What the two CO2e columns are, and where the market-based figures did not come
    from contracts, how many jobs had which stand-in."""
    from ..site import MarketSource

    jobs: dict[str, int] = {}
    for by_source in sources.values():
        for source, count in by_source.items():
            jobs[source] = jobs.get(source, 0) + count
    caption = (
        "CO2e (Scope 2) location-based: the grid's average intensity; market-based: the "
        "sites' contracts and certificates"
    )
    stand_ins = [
        f"{jobs[s]:,} job(s) {s.words}"
        for s in MarketSource
        if s is not MarketSource.CONTRACTS and jobs.get(s)
    ]
    return caption + (f" (market-based for {'; '.join(stand_ins)})" if stand_ins else "")


#: Columns a terminal needs for the likely ranges beside both figures (the table has 8).
RANGES_WIDTH = 110


def _summary_table(by: str, rows: list[SummaryRow], total: SummaryRow, caption: str) -> None:
    """Location-based and market-based CO2e, each with its likely range where the
    terminal is wide enough (``RANGES_WIDTH``)."""
    from rich.console import Console

    from ..quantity import co2e, co2e_range, energy, significant

    ranges = Console().width >= RANGES_WIDTH

    def figures(central: float, low: float, high: float) -> list[str]:
        return [str(co2e(central)), co2e_range(low, high)] if ranges else [str(co2e(central))]

    formatted = [
        (
            r.key,
            f"{r.jobs:,}",
            significant(r.gpu_hours),
            str(energy(r.energy_kwh)),
            *figures(r.co2e_kg, r.co2e_kg_low, r.co2e_kg_high),
            *figures(r.co2e_market_kg, r.co2e_market_kg_low, r.co2e_market_kg_high),
        )
        for r in [*rows, total]
    ]
    formatted[-1] = ("total", *formatted[-1][1:])
    location, market = ["location-based"], ["market-based"]
    if ranges:
        location.append("likely range")
        market.append("likely range")
    else:
        caption += f"; likely ranges in a terminal of {RANGES_WIDTH} columns or more"
    _table([by, "jobs", "GPU-h", "energy", *location, *market], formatted, caption)


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

    co2e_g is location-based Scope 2 (the grid's average intensity), co2e_market_g
    market-based (the site's contracts for the year), each with its _low and _high;
    market_source says where the market-based figure came from: contracts,
    contracts+location (the rest at the location-based figure), residual-mix or
    location-based (no market data for the job's year).

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
