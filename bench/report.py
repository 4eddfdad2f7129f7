"""Monthly e-mails for 5,000 users: `jobcarbon report monthly --out DIR`, timed end to end.

A synthetic month (bench/run.py's sacct generator: 20 jobs each for 5,000 users in
300 projects) is imported with `jobcarbon slurm import` (not timed); then the
command reads the ledger and writes every user's .eml and .html. Target: < 30 s.
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

USERS = 5000  # synthetic_sacct gives job i to user{i % 5000}
TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump.txt"
        with dump.open("w") as out:
            out.writelines(line + "\n" for line in synthetic_sacct(args.jobs))
        config = Path(tmp) / "config.yaml"
        settings = {
            **CONFIG,
            "ledger": {"url": f"sqlite:///{tmp}/l.db"},
            "mail": {"address_template": "{user}@example.org"},
        }
        config.write_text(yaml.safe_dump(settings))
        command = [sys.executable, "-m", "jobcarbon", "--config", str(config)]
        subprocess.run([*command, "slurm", "import", str(dump)], check=True, capture_output=True)
        out_dir = Path(tmp) / "mail"
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "report", "monthly", "--month", "2026-10", "--out", str(out_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        emails = len(list(out_dir.glob("*.eml")))
        size_mb = sum(p.stat().st_size for p in out_dir.iterdir()) / 1e6
    print(f"jobcarbon report monthly --out, {args.jobs:,} jobs of {USERS:,} users, this machine:")
    print(f"  {done.stdout.strip()}")
    print(f"  {emails:,} e-mails in {seconds:,.1f} s ({seconds / emails * 1000:,.2f} ms each),")
    print(
        f"  {size_mb:,.0f} MB of .eml and .html; target < {TARGET_S:.0f} s: "
        f"{TARGET_S / seconds:.1f}x faster than needed"
    )


if __name__ == "__main__":
    main()
