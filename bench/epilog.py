"""How long the Slurm epilog adds to job completion: its median against /bin/true.

Usage: python bench/epilog.py [--runs 500]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

EPILOG = Path(__file__).resolve().parents[1] / "slurm" / "epilog"


def median_ms(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as spool:
        for sub in ("new", "tmp"):
            os.mkdir(os.path.join(spool, sub))
        env = {
            **os.environ,
            "JOBCARBON_SPOOL": spool,
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_USER": "alice",
            "SLURM_JOB_ACCOUNT": "physics",
            "SLURM_JOB_PARTITION": "gpu",
            "SLURM_CLUSTER_NAME": "bench",
        }
        true_ms = median_ms(["/bin/true"], env, args.runs)
        epilog_ms = median_ms([str(EPILOG)], env, args.runs)
        assert (Path(spool) / "new" / "4242").exists()
    print(
        f"epilog median over {args.runs} runs: {epilog_ms:.2f} ms "
        f"(/bin/true {true_ms:.2f} ms; the epilog adds {epilog_ms - true_ms:.2f} ms, "
        f"{epilog_ms / true_ms:.1f}x)"
    )


if __name__ == "__main__":
    main()
