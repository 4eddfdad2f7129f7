"""Prometheus metrics from the ledger: aggregates only, read at scrape time.

Counters come from the ledger's running totals (kept by triggers as jobs are
written), so they survive exporter restarts, equal the ledger's sums, and a scrape
costs the same whatever the number of jobs. No job id, pod name or address is ever
a label. The rendered exposition is cached until the ledger changes (or a minute
passes, for factors that vary with time), so repeated scrapes are cheap.

A ledger that is missing, locked or from a newer schema makes the scrape answer
``jobcarbon_ledger_up 0`` (and count the error, and log it) rather than fail.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import __version__
from .config import Config
from .errors import FactorError, LedgerError
from .footprint import J_PER_KWH
from .ledger import Aggregate, Ledger

log = logging.getLogger("jobcarbon.exporter")

JOB_LABELS = ("cluster", "user", "project", "partition", "gpu_model", "state", "method")
RERENDER_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: str
    unit: str
    labels: tuple[str, ...]
    help: str


METRICS = (
    MetricSpec(
        "jobcarbon_jobs_total",
        "counter",
        "jobs",
        JOB_LABELS,
        "Jobs accounted (each job once, whatever its state).",
    ),
    MetricSpec(
        "jobcarbon_gpu_seconds_total",
        "counter",
        "seconds",
        JOB_LABELS,
        "Allocated GPU time: GPUs x run time.",
    ),
    MetricSpec(
        "jobcarbon_cpu_seconds_total",
        "counter",
        "seconds",
        JOB_LABELS,
        "Allocated CPU time: cores x run time.",
    ),
    MetricSpec(
        "jobcarbon_energy_joules_total",
        "counter",
        "joules",
        (*JOB_LABELS, "component"),
        "Energy by component: gpu, cpu, memory (IT energy) and facility_overhead "
        "(IT energy x (PUE - 1)); the sum over components is facility energy.",
    ),
    MetricSpec(
        "jobcarbon_co2e_grams_total",
        "counter",
        "grams",
        (*JOB_LABELS, "scope"),
        "Emissions in grams CO2e; scope=operational (electricity x grid intensity).",
    ),
    MetricSpec(
        "jobcarbon_pue_ratio",
        "gauge",
        "ratio",
        ("cluster", "site"),
        "PUE in use now for the cluster's site.",
    ),
    MetricSpec(
        "jobcarbon_grid_intensity_grams_per_kilowatt_hour",
        "gauge",
        "grams per kilowatt-hour",
        ("cluster", "site"),
        "Grid carbon intensity in use now for the cluster's site (gCO2e/kWh).",
    ),
    MetricSpec(
        "jobcarbon_last_job_end_timestamp_seconds",
        "gauge",
        "seconds",
        ("cluster",),
        "End time of the latest job accounted (Unix time).",
    ),
    MetricSpec(
        "jobcarbon_ingest_pending_jobs",
        "gauge",
        "jobs",
        ("source",),
        "Jobs a collector has seen end but could not account yet.",
    ),
    MetricSpec(
        "jobcarbon_ingest_errors_total",
        "counter",
        "records",
        ("stage",),
        "Records that could not be accounted, by stage: parse (unreadable accounting "
        "line), account (unknown hardware, impossible record), sacct (a failed call).",
    ),
    MetricSpec(
        "jobcarbon_ledger_up",
        "gauge",
        "boolean",
        (),
        "1 if the last scrape could read the ledger, 0 otherwise.",
    ),
    MetricSpec(
        "jobcarbon_ledger_errors_total",
        "counter",
        "scrapes",
        (),
        "Scrapes that could not read the ledger (missing, locked, newer schema).",
    ),
    MetricSpec(
        "jobcarbon_build_info",
        "gauge",
        "info",
        ("version",),
        "Always 1; the jobcarbon version serving the metrics.",
    ),
)
_SPEC = {spec.name: spec for spec in METRICS}


Series = tuple[tuple[str, ...], float]  # label values (in the spec's order), value


@dataclass(slots=True)
class Family:
    """One metric's samples for one scrape, before they are rendered."""

    spec: MetricSpec
    series: list[Series]


