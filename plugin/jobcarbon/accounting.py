"""Accounting: records from a source → footprints → the ledger, in batches.

A bad record (a malformed accounting line, unknown hardware, an impossible
duration) is reported with where it came from and counted; it never stops the
records around it. Each batch is written in one ledger transaction.

``ingest`` does it all in one process; ``ingest_on_two_cores`` (large imports) reads
and accounts in a forked child while this process writes: the Python and the SQLite
halves of the work, each on its own core.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from . import factors
from .config import ClusterConfig, Config
from .embodied import job_embodied
from .errors import FactorError, InputError, SourceError
from .footprint import AccountedJob, PowerProfile, Provenance, compute_footprint
from .ledger import Ledger, ledger_row, usage_row
from .records import JobRecord, RecordProblem, RecordRepair
from .site import HourlySeries, SiteFactors


@dataclass(slots=True)
class IngestReport:
    seen: int = 0
    written: int = 0
    unchanged: int = 0
    repaired: int = 0  # source lines read after mending them
    problems: list[RecordProblem] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.problems)

    def add(self, other: IngestReport) -> None:
        """Fold another report's counts and problems into this one."""
        self.seen += other.seen
        self.written += other.written
        self.unchanged += other.unchanged
        self.repaired += other.repaired
        self.problems.extend(other.problems)


class Accountant:
    """Turns a ``JobRecord`` into an ``AccountedJob`` with the site's config (``sites``:
    the sites' factors to use instead of the config's, such as the synced grid hours).

    A job at a provider site whose run has an hour without a synced value (past the
    sync's watermark, or one the provider left out) takes the provider's fallback for
    it and is marked ``intensity_pending``."""

    def __init__(self, config: Config, sites: Mapping[str, SiteFactors] | None = None) -> None:
        self.config = config
        self.sites = config.site_factors if sites is None else sites
        self.uncertainty = config.uncertainty
        self.factors_version = factors.version()
        self._provenance: dict[str, Provenance] = {}
        self._synced = {
            name: site.intensity_g_per_kwh
            for name, site in self.sites.items()
            if config.sites[name].grid.provider is not None
            and isinstance(site.intensity_g_per_kwh, HourlySeries)
        }

    def account(self, job: JobRecord) -> AccountedJob:
        cluster = self.config.cluster(job.cluster)
        site = self.sites[cluster.site]
        position = cluster.profiles.position(job)
        try:
            power = cluster.profiles.for_job(job, position)
        except FactorError:
            if job.run_seconds > 0:
                raise
            power = PowerProfile(job.gpu_model)  # never ran: costs nothing on any hardware
        footprint = compute_footprint(job, power, site, self.uncertainty)
        node = cluster.profiles.embodied_for(job, position)
        if node is not None:  # else not configured: the embodied fields stay None
            embodied = job_embodied(job, node)
            footprint.co2e_embodied_g = embodied.co2e_g
            footprint.co2e_embodied_g_low = embodied.co2e_g_low
            footprint.co2e_embodied_g_high = embodied.co2e_g_high
            footprint.embodied_source = node.name
        synced = self._synced.get(cluster.site)
        pending = (
            synced is not None
            and footprint.energy_facility_kwh > 0
            and job.start_time is not None
            and job.end_time is not None
            and not synced.covers(job.start_time, job.end_time)
        )
        provenance = self._provenance.get(job.cluster) or self.provenance(job.cluster)
        return AccountedJob(
            job,
            footprint,
            power.gpu_model,
            cluster.site,
            self.factors_version,
            provenance,
            intensity_pending=pending,
        )

    def provenance(self, cluster_name: str) -> Provenance:
        """What a footprint of ``cluster_name`` is computed with (made once a cluster)."""
        site = self.sites[self.config.cluster(cluster_name).site]
        provenance = Provenance(
            site.pue_source,
            site.intensity_source,
            site.intensity_version,
            config_digest(self.config, cluster_name),
        )
        self._provenance[cluster_name] = provenance
        return provenance


def config_digest(config: Config, cluster_name: str | None = None) -> str:
    """A digest of the config's factors behind a cluster's footprints (``None``: every
    cluster's): its power figures, embodied settings and hardware rules, its site's PUE and
    grid keys and the uncertainties; not who a job is attributed to, nor where the ledger
    is. Embodied settings left out are left out of the digest too, so that a config from
    before them keeps its digest."""
    names = list(config.clusters) if cluster_name is None else [cluster_name]
    factors_config = {
        "uncertainty": [config.uncertainty_tdp, config.uncertainty_measured],
        "clusters": {name: _cluster_factors(config.clusters[name]) for name in names},
        "sites": {
            site: config.sites[site].model_dump(mode="json")
            for site in sorted({config.clusters[name].site for name in names})
        },
    }
    text = json.dumps(factors_config, sort_keys=True)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _cluster_factors(cluster: ClusterConfig) -> dict[str, Any]:
    """A cluster's settings as the digest reads them (no ``embodied: null``)."""
    dumped = cluster.model_dump(mode="json", exclude={"attribution"})
    for settings in (dumped, *dumped["hardware"]):
        if settings["embodied"] is None:
            del settings["embodied"]
    return dumped


