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

    Embodied (Scope 3) is each job's share of the manufacture of the hardware it used
    (`clusters.<name>.embodied`), and the total location-based plus embodied; a row
    whose jobs have no embodied settings says "not configured", and where none has the
    caption says so instead of the two columns.

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
    captions = [caption, market_caption(sources), embodied_caption(total)]
    _summary_table(by, rows, total, "; ".join(captions))
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


def embodied_caption(total: SummaryRow) -> str:
    """What the embodied column is, and how many jobs have no embodied settings."""
    if not total.embodied_configured:
        return (
            "embodied (Scope 3, the manufacture of the hardware): not configured for these "
            "clusters, not counted"
        )
    caption = (
        "embodied (Scope 3): the jobs' share of the manufacture of the hardware they used; "
        "total: location-based plus embodied"
    )
    missing = total.not_configured_jobs
    if missing:
        caption += (
            f" ({missing:,} job(s) on clusters without embodied settings: not configured, "
            "not counted)"
        )
    return caption


#: Columns a terminal needs for the likely ranges beside both Scope 2 figures (the table
#: has 8 columns with them), and beside embodied too (11, with the total).
RANGES_WIDTH = 110
RANGES_WIDTH_EMBODIED = 150


def _summary_table(by: str, rows: list[SummaryRow], total: SummaryRow, caption: str) -> None:
    """Location-based and market-based CO2e, each with its likely range where the
    terminal is wide enough (``RANGES_WIDTH``)."""
    from rich.console import Console

    from ..quantity import co2e, co2e_range, energy, significant

    scope3 = total.embodied_configured  # else the caption says "not configured"
    width = RANGES_WIDTH_EMBODIED if scope3 else RANGES_WIDTH
    columns = Console().width
    ranges = columns >= width
    # in a narrow terminal (80 columns) the headers in short and no total column, so
    # that the names still show in full
    narrow = scope3 and columns < RANGES_WIDTH

    def figures(central: float, low: float, high: float) -> list[str]:
        return [str(co2e(central)), co2e_range(low, high)] if ranges else [str(co2e(central))]

    def embodied(r: SummaryRow) -> list[str]:
        if not r.embodied_configured:
            return ["not configured", ""] if ranges else ["not configured"]
        return figures(r.co2e_embodied_kg, r.co2e_embodied_kg_low, r.co2e_embodied_kg_high)

    formatted = [
        (
            r.key,
            f"{r.jobs:,}",
            significant(r.gpu_hours),
            str(energy(r.energy_kwh)),
            *figures(r.co2e_kg, r.co2e_kg_low, r.co2e_kg_high),
            *figures(r.co2e_market_kg, r.co2e_market_kg_low, r.co2e_market_kg_high),
            *(embodied(r) if scope3 else ()),
            *((str(co2e(r.co2e_total_kg)),) if scope3 and not narrow else ()),
        )
        for r in [*rows, total]
    ]
    formatted[-1] = ("total", *formatted[-1][1:])
    location, market, embodied_headers = ["location-based"], ["market-based"], ["embodied"]
    if narrow:
        location, market = ["location"], ["market"]
    if ranges:
        for header in (location, market, embodied_headers):
            header.append("likely range")
    else:
        more = "the total and likely ranges" if narrow else "likely ranges"
        caption += f"; {more} in a terminal of {width} columns or more"
    headers = [by, "jobs", "GPU-h", "energy", *location, *market]
    if scope3:
        headers += [*embodied_headers, *(() if narrow else ("total",))]
    _table(headers, formatted, caption)


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
    location-based (no market data for the job's year). co2e_embodied_g is embodied
    Scope 3, the job's share of its hardware's manufacture, with its _low and _high, and
    embodied_source the node's figure: a bundled entry's name or "site config"; where the
    job's cluster has no embodied settings they are empty and embodied_source says
    "not configured".

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
