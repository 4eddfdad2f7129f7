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
  retries with backoff and jitter, so that it does not hammer a slurmdbd coming back.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..accounting import Accountant, IngestReport, ingest
from ..backoff import backoff_s
from ..config import Config, SlurmConfig
from ..errors import ConfigError, SourceError
from ..ledger import Ledger
from ..records import RecordProblem
from .sacct import DELIMITER, SACCT_FIELDS, Rows, SacctRow, read_rows, to_records
from .slurmdb import PySlurm, matches

log = logging.getLogger("jobcarbon.slurm")

#: States sacct is asked for when sweeping by end time (jobs that have ended).
FINAL_STATES = "CA,CD,DL,F,NF,OOM,PR,RQ,TO,BF"
SWEEP_WATERMARK = "slurm.sweep"
PENDING_GAUGE = "slurm.pending_jobs"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class Accounting(Protocol):
    """Where Slurm accounting is read: job rows (with their steps) in sacct's terms.

    ``SourceError`` when accounting cannot be reached; the caller retries.
    """

    def jobs(self, job_ids: Sequence[str]) -> Rows:
        """Every run of these jobs (and, for an array job's id, of all its tasks)."""
        ...

    def ended_between(self, start: datetime, end: datetime) -> Rows:
        """Jobs that ended between ``start`` and ``end`` (and possibly others: callers
        keep the final ones)."""
        ...


