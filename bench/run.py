"""Benchmarks: figures printed, never asserted. Run with `make bench`.

1. import: a synthetic `sacct --parsable2` month of N jobs → parse → footprint → SQLite
   ledger, in batches, as `jobcarbon demo` and imports do; jobs/s per stage, peak RSS;
   and the parse of the same dump with a third of its job names split (mended).
2. queries: `summary --by user` for one month and a full-ledger total.
3. hourly intensity: footprints of 24-hour and 77-hour jobs with an hourly series
   against a constant intensity (the cost of integrating, not sampling); the target
   is a ratio of at most 2x for jobs of up to 24 h.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobcarbon.accounting import Accountant, ingest
from jobcarbon.config import parse_config
from jobcarbon.footprint import PowerProfile, compute_footprint
from jobcarbon.ledger import JOB_COLUMNS, Filters, Ledger, ledger_row
from jobcarbon.records import JobRecord, JobState
from jobcarbon.site import Constant, HourlySeries, SiteFactors
from jobcarbon.sources.slurm.fields import SACCT_FIELDS
from jobcarbon.sources.slurm.sacct import read_parsable

CONFIG = {
    "sites": {"s": {"pue": 1.3, "grid": {"region": "DE"}}},
    "clusters": {
        "bench": {
            "site": "s",
            "hardware": [{"match": {"partition": "gpu"}, "gpu_model": "A100 SXM4 80 GB"}],
        }
    },
}
START = datetime(2026, 10, 1, tzinfo=UTC)


def synthetic_sacct(jobs: int, seed: int = 1) -> Iterator[str]:
    """A month of ``sacct --parsable2`` output: the header, then one row per job."""
    rng = random.Random(seed)
    yield "|".join(SACCT_FIELDS)
    for i in range(jobs):
        start = START + timedelta(seconds=rng.randint(0, 29 * 86400))
        run_s = rng.randint(60, 86400)
        gpus = rng.choice([0, 1, 2, 4, 8])
        partition = "gpu" if gpus else "cpu"
        tres = f"cpu={8 * max(gpus, 1)},{f'gres/gpu={gpus},' if gpus else ''}mem=64G,node=1"
        stamp = "%Y-%m-%dT%H:%M:%S"
        cells = dict.fromkeys(SACCT_FIELDS, "")
        cells.update(
            JobIDRaw=str(i),
            JobID=str(i),
            Cluster="bench",
            User=f"user{i % 5000}",
            Account=f"proj{i % 300}",
            Partition=partition,
            State="COMPLETED",
            Submit=(start - timedelta(minutes=5)).strftime(stamp),
            Start=start.strftime(stamp),
            End=(start + timedelta(seconds=run_s)).strftime(stamp),
            ElapsedRaw=str(run_s),
            AllocTRES=tres,
            NNodes="1",
            NodeList="n001",
            JobName="job",
            ConsumedEnergyRaw="0",
        )
        yield "|".join(cells[f] for f in SACCT_FIELDS)


def with_split_names(lines: list[str]) -> list[str]:
    """The dump with every third job's name split, as a plain ``sacct -P`` dump splits
    it: by a '|' (``a|b``) or by a '|' and a line break (``a|b<newline>c``)."""
    named = [
        line.replace("|job|", "|a|b|" if n % 2 else "|a|b\nc|") if n % 3 == 0 else line
        for n, line in enumerate(lines[1:])
    ]
    return [lines[0], *"\n".join(named).split("\n")]


def bench_import(jobs: int) -> None:
    lines = list(synthetic_sacct(jobs))
    accountant = Accountant(parse_config(CONFIG))
    t0 = time.perf_counter()
    records = [r for r in read_parsable(lines, cluster="bench") if isinstance(r, JobRecord)]
    t1 = time.perf_counter()
    accounted = [accountant.account(r) for r in records]
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "l.db") as ledger:
        for i in range(0, len(accounted), 5000):
            ledger.write(accounted[i : i + 5000])
        t3 = time.perf_counter()
        report = ingest(read_parsable(lines, cluster="bench"), accountant, ledger)
        t4 = time.perf_counter()
        q0 = time.perf_counter()
        users = ledger.summary("user", Filters(month="2026-10"))
        q1 = time.perf_counter()
        ledger.totals()
        q2 = time.perf_counter()
        floor = sqlite_floor(Path(tmp), [ledger_row(a) for a in accounted])
    del records, accounted  # as little for the GC to walk as for the first parse
    split = with_split_names(lines)
    t5 = time.perf_counter()
    mended = sum(isinstance(r, JobRecord) for r in read_parsable(split, cluster="bench"))
    mending_s = time.perf_counter() - t5
    assert mended == jobs
    print(f"import of {jobs:,} synthetic jobs (one process, this machine):")
    print(f"  parse sacct        {jobs / (t1 - t0):>12,.0f} jobs/s")
    print(f"  parse, 1/3 mended  {jobs / mending_s:>12,.0f} jobs/s (names split by '|', newlines)")
    print(f"  footprint model    {jobs / (t2 - t1):>12,.0f} jobs/s")
    print(f"  ledger write       {jobs / (t3 - t2):>12,.0f} jobs/s (new rows)")
    print(
        f"  end to end again   {jobs / (t4 - t3):>12,.0f} jobs/s "
        f"(streaming, all unchanged: {report.unchanged:,})"
    )
    for name, rate in floor.items():
        print(f"  SQLite alone       {rate:>12,.0f} rows/s (the same rows, plain inserts, {name})")
    print(f"  summary --by user  {(q1 - q0) * 1000:>12,.1f} ms ({len(users):,} users)")
    print(f"  total of ledger    {(q2 - q1) * 1000:>12,.1f} ms")


def sqlite_floor(tmp: Path, rows: list[tuple[object, ...]]) -> dict[str, float]:
    """Rows/s of SQLite alone taking the ledger's rows as plain inserts, nothing computed,
    no totals, in batches of 20,000 (the import's): into the ledger's own jobs table (its
    key and the two indexes the reports need), and into a bare table without any key or
    index. What no import through Python's sqlite3 can beat on this machine."""
    rates = {}
    rows = [(*row, 0) for row in rows]  # recorded_at
    for name in ("ledger's table", "bare table"):
        table = "jobs" if name == "ledger's table" else "bare"
        with Ledger(tmp / f"floor-{table}.db") as ledger:  # its connection: WAL, synchronous
            db = ledger._db
            if name == "bare table":
                db.execute("CREATE TABLE bare AS SELECT * FROM jobs WHERE false")
            columns = ", ".join(f'"{c}"' for c in (*JOB_COLUMNS, "recorded_at"))
            marks = ", ".join("?" * (len(JOB_COLUMNS) + 1))
            insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            start = time.perf_counter()
            for i in range(0, len(rows), 20_000):
                db.execute("BEGIN")
                db.executemany(insert, rows[i : i + 20_000])
                db.execute("COMMIT")
            rates[name] = len(rows) / (time.perf_counter() - start)
    return rates


def bench_hourly(jobs: int, run_hours: int) -> None:
    first = int(START.timestamp()) // 3600
    hours = {h: 100.0 + h % 24 * 10 for h in range(first, first + 24 * 31)}
    series = SiteFactors("s", Constant(1.3), HourlySeries(hours), 0.05)
    constant = SiteFactors("s", Constant(1.3), Constant(300.0), 0.05)
    power = PowerProfile("A100", 400.0, 60.0, 12.0, 3.6, 0.3725)
    job = JobRecord(
        "c",
        "1",
        "u",
        "p",
        "gpu",
        JobState.COMPLETED,
        START,
        START,
        START + timedelta(hours=run_hours),
        4,
        None,
        32,
        256.0,
    )
    timings = {}
    for name, site in (("constant", constant), ("hourly series", series)):
        t0 = time.perf_counter()
        for _ in range(jobs):
            compute_footprint(job, power, site)
        timings[name] = jobs / (time.perf_counter() - t0)
    print(f"footprints of a {run_hours}-hour job ({jobs:,} times):")
    for name, rate in timings.items():
        print(f"  {name:<18} {rate:>12,.0f} jobs/s")
    print(f"  ratio constant/hourly: {timings['constant'] / timings['hourly series']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}")
    bench_import(args.jobs)
    bench_hourly(20_000, 24)
    bench_hourly(20_000, 77)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB (lists held in memory for per-stage timing)")


if __name__ == "__main__":
    main()
