"""What the ledger's tables hold, as Python sees them: a job's row (``ledger_row``,
``JOB_COLUMNS``), the rows the readers return, and ``Filters``, the WHERE clause every
reader of jobs shares. No connection here: these are plain values."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

from ..errors import LedgerError
from ..footprint import AccountedJob

#: Columns written from an AccountedJob, in order (recorded_at is added at write time).
JOB_COLUMNS = (
    "cluster",
    "job_id",
    "user",
    "project",
    "partition",
    "state",
    "name",
    "submit_time",
    "start_time",
    "end_time",
    "month",
    "gpu_count",
    "gpu_model",
    "cpu_count",
    "memory_gb",
    "node_count",
    "gpu_seconds",
    "cpu_seconds",
    "energy_gpu_kwh",
    "energy_cpu_kwh",
    "energy_memory_kwh",
    "energy_it_kwh",
    "energy_facility_kwh",
    "co2e_g",
    "co2e_g_low",
    "co2e_g_high",
    "pue",
    "intensity_g_per_kwh",
    "method",
    "site",
    "factors_version",
    "gpu_utilization",
    "job_id_raw",
    "pue_source",
    "intensity_source",
    "intensity_version",
    "config_digest",
    "intensity_pending",
    # market-based Scope 2 beside co2e_g, location-based (schema v11), and its source
    "co2e_market_g",
    "co2e_market_g_low",
    "co2e_market_g_high",
    "market_source",
    # embodied (Scope 3), the job's share of its node's manufacture (schema v14): NULL
    # where not configured; the bundled entry's name or "site config"
    "co2e_embodied_g",
    "co2e_embodied_g_low",
    "co2e_embodied_g_high",
    "embodied_source",
)
#: Columns a reader gets from ``Ledger.jobs``.
EXPORT_COLUMNS = JOB_COLUMNS


Dimension = Literal[
    "user", "project", "cluster", "partition", "gpu_model", "state", "month", "site", "method"
]
DIMENSIONS: tuple[Dimension, ...] = (
    "user",
    "project",
    "cluster",
    "partition",
    "gpu_model",
    "state",
    "month",
    "site",
    "method",
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int  # new jobs and jobs whose record or footprint changed
    unchanged: int  # jobs already in the ledger exactly as given


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Running totals of the jobs sharing one combination of labels: the net (what its
    jobs rows sum to now) and, cumulative, what batches ``_added`` and ``_removed``
    (each only grows; net = added - removed, up to float rounding)."""

    cluster: str
    user: str
    project: str
    partition: str
    gpu_model: str
    state: str
    method: str
    jobs: int
    gpu_seconds: float
    cpu_seconds: float
    energy_gpu_kwh: float
    energy_cpu_kwh: float
    energy_memory_kwh: float
    energy_facility_kwh: float
    co2e_g: float
    last_end_time: int
    energy_overhead_kwh: float  # facility energy less IT energy: IT energy x (PUE - 1)
    co2e_market_g: float  # market-based Scope 2 (co2e_g is location-based)
    jobs_added: int
    jobs_removed: int
    gpu_seconds_added: float
    gpu_seconds_removed: float
    cpu_seconds_added: float
    cpu_seconds_removed: float
    energy_gpu_kwh_added: float
    energy_gpu_kwh_removed: float
    energy_cpu_kwh_added: float
    energy_cpu_kwh_removed: float
    energy_memory_kwh_added: float
    energy_memory_kwh_removed: float
    energy_overhead_kwh_added: float
    energy_overhead_kwh_removed: float
    energy_facility_kwh_added: float
    energy_facility_kwh_removed: float
    co2e_g_added: float
    co2e_g_removed: float
    co2e_market_g_added: float
    co2e_market_g_removed: float

    @property
    def labels(self) -> tuple[str, str, str, str, str, str, str]:
        """The label set: cluster, user, project, partition, gpu_model, state, method."""
        return (
            self.cluster,
            self.user,
            self.project,
            self.partition,
            self.gpu_model,
            self.state,
            self.method,
        )

    def plus(self, other: Aggregate) -> Aggregate:
        """These labels with both totals added."""
        summed = {name: getattr(self, name) + getattr(other, name) for name in _AGGREGATE_SUMS}
        return replace(self, **summed, last_end_time=max(self.last_end_time, other.last_end_time))


