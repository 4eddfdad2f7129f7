"""``jobcarbon demo``: the whole flow on a bundled month."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import ExitCode


@click.command()
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
    from ..demo import run_demo

    report = run_demo(directory)
    if report.failed:
        sys.exit(ExitCode.PROBLEMS)
