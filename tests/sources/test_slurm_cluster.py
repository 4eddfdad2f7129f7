"""Every job accounted, on a real Slurm cluster (tests/support/slurm_cluster.py).

The cluster runs the repository's own ``slurm/epilog`` as EpilogSlurmctld; the
collector runs as the ``jobcarbon`` command would. Checks are against what sacct
itself reports for the same jobs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from jobcarbon.ledger import Ledger
from jobcarbon.records import RecordRepair
from jobcarbon.sources.slurm.fields import SACCT_FIELDS
from jobcarbon.sources.slurm.sacct import SacctRow, parse_usage, read_rows, to_record
from tests.conftest import ROOT
from tests.support.config import make_config
from tests.support.net import wait_for
from tests.support.slurm_cluster import CLUSTER, USERS, SlurmCluster, missing_components

JOBCARBON = [sys.executable, "-m", "jobcarbon"]
#: Fake GPUs on the node: a burst of one-GPU jobs runs this many at a time.
BURST_GPUS = 32


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    missing = missing_components()
    if missing:
        pytest.skip(
            f"no Slurm test cluster: missing {', '.join(missing)}. Enable with "
            "`apt-get install slurm-wlm slurmdbd munge mariadb-server` and run as root"
        )
    # not under pytest's 0700 tmp dir: the job users must read slurm.conf
    root = Path(tempfile.mkdtemp(prefix="jobcarbon-slurm-"))
    root.chmod(0o755)
    spool = root / "jobcarbon-spool"
    for sub in ("new", "tmp", "failed"):
        (spool / sub).mkdir(parents=True)
    epilog = root / "epilog"
    epilog.write_text(f"#!/bin/sh\nJOBCARBON_SPOOL={spool} exec {ROOT / 'slurm' / 'epilog'}\n")
    epilog.chmod(0o755)
    slurm = SlurmCluster(root / "cluster", epilog=epilog, gpus=BURST_GPUS)
    try:
        slurm.start()
    except Exception:
        print(slurm.logs())
        slurm.stop()
        raise
    yield slurm
    slurm.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def config_file(cluster: SlurmCluster) -> Path:
    path = cluster.root.parent / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            make_config(
                site="lab",
                cluster=CLUSTER,
                sites={"lab": {"pue": 1.0, "pue_uncertainty": 0.0}},
                clusters={
                    CLUSTER: {
                        "hardware": [
                            {"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}
                        ],
                    }
                },
                ledger={"url": "sqlite:///ledger.db"},
                slurm={
                    "spool_dir": str(cluster.root.parent / "jobcarbon-spool"),
                    "sacct": cluster.suite.sacct_wrapper(cluster.root / "slurm.conf"),
                    "give_up_after_s": 600,
                    "sweep_first_lookback_s": 3600,
                },
            )
        )
    )
    return path


def jobcarbon(
    config: Path, *args: str, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*JOBCARBON, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT / "plugin")},
    )


def collect_until_spool_empty(config: Path, cluster: SlurmCluster, timeout: float = 90) -> None:
    spool_new = cluster.root.parent / "jobcarbon-spool" / "new"

    def done() -> bool:
        result = jobcarbon(config, "slurm", "collect", "--once", env=cluster.env)
        assert result.returncode in (0, 1, 3), result.stderr
        return not any(spool_new.iterdir())

    wait_for("the spool to drain", done, timeout, 1.0)


def sacct_jobs(cluster: SlurmCluster) -> dict[str, dict[str, str]]:
    """sacct's own job-level rows, keyed as jobcarbon keys them."""
    lines = cluster.run(
        # without --state, sacct leaves out jobs cancelled while pending (never eligible)
        "sacct",
        "--allocations",  # -X
        "--parsable2",
        "--allusers",
        "--duplicates",
        "--starttime=2000-01-01",
        "--endtime=now",
        "--state=CA,CD,DL,F,NF,OOM,PR,RQ,TO,BF",
        f"--format={','.join(SACCT_FIELDS)}",
        "--delimiter=^|^",
    ).stdout.splitlines()
    rows = {}
    for row in read_rows(lines):
        if isinstance(row, RecordRepair):  # a line break in a name: the row follows
            continue
        assert isinstance(row, SacctRow), f"{row}: {lines}"
        cells = row.cells
        key = cells["JobID"] if "_" in cells["JobID"] else cells["JobIDRaw"]
        assert key not in rows, f"sacct shows {key} twice"
        rows[key] = cells
    return rows