_AGGREGATE_SUMS = tuple(
    f.name for f in fields(Aggregate) if f.type in ("int", "float") and f.name != "last_end_time"
)


@dataclass(frozen=True, slots=True)
class Running:
    """The usage so far of the jobs still running with one set of labels."""

    cluster: str
    user: str
    project: str
    gpu_model: str
    jobs: int
    gpus: float
    gpu_seconds: float
    energy_facility_kwh: float
    co2e_g: float
    updated_at: int = 0  # when its watcher wrote it (epoch seconds); set by set_running

    @property
    def labels(self) -> tuple[str, str, str, str]:
        return (self.cluster, self.user, self.project, self.gpu_model)

    def plus(self, other: Running) -> Running:
        return replace(
            self,
            jobs=self.jobs + other.jobs,
            gpus=self.gpus + other.gpus,
            gpu_seconds=self.gpu_seconds + other.gpu_seconds,
            energy_facility_kwh=self.energy_facility_kwh + other.energy_facility_kwh,
            co2e_g=self.co2e_g + other.co2e_g,
        )


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """Sums over some jobs: ``co2e_kg`` location-based Scope 2 (the grid's average),
    ``co2e_market_kg`` market-based (the sites' contracts, residual mix), ``co2e_embodied_kg``
    embodied Scope 3 of the ``embodied_jobs`` with embodied settings (the others are not
    configured: not counted)."""

    key: str
    jobs: int
    gpu_hours: float
    energy_kwh: float
    co2e_kg: float
    co2e_kg_low: float
    co2e_kg_high: float
    co2e_market_kg: float = 0.0
    co2e_market_kg_low: float = 0.0
    co2e_market_kg_high: float = 0.0
    co2e_embodied_kg: float = 0.0
    co2e_embodied_kg_low: float = 0.0
    co2e_embodied_kg_high: float = 0.0
    embodied_jobs: int = 0

    @property
    def embodied_configured(self) -> bool:
        """Whether any of the jobs had embodied settings (else: "not configured")."""
        return self.embodied_jobs > 0

    @property
    def not_configured_jobs(self) -> int:
        """The jobs without an embodied figure: their cluster has no embodied settings."""
        return self.jobs - self.embodied_jobs

    @property
    def co2e_total_kg(self) -> float:
        """Location-based Scope 2 plus embodied Scope 3 (of the jobs configured)."""
        return self.co2e_kg + self.co2e_embodied_kg


@dataclass(frozen=True, slots=True)
class Habits:
    """What a person's jobs did with their GPUs in a period, for advice on what to change."""

    gpu_hours: float
    failed_gpu_hours: float  # jobs that failed, timed out or ran out of memory
    failed_co2e_kg: float
    cancelled_gpu_hours: float
    measured_gpu_hours: float  # GPU-hours whose utilisation was measured
    busy_gpu_hours: float  # of those, the hours the GPUs were busy


@dataclass(frozen=True, slots=True)
class FactorsUsed:
    """The factors behind a person's emissions at one site, for one method."""

    site: str
    method: str
    jobs: int
    pue_min: float
    pue_max: float
    intensity_min_g_per_kwh: float
    intensity_max_g_per_kwh: float
    factors_version: str


@dataclass(frozen=True, slots=True)
class MailSent:
    """A message the SMTP server accepted, with the figures it told (None: logged before
    schema v12, which kept no figures)."""

    recipient: str  # a user, or a project for its leads
    address: str
    message_id: str
    sent_at: int
    energy_kwh: float | None = None  # the report's facility energy
    co2e_kg: float | None = None  # its location-based CO2e


