"""Accounting: records from a source → footprints → the ledger, in batches.

A bad record (a malformed accounting line, unknown hardware, an impossible
duration) is reported with where it came from and counted; it never stops the
records around it. Each batch is written in one ledger transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import factors
from .config import Config
from .errors import FactorError, InputError
from .footprint import AccountedJob, PowerProfile, compute_footprint
from .ledger import Ledger
from .records import JobRecord, RecordProblem


@dataclass(slots=True)
class IngestReport:
    seen: int = 0
    written: int = 0
    unchanged: int = 0
    problems: list[RecordProblem] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.problems)

    def add(self, other: IngestReport) -> None:
        """Fold another report's counts and problems into this one."""
        self.seen += other.seen
        self.written += other.written
        self.unchanged += other.unchanged
        self.problems.extend(other.problems)


class Accountant:
    """Turns a ``JobRecord`` into an ``AccountedJob`` with the site's config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.uncertainty = config.uncertainty
        self.factors_version = factors.version()

    def account(self, job: JobRecord) -> AccountedJob:
        cluster = self.config.cluster(job.cluster)
        site = self.config.site_factors[cluster.site]
        try:
            power = cluster.power_profile(job)
        except FactorError:
            if job.run_seconds > 0:
                raise
            power = PowerProfile(job.gpu_model)  # never ran: costs nothing on any hardware
        footprint = compute_footprint(job, power, site, self.uncertainty)
        return AccountedJob(job, footprint, power.gpu_model, cluster.site, self.factors_version)


def ingest(
    items: Iterable[JobRecord | RecordProblem],
    accountant: Accountant,
    ledger: Ledger,
    batch_size: int = 5000,
    on_batch: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Account every record and write them in batches; problems are collected, not raised."""
    report = IngestReport()
    batch: list[AccountedJob] = []

    def flush() -> None:
        result = ledger.write(batch)
        report.written += result.written
        report.unchanged += result.unchanged
        batch.clear()
        if on_batch is not None:
            on_batch(report)

    errors = {"parse": 0, "account": 0}
    for item in items:
        report.seen += 1
        if isinstance(item, RecordProblem):
            report.problems.append(item)
            errors["parse"] += 1
            continue
        try:
            batch.append(accountant.account(item))
        except (FactorError, InputError) as err:
            report.problems.append(RecordProblem(f"job {item.cluster}/{item.job_id}", str(err)))
            errors["account"] += 1
            continue
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    ledger.add_ingest_errors(errors)
    return report
