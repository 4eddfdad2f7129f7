"""Scrape time of `jobcarbon serve` as the ledger grows: 10k, 100k and 1M jobs.

Usage: python bench/scrape.py [--max-jobs 1000000] [--postgres URL]. With --postgres
the ledger is that (empty, scratch) PostgreSQL database instead of a SQLite file.
The jobs spread over 5,000
(user, project, partition) combinations. Prints the median of 20 scrapes each with
100 new jobs written (untimed) before it, as a collector does between scrapes, and
of 20 with no change, and the first scrape of a new exporter (which reads every
label set). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobcarbon.config import parse_config
from jobcarbon.exporter import Exporter, LedgerCollector
from jobcarbon.footprint import AccountedJob, Footprint, Method
from jobcarbon.ledger import Ledger
from jobcarbon.records import JobRecord, JobState
from jobcarbon.site import MarketSource

START = datetime(2026, 10, 1, tzinfo=UTC)
CONFIG = parse_config(
    {
        "sites": {"s": {"pue": 1.3, "grid": {"intensity_g_per_kwh": 300}}},
        "clusters": {"bench": {"site": "s"}},
    }
)
STATES = (JobState.COMPLETED, JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED)


def jobs(first: int, count: int) -> list[AccountedJob]:
    template = JobRecord(
        "bench",
        "0",
        "u",
        "p",
        "gpu",
        JobState.COMPLETED,
        START,
        START,
        START + timedelta(hours=1),
        1,
        "A100",
    )
    footprint = Footprint(
        3600,
        0,
        0.4,
        0.0,
        0.0,
        0.52,
        156.0,
        100.0,
        200.0,
        Method.ESTIMATED,
        156.0,
        100.0,
        200.0,
        MarketSource.LOCATION_BASED,
    )
    batch = []
    for i in range(first, first + count):
        combo = i % 5000
        job = replace(
            template,
            job_id=str(i),
            user=f"user{combo}",
            project=f"proj{combo % 250}",
            partition=f"part{combo % 5}",
            state=STATES[i % 4],
        )
        batch.append(AccountedJob(job, footprint, "A100", "s", "bench"))
    return batch


def scrape_ms(
    exporter: Exporter, before: Callable[[], object] | None = None, runs: int = 20
) -> float:
    """Median time of ``runs`` scrapes; ``before`` runs untimed ahead of each one."""
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        exporter.render()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-jobs", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path: Path | str = args.postgres or Path(tmp) / "ledger.db"
        written = 0
        extra = iter(range(10**8, 10**9, 100))  # ids of the jobs written between scrapes
        with Ledger(path) as ledger:
            for target in (10_000, 100_000, 1_000_000):
                if target > args.max_jobs:
                    break
                started = time.perf_counter()
                while written < target:
                    ledger.write(jobs(written, 10_000))
                    written += 10_000
                fill_s = time.perf_counter() - started
                exporter = Exporter(LedgerCollector(path, CONFIG))
                cold = scrape_ms(exporter, runs=1)  # first scrape: reads every label set
                changed = scrape_ms(exporter, lambda e=extra: ledger.write(jobs(next(e), 100)))
                unchanged = scrape_ms(exporter)
                size_kb = len(exporter.render()) / 1024
                series = len(ledger.aggregates())
                print(
                    f"{target:>9,} jobs ({series:,} label sets, {size_kb:,.0f} KiB): scrape "
                    f"median {changed:5.1f} ms after 100 new jobs, {unchanged:5.2f} ms "
                    f"unchanged; first scrape {cold:6.1f} ms (filled in {fill_s:.1f} s)"
                )


if __name__ == "__main__":
    main()
