"""``jobcarbon grid``: sync the provider sites' hourly intensity into the ledger, show it,
and suggest the lowest-carbon start for a job from a provider's forecast."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ExitCode
from .common import _config, _open_ledger, date_option, duration_option

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ..forecast import BestStart

BARS = "▁▂▃▄▅▆▇█"


@click.group("grid")
def grid_group() -> None:
    """Hourly grid carbon intensity from the sites' live providers, and their forecasts."""


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
    from ..recompute import recompute_pending

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
        report = recompute_pending(ledger, config)
    if report is not None:
        click.echo(
            f"{report.run.jobs_changed} job(s) pending grid data accounted again "
            f"(recompute run {report.run.run_id})"
        )
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


@grid_group.command("forecast")
@click.option("--site", required=True, help="The site whose grid provider's forecast is read.")
@duration_option(
    "--duration", "How long the job runs: 8h, 1h30m, 2d, or as sbatch --time, 08:00:00.", True
)
@duration_option("--within", "Start at the latest this long from now.", default="24h")
@click.option(
    "--timezone",
    "zone_name",
    help="The time zone of the machine sbatch runs on, e.g. Europe/London "
    "[default: this machine's: $TZ, else /etc/localtime].",
)
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def grid_forecast(
    ctx: click.Context,
    site: str,
    duration: timedelta,
    within: timedelta,
    zone_name: str | None,
    as_json: bool,
) -> None:
    """When to start a job for the least CO2e, from the site's grid forecast.

    \b
    Of the starts from now to --within from now (now, and each start of the
    forecast's slots), the one whose run of --duration has the lowest mean forecast
    intensity, integrated over the slots (NESO half hours, Electricity Maps hours,
    WattTime 5 minutes; a slot the run cuts counts for the part inside it). Printed
    with its mean g CO2e/kWh against starting now, the saving, and the value for
    sbatch --begin. sbatch reads --begin in the local time of the machine it runs on
    ($TZ, else /etc/localtime) and takes no UTC or offset form, so the value is that
    local time: pass --timezone when sbatch runs elsewhere.

    \b
    Forecasts reach 48 h (NESO) or 72 h (Electricity Maps; WattTime, of its marginal
    co2_moer, as it forecasts no co2_aoer); ENTSO-E and EIA publish none. Exit 2 for a
    site without a forecast or a run that does not fit in it, 3 when the provider fails.

    \b
    Example:
      jobcarbon grid forecast --site london --duration 8h
      sbatch --begin=<the value it prints> train.sh
    """
    from ..daemons.gridsync import provider_sites, site_client
    from ..errors import InputError, PermanentError, SourceError, TemporaryError
    from ..forecast import best_start
    from ..sources.grid import FORECASTERS, NoForecast

    config = _config(ctx)
    provider_sites(config, site, "read a forecast from")
    zone = _zone(zone_name)
    client = site_client(config, site)
    now = datetime.now(UTC)
    try:
        slots = client.forecast(now, within + duration)
    except NoForecast as err:
        raise InputError(
            f"site {site}: {err}; `grid forecast` needs a provider that publishes one "
            f"({', '.join(FORECASTERS)})"
        ) from err
    except (TemporaryError, PermanentError) as err:
        raise SourceError(f"site {site}: the {client.name} forecast failed: {err}") from err
    now_s = int(now.timestamp())
    try:
        best = best_start(slots, int(duration.total_seconds()), now_s, int(within.total_seconds()))
    except InputError as err:
        raise InputError(f"site {site}: {err}") from err
    facts = _forecast_facts(site, client.name, client.signal, client.forecast_signal, best, zone)
    facts["forecast_slots"] = len(slots)
    facts["slot_minutes"] = min(s.period_s for s in slots) / 60
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        _print_forecast(facts, best, within)


