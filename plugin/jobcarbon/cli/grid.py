"""``jobcarbon grid``: sync the provider sites' hourly intensity into the ledger, and show it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import click

from ..errors import ExitCode
from .common import _config, _open_ledger, date_option

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

BARS = "▁▂▃▄▅▆▇█"


@click.group("grid")
def grid_group() -> None:
    """Hourly grid carbon intensity from the sites' live providers."""


@grid_group.command("sync")
@click.option("--site", default=None, help="Only this site [default: every site with a provider].")
@date_option(
    "--since",
    "Fetch from this date (UTC), fetched hours replaced [default: each site's watermark "
    "(or the start of its earliest job of the last 7 days pending grid data, when earlier), "
    "or 30 days back on its first sync].",
)
@click.pass_context
def grid_sync(ctx: click.Context, site: str | None, since: datetime | None) -> None:
    """Fetch each provider site's hourly intensity up to the current hour into the ledger.

    \b
    Resumes where the last sync stopped; a failure keeps every hour fetched before
    it and names what failed. Exit 3 when a provider failed (the rest still sync).
    Then the jobs pending grid data whose hours are all synced now are accounted
    again.
    """
    from rich.progress import Progress

    from ..daemons.gridsync import provider_sites, site_client, sync_site
    from ..ledger import open_ledger
    from ..regrid import recompute_pending

    config = _config(ctx)
    sites = provider_sites(config, site)
    if not sites:
        click.echo("no site has grid.provider set: nothing to sync")
        return
    clients = {name: site_client(config, name) for name in sites}
    failed = 0
    now = datetime.now(UTC)
    with open_ledger(config) as ledger, Progress(transient=True) as progress:
        for name, client in clients.items():
            task = progress.add_task(f"{name} ({client.name})", total=None)
            follow = partial(_advance, progress, task)
            result = sync_site(ledger, name, client, since, now, follow)
            span = f"{result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC"
            progress.console.print(f"{name}: {result.hours_written} hour(s) written, {span}")
            if result.error is not None:
                failed += 1
                click.secho(
                    f"{name}: stopped after {result.hours_written} hour(s): {result.error}",
                    fg="red",
                    err=True,
                )
        done = recompute_pending(ledger, ledger.synced_site_factors(config), sites, now)
    if done.recomputed:
        click.echo(f"{done.recomputed} job(s) pending grid data accounted again")
    if failed:
        ctx.exit(ExitCode.SOURCE)


def _advance(progress: Progress, task: TaskID, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)


@grid_group.command("show")
@click.option("--site", required=True, help="The site.")
@date_option("--since", "First day (UTC).", required=True)
@date_option("--until", "Day after the last (UTC) [default: --since plus 7 days].")
@click.pass_context
def grid_show(ctx: click.Context, site: str, since: datetime, until: datetime | None) -> None:
    """A site's synced hours: each day's min, mean and max g/kWh and its 24 hours as a
    bar each (· where an hour is missing; the bars scale to the range shown)."""
    from ..site import HOUR_S
    from .common import _table

    until = until or since + timedelta(days=7)
    first, stop = int(since.timestamp()) // HOUR_S, -(-int(until.timestamp()) // HOUR_S)
    with _open_ledger(ctx) as ledger:
        hours = ledger.grid_hours(site, first, stop)
    if not hours:
        click.echo(f"no synced hours for site {site!r} in that range: run `jobcarbon grid sync`")
        return
    values = [h.intensity_g_per_kwh for h in hours]
    low, high = min(values), max(values)
    by_day: dict[str, dict[int, float]] = {}
    for h in hours:
        day = datetime.fromtimestamp(h.hour * HOUR_S, UTC)
        by_day.setdefault(f"{day:%Y-%m-%d}", {})[day.hour] = h.intensity_g_per_kwh
    rows: list[list[str]] = []
    for name, day_hours in by_day.items():
        got = list(day_hours.values())
        mean = sum(got) / len(got)
        shown = [f"{min(got):.0f}", f"{mean:.0f}", f"{max(got):.0f}", str(len(got))]
        rows.append([name, *shown, _bars(day_hours, low, high)])
    measured = sum(h.measured for h in hours)
    _table(
        ["day (UTC)", "min g/kWh", "mean g/kWh", "max g/kWh", "hours", "00h ... 23h"],
        rows,
        f"{site}: {len(hours)} hour(s), {measured} measured; bars {low:.0f} to {high:.0f} g/kWh",
    )


def _bars(day_hours: dict[int, float], low: float, high: float) -> str:
    """A day's 24 hours as bars from ``low`` to ``high``, ``·`` where an hour is missing."""
    scale = (len(BARS) - 1) / ((high - low) or 1)
    return "".join(
        BARS[round((day_hours[i] - low) * scale)] if i in day_hours else "·" for i in range(24)
    )
