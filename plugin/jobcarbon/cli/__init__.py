"""The ``jobcarbon`` command: the main group, and the one place that turns errors into
messages (``Error: <message>`` on stderr) and exit codes (``errors.ExitCode``: 0 ok, 1
some records, recipients or checks had problems, 2 bad config or input, 3 source
failure, 4 ledger failure, 5 the e-mails cannot be sent at all).

One module per command group; they share ``common``. Heavy modules are imported inside
the commands so that ``jobcarbon --help`` stays fast.
"""

from __future__ import annotations

import click

from .. import __version__
from ..errors import JobcarbonError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
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


from .config import config_group  # noqa: E402  (the groups register once main exists)
from .demo import demo  # noqa: E402
from .estimate import estimate  # noqa: E402
from .factors import factors_group  # noqa: E402
from .grid import grid_group  # noqa: E402
from .k8s import k8s_group  # noqa: E402
from .ledger import ledger_group  # noqa: E402
from .metrics import metrics, serve  # noqa: E402
from .report import report_group  # noqa: E402
from .research import job, statement  # noqa: E402
from .slurm import slurm_group  # noqa: E402
from .summary import export, summary  # noqa: E402

for command in (
    config_group,
    factors_group,
    estimate,
    grid_group,
    summary,
    export,
    report_group,
    ledger_group,
    serve,
    metrics,
    k8s_group,
    slurm_group,
    demo,
    statement,
    job,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
