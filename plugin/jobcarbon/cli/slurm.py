"""``jobcarbon slurm``: the collector, backfill, and import of sacct dumps."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

import click

from ..errors import ExitCode
from .common import _config, _report_problems, date_option

if TYPE_CHECKING:
    from ..daemons.collector import Collector
    from ..ledger import Ledger


@click.group("slurm")
def slurm_group() -> None:
    """Account Slurm jobs: the collector, backfill and import of sacct dumps."""


def _collector(ctx: click.Context, ledger: Ledger) -> Collector:
    from ..daemons.collector import Collector
    from ..sources.slurm.runner import open_accounting
    from ..sources.slurm.spool import Spool

    config = _config(ctx)
    spool = Spool(config.slurm.spool_dir)
    spool.create()
    return Collector(config, ledger, open_accounting(config.slurm), spool)


@slurm_group.command("collect")
@click.option(
    "--once",
    is_flag=True,
    help="Sync the grid providers' hours, process what is pending, sweep once, and exit.",
)
@click.pass_context
def slurm_collect(ctx: click.Context, once: bool) -> None:
    """Drain the epilog's spool and sweep accounting into the ledger (a service).

    \b
    The sites' grid providers are synced every slurm.grid_sync_interval_s, in
    the background (with --once: first). SIGHUP (systemctl reload) reads the config again; one that
    is not valid is refused with the reason in the log, and the old one is kept.
    """
    from ..daemons.service import Service, start_logging
    from ..ledger import open_ledger

    start_logging()
    with open_ledger(_config(ctx)) as ledger:
        collector = _collector(ctx, ledger)
        if not once:
            service = Service(lambda: _config(ctx))
            collector.run_forever(service.should_stop, service.reloader)
            return
        synced = collector.grid.tick(block=True)
        report = collector.collect_once()
    click.echo(
        f"accounted {report.accounted.written} job(s), {report.accounted.unchanged} "
        f"unchanged, {report.pending} pending, {report.accounted.failed} problem(s), "
        f"{len(report.given_up)} given up"
    )
    _report_problems(report.accounted)
    grid_errors = synced.errors if synced is not None else []
    for line in [*report.given_up, *report.errors, *grid_errors]:
        click.secho(f"  {line}", fg="red", err=True)
    if report.errors or grid_errors:
        sys.exit(ExitCode.SOURCE)
    if report.accounted.failed or report.given_up:
        sys.exit(ExitCode.PROBLEMS)


@slurm_group.command("backfill")
@date_option("--since", "First day to read (UTC), e.g. 2025-01-01.", required=True)
@date_option("--until", "Stop before this day (UTC) [default: now].")
@click.option(
    "--window-hours",
    type=click.IntRange(1, 24 * 31),
    default=24,
    show_default=True,
    help="Hours of accounting read per sacct call.",
)
@click.option("--restart", is_flag=True, help="Ignore where an earlier run stopped.")
@click.pass_context
def slurm_backfill(
    ctx: click.Context, since: datetime, until: datetime | None, window_hours: int, restart: bool
) -> None:
    """Account every job that ended in a range, window by window; resumes where it stopped."""
    from rich.progress import Progress

    from ..daemons.backfill import Backfill
    from ..ledger import open_ledger

    with open_ledger(_config(ctx)) as ledger:
        backfill = Backfill(
            _collector(ctx, ledger),
            ledger,
            since,
            until or datetime.now(UTC),
            window_hours * 3600,
            restart,
        )
        if backfill.resumed_at is not None:
            click.echo(
                f"resuming at {backfill.resumed_at.isoformat()} "
                "(use --restart to read it all again)"
            )
        with Progress(transient=True) as progress:
            task = progress.add_task("backfill", total=len(backfill.windows))
            total = backfill.run(
                lambda end: progress.update(
                    task, advance=1, description=f"backfill {end:%Y-%m-%d %H:%M}"
                )
            )
    click.echo(
        f"accounted {total.written} job(s), {total.unchanged} unchanged, "
        f"{total.failed} problem(s) in {len(backfill.windows)} window(s)"
    )
    _report_problems(total)
    if total.failed:
        sys.exit(ExitCode.PROBLEMS)


@slurm_group.command("import")
@click.argument("source", type=click.File("rb", lazy=False))
@click.option(
    "--cluster",
    help="Cluster name when the dump has no Cluster column [default: the config's first cluster].",
)
@click.pass_context
def slurm_import(ctx: click.Context, source: BinaryIO, cluster: str | None) -> None:
    """Import a `sacct --parsable2` dump (FILE, or - for stdin), streaming.

    A plain `|`-delimited dump is read too: lines that a `|` or a line break in a job
    name split are rejoined and counted as repaired. UTF-8 (with or without a
    byte-order mark) or UTF-16 with one; CRLF line ends.
    """
    import os

    from rich.progress import DownloadColumn, Progress

    from ..accounting import Accountant, IngestReport, ingest_on_two_cores
    from ..ledger import open_ledger
    from ..sources.slurm.parsable import open_dump
    from ..sources.slurm.sacct import read_parsable

    config = _config(ctx)
    cluster = cluster or next(iter(config.clusters))
    config.cluster(cluster)  # an unknown --cluster fails here, before reading anything
    try:
        size = os.fstat(source.fileno()).st_size or None
    except (OSError, io.UnsupportedOperation):
        size = None
    name = getattr(source, "name", "-")
    with (
        open_ledger(config) as ledger,
        Progress(*Progress.get_default_columns(), DownloadColumn(), transient=True) as progress,
    ):
        task = progress.add_task(f"import {name}", total=size)

        def advance(report: IngestReport) -> None:
            # the file is read in another process; its offset is shared with this one
            if size is not None:
                progress.update(task, completed=os.lseek(source.fileno(), 0, os.SEEK_CUR))
            else:
                progress.update(task, description=f"import {name}: {report.seen:,} jobs")

        report = ingest_on_two_cores(
            read_parsable(
                open_dump(source), cluster=cluster, clusters=config.clusters, source=name
            ),
            Accountant(config, ledger.synced_site_factors(config)),
            ledger,
            on_batch=advance,
        )
    click.echo(
        f"imported {report.written} job(s), {report.unchanged} unchanged, "
        f"{report.repaired} line(s) repaired, {report.failed} problem(s)"
    )
    _report_problems(report)
    if report.failed:
        sys.exit(ExitCode.PROBLEMS)


@slurm_group.command("sacct-format")
def slurm_sacct_format() -> None:
    """Print the sacct command whose output `jobcarbon slurm import` reads."""
    from ..sources.slurm.fields import DELIMITER, SACCT_FIELDS

    click.echo(
        f"TZ=UTC sacct --parsable2 --delimiter='{DELIMITER}' --allusers --duplicates "
        f"--format={','.join(SACCT_FIELDS)} --starttime=2025-01-01 --endtime=now "
        "--state=CA,CD,DL,F,NF,OOM,PR,RQ,TO,BF > jobs.txt"
    )
