"""The one shape every source produces: a finished (or never started) job.

A source knows its scheduler and nothing about carbon; everything downstream
(the footprint model, the ledger, the outputs) works on ``JobRecord`` only.
All times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .errors import InputError

#: A job longer than this is taken as a broken record, not a real run.
MAX_RUN = timedelta(days=366)
#: The JobName slurmdbd gives a job it knows only from its end message (its start
#: record, with name, partition and array ids, not yet in): not the job's final record.
PLACEHOLDER_JOB_NAME = "allocation"


class Component(enum.StrEnum):
    """Parts of a job's IT energy that are estimated (or measured) separately."""

    GPU = "gpu"
    CPU = "cpu"
    MEMORY = "memory"


class JobState(enum.StrEnum):
    """Final state of a job, normalised across schedulers."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    REQUEUED = "requeued"
    BOOT_FAIL = "boot_fail"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class MeasuredEnergy:
    """Energy the scheduler measured for a job, and which components it covers.

    Slurm's ``ConsumedEnergyRaw`` covers what its energy plugin measures (a cluster's
    ``slurm_energy_covers``: IPMI the whole node, GPU, CPU and memory; RAPL CPU and
    memory only); DCGM counters cover GPUs.
    """

    energy_j: float
    covers: frozenset[Component]

    def __post_init__(self) -> None:
        if not self.energy_j >= 0:
            raise InputError(f"measured energy_j must be >= 0, got {self.energy_j!r}")
        if not self.covers:
            raise InputError("measured energy must say which components it covers")


@dataclass(slots=True)
class JobRecord:
    """One job as the scheduler accounted it. ``job_id`` is unique within ``cluster``.

    Treated as immutable (``dataclasses.replace`` makes changed copies) but not frozen:
    a frozen dataclass of these fields took 7.7 µs to build against 3.1 µs (at 19), and an
    import builds millions.
    """

    cluster: str
    job_id: str
    user: str
    project: str
    partition: str
    state: JobState
    submit_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    gpu_count: float = 0.0
    gpu_model: str | None = None
    cpu_count: int = 0
    memory_gb: float = 0.0
    node_count: int = 1
    nodes: str = ""
    name: str = ""
    gpu_utilization: float | None = None
    # the job's measured energies, each of components no other covers (Slurm's RAPL
    # counter of CPU and memory next to the GPUs' from Prometheus): none counts twice
    measured: tuple[MeasuredEnergy, ...] = ()
    # the scheduler's own id where the key is another (Slurm's JobIDRaw of an array
    # task keyed <array>_<task>): a record written under it before is the same job
    job_id_raw: str | None = None
    # CPU time the job's tasks used (Slurm's steps' TRESUsageInTot cpu, as TotalCPU)
    cpu_used_seconds: float | None = None
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def started(self) -> bool:
        """Whether the job ran at all (jobs cancelled while pending never did)."""
        return self.start_time is not None and self.end_time is not None

    @property
    def run_seconds(self) -> float:
        """Wall-clock seconds the job held its allocation; 0 if it never started."""
        if self.start_time is None or self.end_time is None:
            return 0.0
        return (self.end_time - self.start_time).total_seconds()

    @property
    def gpu_seconds(self) -> float:
        return self.gpu_count * self.run_seconds

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_count * self.run_seconds

    def validate(self) -> None:
        """Raise ``InputError`` naming the field and value if the record is impossible."""
        problem = self._problem()
        if problem:
            raise InputError(f"job {self.cluster}/{self.job_id}: {problem}")

    def _problem(self) -> str | None:
        if not self.cluster or not self.job_id:
            return "cluster and job_id must not be empty"
        start, end = self.start_time, self.end_time
        if not (  # the times sources make: UTC itself (checked for every job of an import)
            self.submit_time.tzinfo is UTC
            and (start is None or start.tzinfo is UTC)
            and (end is None or end.tzinfo is UTC)
        ):
            for name, moment in zip(_TIME_FIELDS, (self.submit_time, start, end), strict=True):
                if moment is not None and moment.utcoffset() != _NO_OFFSET:
                    return f"{name} must be UTC, got {moment!r}"
        if start is not None and end is not None:
            if end < start:
                return f"end_time {end.isoformat()} is before start_time {start.isoformat()}"
            if end - start > MAX_RUN:
                return (
                    f"run of {end - start} is longer than {MAX_RUN.days} days; the record is broken"
                )
        counts = (self.gpu_count, self.cpu_count, self.memory_gb, self.node_count)
        if not (counts[0] >= 0 and counts[1] >= 0 and counts[2] >= 0 and counts[3] >= 0):
            for name, count in zip(_COUNT_FIELDS, counts, strict=True):
                if not count >= 0:
                    return f"{name} must be >= 0, got {count!r}"
        if self.gpu_utilization is not None and not 0.0 <= self.gpu_utilization <= 1.0:
            return f"gpu_utilization must be between 0 and 1, got {self.gpu_utilization!r}"
        if len(self.measured) < 2:  # one measurement cannot overlap another
            return None
        covered: set[Component] = set()
        for measurement in self.measured:
            if covered & measurement.covers:
                twice = ", ".join(sorted(covered & measurement.covers))
                return f"measured energies overlap ({twice}): that energy would count twice"
            covered |= measurement.covers
        return None


_TIME_FIELDS = ("submit_time", "start_time", "end_time")
_COUNT_FIELDS = ("gpu_count", "cpu_count", "memory_gb", "node_count")
_NO_OFFSET = timedelta(0)


@dataclass(frozen=True, slots=True)
class _SourceNote:
    """Something a source says about one of its records: where it came from, and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class RecordProblem(_SourceNote):
    """A record that could not be accounted: where it came from and why."""


@dataclass(frozen=True, slots=True)
class RecordRepair(_SourceNote):
    """A source line read after mending it (a '|' or a line break in a job name had
    split it): where, and what was rejoined. Counted, not a problem."""
