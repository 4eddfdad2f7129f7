"""``jobcarbon serve`` and ``jobcarbon metrics``: the Prometheus metrics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import JobcarbonError
from .common import _config, _listen_address

if TYPE_CHECKING:
    from ..exporter import Exporter


def _exporter(ctx: click.Context) -> Exporter:
    from ..exporter import Exporter, LedgerCollector

    config = _config(ctx)
    return Exporter(LedgerCollector(config.ledger_location(), config))


@click.command()
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
    from ..daemons.service import start_logging
    from ..exporter import WebConfig, load_web_config, serve_metrics

    start_logging()
    web = load_web_config(web_config_file) if web_config_file else WebConfig()
    exporter = _exporter(ctx)
    host, port = _listen_address(listen or _config(ctx).exporter.listen, "--listen")
    serve_metrics(exporter, host, port, web.tls, web.auth())


@click.command()
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
        from ..exporter import metrics_reference

        click.echo(metrics_reference(), nl=False)
        return
    exporter = _exporter(ctx)
    if textfile is None:
        click.echo(exporter.render().decode(), nl=False)
        return
    from ..exporter import write_textfile

    try:
        write_textfile(exporter, textfile)
    except OSError as err:
        from ..access import describe

        raise JobcarbonError(describe(textfile, "write the metrics to", err)) from err
