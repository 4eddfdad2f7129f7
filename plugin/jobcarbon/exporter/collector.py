"""Prometheus metrics from the ledger: aggregates only, read at scrape time.

Counters come from the ledger's running totals (which ``Ledger.write`` keeps, batch
by batch, as it writes jobs), so they survive exporter restarts, equal the ledger's
sums, and a scrape costs the same whatever the number of jobs. No job id, pod name or
address is ever a label. The rendered exposition is cached until the ledger changes
(or a minute passes, for factors that vary with time), so repeated scrapes are cheap.

Any number of request threads may scrape at once: one thread of its own holds the
ledger connection and does every read (a SQLite connection belongs to the thread that
opened it, and the cache's ``data_version`` is only comparable on one connection).
Anything that goes wrong in a scrape (a ledger missing, locked or from a newer
schema, or any other error) answers ``jobcarbon_ledger_up 0``, is counted in
``jobcarbon_ledger_errors_total`` and logged once; the next scrape tries again.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..config import Config
from ..errors import FactorError, LedgerError
from ..footprint import J_PER_KWH
from ..ledger import Aggregate, Ledger, Running

log = logging.getLogger("jobcarbon.exporter")

JOB_LABELS = ("cluster", "user", "project", "partition", "gpu_model", "state", "method")
RUNNING_LABELS = ("cluster", "user", "project", "gpu_model")
INGEST_STAGES = ("parse", "account", "sacct", "kubernetes")
RERENDER_AFTER_S = 60.0
GZIP_LEVEL = 1  # measured at 5,000 label sets: see the README's Benchmarks


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
        "line), account (unknown hardware, impossible record), sacct (a failed call to "
        "Slurm accounting, through sacct or pyslurm), kubernetes (a failed call to the "
        "Kubernetes API server).",
    ),
    MetricSpec(
        "jobcarbon_sweep_found_jobs_total",
        "counter",
        "jobs",
        ("started",),
        "Slurm jobs that only the collector's sweep found (no spool entry from the "
        'epilog within 5 minutes), by whether they started: for started="true" the '
        "epilog did not run or could not write its spool (its failure signal); Slurm "
        'runs no epilog for a job cancelled while pending (started="false"), so those '
        "are the sweep's to find and no failure.",
    ),
    MetricSpec(
        "jobcarbon_source_last_contact_timestamp_seconds",
        "gauge",
        "seconds",
        ("source",),
        "When a watching source (the Kubernetes pod watcher) last heard from its API "
        "server (Unix time).",
    ),
    MetricSpec(
        "jobcarbon_source_restarts_total",
        "counter",
        "restarts",
        ("source", "reason"),
        "Watches a source started again since it started, by reason: expired (410 Gone, "
        "a full re-list), disconnected (connection cut or silent), api_error (an error "
        "status); counted by the running watcher, so it resets when that restarts.",
    ),
    *(
        MetricSpec(
            f"jobcarbon_running_{name}",
            "gauge",
            unit,
            RUNNING_LABELS,
            f"Jobs still running (pods, written by the watcher every "
            f"kubernetes.running_interval_s; not served once older than "
            f"kubernetes.stale_after_s): {meaning}.",
        )
        for name, unit, meaning in (
            ("jobs", "jobs", "how many"),
            ("gpus", "GPUs", "GPUs they hold"),
            ("gpu_seconds", "seconds", "GPU time so far"),
            ("energy_joules", "joules", "facility energy so far (estimated)"),
            ("co2e_grams", "grams", "emissions so far in grams CO2e (estimated)"),
        )
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
        "Scrapes that failed: the ledger missing, locked or from a newer schema, or any "
        "other error (each logged once while it lasts; the next scrape tries again).",
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


PerUser = TypeVar("PerUser", Aggregate, Running)
Read = TypeVar("Read")


def _merge_users(rows: list[PerUser]) -> list[PerUser]:
    """The same totals (or running usage) with ``user`` dropped (summed over users)."""
    merged: dict[tuple[str, ...], PerUser] = {}
    for row in rows:
        anyone = replace(row, user="")
        previous = merged.get(anyone.labels)
        merged[anyone.labels] = anyone if previous is None else previous.plus(row)
    return list(merged.values())


#: The metrics that have one or more series per label set of the ledger's totals.
JOB_METRICS = (
    "jobcarbon_jobs_total",
    "jobcarbon_gpu_seconds_total",
    "jobcarbon_cpu_seconds_total",
    "jobcarbon_energy_joules_total",
    "jobcarbon_co2e_grams_total",
)


def job_series(row: Aggregate) -> list[tuple[int, tuple[str, ...], float]]:
    """The series of one label set: (index into JOB_METRICS, label values, value)."""
    labels = row.labels
    overhead_kwh = (
        row.energy_facility_kwh - row.energy_gpu_kwh - row.energy_cpu_kwh - row.energy_memory_kwh
    )
    return [
        (0, labels, float(row.jobs)),
        (1, labels, row.gpu_seconds),
        (2, labels, row.cpu_seconds),
        (3, (*labels, "gpu"), row.energy_gpu_kwh * J_PER_KWH),
        (3, (*labels, "cpu"), row.energy_cpu_kwh * J_PER_KWH),
        (3, (*labels, "memory"), row.energy_memory_kwh * J_PER_KWH),
        (3, (*labels, "facility_overhead"), overhead_kwh * J_PER_KWH),
        (4, (*labels, "operational"), row.co2e_g),
    ]


def _last_end_family(rows: Iterable[Aggregate]) -> Family:
    last_end: dict[str, int] = {}
    for row in rows:
        last_end[row.cluster] = max(last_end.get(row.cluster, 0), row.last_end_time)
    return Family(
        _SPEC["jobcarbon_last_job_end_timestamp_seconds"],
        [((cluster,), float(stamp)) for cluster, stamp in sorted(last_end.items())],
    )


def _running_families(rows: list[Running]) -> list[Family]:
    families = []
    for name, value in (
        ("jobs", lambda r: float(r.jobs)),
        ("gpus", lambda r: r.gpus),
        ("gpu_seconds", lambda r: r.gpu_seconds),
        ("energy_joules", lambda r: r.energy_facility_kwh * J_PER_KWH),
        ("co2e_grams", lambda r: r.co2e_g),
    ):
        families.append(
            Family(
                _SPEC[f"jobcarbon_running_{name}"],
                [(r.labels, value(r)) for r in rows],
            )
        )
    return families


def _source_families(gauges: dict[str, float]) -> list[Family]:
    """The watchers' health, from the gauges they write: ``<source>.last_contact`` and
    ``<source>.restarts.<reason>``."""
    contact: list[Series] = []
    restarts: list[Series] = []
    for name, value in sorted(gauges.items()):
        head, _, reason = name.rpartition(".")  # a source may have dots in its name
        if reason == "last_contact":
            contact.append(((head,), value))
        elif head.endswith(".restarts"):
            restarts.append(((head.removesuffix(".restarts"), reason), value))
    return [
        Family(_SPEC["jobcarbon_source_last_contact_timestamp_seconds"], contact),
        Family(_SPEC["jobcarbon_source_restarts_total"], restarts),
    ]


class LedgerCollector:
    """A Prometheus collector over a ledger file: reads the ledger's totals per scrape.

    Every ledger call runs on one thread of the collector's own (``_read``), whatever
    thread scrapes: that thread opens the connection, uses it and closes it after an
    error, so request threads never share a connection between them.
    """

    def __init__(
        self, location: Path | str, config: Config, clock: Callable[[], float] = time.time
    ) -> None:
        self.location = location
        self.config = config
        self.clock = clock
        self.ledger_errors = 0
        self.last_error: str | None = None  # why the last scrape failed; None if it did not
        self._ledger: Ledger | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobcarbon-ledger")
        self._state = threading.Lock()  # ledger_errors and last_error

    def _read(self, call: Callable[[Ledger], Read]) -> Read:
        """``call(ledger)`` on the reader thread; its exception, re-raised here."""
        return self._reader.submit(self._on_reader, call).result()

    def _on_reader(self, call: Callable[[Ledger], Read]) -> Read:
        try:
            if self._ledger is None:
                # a scrape must answer within Prometheus' timeout: wait little for a lock
                self._ledger = Ledger(
                    self.location,
                    migrate=False,
                    busy_timeout_s=1.0,
                    password=self.config.ledger_password(),
                )
            return call(self._ledger)
        except BaseException:
            # the next scrape opens afresh; a connection that failed may fail to close
            ledger, self._ledger = self._ledger, None
            if ledger is not None:
                with contextlib.suppress(Exception):
                    ledger.close()
            raise

    def changed_aggregates(self, after: int) -> tuple[list[Aggregate], int]:
        """The ledger's totals changed since ``after``; raises if unreadable."""
        return self._read(lambda ledger: ledger.changed_aggregates(after))

    def data_version(self) -> tuple[int, int]:
        """Changes whenever anyone commits to the ledger; raises if unreadable."""
        return self._read(Ledger.data_version)

    def failed(self, err: BaseException) -> list[Family]:
        """Count a scrape that failed (log it once, not at every scrape while it lasts);
        the families that say so."""
        words = str(err) if isinstance(err, LedgerError) else f"{type(err).__name__}: {err}"
        with self._state:
            self.ledger_errors += 1
            repeated, self.last_error = self.last_error == words, words
        if not repeated:
            unexpected = not isinstance(err, LedgerError)  # its traceback, to report
            log.error("scrape cannot read the ledger: %s", words, exc_info=unexpected)
        return [self._build_info(), *self._health(up=False)]

    def _succeeded(self) -> None:
        with self._state:
            failing, self.last_error = self.last_error, None
        if failing is not None:
            log.info("the ledger is readable again (after: %s)", failing)

    def snapshot(self, include_jobs: bool = True) -> list[Family]:
        """Every metric's series now (without the per-label-set ones unless
        ``include_jobs``). Never raises: ``ledger_up`` says when it could not read."""
        try:
            return self.read_snapshot(include_jobs)
        except Exception as err:
            return self.failed(err)

    def read_snapshot(self, include_jobs: bool = True) -> list[Family]:
        """``snapshot``, but raises what went wrong (``failed`` counts it)."""

        def read(ledger: Ledger) -> tuple[Any, ...]:
            rows = ledger.aggregates() if include_jobs else []
            return rows, ledger.ingest_errors(), ledger.gauges(), ledger.running()

        rows, errors, gauges, running = self._read(read)
        if self.config.exporter.drop_user_label:
            rows = _merge_users(rows)
            running = _merge_users(running)
        families = [self._build_info(), *self._health(up=True), *self._factor_families()]
        if include_jobs:
            families += self._job_families(rows)
        families.append(
            Family(
                _SPEC["jobcarbon_ingest_errors_total"],
                [((stage,), float(errors.get(stage, 0))) for stage in INGEST_STAGES],
            )
        )
        families += _source_families(gauges) + _running_families(self._current(running))
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
        families.append(
            Family(
                _SPEC["jobcarbon_sweep_found_jobs_total"],
                [
                    ((started,), gauges.get(f"slurm.sweep_found_jobs.{started}", 0.0))
                    for started in ("true", "false")
                ],
            )
        )
        self._succeeded()
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

    def _current(self, rows: list[Running]) -> list[Running]:
        """The running rows written within ``kubernetes.stale_after_s``: a stopped
        watcher's last figures are not served as if they were now (its silence has
        its own metric and alert)."""
        oldest = self.clock() - self.config.kubernetes.stale_after_s
        return [row for row in rows if row.updated_at >= oldest]

    def _build_info(self) -> Family:
        return Family(_SPEC["jobcarbon_build_info"], [((__version__,), 1.0)])

    def _health(self, up: bool) -> list[Family]:
        return [
            Family(_SPEC["jobcarbon_ledger_up"], [((), 1.0 if up else 0.0)]),
            Family(_SPEC["jobcarbon_ledger_errors_total"], [((), float(self.ledger_errors))]),
        ]

    def _job_families(self, rows: list[Aggregate]) -> list[Family]:
        families = [Family(_SPEC[name], []) for name in JOB_METRICS]
        for row in rows:
            for index, labels, value in job_series(row):
                families[index].series.append((labels, value))
        return [*families, _last_end_family(rows)]

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


