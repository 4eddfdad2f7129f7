"""``jobcarbon config``: check or print the site configuration."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ExitCode

if TYPE_CHECKING:
    from ..config import Config
    from ..site import SiteFactors


@click.group("config")
def config_group() -> None:
    """Check or print the site configuration."""


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.pass_context
def config_check(ctx: click.Context, path: str | None) -> None:
    """Validate a config file and report every problem at once.

    \b
    Then, warnings (exit 1): a ledger every user can read; footprints in the
    ledger computed with other site or cluster factors than the config gives now
    (with the `jobcarbon ledger recompute` that updates them); and where scontrol
    reaches a Slurm controller, what does not fit it: its ClusterName, GPU
    partitions no hardware rule names, AccountingStorageTRES without gres/gpu.
    """
    from ..access import readable_by_others
    from ..config import config_path, load_config
    from ..sources.slurm import live

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
    if not isinstance(location, Path) or location.exists():
        warnings += _outdated_footprints(config)
    settings = live.slurm_settings()
    if settings is not None:
        click.echo(f"  Slurm cluster {settings.get('ClusterName', '?')}: compared")
        warnings += live.compare(config, settings, live.gpu_partitions())
    for warning in filter(None, warnings):
        click.secho(f"  warning: {warning}", fg="yellow", err=True)
    if any(warnings):
        sys.exit(ExitCode.PROBLEMS)


def _outdated_footprints(config: Config) -> list[str]:
    """Warnings for the ledger's footprints computed with other factors than ``config``
    gives; a provider site's newer synced hours are a note, not a warning."""
    from ..errors import LedgerError
    from ..ledger import open_ledger
    from ..recompute import outdated

    try:
        with open_ledger(config, migrate=False) as ledger:
            found = outdated(ledger, config)
    except LedgerError as err:
        click.echo(f"  ledger: footprints not compared with the config ({err})")
        return []
    warnings = []
    for stale in found:
        line = (
            f"site {stale.site}, cluster {stale.cluster}: {stale.jobs:,} job(s) computed with "
            f"{'; '.join(stale.differences)}: `{stale.command}` updates them"
        )
        if stale.data_only:
            click.echo(f"  note: {line}")
        else:
            warnings.append(line)
    return warnings


def _describe_intensity(site: SiteFactors) -> str:
    from ..site import Constant, HourlySeries

    schedule = site.intensity_g_per_kwh
    if isinstance(schedule, Constant):
        return f"{schedule.value:g} gCO2e/kWh ({schedule.label})"
    assert isinstance(schedule, HourlySeries)  # intensity is never by month
    return f"hourly series {schedule.label} ({len(schedule.by_hour)} hours)"


@config_group.command("example")
def config_example() -> None:
    """Print a documented example config (every key, with its default)."""
    from importlib import resources

    click.echo(
        resources.files("jobcarbon").joinpath("data", "config.example.yaml").read_text(), nl=False
    )
