"""The Prometheus collector over the ledger: every metric's series, read at each scrape
from the ledger's running totals (see the package's docstring).

Any number of request threads may scrape at once: one thread of its own holds the
ledger connection and does every read (a SQLite connection belongs to the thread that
opened it, and the cache's ``data_version`` is only comparable on one connection).
Anything that goes wrong in a scrape (a ledger missing, locked or from a newer
schema, or any other error) answers ``jobcarbon_ledger_up 0``, is counted in
``jobcarbon_ledger_errors_total`` and logged once; the next scrape tries again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..config import Config
from ..errors import FactorError, LedgerError
from ..footprint import J_PER_KWH
from ..ledger import Aggregate, Ledger, Running
from .spec import JOB_METRICS, SPECS, Family, Series

log = logging.getLogger("jobcarbon.exporter")

INGEST_STAGES = ("parse", "account", "sacct", "kubernetes", "grid")

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


def job_series(row: Aggregate) -> list[tuple[int, tuple[str, ...], float]]:
    """The series of one label set: (index into JOB_METRICS, label values, value); each
    counter is what was added, its twin (the next index) what was removed."""
    labels = row.labels
    series: list[tuple[int, tuple[str, ...], float]] = []
    for index, (column, extra, scale) in enumerate(_JOB_COLUMNS):
        for way in (0, 1):
            value = getattr(row, f"{column}_{'removed' if way else 'added'}")
            series.append((2 * _METRIC_OF[index] + way, (*labels, *extra), float(value) * scale))
    return series


# the ledger's cumulative totals behind JOB_METRICS: (column, extra label, scale)
_JOB_COLUMNS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("jobs", (), 1.0),
    ("gpu_seconds", (), 1.0),
    ("cpu_seconds", (), 1.0),
    ("energy_gpu_kwh", ("gpu",), J_PER_KWH),
    ("energy_cpu_kwh", ("cpu",), J_PER_KWH),
    ("energy_memory_kwh", ("memory",), J_PER_KWH),
    ("energy_overhead_kwh", ("facility_overhead",), J_PER_KWH),
    ("co2e_g", ("operational",), 1.0),
    ("co2e_market_g", ("operational",), 1.0),
)
# which counter pair of JOB_METRICS each of _JOB_COLUMNS feeds
_METRIC_OF = (0, 1, 2, 3, 3, 3, 3, 4, 5)


def last_end_family(rows: Iterable[Aggregate]) -> Family:
    """The end time of each cluster's latest job, over these totals."""
    last_end: dict[str, int] = {}
    for row in rows:
        last_end[row.cluster] = max(last_end.get(row.cluster, 0), row.last_end_time)
    return Family(
        SPECS["jobcarbon_last_job_end_timestamp_seconds"],
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
                SPECS[f"jobcarbon_running_{name}"],
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
        Family(SPECS["jobcarbon_source_last_contact_timestamp_seconds"], contact),
        Family(SPECS["jobcarbon_source_restarts_total"], restarts),
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
                SPECS["jobcarbon_ingest_errors_total"],
                [((stage,), float(errors.get(stage, 0))) for stage in INGEST_STAGES],
            )
        )
        families += _source_families(gauges) + _running_families(self._current(running))
        families.append(
            Family(
                SPECS["jobcarbon_ingest_pending_jobs"],
                [
                    ((name.removesuffix(".pending_jobs"),), value)
                    for name, value in sorted(gauges.items())
                    if name.endswith(".pending_jobs")
                ],
            )
        )
        families.append(
            Family(
                SPECS["jobcarbon_sweep_found_jobs_total"],
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
        return Family(SPECS["jobcarbon_build_info"], [((__version__,), 1.0)])

    def _health(self, up: bool) -> list[Family]:
        return [
            Family(SPECS["jobcarbon_ledger_up"], [((), 1.0 if up else 0.0)]),
            Family(SPECS["jobcarbon_ledger_errors_total"], [((), float(self.ledger_errors))]),
        ]

    def _job_families(self, rows: list[Aggregate]) -> list[Family]:
        families = [Family(SPECS[name], []) for name in JOB_METRICS]
        for row in rows:
            for index, labels, value in job_series(row):
                families[index].series.append((labels, value))
        return [*families, last_end_family(rows)]

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
            Family(SPECS["jobcarbon_pue_ratio"], pue),
            Family(SPECS["jobcarbon_grid_intensity_grams_per_kilowatt_hour"], intensity),
        ]
