"""``jobcarbon k8s``: the pod watcher."""

from __future__ import annotations

import sys

import click

from .common import _config, _listen_address, _report_problems


@click.group("k8s")
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
    "--once",
    is_flag=True,
    help="Sync the grid providers' hours, account the pods that have ended, write running "
    "usage, exit.",
)
@click.pass_context
def k8s_watch(
    ctx: click.Context, kubeconfig: str | None, namespace: str | None, once: bool
) -> None:
    """List and watch pods; account each GPU pod once, when it ends (a Deployment).

    \b
    Pods already in the ledger are skipped, so a restart writes nothing twice.
    The sites' grid providers are synced every kubernetes.grid_sync_interval_s
    (with --once: first).
    Probes: /healthz and /readyz on kubernetes.health_listen; health metrics
    (last contact, restarts) and running pods' usage reach `jobcarbon serve`
    through the ledger. SIGHUP reads the config again (an invalid one is
    refused with the reason in the log, and the old one kept).
    """
    from ..daemons.service import Service, start_logging
    from ..daemons.watcher import Watcher
    from ..errors import ExitCode
    from ..exporter import probe_app, serve_in_thread
    from ..ledger import open_ledger
    from ..sources.dcgm import DcgmEnergy
    from ..sources.kubernetes.api import KubeApi

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
            synced = watcher.once()
            report = watcher.report
            click.echo(
                f"accounted {report.written} pod(s), {report.unchanged} unchanged, "
                f"{watcher.running_pods} running, {watcher.problems} problem(s)"
            )
            _report_problems(report, total=watcher.problems)
            grid_errors = synced.errors if synced is not None else []
            for line in grid_errors:
                click.secho(f"  {line}", fg="red", err=True)
            if grid_errors:
                sys.exit(ExitCode.SOURCE)
            sys.exit(ExitCode.PROBLEMS if watcher.problems else ExitCode.OK)
        if settings.health_listen:
            host, port = _listen_address(settings.health_listen, "kubernetes.health_listen")
            serve_in_thread(
                probe_app({"/healthz": watcher.alive, "/readyz": watcher.ready}), host, port
            )
        service = Service(lambda: _config(ctx))
        watcher.run(service.should_stop, service.reloader)
