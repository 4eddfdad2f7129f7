"""The ``jobcarbon`` command. The only place that turns errors into messages and exit codes.

Exit codes: 0 ok, 1 some records could not be accounted or some e-mails not sent
(the rest were), 2 bad config or input, 3 source failure, 4 ledger failure, 5 the
e-mails cannot be sent at all. Heavy modules are imported inside the commands so that
``jobcarbon --help`` stays fast.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from . import __version__
from .errors import JobcarbonError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JobcarbonError as err:
            click.secho(f"Error: {err}", fg="red", err=True)
            ctx.exit(err.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobcarbon")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, readable=False),  # load_config says who cannot read it
    default=None,
    help="Site config file [default: $JOBCARBON_CONFIG or /etc/jobcarbon/config.yaml].",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Energy and carbon accounting for every job on a compute cluster.

    \b
    Start here:
      jobcarbon demo                      the whole flow on a bundled month
      jobcarbon estimate --hardware "H100 SXM" --hours 100 --region FR
      jobcarbon config example > /etc/jobcarbon/config.yaml
    """
    ctx.obj = {"config_path": config_path}


def _config(ctx: click.Context) -> Any:
    from .config import load_config

    return load_config(ctx.obj["config_path"])


# --- config -------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Check or print the site configuration."""


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.pass_context
def config_check(ctx: click.Context, path: str | None) -> None:
    """Validate a config file and report every problem at once.

    \b
    Then, warnings (exit 1): a ledger every user can read, and where scontrol
    reaches a Slurm controller, what does not fit it: its ClusterName, GPU
    partitions no hardware rule names, AccountingStorageTRES without gres/gpu.
    """
    from .access import readable_by_others
    from .config import config_path, load_config
    from .sources.slurm import live

    config = load_config(path or ctx.obj["config_path"])
    where = config_path(path or ctx.obj["config_path"])
    click.echo(f"{where}: ok ({len(config.sites)} site(s), {len(config.clusters)} cluster(s))")
    for name, site in config.site_factors.items():
        click.echo(
            f"  site {name}: PUE {site.pue.at(datetime.now(UTC)):g} now, "
            f"intensity {_describe_intensity(site)}"
        )
    location = config.ledger_location()
    warnings = [readable_by_others(location)] if isinstance(location, Path) else []
    settings = live.slurm_settings()
    if settings is not None:
        click.echo(f"  Slurm cluster {settings.get('ClusterName', '?')}: compared")
        warnings += live.compare(config, settings, live.gpu_partitions())
    for warning in filter(None, warnings):
        click.secho(f"  warning: {warning}", fg="yellow", err=True)
    if any(warnings):
        sys.exit(1)


def _describe_intensity(site: Any) -> str:
    schedule = site.intensity_g_per_kwh
    if schedule.is_constant:
        return f"{schedule.value:g} gCO2e/kWh ({schedule.label})"
    return f"hourly series {schedule.label} ({len(schedule.by_hour)} hours)"


@config_group.command("example")
def config_example() -> None:
    """Print a documented example config (every key, with its default)."""
    from importlib import resources

    click.echo(
        resources.files("jobcarbon").joinpath("data", "config.example.yaml").read_text(), nl=False
    )


# --- factors ------------------------------------------------------------------------------


@main.group("factors")
def factors_group() -> None:
    """List the bundled factor tables (hardware power, grid intensity)."""


@factors_group.command("hardware")
@click.option("--search", default="", help="Only names containing TEXT (forgiving match).")
def factors_hardware(search: str) -> None:
    """GPUs, accelerators and CPUs with their TDP and source."""
    from . import factors

    rows = [
        (
            h.name,
            h.kind,
            f"{h.tdp_w:g}",
            "yes" if h.in_seed_calculator else "",
            f"{h.source} [{h.licence}]",
        )
        for h in factors.search_hardware(search)
    ]
    _table(["name", "kind", "TDP W", "seed", "source"], rows, f"tables {factors.version()}")


@factors_group.command("regions")
@click.option("--search", default="", help="Only keys or names containing TEXT.")
@click.option("--dataset", default=None, help="Only this vintage (current, mlco2-impact-2019).")
def factors_regions(search: str, dataset: str | None) -> None:
    """Grid carbon intensity by country, US state, bidding zone and cloud region."""
    from . import factors

    rows = [
        (
            r.vintage,
            r.key,
            r.name,
            f"{r.intensity_g_per_kwh:g}",
            str(r.year),
            f"{r.source} [{r.licence}]",
        )
        for r in factors.search_regions(search, dataset)
    ]
    _table(
        ["dataset", "key", "name", "gCO2e/kWh", "year", "source"],
        rows,
        f"tables {factors.version()}",
    )


