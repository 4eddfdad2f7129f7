"""``jobcarbon ledger``: migrate and copy the ledger."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import JobcarbonError
from .common import _config


@click.group("ledger")
def ledger_group() -> None:
    """Ledger maintenance."""


@ledger_group.command("migrate")
@click.pass_context
def ledger_migrate(ctx: click.Context) -> None:
    """Create the ledger or bring its schema up to date."""
    from ..ledger import open_ledger

    with open_ledger(_config(ctx), migrate=True) as ledger:
        click.echo(f"{ledger.where}: schema v{ledger.schema_version}")
        if ledger.merged_placeholders:
            click.echo(
                f"merged {ledger.merged_placeholders} array task row(s) doubled by "
                "slurmdbd's placeholder record into the task's own row"
            )


@ledger_group.command("copy")
@click.option("--from", "source_url", required=True, help="sqlite:///PATH or postgresql://...")
@click.option("--to", "target_url", required=True, help="sqlite:///PATH or postgresql://...")
def ledger_copy(source_url: str, target_url: str) -> None:
    """Copy a ledger into another (SQLite to PostgreSQL, say), then check counts and totals.

    \b
    Every job (its running totals follow), grid hour, watermark, ingest error
    count, gauge and e-mail log entry. Safe to run again: jobs already there are left as
    they are. A PostgreSQL password comes from $JOBCARBON_LEDGER_PASSWORD.
    Stop the writers (collector, watcher) first, or run it again after.
    """
    import os

    from rich.progress import Progress

    from ..config import ledger_location
    from ..ledger import Ledger, copy_ledger

    def location(url: str) -> str | Path:
        try:
            return ledger_location(url, Path("."))
        except ValueError as err:
            raise click.BadParameter(f"{url!r}: {err}") from None

    password = os.environ.get("JOBCARBON_LEDGER_PASSWORD")
    source_location = location(source_url)
    if isinstance(source_location, Path) and not source_location.exists():
        raise click.BadParameter(f"no ledger at {source_location}", param_hint="--from")
    with (
        Ledger(source_location, password=password) as source,
        Ledger(location(target_url), password=password) as target,
    ):
        with Progress(transient=True) as progress:
            task = progress.add_task("copy", total=source.count())
            result = copy_ledger(source, target, on_batch=lambda n: progress.advance(task, n))
        click.echo(
            f"copied {result.jobs:,} job(s) from {source.where} to {target.where} "
            f"({result.written:,} new or changed)"
        )
        for name, totals in (("source", result.source), ("target", result.target)):
            click.echo(
                f"  {name}: {totals.jobs:,} jobs, {totals.gpu_hours:,.1f} GPU-h, "
                f"{totals.energy_kwh:,.1f} kWh, {totals.co2e_kg:,.1f} kg CO2e"
            )
    if not result.identical:
        raise JobcarbonError(
            "the target's counts or totals differ from the source's "
            "(it held other jobs before, or a writer was running)"
        )
    click.echo("  counts and totals identical")
