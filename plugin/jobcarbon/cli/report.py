"""``jobcarbon report``: the monthly e-mails."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ExitCode
from .common import _config, _open_ledger, month_option

if TYPE_CHECKING:
    from ..ledger import Filters, Ledger


@click.group("report")
def report_group() -> None:
    """Monthly e-mails to every user and every project lead."""


@report_group.command("monthly")
@month_option("YYYY-MM (UTC, by job end) [default: last month].")
@click.option("--user", help="Only this user's e-mail.")
@click.option(
    "--project", help="Only this project: its leads' e-mail with --leads, else its members'."
)
@click.option(
    "--leads", is_flag=True, help="E-mails to project leads (a project each, with its members)."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each e-mail to DIR as .eml and its HTML as .html, to look at first.",
)
@click.option("--send", is_flag=True, help="Send through the mail.* SMTP server, each once.")
@click.option("--resend", is_flag=True, help="With --send: send again what was sent before.")
@click.pass_context
def report_monthly(
    ctx: click.Context,
    month: str | None,
    user: str | None,
    project: str | None,
    leads: bool,
    out: Path | None,
    send: bool,
    resend: bool,
) -> None:
    """Each person's month: jobs, energy, emissions, what to change; written or sent.

    \b
    Run it on the 3rd of the month (slurm/jobcarbon-report.timer), when late
    accounting records are in. Users with no jobs that month get nothing; a
    user with no address or on the opt-out list is reported, not guessed. A
    re-run sends only what was not sent (the ledger logs each accepted e-mail).
    """
    from rich.progress import Progress

    from ..ledger import Filters
    from ..mail import AddressBook, Composer, Postman, SmtpSender
    from ..report import Audience, monthly_reports, previous_month

    if not out and not send:
        raise click.UsageError("give --out DIR to look at the e-mails, --send to send them")
    if resend and not send:
        raise click.UsageError("--resend goes with --send")
    if user and (leads or project):
        raise click.UsageError("--user picks one user's e-mail: leave out --leads and --project")
    config = _config(ctx)
    chosen_month = month
    month = month or previous_month(datetime.now(UTC))
    audience: Audience = "lead" if leads else "user"
    book = AddressBook(config)
    composer = Composer(config)
    sender = (
        SmtpSender(
            config.mail,
            config.smtp_password(),
            config.path(config.mail.tls_ca_file) if config.mail.tls_ca_file else None,
        )
        if send
        else None
    )
    with _open_ledger(ctx) as ledger:
        names: list[str] | None = None
        if user:
            names = [user]
        elif project and leads:
            names = [project]
        elif project:
            members = ledger.grouped("project", "user", Filters(month=month)).get(project, [])
            names = [row.key for row in members]
        reports = monthly_reports(ledger, config, month, audience, names)
        if not reports:
            whom = f" for {user or project}" if names is not None else ""
            when = "" if chosen_month else " (last month)"
            others = _months_with_jobs(ledger, Filters(user=user, project=project))
            click.echo(f"no jobs in {month}{when}{whom}; {others}")
            return
        postman = Postman(ledger, book, composer, sender, out, resend)
        with Progress(transient=True) as progress:
            task = progress.add_task(f"{audience} e-mails", total=len(reports))
            outcome = postman.deliver(reports, lambda: progress.advance(task))
    verb = "sent" if send else "written"
    click.echo(
        f"{month}, {audience} e-mails: {len(outcome.done)} {verb}"
        f"{f' to {out}' if out else ''}, {len(outcome.skipped)} skipped, "
        f"{len(outcome.failed)} failed"
    )
    for name, why in outcome.skipped:
        click.secho(f"  skipped {name}: {why}", fg="yellow", err=True)
    if outcome.outdated:
        click.secho(
            f"  {len(outcome.outdated)} message(s) sent before figures changed (a recompute): "
            "--resend sends them again, the log keeps both",
            fg="yellow",
            err=True,
        )
    for name, why in outcome.failed:
        click.secho(f"  failed {name}: {why}", fg="red", err=True)
    if outcome.stopped is not None:
        raise outcome.stopped
    if outcome.failed:
        sys.exit(ExitCode.PROBLEMS)


def _months_with_jobs(ledger: Ledger, filters: Filters, shown: int = 6) -> str:
    """Which months have jobs, latest ``shown`` of them, and how to pick one."""
    months = sorted(row.key for row in ledger.summary("month", filters))
    if not months:
        return "none in any other month either"
    earlier = f" (and {len(months) - shown} earlier)" if len(months) > shown else ""
    return f"jobs are in {', '.join(months[-shown:])}{earlier}: choose one with --month YYYY-MM"