@factors_group.command("pue")
def factors_pue() -> None:
    """Default PUE per cloud provider and the industry average, for sites that measure none."""
    from . import factors

    rows = [(p.provider, f"{p.pue:g}", f"{p.source} [{p.licence}]") for p in factors.provider_pue()]
    _table(["provider", "PUE", "source"], rows, f"tables {factors.version()}")


def _table(headers: list[str], rows: Sequence[Sequence[str]], caption: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, caption=caption)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


# --- estimate -----------------------------------------------------------------------------


@main.command()
@click.option(
    "--hardware", help='Device name from `jobcarbon factors hardware` ("V100", "H100 SXM").'
)
@click.option("--tdp-w", type=float, help="Or: the device's power in watts.")
@click.option("--count", type=int, help="Number of devices [default: 1 with --hours].")
@click.option(
    "--hours",
    type=float,
    help="Hours each device ran; with one device, the total device-hours a paper reports.",
)
@click.option(
    "--device-hours",
    type=float,
    help="Or: total device-hours (GPU-hours) as papers and model cards publish them.",
)
@click.option("--region", help="Region key (FR, US-CA, aws:us-east-1, gcp:europe-west1).")
@click.option("--intensity-g-per-kwh", type=float, help="Or: grid intensity in gCO2e/kWh.")
@click.option(
    "--dataset",
    default="current",
    show_default=True,
    help="Region table vintage; mlco2-impact-2019 reproduces the seed calculator.",
)
@click.option("--pue", type=float, default=1.0, show_default=True, help="Data-centre PUE.")
@click.option(
    "--utilization",
    type=float,
    default=1.0,
    show_default=True,
    help="Average device utilisation, 0 to 1.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--latex", is_flag=True, help="A paper-ready LaTeX statement.")
@click.option("--markdown", is_flag=True, help="A paper-ready Markdown statement.")
def estimate(
    hardware: str | None,
    tdp_w: float | None,
    count: int | None,
    hours: float | None,
    device_hours: float | None,
    region: str | None,
    intensity_g_per_kwh: float | None,
    dataset: str,
    pue: float,
    utilization: float,
    as_json: bool,
    latex: bool,
    markdown: bool,
) -> None:
    """Energy and emissions of a run: the seed paper's calculator (TDP × hours × grid).

    \b
    A paper's published figure, as published (Llama 2 7B's model card):
      jobcarbon estimate --tdp-w 400 --device-hours 184320 --pue 1.1 \\
          --intensity-g-per-kwh 385
    """
    from . import estimate as calc

    if sum([as_json, latex, markdown]) > 1:
        raise click.UsageError("choose one of --json, --latex, --markdown")
    result = calc.estimate(
        hardware=hardware,
        tdp_w=tdp_w,
        count=count,
        hours=hours,
        device_hours=device_hours,
        region=region,
        intensity_g_per_kwh=intensity_g_per_kwh,
        dataset=dataset,
        pue=pue,
        utilization=utilization,
    )
    if as_json:
        click.echo(result.to_json())
    elif latex:
        click.echo(calc.render_latex(result))
    elif markdown:
        click.echo(calc.render_markdown(result))
    else:
        click.echo(calc.render_text(result))


# --- ledger outputs -----------------------------------------------------------------------