def gpus_in(tres: str) -> int:
    return next(
        (int(item.split("=")[1]) for item in tres.split(",") if item.startswith("gres/gpu=")), 0
    )


@pytest.fixture(scope="module")
def workload(cluster: SlurmCluster, config_file: Path) -> dict[str, str]:
    """Submit the mix, let it run, and collect it. Returns name → job id."""
    ids: dict[str, str] = {}
    gpu = ["--gres=gpu:a100:{}", "-c", "1", "--mem=100"]
    for n in (1, 2, 4):
        ids[f"gpu{n}"] = cluster.sbatch("alice", *[a.format(n) for a in gpu], "--wrap", "sleep 3")
    ids["array"] = cluster.sbatch(
        "bob", "--array=0-3", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "sleep 1"
    )
    ids["failed"] = cluster.sbatch("bob", "-c", "1", "--mem=100", "--wrap", "sleep 1; exit 3")
    ids["timeout"] = cluster.sbatch(
        "alice", "-c", "1", "--mem=100", "--time=1", "--wrap", "sleep 300"
    )
    ids["multistep"] = cluster.sbatch(
        "alice", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "srun sleep 1; srun sleep 1"
    )
    ids["odd-name"] = cluster.sbatch(
        "bob",
        "-c",
        "1",
        "--mem=100",
        "--job-name=a|b \"c\" 'd' $(touch /tmp/jc-pwned) e",
        "--wrap",
        "sleep 1",
    )
    ids["line-break"] = cluster.sbatch(
        "alice", "-c", "1", "--mem=100", "--job-name=two|lines\nof|name", "--wrap", "sleep 1"
    )
    ids["pending-cancelled"] = cluster.sbatch(
        "alice", "--hold", "-c", "1", "--mem=100", "--wrap", "sleep 1"
    )
    cluster.run("scancel", ids["pending-cancelled"])
    for i in range(50):
        ids[f"burst{i}"] = cluster.sbatch(
            list(USERS)[i % 2], "-c", "1", "--mem=10", "--wrap", "true"
        )
    cluster.wait_idle(timeout=180)
    # slurmctld ran the epilog for every job that ran (an array's tasks are entered under
    # their own job ids): without these entries the sweep alone would account the jobs
    spool_new = cluster.root.parent / "jobcarbon-spool" / "new"
    ran = [job for name, job in ids.items() if name not in ("array", "pending-cancelled")]
    wait_for("the epilog's spool entries", lambda: all((spool_new / j).exists() for j in ran), 30)
    collect_until_spool_empty(config_file, cluster)
    return ids


def ledger_rows(config: Path) -> dict[str, dict[str, object]]:
    with Ledger(config.parent / "ledger.db") as ledger:
        return {str(r["job_id"]): r for r in ledger.jobs()}


