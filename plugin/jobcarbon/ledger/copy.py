"""``copy_ledger``: every job (its footprint and its usage), grid hour, watermark, gauge,
error count, e-mail log entry and recompute run of one ledger into another (SQLite to
PostgreSQL, say), through the store's public readers and writers, so either backend can
be either end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..site import HOUR_S
from . import grid
from .rows import JOB_COLUMNS, SummaryRow
from .store import Ledger


@dataclass(frozen=True, slots=True)
class CopyResult:
    jobs: int  # job rows read from the source
    written: int  # of those, new or changed in the target
    source: SummaryRow
    target: SummaryRow

    @property
    def identical(self) -> bool:
        """The target holds as many jobs as the source, with the same sums."""
        a, b = self.source, self.target
        return a.jobs == b.jobs and all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
            for x, y in zip(_sums(a), _sums(b), strict=True)
        )


def _sums(row: SummaryRow) -> tuple[float, ...]:
    """The figures ``identical`` compares: both Scope 2 bases and Scope 3, with ranges."""
    return (
        row.gpu_hours,
        row.energy_kwh,
        row.co2e_kg,
        row.co2e_kg_low,
        row.co2e_kg_high,
        row.co2e_market_kg,
        row.co2e_market_kg_low,
        row.co2e_market_kg_high,
        row.co2e_embodied_kg,
        row.co2e_embodied_kg_low,
        row.co2e_embodied_kg_high,
        row.embodied_jobs,
    )


def copy_ledger(
    source: Ledger,
    target: Ledger,
    batch_size: int = 5000,
    on_batch: Callable[[int], None] = lambda jobs: None,
) -> CopyResult:
    """Copy every job (its usage, and its running totals follow), grid hour, watermark,
    error count, gauge, e-mail log entry and recompute run from ``source`` into
    ``target``, in batches; safe to run again."""
    jobs = written = 0
    batch: list[tuple[Any, ...]] = []
    split = len(JOB_COLUMNS) + 1  # a job's row and recorded_at, then its usage

    def write() -> int:
        count = target.write_job_rows([r[:split] for r in batch], [r[split:] for r in batch])
        on_batch(len(batch))
        return count

    for row in source.job_rows():
        batch.append(row)
        if len(batch) == batch_size:
            written += write()
            jobs += len(batch)
            batch = []
    if batch:
        written += write()
        jobs += len(batch)
    for site in source.grid_sites():
        hours = source.grid_hours(site, 0, grid.LAST_HOUR)
        through_s = source.watermark(grid.watermark_name(site)) or (hours[-1].hour + 1) * HOUR_S
        by_fetch: dict[int, list[grid.HourIn]] = {}
        for h in hours:
            by_fetch.setdefault(h.fetched_at, []).append(h[:5])
        for fetched_at, kept in by_fetch.items():
            target.write_grid_hours(site, kept, fetched_at, through_s)
    for name, position in source.watermarks().items():
        target.set_watermark(name, position)
    for name, value in source.gauges().items():
        target.set_gauge(name, value)
    copied_runs = {(r.started_at, r.host, r.pid) for r in target.recompute_runs()}
    for run in source.recompute_runs():
        if (run.started_at, run.host, run.pid) not in copied_runs:  # again: only the new
            run.run_id = None
            with target.writing():
                target.save_recompute_run(run)
    copied_mail = set(target.mail_log())
    for logged in source.mail_log():
        if logged not in copied_mail:  # again: only the new
            target.log_mail(*logged)
    copied_errors = target.ingest_errors()
    target.add_ingest_errors(
        {
            stage: max(0, n - copied_errors.get(stage, 0))  # again: only what is missing
            for stage, n in source.ingest_errors().items()
        }
    )
    return CopyResult(jobs, written, source.totals(), target.totals())