class Exporter:
    """Renders the text exposition, again only when the ledger changed or a minute passed.

    It keeps the rendered lines of every label set and, at each scrape, fetches from
    the ledger only the totals that changed since the last one (``changed_aggregates``),
    so a scrape costs little more than joining strings. It writes the text itself
    rather than through prometheus_client's ``generate_latest``, which re-validates
    every label name of every sample (about a second for 5,000 label sets here); label
    names are fixed in ``METRICS``. With ``drop_user_label`` (totals merged over users)
    every scrape renders afresh. Scrapes at the same moment take turns (``_lock``);
    those that find the ledger unchanged are answered from the cache.
    """

    def __init__(
        self, collector: LedgerCollector, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.collector = collector
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], float, bytes] | None = None
        self._gzipped: tuple[bytes, bytes] | None = None  # a body, and it compressed
        self._seen = -1  # change number of the ledger totals read so far
        self._rows: dict[tuple[str, ...], tuple[Aggregate, list[str]]] = {}

    def render(self) -> bytes:
        """The exposition now. Never raises: a failure answers ``ledger_up 0``."""
        with self._lock:
            try:
                version = self.collector.data_version()
                now = self.clock()
                cached = self._cached
                if (
                    cached is not None
                    and cached[0] == version
                    and now - cached[1] < RERENDER_AFTER_S
                ):
                    return cached[2]
                body = self._render()
            except Exception as err:
                # start again from nothing at the next scrape
                self._cached, self._seen, self._rows = None, -1, {}
                return _text(self.collector.failed(err))
            self._cached = (version, now, body)
            return body

    def render_gzip(self) -> bytes:
        """``render()`` gzip-compressed, compressed again only when the body changed."""
        body = self.render()
        with self._lock:
            if self._gzipped is None or self._gzipped[0] is not body:
                self._gzipped = (body, gzip.compress(body, GZIP_LEVEL, mtime=0))
            return self._gzipped[1]

    def health(self) -> tuple[bool, str]:
        """Whether a scrape now reads the ledger, and what went wrong if not (a
        scrape itself, so answered from the cache while the ledger is unchanged)."""
        self.render()
        error = self.collector.last_error
        if error is None:
            return True, "the ledger is readable"
        return False, f"scrapes fail ({self.collector.ledger_errors} so far): {error}"

    def _render(self) -> bytes:
        if self.collector.config.exporter.drop_user_label:
            return _text(self.collector.read_snapshot())
        changed, seen = self.collector.changed_aggregates(self._seen)
        for row in changed:
            if row.jobs:
                self._rows[row.labels] = (row, _row_lines(row))
            else:
                self._rows.pop(row.labels, None)
        self._seen = seen
        out = [_text(self.collector.read_snapshot(include_jobs=False))]
        for index, name in enumerate(JOB_METRICS):
            out.append(_header(_SPEC[name]).encode())
            out.append("".join(lines[index] for _, lines in self._rows.values()).encode())
        out.append(_text([_last_end_family(row for row, _ in self._rows.values())]))
        return b"".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(spec: MetricSpec) -> str:
    # the text format escapes \ and newline in HELP (not quotes, as in label values)
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n"


# the text format's names for what repr() writes inf, -inf and nan
_NON_FINITE = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _number(value: float) -> str:
    text = repr(value)
    return _NON_FINITE.get(text, text)


def _line(spec: MetricSpec, labels: tuple[str, ...], value: float) -> str:
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(spec.labels, labels, strict=True))
    number = _number(value)
    return f"{spec.name}{{{inner}}} {number}\n" if inner else f"{spec.name} {number}\n"


def _row_lines(row: Aggregate) -> list[str]:
    """The exposition lines of one label set, one string per metric of JOB_METRICS."""
    lines = [""] * len(JOB_METRICS)
    for index, labels, value in job_series(row):
        lines[index] += _line(_SPEC[JOB_METRICS[index]], labels, value)
    return lines


def _text(families: Iterable[Family]) -> bytes:
    return "".join(
        _header(f.spec) + "".join(_line(f.spec, labels, value) for labels, value in f.series)
        for f in families
    ).encode()


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
