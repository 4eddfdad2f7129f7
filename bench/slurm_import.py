"""`jobcarbon slurm import` of a synthetic sacct dump, as an admin runs it: jobs/s and
peak RSS of the command (the issue's target: 1,000,000 jobs in <= 10 s, < 300 MB).

Usage: python bench/slurm_import.py [--jobs 1000000]. Prints figures; asserts nothing.
The dump is the one ``bench/run.py`` makes (one job-level row per job, GPU and CPU
jobs over a month), written to a temporary file first.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from run import CONFIG, synthetic_sacct


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
        start = time.perf_counter()
        subprocess.run([*command, "slurm", "import", str(dump)], check=True)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"jobcarbon slurm import of {args.jobs:,} jobs, this machine:")
    print(f"  {seconds:,.1f} s, {args.jobs / seconds:,.0f} jobs/s, peak RSS {peak_mb:,.0f} MB")
    print(f"  target: 100,000 jobs/s and < 300 MB; ratio to target {args.jobs / seconds / 1e5:.2f}")


if __name__ == "__main__":
    main()