#: Job states that count as wasted work in the monthly advice.
FAILED_STATES = ("failed", "timeout", "out_of_memory")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which jobs a query covers; ``None`` means any. Times are end-time bounds (UTC)."""

    since: datetime | None = None
    until: datetime | None = None
    month: str | None = None
    user: str | None = None
    project: str | None = None
    cluster: str | None = None
    months: tuple[str, ...] | None = None  # any of these months
    #: these jobs, each with its array tasks (``ID_N``) and earlier runs (``ID+run@T``)
    job_ids: tuple[str, ...] | None = None
    #: only the jobs waiting for grid hours (True) or only the others (False)
    pending: bool | None = None
    #: only jobs that used energy (not those cancelled before they started)
    with_energy: bool = False

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["energy_facility_kwh > 0"] if self.with_energy else []
        params: list[Any] = []
        if self.job_ids is not None:
            matches = []
            for job_id in self.job_ids:
                like = re.sub(r"([\\%_])", r"\\\1", job_id)
                matches.append(
                    "job_id = ? OR job_id LIKE ? ESCAPE '\\' OR job_id LIKE ? ESCAPE '\\'"
                )
                params.extend([job_id, like + "\\_%", like + "+run@%"])
            clauses.append(f"({' OR '.join(matches) or 'FALSE'})")
        if self.months is not None:
            clauses.append(f"month IN ({', '.join('?' * len(self.months))})")
            params.extend(self.months)
        if self.since is not None:
            clauses.append("end_time >= ?")
            params.append(epoch(self.since))
        if self.until is not None:
            clauses.append("end_time < ?")
            params.append(epoch(self.until))
        if self.pending is not None:
            clauses.append("intensity_pending = ?")
            params.append(int(self.pending))
        for column in ("month", "user", "project", "cluster"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f'"{column}" = ?')
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def check_dimension(by: str) -> None:
    if by not in DIMENSIONS:
        raise LedgerError(f"cannot group by {by!r}; choose one of {', '.join(DIMENSIONS)}")


def epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def ledger_row(accounted: AccountedJob) -> tuple[Any, ...]:
    """A job as the ledger stores it: its JOB_COLUMNS, in order (plain values that
    pickle cheaply: an import builds them in one process and writes them in another)."""
    job, fp, provenance = accounted.job, accounted.footprint, accounted.provenance
    month_source = job.end_time or job.submit_time
    return (
        job.cluster,
        job.job_id,
        job.user,
        job.project,
        job.partition,
        job.state.value,
        job.name,
        epoch(job.submit_time),
        epoch(job.start_time),
        epoch(job.end_time),
        f"{month_source.year:04d}-{month_source.month:02d}",
        job.gpu_count,
        accounted.gpu_model if job.gpu_count > 0 else None,
        job.cpu_count,
        job.memory_gb,
        job.node_count,
        fp.gpu_seconds,
        fp.cpu_seconds,
        fp.energy_gpu_kwh,
        fp.energy_cpu_kwh,
        fp.energy_memory_kwh,
        fp.energy_it_kwh,
        fp.energy_facility_kwh,
        fp.co2e_g,
        fp.co2e_g_low,
        fp.co2e_g_high,
        fp.pue,
        fp.intensity_g_per_kwh,
        fp.method.value,
        accounted.site,
        accounted.factors_version,
        job.gpu_utilization,
        job.job_id_raw,
        provenance.pue_source,
        provenance.intensity_source,
        provenance.intensity_version,
        provenance.config_digest,
        int(accounted.intensity_pending),
        fp.co2e_market_g,
        fp.co2e_market_g_low,
        fp.co2e_market_g_high,
        fp.market_source.value,
        fp.co2e_embodied_g,
        fp.co2e_embodied_g_low,
        fp.co2e_embodied_g_high,
        fp.embodied_source,
    )
