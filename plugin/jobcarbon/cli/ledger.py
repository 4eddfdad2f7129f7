"""``jobcarbon ledger``: migrate, copy, recompute the ledger, and the recompute runs."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ExitCode, JobcarbonError
from .common import _config, _table, date_option

if TYPE_CHECKING:
    from ..ledger import RecomputeRun
    from ..recompute import RecomputeReport


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
    Every job (its usage, and its running totals follow), grid hour, watermark,
    ingest error count, gauge, e-mail log entry and recompute run. Safe to run
    again: jobs already there are left as they are. A PostgreSQL password comes
    from $JOBCARBON_LEDGER_PASSWORD. Stop the writers (collector, watcher) first,
    or run it again after.
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


@ledger_group.command("recompute")
@date_option("--since", "Only jobs that ended on or after this day (UTC), e.g. 2026-10-01.")
@date_option("--until", "Only jobs that ended before this day (UTC).")
@click.option("--cluster", help="Only this cluster's jobs.")
@click.option("--site", help="Only jobs at this site (stored there, or of its clusters now).")
@click.option("--dry-run", is_flag=True, help="Change nothing; say what would change.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def ledger_recompute(
    ctx: click.Context,
    since: datetime | None,
    until: datetime | None,
    cluster: str | None,
    site: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Account the ledger's jobs again from their stored usage with the current config.

    \b
    For a month's measured PUE (sites.*.pue_monthly), corrected or newly synced grid
    hours, a fixed hardware rule or new factor tables: no scheduler is asked, so
    Kubernetes pods and imported dumps are recomputed too. Only jobs whose footprint
    changes are written (the running totals follow); then the jobs changed and the
    change in CO2e and kWh by site and month. Resumable: a run that was stopped is
    taken up where it stopped by the next one with the same config and scope, and a
    run again changes nothing. Jobs accounted before schema v9 have incomplete usage
    (no node list, labels, GPU name as the source gave it, CPU time used, measured
    energy split): they are recomputed from what there is, and counted.
    `jobcarbon ledger history` lists the runs. Exit 1 if a job could not be accounted.
    """
    from rich.progress import Progress

    from ..ledger import UsageScope, open_ledger
    from ..recompute import recompute

    config = _config(ctx)
    if cluster is not None:
        config.cluster(cluster)  # an unknown cluster fails here
    if site is not None and site not in config.sites:
        raise click.BadParameter(f"unknown site {site!r} (sites: {', '.join(config.sites)})")
    scope = UsageScope(
        None if since is None else since.timestamp(),
        None if until is None else until.timestamp(),
        cluster,
        site,
        tuple(name for name, c in config.clusters.items() if c.site == site),
    )
    with (
        open_ledger(config, migrate=False if dry_run else None) as ledger,
        Progress(transient=True, disable=as_json) as progress,
    ):
        task = progress.add_task("recompute", total=ledger.usage_count(scope))
        report = recompute(
            ledger,
            config,
            scope,
            dry_run=dry_run,
            on_batch=lambda seen: progress.update(task, completed=seen),
        )
    if as_json:
        click.echo(json.dumps(_report_json(report), indent=2))
    else:
        _print_report(report)
    if report.run.jobs_failed:
        sys.exit(ExitCode.PROBLEMS)


def _deltas(run: RecomputeRun) -> list[dict[str, Any]]:
    return [
        {"site": site, "month": month, "jobs": int(jobs), "co2e_g": co2e_g, "energy_kwh": kwh}
        for (site, month), (jobs, co2e_g, kwh) in sorted(run.deltas.items())
    ]


def _run_json(run: RecomputeRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "started_at": datetime.fromtimestamp(run.started_at, UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(run.updated_at, UTC).isoformat(),
        "status": run.status,
        "scope": json.loads(run.scope),
        "config_digest": run.config_digest,
        "factors_version": run.factors_version,
        "sites": json.loads(run.intensity_versions),
        "jobs_seen": run.jobs_seen,
        "jobs_changed": run.jobs_changed,
        "jobs_incomplete": run.jobs_incomplete,
        "jobs_failed": run.jobs_failed,
        "co2e_g": sum(d[1] for d in run.deltas.values()),
        "energy_kwh": sum(d[2] for d in run.deltas.values()),
        "deltas": _deltas(run),
    }


def _report_json(report: RecomputeReport) -> dict[str, Any]:
    return {
        **_run_json(report.run),
        "dry_run": report.dry_run,
        "resumed": report.resumed,
        "incomplete": report.incomplete,
        "problems": [str(p) for p in report.problems],
    }


def _print_report(report: RecomputeReport) -> None:
    run = report.run
    verb = "would change" if report.dry_run else "changed"
    resumed = f" (run {run.run_id} taken up where it stopped)" if report.resumed else ""
    click.echo(
        f"recomputed {run.jobs_seen:,} job(s){resumed}: {run.jobs_changed:,} {verb}, "
        f"{run.jobs_incomplete:,} with incomplete usage, {run.jobs_failed:,} problem(s)"
    )
    if run.deltas:
        rows = [
            [d["site"], d["month"], f"{d['jobs']:,}", f"{d['co2e_g'] / 1000:+,.3f}",
             f"{d['energy_kwh']:+,.3f}"]
            for d in _deltas(run)
        ]  # fmt: skip
        _table(["site", "month", f"jobs {verb}", "CO2e change (kg)", "energy change (kWh)"], rows)
    if run.jobs_incomplete:
        click.echo(
            f"{run.jobs_incomplete:,} job(s) were accounted before the ledger kept their whole "
            "usage (schema v9) and were recomputed from what it has:"
        )
        for line in report.incomplete:
            click.echo(f"  {line}")
        if run.jobs_incomplete > len(report.incomplete):
            click.echo(f"  ... and {run.jobs_incomplete - len(report.incomplete):,} more")
    for problem in report.problems:
        click.secho(f"  {problem}", fg="yellow", err=True)
    if run.jobs_failed > len(report.problems):
        click.secho(
            f"  ... and {run.jobs_failed - len(report.problems):,} more", fg="yellow", err=True
        )


@ledger_group.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_context
def ledger_history(ctx: click.Context, as_json: bool) -> None:
    """List the recompute runs: when, with what config and factor data, what changed."""
    from ..ledger import open_ledger

    with open_ledger(_config(ctx), migrate=False) as ledger:
        runs = ledger.recompute_runs()
    if as_json:
        click.echo(json.dumps([_run_json(run) for run in runs], indent=2))
        return
    if not runs:
        click.echo("no recompute runs yet (`jobcarbon ledger recompute`)")
        return
    rows = [
        [
            str(r["run_id"]),
            r["started_at"][:19].replace("T", " "),
            r["status"],
            r["config_digest"],
            f"{r['jobs_seen']:,}",
            f"{r['jobs_changed']:,}",
            f"{r['jobs_incomplete']:,}",
            f"{r['co2e_g'] / 1000:+,.3f}",
            f"{r['energy_kwh']:+,.3f}",
        ]
        for r in map(_run_json, runs)
    ]
    _table(
        ["run", "started (UTC)", "status", "config", "jobs seen", "changed", "incomplete",
         "CO2e change (kg)", "energy change (kWh)"],
        rows,
    )  # fmt: skip
