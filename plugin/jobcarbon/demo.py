"""``jobcarbon demo``: the whole flow on a bundled month of a fictional GPU cluster.

It copies the example config into a fresh directory, imports the bundled
``sacct --parsable2`` month into a new ledger there, with a progress bar, and
prints where the energy and the emissions went.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from .accounting import Accountant, IngestReport, ingest
from .config import load_config
from .ledger import Filters, SummaryRow, open_ledger
from .quantity import co2e, co2e_range, energy, percent, significant
from .sources.slurm.sacct import read_parsable

DEMO_MONTH = "2026-10"
DEMO_FILE = f"sacct-{DEMO_MONTH}.txt"
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)


def run_demo(directory: Path, console: Console | None = None) -> IngestReport:
    console = console or Console()
    data = resources.files("jobcarbon").joinpath("data")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    config_file = directory / "config.yaml"
    example = data.joinpath("config.example.yaml").read_text(encoding="utf-8")
    # the example's ledger is a service's, in /var/lib/jobcarbon; the demo's is its own
    config_file.write_text(
        example.replace("url: sqlite:////var/lib/jobcarbon/ledger.db", "url: sqlite:///ledger.db")
    )
    sacct_lines = data.joinpath("demo", DEMO_FILE).read_text(encoding="utf-8").splitlines()
    config = load_config(config_file)
    cluster = next(iter(config.clusters))

    console.print(
        f"[bold]jobcarbon demo[/]: one month ({DEMO_MONTH}) of the fictional GPU "
        f"cluster [bold]{cluster}[/], {len(sacct_lines) - 1:,} sacct rows"
    )
    console.print(f"config: {config_file}   ledger: {config.ledger_location()}\n")
    records = read_parsable(
        sacct_lines,
        cluster=cluster,
        clusters=config.clusters,
        source=DEMO_FILE,
    )
    with open_ledger(config) as ledger:
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            jobs = sum(1 for line in sacct_lines[1:] if "." not in line.split("|", 2)[1])
            task = progress.add_task("import", total=jobs)
            report = ingest(
                records,
                Accountant(config),
                ledger,
                batch_size=500,
                on_batch=lambda r: progress.update(task, completed=r.seen),
            )
        console.print(f"accounted {report.written:,} jobs, {report.failed} problem(s)")
        for problem in report.problems:
            console.print(f"  [red]{problem}[/]")
        month = Filters(month=DEMO_MONTH)
        total = ledger.totals(month)
        _show(console, "By project", "project", ledger.summary("project", month), total)
        _show(console, "Top 10 users", "user", ledger.summary("user", month)[:10], total)
        _show(console, "By GPU model", "gpu_model", ledger.summary("gpu_model", month), total)
        _show(
            console,
            "By final state (failed work still cost energy)",
            "state",
            ledger.summary("state", month),
            total,
        )

    site = config.site_factors[config.clusters[cluster].site]
    console.print(
        f"\nTotal {DEMO_MONTH}: {co2e(total.co2e_kg)} CO2e "
        f"(likely {co2e_range(total.co2e_kg_low, total.co2e_kg_high)}) from "
        f"{energy(total.energy_kwh)} at site {site.name} (grid {site.region_key}, "
        f"{site.intensity_g_per_kwh.at(MONTH_START):g} gCO2e/kWh). "
        "H100 jobs use the nodes' measured energy; the rest are TDP estimates.\n"
    )
    prefix = f"jobcarbon --config {config_file}"
    console.print("Try next:")
    console.print(f"  {prefix} summary --by user --month {DEMO_MONTH}")
    console.print(f"  {prefix} export --format csv --project llm-pretrain -o llm.csv")
    console.print(
        '  jobcarbon estimate --hardware "A100 SXM4 80 GB" --count 8 --hours 72 --region DE'
    )
    console.print(
        f"  {prefix} serve      (Prometheus metrics on 127.0.0.1:9877/metrics; "
        "Grafana dashboards in dashboards/)"
    )
    console.print(
        f"  {prefix} report monthly --month {DEMO_MONTH} --out {directory / 'mail'}"
        "   (each user's e-mail, to open in a browser)"
    )
    return report


def _show(console: Console, title: str, by: str, rows: list[SummaryRow], total: SummaryRow) -> None:
    table = Table(by, "jobs", "GPU-h", "energy", "CO2e", "share", title=title, title_justify="left")
    for row in rows:
        share = row.co2e_kg / total.co2e_kg if total.co2e_kg else 0.0
        table.add_row(
            row.key,
            f"{row.jobs:,}",
            significant(row.gpu_hours),
            str(energy(row.energy_kwh)),
            str(co2e(row.co2e_kg)),
            f"{percent(100 * share)}%",
        )
    console.print(table)