@dataclass(slots=True)
class _Batch:
    """Accounted jobs as ledger rows, and what reading and accounting them reported."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    usage: list[tuple[Any, ...]] = field(default_factory=list)  # the rows' usage, in order
    report: IngestReport = field(default_factory=IngestReport)
    errors: dict[str, int] = field(default_factory=lambda: {"parse": 0, "account": 0})


Counted = Callable[[RecordProblem], bool]


def _every(problem: RecordProblem) -> bool:
    return True


def _batches(
    items: Iterable[JobRecord | RecordProblem | RecordRepair],
    accountant: Accountant,
    batch_size: int,
    counted: Counted = _every,
) -> Iterator[_Batch]:
    """Records accounted, ``batch_size`` jobs at a time; problems (those ``counted``
    says) and repairs counted, never raised."""
    batch = _Batch()
    for item in items:
        if isinstance(item, RecordRepair):  # the record itself follows
            batch.report.repaired += 1
            continue
        batch.report.seen += 1
        if isinstance(item, RecordProblem):
            batch.report.problems.append(item)
            batch.errors["parse"] += counted(item)
            continue
        try:
            batch.rows.append(ledger_row(accountant.account(item)))
            batch.usage.append(usage_row(item))
        except (FactorError, InputError) as err:
            problem = RecordProblem(f"job {item.cluster}/{item.job_id}", str(err))
            batch.report.problems.append(problem)
            batch.errors["account"] += counted(problem)
            continue
        if len(batch.rows) >= batch_size:
            yield batch
            batch = _Batch()
    if batch.report.seen:
        yield batch


OnBatch = Callable[[IngestReport], None]


def _write(batches: Iterable[_Batch], ledger: Ledger, on_batch: OnBatch | None) -> IngestReport:
    """Write batches as they come; the report of them all. Errors per stage go to the
    ledger's counters at the end (a failed write leaves the batches before it)."""
    report = IngestReport()
    errors = {"parse": 0, "account": 0}
    for batch in batches:
        if batch.rows:
            result = ledger.write_rows(batch.rows, batch.usage)
            report.written += result.written
            report.unchanged += result.unchanged
        report.add(batch.report)  # what was read: seen, problems
        for stage, count in batch.errors.items():
            errors[stage] += count
        if on_batch is not None:
            on_batch(report)
    ledger.add_ingest_errors(errors)
    return report


def ingest(
    items: Iterable[JobRecord | RecordProblem | RecordRepair],
    accountant: Accountant,
    ledger: Ledger,
    batch_size: int = 5000,
    on_batch: OnBatch | None = None,
    counted: Counted = _every,
) -> IngestReport:
    """Account every record and write them in batches; problems are collected, not raised,
    and those ``counted`` says (default: all) added to the ledger's error counts."""
    return _write(_batches(items, accountant, batch_size, counted), ledger, on_batch)


def ingest_on_two_cores(
    items: Iterable[JobRecord | RecordProblem | RecordRepair],
    accountant: Accountant,
    ledger: Ledger,
    batch_size: int = 20_000,
    on_batch: OnBatch | None = None,
) -> IngestReport:
    """``ingest`` for large imports: a forked child reads and accounts the records (all
    of that is Python, on one core) while this process writes the batches before (mostly
    SQLite, on the other). ``items`` is read in the child only: it must not touch
    anything the parent's threads may hold (a progress bar's lock); the parent can follow
    a file's progress by its offset, which the two processes share.

    A batch waits in the pipe until the writer takes it, so at most about two batches
    are in memory at once. If the child fails, its traceback is raised here as a
    ``SourceError`` after the batches it accounted are written.
    """
    receiver, sender = multiprocessing.Pipe(duplex=False)
    pid = os.fork()  # not multiprocessing.Process: it would close the child's stdin
    if pid == 0:
        _account_in_child(items, accountant, batch_size, receiver, sender)
    sender.close()
    child = _Child(pid)

    def received() -> Iterator[_Batch]:
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                raise SourceError(
                    f"the accounting process ended without finishing (exit code "
                    f"{child.wait()}); the batches before were written"
                ) from None
            if message is None:
                return
            if isinstance(message, str):
                raise SourceError(f"the accounting process failed:\n{message}")
            yield message

    try:
        report = _write(received(), ledger, on_batch)
    except BaseException:
        child.stop()  # the writer failed: nobody reads what the child would send
        raise
    finally:
        receiver.close()
        child.wait()
    return report


@dataclass(slots=True)
class _Child:
    """A forked process, reaped once."""

    pid: int
    exit_code: int | None = None

    def stop(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def wait(self) -> int:
        """Its exit code (minus the signal that ended it), once it has ended."""
        if self.exit_code is None:
            self.exit_code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.exit_code


def _account_in_child(
    items: Iterable[JobRecord | RecordProblem | RecordRepair],
    accountant: Accountant,
    batch_size: int,
    receiver: Connection,
    sender: Connection,
) -> NoReturn:
    """The forked child: batches into the pipe, then None; on failure, its traceback."""
    code = 1
    try:
        receiver.close()
        try:
            for batch in _batches(items, accountant, batch_size):
                sender.send(batch)
            sender.send(None)
            code = 0
        except BaseException:  # the parent raises it: printed here it would show twice
            sender.send(traceback.format_exc())
    finally:
        os._exit(code)  # never back into the parent's code (or its atexit handlers)