@pytest.mark.integration
def test_every_job_once_with_gpu_seconds_from_sacct(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    expected = sacct_jobs(cluster)
    rows = ledger_rows(config_file)
    assert set(rows) == set(expected)
    assert len(expected) >= 3 + 4 + 5 + 50
    for key, cells in expected.items():
        row = rows[key]
        assert row["gpu_seconds"] == gpus_in(cells["AllocTRES"]) * int(cells["ElapsedRaw"]), key
        assert row["user"] == cells["User"]
        assert row["project"] == USERS[cells["User"]] == cells["Account"]
    # 4 A100s (400 W each) for ElapsedRaw seconds, PUE 1, 100 g/kWh
    four = rows[workload["gpu4"]]
    assert four["gpu_model"] == "A100 SXM4 80 GB"
    elapsed_h = float(four["gpu_seconds"]) / 4 / 3600  # type: ignore[arg-type]
    assert four["energy_gpu_kwh"] == pytest.approx(4 * 0.4 * elapsed_h)


@pytest.mark.integration
def test_states_arrays_and_names(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    rows = ledger_rows(config_file)
    assert rows[workload["failed"]]["state"] == "failed"
    assert rows[workload["timeout"]]["state"] == "timeout"
    assert float(rows[workload["timeout"]]["co2e_g"]) > 0  # type: ignore[arg-type]
    cancelled = rows[workload["pending-cancelled"]]
    # Slurm 22.05's parsable output gives a job cancelled while pending Start = End
    assert (cancelled["state"], cancelled["co2e_g"], cancelled["gpu_seconds"]) == (
        "cancelled",
        0.0,
        0.0,
    )
    assert cancelled["start_time"] in (None, cancelled["end_time"])
    tasks = [k for k in rows if k.startswith(f"{workload['array']}_")]
    assert sorted(tasks) == [f"{workload['array']}_{i}" for i in range(4)]
    # the name as accounting holds it (slurmdbd stores " as `), whole and uninterpreted
    name = rows[workload["odd-name"]]["name"]
    assert name == sacct_jobs(cluster)[workload["odd-name"]]["JobName"]
    assert name == "a|b `c` 'd' $(touch /tmp/jc-pwned) e"
    assert not Path("/tmp/jc-pwned").exists()


@pytest.mark.integration
def test_step_rows_of_a_real_job_fold_into_it(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    job_id = workload["multistep"]
    lines = cluster.run(
        "sacct", "--parsable2", "--allusers", f"--format={','.join(SACCT_FIELDS)}", "-j", job_id
    ).stdout.splitlines()
    (row,) = [r for r in read_rows(lines) if isinstance(r, SacctRow)]
    steps = sorted(step["JobID"] for step in row.steps)
    assert steps == sorted(f"{job_id}.{s}" for s in ("batch", "0", "1"))  # no Contain: no extern
    usage = parse_usage(next(s for s in row.steps if s["JobID"].endswith(".0"))["TRESUsageInTot"])
    assert {"cpu", "mem", "energy"} <= set(usage)
    # no NVML here: no gres/gpuutil, so the utilisation stays unknown (TDP is used)
    assert "gres/gpuutil" not in usage
    record = to_record(row.cells, "unused", steps=row.steps)
    assert record.gpu_utilization is None and record.measured == ()


@pytest.mark.integration
def test_the_same_spool_entry_twice_counts_once(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    spool = cluster.root.parent / "jobcarbon-spool"
    before = ledger_rows(config_file)
    for _ in range(2):
        (spool / "new" / workload["gpu1"]).write_text(f"job_id={workload['gpu1']}\n")
        result = jobcarbon(config_file, "slurm", "collect", "--once", env=cluster.env)
        assert result.returncode == 0, result.stderr
        assert "accounted 0 job(s)" in result.stdout
    assert ledger_rows(config_file) == before


@pytest.mark.integration
def test_slurmdbd_down_then_back(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    cluster.stop_slurmdbd()
    try:
        job = cluster.sbatch(
            "alice", "--gres=gpu:a100:1", "-c", "1", "--mem=100", "--wrap", "sleep 1"
        )
        cluster.wait_idle()
        result = jobcarbon(config_file, "slurm", "collect", "--once", env=cluster.env)
        assert result.returncode == 3, result.stdout + result.stderr
        assert (cluster.root.parent / "jobcarbon-spool" / "new" / job).exists()
    finally:
        cluster.start_slurmdbd()
    collect_until_spool_empty(config_file, cluster)
    row = ledger_rows(config_file)[job]
    # right after slurmdbd returns, sacct shows such jobs COMPLETED with End=Unknown for
    # a while; the collector must wait for the end record, not count a zero-length run
    cells = sacct_jobs(cluster)[job]
    assert row["end_time"] is not None
    assert row["gpu_seconds"] == gpus_in(cells["AllocTRES"]) * int(cells["ElapsedRaw"])


@pytest.mark.integration
def test_collector_killed_mid_run_loses_and_doubles_nothing(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    ids = [cluster.sbatch("bob", "-c", "1", "--mem=10", "--wrap", "true") for _ in range(30)]
    cluster.wait_idle()
    service = subprocess.Popen(
        [*JOBCARBON, "--config", str(config_file), "slurm", "collect"],
        env={**cluster.env, "PYTHONPATH": str(ROOT / "plugin")},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    service.send_signal(signal.SIGKILL)
    service.wait()
    collect_until_spool_empty(config_file, cluster)
    rows = ledger_rows(config_file)
    assert all(i in rows for i in ids)
    assert set(rows) == set(sacct_jobs(cluster))


@pytest.mark.integration
def test_sweep_accounts_jobs_whose_epilog_entry_was_lost(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    job = cluster.sbatch("alice", "-c", "1", "--mem=10", "--wrap", "true")
    cluster.wait_idle()
    spool_new = cluster.root.parent / "jobcarbon-spool" / "new"
    wait_for("the epilog entry", (spool_new / job).exists, 30)
    (spool_new / job).unlink()  # the spool is lost

    def swept() -> bool:
        result = jobcarbon(config_file, "slurm", "collect", "--once", env=cluster.env)
        assert result.returncode == 0, result.stderr
        return job in ledger_rows(config_file)

    # for about a second after the job ends sacct may show slurmdbd's placeholder for it
    # (tests/data/README.md), which a sweep leaves to the next one
    wait_for("a sweep to account the job", swept, 30, 1.0)
    assert ledger_rows(config_file)[job]["partition"] == "gpu"


@pytest.mark.integration
def test_import_of_a_real_dump_with_a_broken_line(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str], tmp_path: Path
) -> None:
    fmt = jobcarbon(config_file, "slurm", "sacct-format", check=True).stdout
    command = fmt.split(">")[0].replace("TZ=UTC ", "").replace("'", "")
    dump = cluster.run(*command.split()).stdout.splitlines()
    dump.insert(3, "this line is broken")
    path = tmp_path / "dump.txt"
    path.write_text("\n".join(dump) + "\n")
    other = tmp_path / "other.yaml"
    other.write_text(
        config_file.read_text().replace("sqlite:///ledger.db", f"sqlite:///{tmp_path / 'l.db'}")
    )
    result = jobcarbon(other, "slurm", "import", str(path))
    assert result.returncode == 1
    assert f"{path} line 4: 1 fields where the header has" in result.stderr
    with Ledger(tmp_path / "l.db") as ledger:
        assert ledger.count() == len(sacct_jobs(cluster))
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.integration
def test_import_of_a_real_plain_dump_mends_names_with_a_pipe_and_a_line_break(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str], tmp_path: Path
) -> None:
    """What sites have: `sacct --parsable2` with `|` between the fields, as this Slurm
    prints it. The job names with a `|`, and with a line break, split their lines; the
    import rejoins them, and the collector (`^|^`) gets the line break right too."""
    fmt = jobcarbon(config_file, "slurm", "sacct-format", check=True).stdout
    command = fmt.split(">")[0].replace("TZ=UTC ", "").replace("--delimiter='^|^' ", "")
    dump = cluster.run(*command.split()).stdout
    assert "^|^" not in dump and "|two|lines\nof|name|" in dump  # printed as it is
    path = tmp_path / "plain.txt"
    path.write_text(dump)
    other = tmp_path / "other.yaml"
    other.write_text(
        config_file.read_text().replace("sqlite:///ledger.db", f"sqlite:///{tmp_path / 'l.db'}")
    )
    result = jobcarbon(other, "slurm", "import", str(path))
    assert result.returncode == 0, result.stderr
    jobs = sacct_jobs(cluster)
    # the odd name's job line and the line-break job's line
    assert f"imported {len(jobs)} job(s), 0 unchanged, 2 line(s) repaired, 0 problem(s)" in (
        result.stdout
    )
    with Ledger(tmp_path / "l.db") as ledger:
        names = {str(r["job_id"]): r["name"] for r in ledger.jobs()}
    assert names == {key: cells["JobName"] for key, cells in jobs.items()}
    assert names[workload["line-break"]] == "two|lines\nof|name"
    assert names[workload["odd-name"]] == "a|b `c` 'd' $(touch /tmp/jc-pwned) e"
    assert ledger_rows(config_file)[workload["line-break"]]["name"] == "two|lines\nof|name"
    shutil.rmtree(tmp_path, ignore_errors=True)


def submit_at_once(cluster: SlurmCluster, user: str, count: int, *args: str) -> list[str]:
    """``count`` sbatch calls as ``user``, all running at once; the job ids. A call that
    slurmctld turns away while busy ("Socket timed out") is made again."""
    sbatch = " ".join(
        ["sbatch", "--parsable", "--chdir=/tmp", "--output=/dev/null", *args, "--wrap", "true"]
    )
    script = f"for i in $(seq {count}); do (until {sbatch}; do sleep 0.5; done) & done; wait"
    out = cluster.run("sh", "-c", script, user=user, timeout=120).stdout.split()
    assert len(out) == count, out
    return [i.split(";")[0] for i in out]


def burst(cluster: SlurmCluster, singles: int, arrays: int) -> list[str]:
    """``singles`` one-GPU jobs (alice's and bob's) and ``arrays`` arrays of 100 one-GPU
    tasks (bob's), submitted at once; the job ids (an array's is its array id)."""
    gpu = ("--gres=gpu:a100:1", "-c", "1", "--mem=10")
    with ThreadPoolExecutor(3) as pool:
        parts = [
            pool.submit(submit_at_once, cluster, "alice", singles // 2, *gpu),
            pool.submit(submit_at_once, cluster, "bob", singles - singles // 2, *gpu),
            pool.submit(submit_at_once, cluster, "bob", arrays, "--array=0-99", *gpu),
        ]
        return [job for part in parts for job in part.result()]


def count_in(ledger_path: Path) -> int:
    with Ledger(ledger_path) as ledger:
        return ledger.count()


@pytest.mark.integration
def test_a_burst_of_jobs_and_array_tasks_counts_each_once_across_a_sigkill(
    cluster: SlurmCluster, config_file: Path, workload: dict[str, str]
) -> None:
    """Issue #25's burst: 300 one-GPU jobs and 3 arrays of 100 tasks at once, then 200
    more with the collector SIGKILLed half-way. About a second after a task ends, sacct
    shows slurmdbd's placeholder for it (tests/data/README.md); the collector must wait
    for the task's own record, so that ledger and sacct agree row for row."""
    started = time.monotonic()
    ledger_path = config_file.parent / "ledger.db"
    service_config = config_file.parent / "service.yaml"  # the config, polling every second
    settings = yaml.safe_load(config_file.read_text())
    settings["slurm"].update(poll_interval_s=1, retry_max_s=4)
    service_config.write_text(yaml.safe_dump(settings))
    log = config_file.parent / "collector.log"
    # as the install guide's unit runs it (SlurmUser: root on the test cluster)
    env = {**cluster.env, "JOBCARBON_CONFIG": str(service_config)}
    env["PYTHONPATH"] = str(ROOT / "plugin")
    subprocess.run([*JOBCARBON, "ledger", "migrate"], env=env, check=True, capture_output=True)

    def start_collector() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [*JOBCARBON, "slurm", "collect"], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def all_in(count: int) -> Callable[[], bool]:
        spool_new = cluster.root.parent / "jobcarbon-spool" / "new"
        return lambda: count_in(ledger_path) >= count and not any(spool_new.iterdir())

    collector = start_collector()
    try:
        before = count_in(ledger_path)
        burst(cluster, singles=300, arrays=3)
        submitted = time.monotonic()
        cluster.wait_idle(timeout=150)
        drained = time.monotonic()
        wait_for("the first burst in the ledger", all_in(before + 600), 60, 0.5)
        first = time.monotonic()

        before = count_in(ledger_path)
        burst(cluster, singles=100, arrays=1)
        wait_for("the collector half-way", lambda: count_in(ledger_path) >= before + 80, 90, 0.1)
        collector.send_signal(signal.SIGKILL)
        collector.wait()
        halfway = count_in(ledger_path) - before
        collector = start_collector()
        cluster.wait_idle(timeout=150)
        wait_for("the second burst in the ledger", all_in(before + 200), 60, 0.5)
    except BaseException:
        print(log.read_text()[-3000:])
        raise
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=30)

    expected = sacct_jobs(cluster)
    rows = ledger_rows(config_file)
    assert sorted(rows) == sorted(expected)  # one row per job: no extra, none missing
    assert sum(1 for key in rows if "_" in key) >= 400
    gpu_seconds = {k: gpus_in(c["AllocTRES"]) * int(c["ElapsedRaw"]) for k, c in expected.items()}
    assert {k: r["gpu_seconds"] for k, r in rows.items()} == gpu_seconds
    with Ledger(ledger_path) as ledger:
        assert ledger.totals().gpu_hours * 3600 == pytest.approx(sum(gpu_seconds.values()))
        assert {a.partition for a in ledger.aggregates()} == {"gpu"}
    print(
        f"burst: 600 jobs submitted in {submitted - started:.1f} s, ran in "
        f"{drained - submitted:.1f} s, all in the ledger {first - drained:.1f} s after the "
        f"queue emptied; second burst SIGKILLed with {halfway} of 200 in; "
        f"{time.monotonic() - started:.1f} s in all"
    )
