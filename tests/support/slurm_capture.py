"""Capture what a Slurm version's sacct prints, for ``tests/sources/test_sacct_versions.py``.

Starts the selected suite's cluster (``JOBCARBON_SLURM_SUITE``, tests/support/slurm_suite.py),
runs a small mix of jobs, and writes ``tests/data/slurm/<version>/``: the output of
the exact sacct call the collector's sweep makes, ``sacct --version``, ``sacct
--helpformat``, the jobs' SLUIDs where sacct has them (24.11 on), and a NOTE naming
the Slurm version and each command. As root:

    JOBCARBON_SLURM_SUITE=sid python -m tests.support.slurm_capture
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from jobcarbon.sources.slurm.fields import DELIMITER, FINAL_STATES, SACCT_FIELDS
from tests.support.slurm_cluster import SlurmCluster

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"  # tests/data/slurm
#: The jobs captured: name → sbatch arguments (as alice unless the name says bob).
WORKLOAD = {
    "gpu2": ["--gres=gpu:a100:2", "-c", "2", "--mem=100", "--wrap", "sleep 2"],
    "bob-array": ["--array=0-1", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "sleep 1"],
    "bob-failed": ["-c", "1", "--mem=100", "--wrap", "sleep 1; exit 3"],
    "multistep": ["--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "srun true; srun true"],
    "bob-odd-name": ["-c", "1", "--mem=10", "--job-name=a|b 'c' $(d)", "--wrap", "true"],
    "pending-cancelled": ["--hold", "-c", "1", "--mem=10", "--wrap", "true"],
}
#: The sweep's call (jobcarbon.sources.slurm.runner.Sacct), over all time.
SWEEP = [
    "sacct",
    "--parsable2",
    f"--delimiter={DELIMITER}",
    "--allusers",
    "--duplicates",
    f"--format={','.join(SACCT_FIELDS)}",
    "--starttime=2000-01-01T00:00:00",
    "--endtime=now",
    f"--state={FINAL_STATES}",
]


def capture(cluster: SlurmCluster) -> Path:
    ids = {}
    for name, args in WORKLOAD.items():
        ids[name] = cluster.sbatch("bob" if name.startswith("bob-") else "alice", *args)
    cluster.run("scancel", ids["pending-cancelled"])
    cluster.wait_idle()
    time.sleep(3)  # the end records reach slurmdbd after the queue empties
    version = cluster.run("sacct", "--version").stdout.split()[1]
    out = DATA / version
    out.mkdir(parents=True, exist_ok=True)
    env = "TZ=UTC SLURM_TIME_FORMAT=standard"
    files = {
        "sacct-sweep.txt": SWEEP,
        "sacct-version.txt": ["sacct", "--version"],
        "sacct-helpformat.txt": ["sacct", "--helpformat"],
    }
    note = [
        f"Slurm {version} (Debian {cluster.suite.name}'s slurm-wlm), single-node test cluster",
        "of tests/support/slurm_cluster.py, captured by `python -m tests.support.slurm_capture`.",
        "Jobs (sbatch as the user named, else alice), in this order:",
        *(f"  {name}: {shlex.join(args)}" for name, args in WORKLOAD.items()),
        "  (pending-cancelled was scancel-ed while held)",
        "Job ids: " + ", ".join(f"{name}={job}" for name, job in ids.items()),
        "Files and the command that printed each:",
    ]
    if "SLUID" in cluster.run("sacct", "--helpformat").stdout.split():  # 24.11 and later
        sluid = "JobIDRaw,JobID,SLUID"
        if version >= "26":
            sluid += ",OriginalSLUID"
        files["sacct-sluid.txt"] = ["sacct", "--parsable2", "--allusers", "-X", f"--format={sluid}"]
    for name, command in files.items():
        result = cluster.run(*command)
        (out / name).write_text(result.stdout)
        note.append(f"  {name}: {env} {shlex.join(command)}")
    (out / "NOTE").write_text("\n".join(note) + "\n")
    return out


if __name__ == "__main__":
    os.environ["SLURM_TIME_FORMAT"] = "standard"  # as the collector runs sacct; TZ=UTC is set
    slurm = SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-capture-")))
    try:
        slurm.start()
        print(f"wrote {capture(slurm)}")
    except Exception:
        print(slurm.logs())
        raise
    finally:
        slurm.stop()
        shutil.rmtree(slurm.root, ignore_errors=True)
