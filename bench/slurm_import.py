"""`jobcarbon slurm import` of a synthetic sacct dump, as an admin runs it: jobs/s and
peak RSS of the command (the issue's target: 1,000,000 jobs in <= 10 s, < 300 MB).

Usage: python bench/slurm_import.py [--jobs 1000000]. Prints figures; asserts nothing.
The dump is the one ``bench/run.py`` makes (one job-level row per job, GPU and CPU
jobs over a month), written to a temporary file first. The import runs in two
processes (the command, and the child it forks to read and account the dump): the peak
RSS of each is sampled from /proc while it runs, and their sum is the figure that counts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from run import CONFIG, synthetic_sacct


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


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


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
        peaks: dict[int, int] = {}
        start = time.perf_counter()
        process = subprocess.Popen([*command, "slurm", "import", str(dump)])
        while process.poll() is None:
            for pid in [process.pid, *children(process.pid)]:
                peak = peak_rss_mb(pid)
                if peak is not None:
                    peaks[pid] = max(peak, peaks.get(pid, 0))
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        if process.returncode:
            sys.exit(f"the import failed (exit code {process.returncode})")
    each = " + ".join(f"{mb:,}" for mb in peaks.values())
    print(f"jobcarbon slurm import of {args.jobs:,} jobs, this machine:")
    print(f"  {seconds:,.1f} s, {args.jobs / seconds:,.0f} jobs/s")
    print(f"  peak RSS {sum(peaks.values()):,} MB ({each} MB: the command, the accounting child)")
    print(f"  target: 100,000 jobs/s and < 300 MB; ratio to target {args.jobs / seconds / 1e5:.2f}")


if __name__ == "__main__":
    main()