def _forecast_facts(
    site: str, provider: str, signal: str, forecast_signal: str, best: BestStart, zone: tzinfo
) -> dict[str, Any]:
    start = datetime.fromtimestamp(best.start_s, UTC).astimezone(zone)
    return {
        "site": site,
        "provider": provider,
        "signal": forecast_signal or None,
        "site_signal": signal or None,
        "duration_h": best.duration_s / 3600,
        "now": _utc(best.now_s),
        "best_start": _utc(best.start_s),
        "starts_now": best.starts_now,
        "best_mean_g_per_kwh": best.mean_g_per_kwh,
        "now_mean_g_per_kwh": best.now_mean_g_per_kwh,
        "saving_percent": best.saving_percent,
        "latest_start_tried": _utc(best.latest_start_s),
        "forecast_until": _utc(best.forecast_end_s),
        "sbatch_begin": None if best.starts_now else f"{start:%Y-%m-%dT%H:%M:%S}",
        "timezone": _zone_label(zone, start),
        "ambiguous_local_time": _ambiguous(start),
    }


def _print_forecast(facts: dict[str, Any], best: BestStart, within: timedelta) -> None:
    signal = facts["signal"] or ""
    if signal != (facts["site_signal"] or ""):
        signal += f", as {facts['provider']} forecasts no {facts['site_signal']}"
    click.echo(
        f"{facts['site']}: {facts['provider']} forecast{f' ({signal})' if signal else ''}, "
        f"{facts['forecast_slots']} slots of {facts['slot_minutes']:g} min "
        f"to {_shown(facts['forecast_until'])}"
    )
    run = f"a run of {_span(best.duration_s)} starting within {_span(int(within.total_seconds()))}"
    if best.starts_now:
        click.echo(f"Best start for {run}: now; no later start is cleaner.")
    else:
        wait = _span(best.start_s - best.now_s)
        click.echo(f"Best start for {run}: {_shown(facts['best_start'])}, in {wait}.")
    click.echo(f"  mean over the run:  {facts['best_mean_g_per_kwh']:.0f} g CO2e/kWh")
    if best.now_mean_g_per_kwh is None:
        click.echo("  starting now:       not in the forecast (it begins later)")
    elif not best.starts_now:
        click.echo(f"  starting now:       {best.now_mean_g_per_kwh:.0f} g CO2e/kWh")
        click.echo(
            f"  saving:             {facts['saving_percent']:.0f} % less CO2e for the same energy"
        )
    if best.forecast_end_s < best.now_s + int(within.total_seconds()) + best.duration_s:
        click.echo(
            f"  (the forecast reaches {_shown(facts['forecast_until'])}: the starts tried run "
            f"to {_shown(facts['latest_start_tried'])})"
        )
    if facts["sbatch_begin"] is None:
        click.echo("Submit as usual: sbatch needs no --begin.")
        return
    click.echo(f"Submit with:\n  sbatch --begin={facts['sbatch_begin']} ...")
    click.echo(
        f"--begin is local time in {facts['timezone']}: sbatch reads it in the time zone of "
        "the machine it runs on, and takes no UTC or offset form (--timezone for another)."
    )
    if facts["ambiguous_local_time"]:
        minutes = -(-(best.start_s - int(datetime.now(UTC).timestamp())) // 60)
        click.echo(
            "That local time comes twice as the clocks go back: "
            f"--begin=now+{minutes}minutes says which, if submitted now."
        )


def _zone(name: str | None) -> tzinfo:
    """``--timezone``, else the zone sbatch reads --begin in: $TZ, else /etc/localtime."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name is not None:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise click.BadParameter(
                f"{name!r} is not a time zone like Europe/London", param_hint="--timezone"
            ) from None
    for candidate in (
        os.environ.get("TZ", "").lstrip(":"),
        str(Path("/etc/localtime").resolve()).partition("zoneinfo/")[2],
    ):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def _zone_label(zone: tzinfo, when: datetime) -> str:
    offset = when.utcoffset() or timedelta(0)
    sign, minutes = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    hours, rest = divmod(int(minutes.total_seconds()) // 60, 60)
    shown = f"{when.tzname()}, UTC{sign}{hours:02d}:{rest:02d}"
    key = getattr(zone, "key", None)
    return f"{key} ({shown})" if key else shown


def _ambiguous(when: datetime) -> bool:
    """Whether the wall time ``when`` shows comes twice in its zone (clocks going back)."""
    return when.replace(fold=1 - when.fold).utcoffset() != when.utcoffset()


def _utc(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(stamp: str) -> str:
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: int) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    if not minutes:
        return f"{hours} h"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
