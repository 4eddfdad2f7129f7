"""Prometheus metrics from the ledger: aggregates only, read at scrape time.

Counters come from the ledger's running totals (which ``Ledger.write`` keeps, batch
by batch, as it writes jobs), so they survive exporter restarts, equal the ledger's
sums, and a scrape costs the same whatever the number of jobs. No job id, pod name or
address is ever a label. The rendered exposition is cached until the ledger changes
(or a minute passes, for factors that vary with time), so repeated scrapes are cheap.

``spec`` lists the metrics; ``collector`` reads them from the ledger; ``exposition``
renders the text format (and gzip); ``textfile`` writes it for node_exporter; ``docs``
generates the metrics reference; ``server`` serves /metrics and the probes over HTTP,
with the TLS and basic auth of ``webconfig``.
"""

from .collector import LedgerCollector
from .docs import metrics_reference
from .exposition import Exporter
from .server import accepts_gzip, metrics_app, probe_app, serve_in_thread, serve_metrics
from .spec import METRICS, Family, MetricSpec
from .textfile import write_textfile
from .webconfig import BasicAuth, WebConfig, load_web_config

__all__ = [
    "METRICS",
    "BasicAuth",
    "Exporter",
    "Family",
    "LedgerCollector",
    "MetricSpec",
    "WebConfig",
    "accepts_gzip",
    "load_web_config",
    "metrics_app",
    "metrics_reference",
    "probe_app",
    "serve_in_thread",
    "serve_metrics",
    "write_textfile",
]