class Sacct:
    """Runs ``sacct`` with the options jobcarbon needs; returns its rows."""

    def __init__(
        self,
        command: str = "sacct",
        run: Runner = subprocess.run,
        timeout_s: float = 120.0,
        cluster: str | None = None,
    ) -> None:
        self.command = command
        self.run = run
        self.timeout_s = timeout_s
        self.cluster = cluster  # another cluster of the same slurmdbd (sacct --clusters)

    def _run(self, args: list[str]) -> str:
        """Run the sacct command with ``args``; its output, or ``SourceError``."""
        env = {**os.environ, "TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}
        try:
            result = self.run(
                [self.command, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SourceError(f"cannot run {self.command}: {err}") from err
        if result.returncode != 0 or "error:" in result.stderr:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise SourceError(
                f"{self.command} failed (exit {result.returncode}): "
                f"{message[-1] if message else 'no output'}"
            )
        return str(result.stdout)

    def _call(self, *selection: str) -> list[str]:
        return self._run(
            [
                "--parsable2",
                f"--delimiter={DELIMITER}",
                "--allusers",
                "--duplicates",
                f"--format={','.join(SACCT_FIELDS)}",
                *([f"--clusters={self.cluster}"] if self.cluster else []),
                *selection,
            ]
        ).splitlines()

    def jobs(self, job_ids: Sequence[str]) -> Rows:
        return list(read_rows(self._call(f"--jobs={','.join(job_ids)}"), source="sacct"))

    def ended_between(self, start: datetime, end: datetime) -> Rows:
        stamp = "%Y-%m-%dT%H:%M:%S"
        lines = self._call(
            f"--starttime={start.strftime(stamp)}",
            f"--endtime={end.strftime(stamp)}",
            f"--state={FINAL_STATES}",
        )
        return list(read_rows(lines, source=f"sacct {start:%Y-%m-%d %H:%M}"))

    def jobs_of(self, user: str, since: datetime) -> Rows:
        """``user``'s jobs that ran, or were pending, at or after ``since``, in any state."""
        lines = self._call(f"--user={user}", f"--starttime={since:%Y-%m-%dT%H:%M:%S}")
        return list(read_rows(lines, source=f"sacct --user={user}"))

    def version(self) -> str:
        """The running Slurm's version, as ``sacct --version`` prints it (``22.05.8``)."""
        printed = self._run(["--version"])
        words = printed.split()
        if len(words) != 2:
            raise SourceError(f"{self.command} --version printed {printed.strip()!r}")
        return words[1]


def _import_pyslurm() -> Any:
    return importlib.import_module("pyslurm")


def open_accounting(
    settings: SlurmConfig,
    import_pyslurm: Callable[[], Any] = _import_pyslurm,
    run: Runner = subprocess.run,
) -> Accounting:
    """The backend ``slurm.backend`` asks for: ``sacct``; ``pyslurm`` (an error when it
    does not import or was built for another Slurm); ``auto``, pyslurm when it imports
    and matches the running Slurm (``sacct --version``), else sacct."""
    sacct = Sacct(settings.sacct, run, settings.sacct_timeout_s)
    if settings.backend == "sacct":
        return sacct
    try:
        pyslurm = import_pyslurm()
        built_for = str(pyslurm.__version__)
    except (ImportError, AttributeError) as err:
        if settings.backend == "pyslurm":
            raise ConfigError(
                [
                    f"slurm.backend: pyslurm, but pyslurm does not import ({err}); install "
                    "the pyslurm release built for this Slurm, or use backend: sacct"
                ]
            ) from err
        log.info("reading accounting with sacct (pyslurm does not import: %s)", err)
        return sacct
    try:
        running = sacct.version()
    except SourceError as err:
        if settings.backend == "pyslurm":
            log.warning("cannot tell the running Slurm's version (%s); using pyslurm", err)
            return PySlurm(pyslurm)
        log.info("reading accounting with sacct (%s)", err)
        return sacct
    if matches(built_for, running):
        log.info("reading accounting with pyslurm %s (Slurm %s)", built_for, running)
        return PySlurm(pyslurm)
    if settings.backend == "pyslurm":
        raise ConfigError(
            [
                f"slurm.backend: pyslurm {built_for} is built for another Slurm than the "
                f"running {running}; install the matching pyslurm, or use backend: sacct"
            ]
        )
    log.info("reading accounting with sacct (pyslurm %s, Slurm %s)", built_for, running)
    return sacct


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    job_id: str
    written_at: float


class Spool:
    """The epilog's spool: ``new/`` holds one file per ended job, named by its job id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.new, self.tmp, self.failed = root / "new", root / "tmp", root / "failed"

    def create(self) -> None:
        for directory in (self.new, self.tmp, self.failed):
            directory.mkdir(parents=True, exist_ok=True)

    def entries(self) -> list[SpoolEntry]:
        try:
            paths = sorted(self.new.iterdir())
        except FileNotFoundError:
            raise SourceError(
                f"spool {self.new} does not exist: create it with "
                "`jobcarbon slurm collect` run once as SlurmUser, or mkdir "
                "-p new tmp failed"
            ) from None
        entries = []
        for path in paths:
            try:
                entries.append(SpoolEntry(path, path.name, path.stat().st_mtime))
            except FileNotFoundError:
                continue  # taken by another collector meanwhile
        return entries

    def done(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)

    def give_up(self, entry: SpoolEntry, reason: str) -> None:
        target = self.failed / entry.job_id
        entry.path.replace(target)
        target.with_suffix(".reason").write_text(reason + "\n")


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
        self.config = config
        self.settings = config.slurm
        self.ledger = ledger
        self.accounting = accounting
        self.spool = spool
        self.clock = clock
        self.accountant = Accountant(config)
        self.default_cluster = next(iter(config.clusters))
        self.rng = random.Random()
        self._retries: dict[str, _Retry] = {}  # spool entries waiting for their job
        self._accounting_failures = 0  # consecutive failed calls to accounting

    def _backoff_s(self, attempt: int) -> float:
        return backoff_s(attempt, self.settings.retry_first_s, self.settings.retry_max_s, self.rng)

    def _accounting_failed(self, report: CollectReport, err: SourceError) -> None:
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

    def account_rows(self, rows: Iterable[SacctRow | RecordProblem]) -> IngestReport:
        """Account sacct rows into the ledger, each with its cluster's attribution."""
        records = to_records(
            rows, cluster=self.default_cluster, attributions=self.config.attributions
        )
        return ingest(records, self.accountant, self.ledger)

    def account_window(self, start: datetime, end: datetime) -> IngestReport:
        """Account the jobs that ended between ``start`` and ``end`` (sweep, backfill)."""
        rows = self.accounting.ended_between(start, end)
        return self.account_rows(r for r in rows if isinstance(r, RecordProblem) or r.is_final)

    def drain_spool(self, report: CollectReport) -> None:
        now = self.clock()
        entries = self.spool.entries()
        present = {e.job_id for e in entries}
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
            except SourceError as err:
                self._accounting_failed(report, err)
                report.pending += len(batch)
                continue
            self._accounting_failures = 0
            rows = [r for r in answer if isinstance(r, RecordProblem) or r.job_id_raw in wanted]
            final = [r for r in rows if isinstance(r, RecordProblem) or r.is_final]
            not_final = {r.job_id_raw for r in rows if isinstance(r, SacctRow) and not r.is_final}
            report.accounted.add(self.account_rows(final))
            complete = {r.job_id_raw for r in final if isinstance(r, SacctRow)} - not_final
            now = self.clock()
            for entry in batch:
                if entry.job_id in complete:
                    self.spool.done(entry)
                    self._retries.pop(entry.job_id, None)
                elif now - entry.written_at > self.settings.give_up_after_s:
                    reason = (
                        f"job {entry.job_id}: not complete in accounting "
                        f"{now - entry.written_at:.0f} s after its epilog; gave up "
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
            report.accounted.add(
                self.account_window(
                    datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(now, UTC)
                )
            )
        except SourceError as err:
            self._accounting_failed(report, err)
            return
        self._accounting_failures = 0
        self.ledger.set_watermark(SWEEP_WATERMARK, now)

    def collect_once(self, sweep: bool = True) -> CollectReport:
        report = CollectReport()
        self.drain_spool(report)
        if sweep:
            self.sweep(report)
        return report

    def run_forever(self, should_stop: Callable[[], bool]) -> None:
        """Poll the spool every ``poll_interval_s`` (sooner when a retry is due, later
        while sacct fails); sweep every ``sweep_interval_s``."""
        last_sweep = 0.0
        while not should_stop():
            due = self.clock() - last_sweep >= self.settings.sweep_interval_s
            report = self.collect_once(sweep=due)
            if due and not report.errors:
                last_sweep = self.clock()
            _log(report)
            deadline = time.monotonic() + self.seconds_to_next_round()
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.2)


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


def backfill_windows(
    since: datetime, until: datetime, window_s: int = 86400
) -> Iterator[tuple[datetime, datetime]]:
    """``[since, until)`` cut into windows of ``window_s`` seconds."""
    start = since
    while start < until:
        end = min(until, datetime.fromtimestamp(start.timestamp() + window_s, UTC))
        yield start, end
        start = end
