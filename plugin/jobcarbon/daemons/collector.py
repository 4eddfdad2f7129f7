"""Slurm: the epilog's spool, sacct, and the collector that turns both into ledger rows.

The chain is built so that nothing is lost when one link fails:

- the epilog (``slurm/epilog``) writes one spool entry per ended job, atomically;
- the collector drains the spool: it asks sacct for those jobs in batches and deletes
  an entry only once its job is in the ledger. The end record often reaches slurmdbd
  after the epilog ran, so a job not yet final is asked again with backoff
  (``retry_first_s`` doubling up to ``retry_max_s``), until ``give_up_after_s``, when
  the entry moves to ``failed/`` with the reason;
- it also sweeps accounting by end time from a watermark kept in the ledger (windows
  overlap, writes are idempotent), so a job whose epilog never ran, or a spool lost
  with its disk, is still accounted;
- sacct failing (slurmdbd down) leaves spool and watermark as they were: the collector
  retries with backoff and jitter, so that it does not hammer a slurmdbd coming back;
- a GPU job whose samples are not all in Prometheus yet waits the same way as a job not
  yet final (``daemons/gpuenergy.py``), and the sweep keeps its watermark before it;
- the provider sites' grid hours are synced every ``grid_sync_interval_s`` in the
  background (``daemons/gridschedule.py``), and jobs are accounted with them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..accounting import IngestReport, ingest
from ..backoff import backoff_s
from ..config import Config
from ..errors import TemporaryError
from ..ledger import Ledger
from ..records import JobRecord, JobState, RecordProblem, RecordRepair
from ..sources.slurm.runner import Accounting, open_accounting
from ..sources.slurm.sacct import SacctRow, to_records
from ..sources.slurm.spool import Spool, SpoolEntry
from .gpuenergy import GpuEnergyStep, Held
from .gridschedule import GridSchedule
from .reload import Reloader

log = logging.getLogger("jobcarbon.slurm")

SWEEP_WATERMARK = "slurm.sweep"
PENDING_GAUGE = "slurm.pending_jobs"
#: Jobs only the sweep found (no spool entry), by whether they started: a started job's
#: epilog should have written one (gauges in the ledger, served as a counter).
SWEEP_FOUND_GAUGE = "slurm.sweep_found_jobs.{started}"
#: How long a job the sweep found waits for its spool entry before it counts as found by
#: the sweep alone: the epilog (and a site epilog it runs first) may still be running.
SWEEP_FOUND_GRACE_S = 300.0

Record = JobRecord | RecordProblem | RecordRepair


@dataclass(slots=True)
class CollectReport:
    accounted: IngestReport = field(default_factory=IngestReport)
    pending: int = 0  # spool entries whose job is not final in accounting yet
    given_up: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # sacct or ledger failures, retried


@dataclass(slots=True)
class _Retry:
    attempts: int
    due: float  # clock time of the next try


def _batches(items: list[SpoolEntry], size: int) -> Iterator[list[SpoolEntry]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Collector:
    """Drains the spool and sweeps accounting into the ledger."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        accounting: Accounting,
        spool: Spool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.grid = GridSchedule(config, config.slurm.grid_sync_interval_s, ledger, clock)
        self._use(config, accounting, spool)
        self.rng = random.Random()
        self._retries: dict[str, _Retry] = {}  # spool entries waiting for their job
        self._accounting_failures = 0  # consecutive failed calls to accounting
        # problems (job and reason) counted and logged since the sweep before last, and
        # since the last one: a job the sweep reads again is not counted again
        self._problems_before: set[str] = set()
        self._problems_since: set[str] = set()
        # jobs the sweep found with no spool entry: job id → (when, whether it started)
        self._unspooled: dict[str, tuple[float, bool]] = {}

    def _use(self, config: Config, accounting: Accounting, spool: Spool) -> None:
        self.config = config
        self.settings = config.slurm
        self.accounting = accounting
        self.spool = spool
        self.default_cluster = next(iter(config.clusters))
        self.gpu_energy = GpuEnergyStep(config.slurm, self.ledger, self.clock, self._first_time)

    def reload(self, config: Config) -> None:
        """Go on with ``config`` (hardware rules, clusters, timing, spool, backend);
        ``ConfigError`` if its accounting backend cannot be used, the old config kept.
        The ledger stays the one opened at the start: a new ``ledger.url`` needs a
        restart."""
        if config.ledger_location() != self.config.ledger_location():
            log.warning("ledger.url changed: restart the collector to write to the new ledger")
        accounting = (
            self.accounting if config.slurm == self.settings else open_accounting(config.slurm)
        )
        spool = Spool(config.slurm.spool_dir)
        spool.create()
        self.grid.use(config, config.slurm.grid_sync_interval_s)
        self._use(config, accounting, spool)

    def _backoff_s(self, attempt: int) -> float:
        return backoff_s(attempt, self.settings.retry_first_s, self.settings.retry_max_s, self.rng)

    def _accounting_failed(self, report: CollectReport, err: TemporaryError) -> None:
        self._accounting_failures += 1
        self.ledger.add_ingest_errors({"sacct": 1})
        report.errors.append(str(err))

    def seconds_to_next_round(self) -> float:
        """How long to wait: the poll interval, less when a retry is due sooner, and
        the backoff while sacct keeps failing."""
        if self._accounting_failures:
            return self._backoff_s(self._accounting_failures)
        wait = self.settings.poll_interval_s
        if self._retries:
            wait = min(wait, min(r.due for r in self._retries.values()) - self.clock())
        return max(wait, 0.0)

    def _records(self, rows: Iterable[SacctRow | RecordProblem | RecordRepair]) -> Iterator[Record]:
        """sacct rows as records (one each), each read with its cluster's settings."""
        return to_records(rows, cluster=self.default_cluster, clusters=self.config.clusters)

    def _first_time(self, key: str) -> bool:
        """Whether this problem (its job and reason) was not counted already."""
        new = key not in self._problems_before and key not in self._problems_since
        self._problems_since.add(key)
        return new

    def _ingest(
        self, records: Iterable[Record], held: dict[str, Held] | None = None
    ) -> IngestReport:
        """Account records into the ledger, but for the GPU jobs put in ``held`` (their
        samples not all in Prometheus yet). A problem is counted and reported once, not
        again each time its job is read (every sweep overlaps the one before)."""
        first: list[RecordProblem] = []

        def counted(problem: RecordProblem) -> bool:
            if self._first_time(str(problem)):
                first.append(problem)
                return True
            return False

        report = ingest(
            self.gpu_energy.measured(records, held),
            self.grid.accountant,
            self.ledger,
            counted=counted,
        )
        report.problems = first
        return report

    def account_rows(
        self,
        rows: Iterable[SacctRow | RecordProblem | RecordRepair],
        held: dict[str, Held] | None = None,
    ) -> IngestReport:
        """Account sacct rows into the ledger, each read with its cluster's settings; with
        ``held``, GPU jobs whose samples are not all in Prometheus yet go there instead."""
        return self._ingest(self._records(rows), held)

    def _final_rows(
        self, start: datetime, end: datetime
    ) -> list[SacctRow | RecordProblem | RecordRepair]:
        rows = self.accounting.ended_between(start, end)
        return [r for r in rows if not isinstance(r, SacctRow) or r.is_final]

    def account_window(self, start: datetime, end: datetime) -> IngestReport:
        """Account the jobs that ended between ``start`` and ``end`` (sweep, backfill)."""
        return self.account_rows(self._final_rows(start, end))

    def drain_spool(self, report: CollectReport) -> None:
        now = self.clock()
        entries = self.spool.entries()
        present = {e.job_id for e in entries}
        for job_id in present:  # its epilog was late, not silent
            self._unspooled.pop(job_id, None)
        self._retries = {k: r for k, r in self._retries.items() if k in present}
        due = [
            e
            for e in entries
            if e.job_id not in self._retries or self._retries[e.job_id].due <= now
        ]
        report.pending += len(entries) - len(due)
        for batch in _batches(due, self.settings.batch_size):
            wanted = {e.job_id for e in batch}
            try:
                answer = self.accounting.jobs(sorted(wanted))
            except TemporaryError as err:
                self._accounting_failed(report, err)
                report.pending += len(batch)
                continue
            self._accounting_failures = 0
            arrays = {e.job_id for e in batch if e.array_task}
            rows = [r for r in answer if not isinstance(r, SacctRow) or r.job_id_raw in wanted]
            final: list[SacctRow | RecordProblem | RecordRepair] = []
            not_final: dict[str, str] = {}  # raw id → why a record of it is not final yet
            for row in rows:
                if isinstance(row, SacctRow):
                    because = row.not_final_because(array_task=row.job_id_raw in arrays)
                    if because is not None:
                        not_final[row.job_id_raw] = because
                        continue
                final.append(row)
            held: dict[str, Held] = {}
            report.accounted.add(self.account_rows(final, held))
            not_final.update((job_id, wait.reason) for job_id, wait in held.items())
            complete = {r.job_id_raw for r in final if isinstance(r, SacctRow)} - set(not_final)
            now = self.clock()
            for entry in batch:
                if entry.job_id in complete:
                    self.spool.done(entry)
                    self._retries.pop(entry.job_id, None)
                elif now - entry.written_at > self.settings.give_up_after_s:
                    reason = (
                        f"job {entry.job_id}: not complete in accounting "
                        f"{now - entry.written_at:.0f} s after its epilog "
                        f"({not_final.get(entry.job_id, 'no record')}); gave up "
                        "(the sweep still accounts it if it ends)"
                    )
                    self.spool.give_up(entry, reason)
                    self._retries.pop(entry.job_id, None)
                    report.given_up.append(reason)
                else:
                    retry = self._retries.setdefault(entry.job_id, _Retry(0, now))
                    retry.attempts += 1
                    retry.due = now + self._backoff_s(retry.attempts)
                    report.pending += 1
        self.ledger.set_gauge(PENDING_GAUGE, report.pending)

    def sweep(self, report: CollectReport) -> None:
        now = int(self.clock())
        mark = self.ledger.watermark(SWEEP_WATERMARK)
        start = (
            now - self.settings.sweep_first_lookback_s
            if mark is None
            else mark - self.settings.sweep_overlap_s
        )
        try:
            rows = self._final_rows(
                datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(now, UTC)
            )
        except TemporaryError as err:
            self._accounting_failed(report, err)
            return
        self._accounting_failures = 0
        records = list(self._records(rows))
        self._count_found(rows, records)
        held: dict[str, Held] = {}
        report.accounted.add(self._ingest(records, held))
        # a job still waiting for its GPU samples is read again by the next sweep
        self.ledger.set_watermark(
            SWEEP_WATERMARK, min([now, *(int(wait.end_s) for wait in held.values())])
        )
        self._problems_before, self._problems_since = self._problems_since, set()

    def _count_found(
        self, rows: list[SacctRow | RecordProblem | RecordRepair], records: list[Record]
    ) -> None:
        """Note the jobs of a sweep that neither the spool nor the ledger has; those whose
        spool entry has not come ``SWEEP_FOUND_GRACE_S`` later were found by the sweep
        alone. For a job that started, its epilog wrote no entry (not run, or the spool
        unwritable); Slurm runs none for a job cancelled while pending."""
        spooled = {entry.job_id for entry in self.spool.entries()}
        unspooled: dict[str, list[tuple[str, JobRecord]]] = {}
        for row, record in zip(rows, records, strict=True):  # to_records: one for one
            if not (isinstance(row, SacctRow) and isinstance(record, JobRecord)):
                continue  # a problem, not a job
            if row.job_id_raw not in spooled:
                unspooled.setdefault(record.cluster, []).append((row.job_id_raw, record))
        now = self.clock()
        for cluster, group in unspooled.items():
            known = self.ledger.known_jobs(cluster, [r.job_id for _, r in group])
            for job_id, record in group:
                if record.job_id not in known:
                    self._unspooled.setdefault(job_id, (now, _started(record)))

    def _settle_found(self) -> None:
        """Count the noted jobs whose spool entry did not come within the grace."""
        now = self.clock()
        found = {"true": 0, "false": 0}
        for job_id, (when, started) in list(self._unspooled.items()):
            if now - when >= SWEEP_FOUND_GRACE_S:
                found["true" if started else "false"] += 1
                del self._unspooled[job_id]
        if found["true"]:
            log.warning(
                "the sweep alone found %d started job(s), with no spool entry: is the "
                "epilog EpilogSlurmctld, and can it write %s?",
                found["true"],
                self.spool.new,
            )
        gauges = self.ledger.gauges()
        for label, count in found.items():
            if count:
                name = SWEEP_FOUND_GAUGE.format(started=label)
                self.ledger.set_gauge(name, gauges.get(name, 0.0) + count)

    def collect_once(self, sweep: bool = True) -> CollectReport:
        report = CollectReport()
        self.drain_spool(report)
        if sweep:
            self.sweep(report)
        self._settle_found()
        return report

    def run_forever(
        self, should_stop: Callable[[], bool], reloader: Reloader | None = None
    ) -> None:
        """Poll the spool every ``poll_interval_s`` (sooner when a retry is due, later
        while sacct fails); sweep every ``sweep_interval_s``; sync the grid every
        ``grid_sync_interval_s``. A ``reloader`` asked to (SIGHUP) gives a new config
        between two rounds."""
        last_sweep = 0.0
        while not should_stop():
            if reloader is not None:
                reloader.take(self.reload)
            self.grid.tick()
            due = self.clock() - last_sweep >= self.settings.sweep_interval_s
            report = self.collect_once(sweep=due)
            if due and not report.errors:
                last_sweep = self.clock()
            _log(report)
            deadline = time.monotonic() + self.seconds_to_next_round()
            while time.monotonic() < deadline and not should_stop():
                if reloader is not None and reloader.requested:
                    break
                time.sleep(0.2)


def _started(record: JobRecord) -> bool:
    """Whether the job ran at all. Slurm 22.05 gives a job cancelled while pending a
    start equal to its end, or none."""
    return not (
        record.state is JobState.CANCELLED
        and (record.start_time is None or record.start_time == record.end_time)
    )


def _log(report: CollectReport) -> None:
    accounted = report.accounted
    if accounted.written or accounted.problems or report.given_up or report.errors:
        log.info(
            "accounted %d job(s), %d unchanged, %d pending, %d problem(s), %d given up",
            accounted.written,
            accounted.unchanged,
            report.pending,
            accounted.failed,
            len(report.given_up),
        )
    for problem in accounted.problems:
        log.warning("%s", problem)
    for reason in report.given_up:
        log.error("%s", reason)
    for error in report.errors:
        log.warning("will retry: %s", error)
