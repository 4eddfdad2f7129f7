"""``jobcarbon factors``: the bundled factor tables."""

from __future__ import annotations

import click

from .common import _table


@click.group("factors")
def factors_group() -> None:
    """List the bundled factor tables (hardware power, grid intensity)."""


@factors_group.command("hardware")
@click.option("--search", default="", help="Only names containing TEXT (forgiving match).")
def factors_hardware(search: str) -> None:
    """GPUs, accelerators and CPUs with their TDP and source."""
    from .. import factors

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
    from .. import factors

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
    from .. import factors

    rows = [(p.provider, f"{p.pue:g}", f"{p.source} [{p.licence}]") for p in factors.provider_pue()]
    _table(["provider", "PUE", "source"], rows, f"tables {factors.version()}")
