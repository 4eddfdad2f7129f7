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

import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..accounting import Accountant, IngestReport, ingest
from ..config import Config
from ..errors import SourceError
from ..ledger import Ledger
from ..records import RecordProblem
from .sacct import DELIMITER, SACCT_FIELDS, SacctRow, read_rows, to_records

log = logging.getLogger("jobcarbon.slurm")

#: States sacct is asked for when sweeping by end time (jobs that have ended).
FINAL_STATES = "CA,CD,DL,F,NF,OOM,PR,RQ,TO,BF"
SWEEP_WATERMARK = "slurm.sweep"
PENDING_GAUGE = "slurm.pending_jobs"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class Sacct:
    """Runs ``sacct`` with the options jobcarbon needs; returns its output lines."""

    def __init__(
        self, command: str = "sacct", run: Runner = subprocess.run, timeout_s: float = 120.0
    ) -> None:
        self.command = command
        self.run = run
        self.timeout_s = timeout_s

    def _call(self, *selection: str) -> list[str]:
        args = [
            self.command,
            "--parsable2",
            f"--delimiter={DELIMITER}",
            "--allusers",
            "--duplicates",
            f"--format={','.join(SACCT_FIELDS)}",
            *selection,
        ]
        env = {**os.environ, "TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}
        try:
            result = self.run(
                args, capture_output=True, text=True, env=env, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SourceError(f"cannot run {self.command}: {err}") from err
        if result.returncode != 0 or "error:" in result.stderr:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise SourceError(
                f"{self.command} failed (exit {result.returncode}): "
                f"{message[-1] if message else 'no output'}"
            )
        return list(result.stdout.splitlines())

    def jobs(self, job_ids: Iterable[str]) -> list[str]:
        """Every row of these jobs (and, for an array job's id, of all its tasks)."""
        return self._call(f"--jobs={','.join(job_ids)}")

    def ended_between(self, start: datetime, end: datetime) -> list[str]:
        """Jobs that ended (in a final state) between ``start`` and ``end``."""
        stamp = "%Y-%m-%dT%H:%M:%S"
        return self._call(
            f"--starttime={start.strftime(stamp)}",
            f"--endtime={end.strftime(stamp)}",
            f"--state={FINAL_STATES}",
        )


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


def backoff_s(attempt: int, first_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1, 2, ...): ``first_s`` doubling up to ``max_s``,
    less a random jitter of up to half, so that retries of many collectors spread out."""
    delay = min(max_s, first_s * 2.0 ** min(attempt - 1, 60))
    return delay * rng.uniform(0.5, 1.0)


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
        sacct: Sacct,
        spool: Spool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.slurm
        self.ledger = ledger
        self.sacct = sacct
        self.spool = spool
        self.clock = clock
        self.accountant = Accountant(config)
        self.default_cluster = next(iter(config.clusters))
        self.rng = random.Random()
        self._retries: dict[str, _Retry] = {}  # spool entries waiting for their job
        self._sacct_failures = 0  # consecutive failed sacct calls

    def _backoff_s(self, attempt: int) -> float:
        return backoff_s(attempt, self.settings.retry_first_s, self.settings.retry_max_s, self.rng)

    def _sacct_failed(self, report: CollectReport, err: SourceError) -> None:
        self._sacct_failures += 1
        self.ledger.add_ingest_errors({"sacct": 1})
        report.errors.append(str(err))

    def seconds_to_next_round(self) -> float:
        """How long to wait: the poll interval, less when a retry is due sooner, and
        the backoff while sacct keeps failing."""
        if self._sacct_failures:
            return self._backoff_s(self._sacct_failures)
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
                lines = self.sacct.jobs(sorted(wanted))
            except SourceError as err:
                self._sacct_failed(report, err)
                report.pending += len(batch)
                continue
            self._sacct_failures = 0
            rows = [
                r
                for r in read_rows(lines, source="sacct")
                if isinstance(r, RecordProblem) or r.job_id_raw in wanted
            ]
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
            lines = self.sacct.ended_between(
                datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(now, UTC)
            )
        except SourceError as err:
            self._sacct_failed(report, err)
            return
        self._sacct_failures = 0
        rows = [
            r
            for r in read_rows(lines, source="sacct sweep")
            if isinstance(r, RecordProblem) or r.is_final
        ]
        report.accounted.add(self.account_rows(rows))
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