def _month(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        datetime.strptime(value, "%Y-%m")
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a month like 2026-10") from None
    return value


def _open_ledger(ctx: click.Context) -> Any:
    from .ledger import open_ledger

    return open_ledger(_config(ctx), migrate=False)


@main.command()
@click.option(
    "--by",
    type=click.Choice(
        ["user", "project", "cluster", "partition", "gpu_model", "state", "month", "site", "method"]
    ),
    default="project",
    show_default=True,
)
@click.option("--month", callback=lambda c, p, v: _month(v), help="YYYY-MM (UTC, by job end).")
@click.option("--cluster", help="Only this cluster.")
@click.option("--user", help="Only this user.")
@click.option("--project", help="Only this project.")
@click.pass_context
def summary(
    ctx: click.Context,
    by: str,
    month: str | None,
    cluster: str | None,
    user: str | None,
    project: str | None,
) -> None:
    """A table of jobs, GPU-hours, energy and emissions, grouped by one dimension."""
    from .ledger import Filters

    filters = Filters(month=month, cluster=cluster, user=user, project=project)
    with _open_ledger(ctx) as ledger:
        rows = ledger.summary(by, filters)
        total = ledger.totals(filters)
    _summary_table(by, rows, total, f"month {month}" if month else "all time")


def _summary_table(by: str, rows: list[Any], total: Any, caption: str) -> None:
    from .quantity import co2e, co2e_range, energy, significant

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


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-10-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--since", callback=lambda c, p, v: _date(v), help="Jobs ending at or after (UTC).")
@click.option("--until", callback=lambda c, p, v: _date(v), help="Jobs ending before (UTC).")
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
    """Stream job rows with their footprint and the factors version used.

    A reader that stops early (``| head``) ends the export quietly, with exit code
    141 as a command killed by SIGPIPE has.
    """
    import contextlib
    import os
    import signal

    from .export import write_csv, write_json
    from .ledger import Filters

    filters = Filters(since=since, until=until, user=user, project=project, cluster=cluster)
    writer = write_csv if fmt == "csv" else write_json
    with _open_ledger(ctx) as ledger, contextlib.closing(ledger.jobs(filters)) as rows:
        try:
            count = writer(rows, output)
            output.flush()
        except BrokenPipeError:
            # nothing more can be written: point stdout at /dev/null so that Python's
            # own flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
    click.echo(f"exported {count} job(s)", err=True)


# --- monthly reports ----------------------------------------------------------------------


@main.group("report")
def report_group() -> None:
    """Monthly e-mails to every user and every project lead."""


@report_group.command("monthly")
@click.option(
    "--month",
    callback=lambda c, p, v: _month(v),
    help="YYYY-MM (UTC, by job end) [default: last month].",
)
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

    from .ledger import Filters
    from .mail import AddressBook, Composer, Postman, SmtpSender
    from .report import Audience, monthly_reports, previous_month

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
    for name, why in outcome.failed:
        click.secho(f"  failed {name}: {why}", fg="red", err=True)
    if outcome.stopped is not None:
        click.secho(f"Error: {outcome.stopped}", fg="red", err=True)
        sys.exit(outcome.stopped.exit_code)
    if outcome.failed:
        sys.exit(1)


def _months_with_jobs(ledger: Any, filters: Any, shown: int = 6) -> str:
    """Which months have jobs, latest ``shown`` of them, and how to pick one."""
    months = sorted(row.key for row in ledger.summary("month", filters))
    if not months:
        return "none in any other month either"
    earlier = f" (and {len(months) - shown} earlier)" if len(months) > shown else ""
    return f"jobs are in {', '.join(months[-shown:])}{earlier}: choose one with --month YYYY-MM"


# --- ledger maintenance -------------------------------------------------------------------


@main.group("ledger")
def ledger_group() -> None:
    """Ledger maintenance."""


@ledger_group.command("migrate")
@click.pass_context
def ledger_migrate(ctx: click.Context) -> None:
    """Create the ledger or bring its schema up to date."""
    from .ledger import open_ledger

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
    Every job (its running totals follow), watermark, ingest error count, gauge
    and e-mail log entry. Safe to run again: jobs already there are left as
    they are. A PostgreSQL password comes from $JOBCARBON_LEDGER_PASSWORD.
    Stop the writers (collector, watcher) first, or run it again after.
    """
    import os

    from rich.progress import Progress

    from .config import ledger_location
    from .ledger import Ledger, copy_ledger

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
        click.secho(
            "Error: the target's counts or totals differ from the source's "
            "(it held other jobs before, or a writer was running)",
            fg="red",
            err=True,
        )
        sys.exit(1)
    click.echo("  counts and totals identical")


# --- metrics ------------------------------------------------------------------------------


def _exporter(ctx: click.Context) -> Any:
    from .exporter import Exporter, LedgerCollector

    config = _config(ctx)
    return Exporter(LedgerCollector(config.ledger_location(), config))


def _listen_address(address: str, option: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter(f"{address!r} is not host:port", param_hint=option)
    return host or "0.0.0.0", int(port)


@main.command()
@click.option(
    "--listen",
    help="host:port to serve on [default: exporter.listen in the config, 127.0.0.1:9877].",
)
@click.option(
    "--web.config.file",
    "web_config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TLS and basic auth, in the Prometheus exporter-toolkit's format "
    "(tls_server_config: cert_file, key_file; basic_auth_users: user: bcrypt hash).",
)
@click.pass_context
def serve(ctx: click.Context, listen: str | None, web_config_file: Path | None) -> None:
    """Serve Prometheus metrics from the ledger (GET /metrics; GET /healthz fails while
    scrapes cannot read the ledger)."""
    from .daemons.service import start_logging
    from .server import serve_metrics
    from .webconfig import WebConfig, load_web_config

    start_logging()
    web = load_web_config(web_config_file) if web_config_file else WebConfig()
    exporter = _exporter(ctx)
    host, port = _listen_address(listen or _config(ctx).exporter.listen, "--listen")
    serve_metrics(exporter, host, port, web.tls, web.auth())


@main.command()
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the metrics to this file atomically (node_exporter textfile "
    "collector); otherwise print them.",
)
@click.option("--docs", is_flag=True, help="Print the metrics reference (docs/metrics.md).")
@click.pass_context
def metrics(ctx: click.Context, textfile: Path | None, docs: bool) -> None:
    """Print or write the Prometheus metrics once, or their reference."""
    if docs:
        from .exporter import metrics_reference

        click.echo(metrics_reference(), nl=False)
        return
    exporter = _exporter(ctx)
    if textfile is None:
        click.echo(exporter.render().decode(), nl=False)
        return
    from .exporter import write_textfile

    try:
        write_textfile(exporter, textfile)
    except OSError as err:
        from .access import describe
        from .errors import JobcarbonError

        raise JobcarbonError(describe(textfile, "write the metrics to", err)) from err


# --- kubernetes ---------------------------------------------------------------------------


@main.group("k8s")
def k8s_group() -> None:
    """Account Kubernetes pods: the pod watcher."""


@k8s_group.command("watch")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True),
    help="Client config file [default: in-cluster when deployed, else $KUBECONFIG or "
    "~/.kube/config].",
)
@click.option(
    "--namespace",
    help="Watch this namespace only [default: kubernetes.namespaces in the config, else all].",
)
@click.option(
    "--once", is_flag=True, help="Account the pods that have ended, write running usage, exit."
)
@click.pass_context
def k8s_watch(
    ctx: click.Context, kubeconfig: str | None, namespace: str | None, once: bool
) -> None:
    """List and watch pods; account each GPU pod once, when it ends (a Deployment).

    \b
    Pods already in the ledger are skipped, so a restart writes nothing twice.
    Probes: /healthz and /readyz on kubernetes.health_listen; health metrics
    (last contact, restarts) and running pods' usage reach `jobcarbon serve`
    through the ledger. SIGHUP reads the config again (an invalid one is
    refused with the reason in the log, and the old one kept).
    """
    from .daemons.service import Service, start_logging
    from .daemons.watcher import Watcher
    from .errors import ExitCode
    from .ledger import open_ledger
    from .server import probe_app, serve_in_thread
    from .sources.dcgm import DcgmEnergy
    from .sources.kubernetes.api import KubeApi

    start_logging()
    config = _config(ctx)
    settings = config.kubernetes
    scope = namespace or (settings.namespaces[0] if len(settings.namespaces) == 1 else None)
    api = KubeApi(
        kubeconfig,
        scope,
        settings.list_page_size,
        settings.watch_timeout_s,
        settings.read_timeout_s,
    )
    energy = (
        DcgmEnergy(
            settings.prometheus_url,
            settings.dcgm_energy_metric,
            settings.prometheus_timeout_s,
            settings.dcgm_min_coverage,
            settings.dcgm_pod_labels,
            settings.dcgm_utilization_metric,
        )
        if settings.prometheus_url
        else None
    )
    with open_ledger(config) as ledger:
        watcher = Watcher(config, ledger, api, energy, namespace=namespace)
        if once:
            watcher.once()
            report = watcher.report
            click.echo(
                f"accounted {report.written} pod(s), {report.unchanged} unchanged, "
                f"{watcher.running_pods} running, {watcher.problems} problem(s)"
            )
            _report_problems(report, total=watcher.problems)
            sys.exit(ExitCode.PROBLEMS if watcher.problems else ExitCode.OK)
        if settings.health_listen:
            host, port = _listen_address(settings.health_listen, "kubernetes.health_listen")
            serve_in_thread(
                probe_app({"/healthz": watcher.alive, "/readyz": watcher.ready}), host, port
            )
        service = Service(lambda: _config(ctx))
        watcher.run(service.should_stop, service.reloader)


# --- slurm --------------------------------------------------------------------------------


@main.group("slurm")
def slurm_group() -> None:
    """Account Slurm jobs: the collector, backfill and import of sacct dumps."""


def _report_problems(report: Any, limit: int = 20, total: int | None = None) -> None:
    """The first ``limit`` problems, and how many more (of ``total``, if not all kept)."""
    for problem in report.problems[:limit]:
        click.secho(f"  {problem}", fg="yellow", err=True)
    failed = report.failed if total is None else total
    if failed > limit:
        click.secho(f"  ... and {failed - limit} more", fg="yellow", err=True)


def _collector(ctx: click.Context, ledger: Any) -> Any:
    from .daemons.collector import Collector
    from .sources.slurm.runner import open_accounting
    from .sources.slurm.spool import Spool

    config = _config(ctx)
    spool = Spool(config.slurm.spool_dir)
    spool.create()
    return Collector(config, ledger, open_accounting(config.slurm), spool)


@slurm_group.command("collect")
@click.option("--once", is_flag=True, help="Process what is pending, sweep once, and exit.")
@click.pass_context
def slurm_collect(ctx: click.Context, once: bool) -> None:
    """Drain the epilog's spool and sweep accounting into the ledger (a service).

    \b
    SIGHUP (systemctl reload) reads the config again; one that is not valid
    is refused with the reason in the log, and the old one is kept.
    """
    from .daemons.service import Service, start_logging
    from .errors import ExitCode
    from .ledger import open_ledger

    start_logging()
    with open_ledger(_config(ctx)) as ledger:
        collector = _collector(ctx, ledger)
        if not once:
            service = Service(lambda: _config(ctx))
            collector.run_forever(service.should_stop, service.reloader)
            return
        report = collector.collect_once()
    click.echo(
        f"accounted {report.accounted.written} job(s), {report.accounted.unchanged} "
        f"unchanged, {report.pending} pending, {report.accounted.failed} problem(s), "
        f"{len(report.given_up)} given up"
    )
    _report_problems(report.accounted)
    for line in [*report.given_up, *report.errors]:
        click.secho(f"  {line}", fg="red", err=True)
    if report.errors:
        sys.exit(ExitCode.SOURCE)
    if report.accounted.failed or report.given_up:
        sys.exit(ExitCode.PROBLEMS)


@slurm_group.command("backfill")
@click.option(
    "--since",
    required=True,
    callback=lambda c, p, v: _date(v),
    help="First day to read (UTC), e.g. 2025-01-01.",
)
@click.option(
    "--until", callback=lambda c, p, v: _date(v), help="Stop before this day (UTC) [default: now]."
)
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

    from .daemons.backfill import Backfill
    from .errors import ExitCode
    from .ledger import open_ledger

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

    from .accounting import Accountant, IngestReport, ingest_on_two_cores
    from .ledger import open_ledger
    from .sources.slurm.parsable import open_dump
    from .sources.slurm.sacct import read_parsable

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
                open_dump(source), cluster=cluster, attributions=config.attributions, source=name
            ),
            Accountant(config),
            ledger,
            on_batch=advance,
        )
    click.echo(
        f"imported {report.written} job(s), {report.unchanged} unchanged, "
        f"{report.repaired} line(s) repaired, {report.failed} problem(s)"
    )
    _report_problems(report)
    if report.failed:
        sys.exit(1)


@slurm_group.command("sacct-format")
def slurm_sacct_format() -> None:
    """Print the sacct command whose output `jobcarbon slurm import` reads."""
    from .sources.slurm.fields import DELIMITER, SACCT_FIELDS

    click.echo(
        f"TZ=UTC sacct --parsable2 --delimiter='{DELIMITER}' --allusers --duplicates "
        f"--format={','.join(SACCT_FIELDS)} --starttime=2025-01-01 --endtime=now "
        "--state=CA,CD,DL,F,NF,OOM,PR,RQ,TO,BF > jobs.txt"
    )


# --- demo ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Where to put the demo's config and ledger (replaced if it exists).",
)
def demo(directory: Path) -> None:
    """Account a bundled month of a fictional GPU cluster and show what comes out."""
    from .demo import run_demo

    report = run_demo(directory)
    if report.failed:
        sys.exit(1)


# --- researchers: statement, job (their own module) -----------------------------------

from .research_cli import job, statement  # noqa: E402  (registered once main exists)

main.add_command(statement)
main.add_command(job)


if __name__ == "__main__":
    main()
