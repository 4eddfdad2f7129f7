"""The researchers' commands: ``jobcarbon statement`` and ``jobcarbon job``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import click

from .common import _config, _date, _table, date_option, parse_duration

if TYPE_CHECKING:
    from ..jobreport import JobReport


def _job_ids(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    ids = tuple(part.strip() for part in value.split(",") if part.strip())
    if not ids:
        raise click.BadParameter("give job ids separated by commas, e.g. 1234,1240")
    return ids


@click.command()
@click.option("--project", help="The jobs of this project.")
@click.option("--user", help="Or: the jobs of this user.")
@click.option(
    "--jobs",
    "job_ids",
    callback=_job_ids,
    help="Or: these jobs, e.g. 1234,1240 (each with its array tasks and earlier runs).",
)
@click.option("--cluster", help="Only jobs on this cluster.")
@date_option("--since", "Jobs ending at or after this date (UTC).")
@date_option("--until", "Jobs ending before this date (UTC).")
@click.option("--latex", is_flag=True, help="A LaTeX paragraph (BibTeX entry as a comment).")
@click.option("--markdown", is_flag=True, help="A Markdown paragraph.")
@click.option("--json", "as_json", is_flag=True, help="The figures and the paragraph as JSON.")
@click.pass_context
def statement(
    ctx: click.Context,
    project: str | None,
    user: str | None,
    job_ids: tuple[str, ...] | None,
    cluster: str | None,
    since: datetime | None,
    until: datetime | None,
    latex: bool,
    markdown: bool,
    as_json: bool,
) -> None:
    """A paper-ready paragraph on the footprint of real jobs, from the ledger.

    \b
    It states the GPU- and CPU-hours, the energy with the PUE, the emissions
    with their range, the factors with their sources and the method (Lacoste
    et al. 2019). The figures are the ledger's sums, as `jobcarbon summary`
    prints them for the same jobs.
      jobcarbon statement --project nlp --since 2026-01-01 --until 2026-07-01 --latex
    """
    from ..errors import InputError
    from ..ledger import open_ledger
    from ..statement import build_statement, render_latex, render_markdown, scope_filters

    if sum(x is not None for x in (project, user, job_ids)) != 1:
        raise click.UsageError("give exactly one of --project, --user or --jobs")
    if sum([latex, markdown, as_json]) != 1:
        raise click.UsageError("choose one of --latex, --markdown or --json")
    config = _config(ctx)
    filters, scope = scope_filters(project, user, job_ids, cluster, since, until)
    with open_ledger(config, migrate=False) as ledger:
        found = build_statement(ledger, config, filters, scope)
    if found is None:
        period = " in that period" if since or until else ""
        raise InputError(f"the ledger holds no jobs {scope}{period}")
    if as_json:
        click.echo(found.to_json())
    elif latex:
        click.echo(render_latex(found))
    else:
        click.echo(render_markdown(found))


def _since(ctx: click.Context, param: click.Parameter, value: str) -> datetime | None:
    """``7d``, ``12h`` (any ``parse_duration``) or a date: how far back --mine looks."""
    from datetime import UTC

    back = parse_duration(value)
    if back is not None:
        return datetime.now(UTC) - back
    return _date(value)


@click.command()
@click.argument("job_id", required=False)
@click.option("--cluster", help="The job's cluster [default: the config's first cluster].")
@click.option("--mine", is_flag=True, help="Instead: a table of your own recent jobs.")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    callback=_since,
    help="With --mine: how far back (7d, 12h or a date).",
)
@click.option(
    "--wait-s",
    type=click.FloatRange(0, 600),
    default=0,
    help="Wait up to this long for the job's accounting record to be final "
    "(slurm/mailprog: the end record follows the end mail by a few seconds).",
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.pass_context
def job(
    ctx: click.Context,
    job_id: str | None,
    cluster: str | None,
    mine: bool,
    since: datetime,
    wait_s: float,
    as_json: bool,
) -> None:
    """One job's footprint, as seff shows its efficiency (run it as the job's owner).

    \b
    Hardware, GPU- and CPU-hours, energy by component with the PUE, the grid
    intensity, CO2e with its range and how it was computed, equivalents and
    advice. Accounting comes from sacct, so Slurm's PrivateData rules decide
    who sees which job; the footprint from the site config. Where the ledger
    can be read, its figure is shown too. An array job shows its tasks, a
    requeued job its runs, a running job its footprint so far.
      jobcarbon job 1234
      jobcarbon job --mine --since 30d
    """
    import getpass
    from datetime import UTC

    from ..jobreport import read_job, read_mine, render_text, to_json
    from ..sources.slurm.runner import Sacct

    if mine == (job_id is not None):
        raise click.UsageError("give a JOB_ID, or --mine for your own recent jobs")
    config = _config(ctx)
    name = cluster or next(iter(config.clusters))
    config.cluster(name)  # an unknown --cluster fails here, before sacct runs
    settings = config.slurm
    sacct = Sacct(settings.sacct, timeout_s=settings.sacct_timeout_s, cluster=cluster)
    now = datetime.now(UTC)
    if job_id is not None:
        report = _read_final(
            lambda: read_job(sacct, config, job_id, name, datetime.now(UTC)), wait_s
        )
        click.echo(to_json(report) if as_json else render_text(report, config))
        return
    runs = read_mine(sacct, config, getpass.getuser(), since, name, now)
    if as_json:
        import json

        from ..jobreport import run_json

        click.echo(json.dumps([run_json(run) for run in runs], indent=2))
        return
    from ..statement import figure

    rows = [
        (
            r.accounted.job.job_id,
            r.accounted.job.name,
            r.slurm_state + (" (so far)" if r.so_far else ""),
            f"{r.accounted.footprint.gpu_seconds / 3600:.2f}",
            figure(r.accounted.footprint.energy_facility_kwh, "kWh"),
            figure(r.accounted.footprint.co2e_g, "g"),
        )
        for r in runs
    ]
    _table(
        ["job", "name", "state", "GPU-h", "energy", "CO2e"],
        rows,
        f"since {since:%Y-%m-%d %H:%M} UTC",
    )


def _read_final(read: Callable[[], JobReport], wait_s: float) -> JobReport:
    """``read()`` again every half second, up to ``wait_s``, until every run has ended
    (and the job is in accounting at all); the last reading either way."""
    import time

    from ..errors import InputError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            report = read()
        except InputError:
            if time.monotonic() >= deadline:
                raise
        else:
            if time.monotonic() >= deadline or not any(r.so_far for r in report.runs):
                return report
        time.sleep(0.5)