def _merge_users(rows: list[Aggregate]) -> list[Aggregate]:
    """The same totals with ``user`` dropped (summed over users)."""
    merged: dict[tuple[str, ...], Aggregate] = {}
    for row in rows:
        key = (row.cluster, row.project, row.partition, row.gpu_model, row.state, row.method)
        previous = merged.get(key)
        merged[key] = replace(row, user="") if previous is None else previous.plus(row)
    return list(merged.values())


class LedgerCollector:
    """A Prometheus collector over a ledger file: reads the ledger's totals per scrape."""

    def __init__(
        self, ledger_path: Path, config: Config, clock: Callable[[], float] = time.time
    ) -> None:
        self.ledger_path = ledger_path
        self.config = config
        self.clock = clock
        self.ledger_errors = 0
        self._ledger: Ledger | None = None

    def _open(self) -> Ledger:
        if self._ledger is None:
            # a scrape must answer within Prometheus' timeout: wait little for a lock
            self._ledger = Ledger(self.ledger_path, migrate=False, busy_timeout_s=1.0)
        return self._ledger

    def data_version(self) -> tuple[int, int] | None:
        try:
            return self._open().data_version()
        except LedgerError:
            return None

    def snapshot(self) -> list[Family]:
        """Every metric's series now. Never raises for a broken ledger: ledger_up says so."""
        families = [Family(_SPEC["jobcarbon_build_info"], [((__version__,), 1.0)])]
        try:
            ledger = self._open()
            rows = ledger.aggregates()
            errors = ledger.ingest_errors()
            gauges = ledger.gauges()
        except LedgerError as err:
            self.ledger_errors += 1
            log.error("scrape cannot read the ledger: %s", err)
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            return families + self._health(up=False)
        if self.config.exporter.drop_user_label:
            rows = _merge_users(rows)
        families += self._health(up=True) + self._job_families(rows) + self._factor_families()
        families.append(
            Family(
                _SPEC["jobcarbon_ingest_errors_total"],
                [
                    ((stage,), float(errors.get(stage, 0)))
                    for stage in ("parse", "account", "sacct")
                ],
            )
        )
        families.append(
            Family(
                _SPEC["jobcarbon_ingest_pending_jobs"],
                [
                    ((name.removesuffix(".pending_jobs"),), value)
                    for name, value in sorted(gauges.items())
                    if name.endswith(".pending_jobs")
                ],
            )
        )
        return families

    def collect(self) -> Iterator[Metric]:
        """The snapshot as prometheus_client metric families (for a ``CollectorRegistry``)."""
        for family in self.snapshot():
            spec = family.spec
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            base = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
            metric = cls(base, spec.help, labels=list(spec.labels))
            for labels, value in family.series:
                metric.add_metric(list(labels), value)
            yield metric

    def _health(self, up: bool) -> list[Family]:
        return [
            Family(_SPEC["jobcarbon_ledger_up"], [((), 1.0 if up else 0.0)]),
            Family(_SPEC["jobcarbon_ledger_errors_total"], [((), float(self.ledger_errors))]),
        ]

    def _job_families(self, rows: list[Aggregate]) -> list[Family]:
        jobs: list[Series] = []
        gpu: list[Series] = []
        cpu: list[Series] = []
        energy: list[Series] = []
        co2e: list[Series] = []
        last_end: dict[str, int] = {}
        for row in rows:
            labels = (
                row.cluster,
                row.user,
                row.project,
                row.partition,
                row.gpu_model,
                row.state,
                row.method,
            )
            jobs.append((labels, float(row.jobs)))
            gpu.append((labels, row.gpu_seconds))
            cpu.append((labels, row.cpu_seconds))
            it_kwh = row.energy_gpu_kwh + row.energy_cpu_kwh + row.energy_memory_kwh
            energy += [
                ((*labels, "gpu"), row.energy_gpu_kwh * J_PER_KWH),
                ((*labels, "cpu"), row.energy_cpu_kwh * J_PER_KWH),
                ((*labels, "memory"), row.energy_memory_kwh * J_PER_KWH),
                ((*labels, "facility_overhead"), (row.energy_facility_kwh - it_kwh) * J_PER_KWH),
            ]
            co2e.append(((*labels, "operational"), row.co2e_g))
            last_end[row.cluster] = max(last_end.get(row.cluster, 0), row.last_end_time)
        names = (
            "jobcarbon_jobs_total",
            "jobcarbon_gpu_seconds_total",
            "jobcarbon_cpu_seconds_total",
            "jobcarbon_energy_joules_total",
            "jobcarbon_co2e_grams_total",
        )
        families = [
            Family(_SPEC[n], s) for n, s in zip(names, (jobs, gpu, cpu, energy, co2e), strict=True)
        ]
        families.append(
            Family(
                _SPEC["jobcarbon_last_job_end_timestamp_seconds"],
                [((cluster,), float(stamp)) for cluster, stamp in sorted(last_end.items())],
            )
        )
        return families

    def _factor_families(self) -> list[Family]:
        pue: list[Series] = []
        intensity: list[Series] = []
        now = datetime.fromtimestamp(self.clock(), UTC)
        for cluster_name, cluster in self.config.clusters.items():
            site = self.config.site_factors[cluster.site]
            pue.append(((cluster_name, site.name), site.pue.at(now)))
            try:
                intensity.append(((cluster_name, site.name), site.intensity_g_per_kwh.at(now)))
            except FactorError as err:
                log.warning("no grid intensity for now: %s", err)
        return [
            Family(_SPEC["jobcarbon_pue_ratio"], pue),
            Family(_SPEC["jobcarbon_grid_intensity_grams_per_kilowatt_hour"], intensity),
        ]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exporter:
    """Renders the text exposition, again only when the ledger changed or a minute passed.

    It writes the text itself rather than through prometheus_client's
    ``generate_latest``, which re-validates every label name of every sample (about a
    second for 5,000 label sets here); label names are fixed in ``METRICS``, and the
    escaped label sets are kept between scrapes, since they rarely change.
    """

    def __init__(
        self, collector: LedgerCollector, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.collector = collector
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int] | None, float, bytes] | None = None
        self._label_text: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}

    def render(self) -> bytes:
        with self._lock:
            version = self.collector.data_version()
            now = self.clock()
            if (
                self._cached is not None
                and version is not None
                and self._cached[0] == version
                and now - self._cached[1] < RERENDER_AFTER_S
            ):
                return self._cached[2]
            body = self._text(self.collector.snapshot())
            self._cached = (version, now, body) if version is not None else None
            return body

    def _labels(self, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        key = (names, values)
        text = self._label_text.get(key)
        if text is None:
            if len(self._label_text) > 1_000_000:
                self._label_text.clear()
            inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
            text = self._label_text[key] = f"{{{inner}}}" if inner else ""
        return text

    def _text(self, families: list[Family]) -> bytes:
        out: list[str] = []
        for family in families:
            spec = family.spec
            out.append(f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.type}\n")
            out += [
                f"{spec.name}{self._labels(spec.labels, labels)} {value!r}\n"
                for labels, value in family.series
            ]
        return "".join(out).encode()


def write_textfile(exporter: Exporter, path: Path) -> None:
    """Write the exposition for node_exporter's textfile collector, atomically."""
    body = exporter.render()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def metrics_reference() -> str:
    """The metrics reference (docs/metrics.md), generated from ``METRICS``."""
    lines = [
        "# jobcarbon metrics",
        "",
        "Generated from `plugin/jobcarbon/exporter.py` by `jobcarbon metrics --docs`; do not edit.",
        "",
        "| metric | type | unit | labels | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "none"
        lines.append(f"| `{spec.name}` | {spec.type} | {spec.unit} | {labels} | {spec.help} |")
    lines += [
        "",
        "Label values: `state` is the job's final state (completed, failed, "
        "cancelled, timeout, out_of_memory, node_fail, preempted, requeued, boot_fail, "
        "deadline); `method` is measured, mixed or estimated; `gpu_model` is empty for "
        "jobs without GPUs. With `exporter.drop_user_label: true` every `user` label is "
        "empty (its series summed). A job belongs to the series of its final labels; a "
        "re-accounted job moves between series.",
        "",
    ]
    return "\n".join(lines)
