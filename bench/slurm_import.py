"""`jobcarbon slurm import` of a synthetic sacct dump, as an admin runs it: jobs/s, peak
RSS of the command, and the rate against SQLite's floor for the ledger's own table
measured in the same run (the target: >= 50 % of the floor, < 300 MB).

Usage: python bench/slurm_import.py [--jobs 1000000]. Prints figures; asserts nothing.
The dump is the one ``bench/run.py`` makes (one job-level row per job, GPU and CPU
jobs over a month), written to a temporary file first. The import runs in two
processes (the command, and the child it forks to read and account the dump): the peak
RSS of each is sampled from /proc while it runs, and their sum is the figure that counts;
so is the child's CPU time (to the last sample, at most 50 ms before it ends), and the
command's is the rest of what both used: what each side costs a job.

The floor: as many rows of the ledger's shape (a fresh ledger's own ``jobs`` table: 37
columns, text key (cluster, job_id), WITHOUT ROWID, two secondary indexes, WAL,
synchronous=NORMAL) inserted with plain ``executemany`` in batches of 20,000, a commit
after each; making the rows is not timed. The digest is a SHA-256 of the imported jobs
rows (``recorded_at`` left out) and of the running totals (``seq`` left out): the same
dump gives the same digest before and after a change to the write path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from jobcarbon.ledger import JOB_COLUMNS, Ledger
from run import CONFIG, synthetic_sacct

FLOOR_BATCH = 20_000


def floor_rate(path: Path, rows: int) -> float:
    """Rows/s of plain batched inserts into a fresh ledger's ``jobs`` table."""
    Ledger(path).close()  # the schema, migrated
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = NORMAL")
    columns = ", ".join(f'"{c}"' for c in (*JOB_COLUMNS, "recorded_at"))
    insert = f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * (len(JOB_COLUMNS) + 1))})"
    seconds = 0.0
    for first in range(0, rows, FLOOR_BATCH):
        batch = [floor_row(i) for i in range(first, min(first + FLOOR_BATCH, rows))]
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, batch)
        db.execute("COMMIT")
        seconds += time.perf_counter() - start
    db.close()
    return rows / seconds


def floor_row(i: int) -> tuple[object, ...]:
    """A job row as the import writes one: 21 texts, 6 integers, 20 reals."""
    f = i * 0.001
    return (
        "bench",
        str(i),
        f"user{i % 5000}",
        f"proj{i % 300}",
        "gpu",
        "completed",
        "job",
        1_700_000_000 + i,
        1_700_000_300 + i,
        1_700_003_900 + i,
        "2023-11",
        i % 8,
        "a100",
        8,
        64.0,
        1,
        3600.0 + f,
        28_800.0 + f,
        1.1 + f,
        0.2 + f,
        0.01 + f,
        1.3 + f,
        1.6 + f,
        400.0 + f,
        300.0 + f,
        500.0 + f,
        1.2,
        250.0,
        "tdp",
        "site",
        "v1",
        None,
        str(i),
        "constant",
        "region",
        "mlco2:DE tables-0123456789ab",
        "sha256:0123456789abcdef",
        0,
        160.0 + f,
        120.0 + f,
        200.0 + f,
        "contracts",
        20.0 + f,
        13.0 + f,
        30.0 + f,
        "site config",
        1_700_010_000,
    )


def digest(path: Path) -> str:
    """SHA-256 of the jobs rows (without recorded_at) and the totals (without seq)."""
    sha = hashlib.sha256()
    db = sqlite3.connect(path)
    columns = ", ".join(f'"{c}"' for c in JOB_COLUMNS)
    for row in db.execute(f"SELECT {columns} FROM jobs ORDER BY cluster, job_id"):
        sha.update(repr(row).encode())
    for row in db.execute("SELECT * FROM totals ORDER BY 1, 2, 3, 4, 5, 6, 7"):
        sha.update(repr(row[:-1]).encode())
    db.close()
    return sha.hexdigest()


def peak_rss_mb(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), or None if it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """The CPU time (user and system) the process has used so far, or None if it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass(frozen=True)
class Timed:
    """A command's wall time, the peak RSS (MB) of it and of each child, the CPU time
    of its children as last sampled, and the CPU time of it and its children."""

    seconds: float
    peaks_mb: dict[int, int]
    child_cpu_s: dict[int, float]
    total_cpu_s: float


def timed_command(command: list[str]) -> Timed:
    """Run a command, sampling its processes from /proc while it runs."""
    peaks: dict[int, int] = {}
    child_cpu_s: dict[int, float] = {}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    while process.poll() is None:
        for pid in [process.pid, *children(process.pid)]:
            peak = peak_rss_mb(pid)
            if peak is not None:
                peaks[pid] = max(peak, peaks.get(pid, 0))
            used = cpu_seconds(pid) if pid != process.pid else None
            if used is not None:
                child_cpu_s[pid] = used
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its children
    total_cpu_s = sum(
        getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime")
    )
    if process.returncode:
        sys.exit(f"{' '.join(command[3:])} failed (exit code {process.returncode})")
    return Timed(seconds, peaks, child_cpu_s, total_cpu_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump.txt"
        with dump.open("w") as out:  # streamed: this process stays small
            out.writelines(line + "\n" for line in synthetic_sacct(args.jobs))
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({**CONFIG, "ledger": {"url": f"sqlite:///{tmp}/l.db"}}))
        command = [sys.executable, "-m", "jobcarbon", "--config", str(config)]
        timed = timed_command([*command, "slurm", "import", str(dump)])
        seconds, peaks = timed.seconds, timed.peaks_mb
        rows_digest = digest(Path(tmp) / "l.db")
        floor = floor_rate(Path(tmp) / "floor.db", args.jobs)
    each = " + ".join(f"{mb:,}" for mb in peaks.values())
    print(f"jobcarbon slurm import of {args.jobs:,} jobs, this machine:")
    print(f"  {seconds:,.1f} s, {args.jobs / seconds:,.0f} jobs/s")
    print(f"  peak RSS {sum(peaks.values()):,} MB ({each} MB: the command, the accounting child)")
    print(f"  SQLite floor, same run: {floor:,.0f} rows/s (the ledger's jobs table, batches")
    ratio = args.jobs / seconds / floor
    print(f"    of {FLOOR_BATCH:,}, a commit each); import / floor = {ratio:.0%}")
    reading_s, total_cpu_s = sum(timed.child_cpu_s.values()), timed.total_cpu_s
    print(
        f"  CPU a job: {(total_cpu_s - reading_s) / args.jobs * 1e6:.1f} µs the command (writing), "
        f"{reading_s / args.jobs * 1e6:.1f} µs the child (reading, accounting)"
    )
    print(f"  rows digest (SHA-256 of jobs and totals): {rows_digest}")
    print("  target: >= 50 % of the floor and < 300 MB")


if __name__ == "__main__":
    main()
