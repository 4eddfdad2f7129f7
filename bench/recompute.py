"""`jobcarbon ledger recompute` of a ledger of N jobs after a change of PUE, as an admin
runs it: jobs/s and peak RSS of the command, and beside it, in the same run, where the
time goes: reading the usage, the Python accounting per job, the ledger's write path
for the changed rows, and SQLite's floor for updating the same rows.

Usage: python bench/recompute.py [--jobs 1000000]. Prints figures; asserts nothing.
The ledger is filled by `jobcarbon slurm import` of ``bench/run.py``'s synthetic month
(GPU and CPU jobs, one node each); then the site's PUE goes from 1.3 to 1.4, so every
job's footprint changes. The floor: ``UPDATE jobs SET`` the footprint's eleven columns
``WHERE cluster = ? AND job_id = ?`` with plain ``executemany``, batches of 5,000 (the
recompute's), a commit each, on a copy of the recomputed ledger; making the rows is not
timed. The write path: the same changed rows through ``Ledger.replace_footprints`` (the
running totals kept), on another copy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from jobcarbon.accounting import Accountant
from jobcarbon.config import parse_config
from jobcarbon.ledger import (
    JOB_COLUMNS,
    USAGE_COLUMNS,
    Ledger,
    UsageScope,
    ledger_row,
    usage_record,
)
from run import CONFIG, synthetic_sacct
from slurm_import import timed_command

BATCH = 5000
FOOTPRINT = (
    "gpu_seconds", "cpu_seconds", "energy_gpu_kwh", "energy_cpu_kwh", "energy_memory_kwh",
    "energy_it_kwh", "energy_facility_kwh", "co2e_g", "co2e_g_low", "co2e_g_high", "pue",
)  # fmt: skip


def stages(path: Path, config: dict[str, object]) -> dict[str, float]:
    """Seconds of each stage of a recompute over the ledger at ``path``, batch by batch,
    each timed alone: reading, accounting in Python, and on copies of the ledger the
    write path and SQLite's floor for the same changed rows."""
    accountant = Accountant(parse_config(config))
    seconds = dict.fromkeys(("read", "account", "write path", "floor"), 0.0)
    write_copy, floor_copy = path.with_name("write.db"), path.with_name("floor.db")
    shutil.copy(path, write_copy)
    shutil.copy(path, floor_copy)
    at = [JOB_COLUMNS.index(c) for c in (*FOOTPRINT, "cluster", "job_id")]
    update = (
        f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in FOOTPRINT)} "
        "WHERE cluster = ? AND job_id = ?"
    )
    with Ledger(path) as ledger, Ledger(write_copy) as writer, Ledger(floor_copy) as floor:
        db = floor._db  # its connection: WAL, synchronous=NORMAL
        after = None
        while True:
            t0 = time.perf_counter()
            rows = ledger.usage_batch(after, UsageScope(), BATCH)
            t1 = time.perf_counter()
            if not rows:
                break
            changed = []
            for row in rows:
                new = ledger_row(accountant.account(usage_record(row[: len(USAGE_COLUMNS)])))
                if new != row[len(USAGE_COLUMNS) :]:
                    changed.append((*new, 0))
            t2 = time.perf_counter()
            with writer.writing():
                writer.replace_footprints(changed)
            t3 = time.perf_counter()
            updates = [tuple(r[i] for i in at) for r in changed]  # not timed
            t4 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.executemany(update, updates)
            db.execute("COMMIT")
            t5 = time.perf_counter()
            seconds["read"] += t1 - t0
            seconds["account"] += t2 - t1
            seconds["write path"] += t3 - t2
            seconds["floor"] += t5 - t4
            after = rows[-1][0], rows[-1][1]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump, config_file = Path(tmp) / "dump.txt", Path(tmp) / "config.yaml"
        with dump.open("w") as out:
            out.writelines(line + "\n" for line in synthetic_sacct(args.jobs))
        config = {**CONFIG, "ledger": {"url": f"sqlite:///{tmp}/l.db"}}
        config_file.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "jobcarbon", "--config", str(config_file)]
        subprocess.run([*command, "slurm", "import", str(dump)], check=True, capture_output=True)
        sites = {"s": {"pue": 1.4, "grid": {"region": "DE"}}}
        changed = {**config, "sites": sites}
        config_file.write_text(yaml.safe_dump(changed))
        ledger = Path(tmp) / "l.db"
        shutil.copy(ledger, Path(tmp) / "before.db")
        timed = timed_command([*command, "ledger", "recompute"])
        seconds, peak_mb = timed.seconds, sum(timed.peaks_mb.values())
        shutil.copy(Path(tmp) / "before.db", ledger)
        parts = stages(ledger, changed)
    n = args.jobs
    print(f"jobcarbon ledger recompute of {n:,} jobs, PUE 1.3 -> 1.4 (every job changes):")
    print(f"  {seconds:,.1f} s, {n / seconds:,.0f} jobs/s, peak RSS {peak_mb:,} MB")
    print("  where the time goes, each stage alone, same run:")
    print(f"    read the usage and jobs rows, batches of {BATCH:,}: {parts['read']:,.1f} s")
    us = parts["account"] / n * 1e6
    print(
        f"    Python: record, footprint, row, compare: {parts['account']:,.1f} s ({us:.1f} µs/job)"
    )
    print(f"    the ledger's write path (running totals kept): {parts['write path']:,.1f} s")
    print(f"    SQLite floor, plain UPDATE of the same rows: {parts['floor']:,.1f} s")
    print("  target: <= 30 s for 1,000,000 jobs, flat memory")


if __name__ == "__main__":
    main()
