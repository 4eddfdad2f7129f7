"""A real single-host Slurm cluster on loopback, for the integration tests.

Debian's slurm-wlm, slurmdbd, munge and mariadb-server (12's Slurm 22.05 on the host,
or trixie's 24.11 or sid's 26.05 in a root file system: ``tests/support/slurm_suite.py``,
chosen by ``JOBCARBON_SLURM_SUITE``), started as plain background processes (no
systemd) in a temporary directory and stopped by the PIDs recorded here. Four fake
A100 GPUs are character devices (``mknod c 1 3``), which slurmd accepts as GRES
files. Jobs run as real Unix users in real Slurm accounts.

Run on its own to try it: ``python -m tests.support.slurm_cluster`` (as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port, wait_for
from tests.support.slurm_suite import Suite, suite

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
CLUSTER = "testcl"
USERS = {"alice": "physics", "bob": "biology"}  # user → Slurm account
GPUS = 4


def missing_components() -> list[str]:
    """What this machine lacks to run the selected suite's cluster; empty when it can."""
    return suite().missing()


@dataclass
class SlurmCluster:
    root: Path
    epilog: Path | None = None
    gpus: int = GPUS  # fake GPUs (and as many CPUs): a burst test asks for more
    suite: Suite = field(default_factory=suite)
    mail_prog: Path | None = None  # slurm.conf MailProg
    private_data: str | None = None  # PrivateData of slurm.conf and (for sacct) slurmdbd.conf
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf"), "TZ": "UTC"}

    def run(
        self, *args: str, user: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.suite.command(args, user),
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    # --- start -----------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged and the job users must reach their files
        self.suite.enter()
        for name in ("state", "spool", "log", "db", "run"):
            (self.root / name).mkdir(exist_ok=True)
        self._users()
        self._gpus()
        self._munge()
        self._mariadb()
        self._slurmdbd()
        self._accounts()
        self._slurmctld_and_slurmd()
        return self

    def _users(self) -> None:
        for user in USERS:
            self.suite.add_user(user)

    def _gpus(self) -> None:
        for i in range(self.gpus):
            device = self.root / f"gpu{i}"
            if not device.exists():
                subprocess.run(["mknod", str(device), "c", "1", "3"], check=True)

    def _spawn(
        self, name: str, args: Sequence[str], user: str | None = None, on_host: bool = False
    ) -> None:
        log = (self.root / "log" / f"{name}.out").open("ab")
        self.processes[name] = subprocess.Popen(
            list(args) if on_host else self.suite.command(args, user),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _munge(self) -> None:
        # Slurm's clients (sacctmgr, sbatch) look for munged at its default socket only
        munge_dir = Path("/run/munge")  # in a suite's root, the root's own
        subprocess.run(
            self.suite.command(
                ["install", "-d", "-m", "755", "-o", "munge", "-g", "munge", str(munge_dir)]
            ),
            check=True,
        )
        self.munge_socket = munge_dir / "munge.socket.2"
        self._spawn(
            "munged",
            [
                "/usr/sbin/munged",
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munge.seed'}",
            ],
            user="munge",
        )
        wait_for("munged socket", self.suite.path(self.munge_socket).exists, 15)

    def _mariadb(self) -> None:
        # the host's MariaDB (Debian 12's 10.11) for every suite: trixie's 24.11.5 and
        # sid's 26.05.5 slurmdbd fail against their own 11.8.9 at start-up
        # (_check_mysql_concat_is_sane: "mysql_query failed: 5027 Number of columns in
        # result (=1) set execeeds maxmimum allowed number of columns (=0)")
        datadir = self.root / "db"
        self.db_port = free_port()
        self.db_socket = self.root / "run" / "mysqld.sock"
        subprocess.run(
            [
                "mariadb-install-db",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        self._spawn(
            "mariadbd",
            [
                "/usr/sbin/mariadbd",
                f"--datadir={datadir}",
                "--user=root",
                f"--port={self.db_port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.db_socket}",
                f"--pid-file={self.root / 'run' / 'mariadbd.pid'}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
            on_host=True,
        )
        wait_for(
            "mariadb",
            lambda: (
                subprocess.run(
                    ["mariadb", f"--socket={self.db_socket}", "-e", "SELECT 1"], capture_output=True
                ).returncode
                == 0
            ),
            60,
        )
        subprocess.run(
            [
                "mariadb",
                f"--socket={self.db_socket}",
                "-e",
                "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmtest';"
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';",
            ],
            check=True,
            capture_output=True,
        )

    def _write(self, name: str, text: str, mode: int = 0o644) -> Path:
        path = self.root / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def _slurmdbd(self) -> None:
        self.dbd_port = free_port()
        self._write(
            "slurmdbd.conf",
            f"""
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StoragePass=slurmtest
StorageLoc=slurm_acct_db
LogFile={self.root / "log" / "slurmdbd.log"}
PidFile={self.root / "run" / "slurmdbd.pid"}
DebugLevel=info
{f"PrivateData={self.private_data}" if self.private_data else ""}
""",
            0o600,
        )
        self._slurm_conf()
        self.start_slurmdbd()

    def start_slurmdbd(self) -> None:
        self._spawn("slurmdbd", ["/usr/sbin/slurmdbd", "-D", "-s"])
        wait_for(
            "slurmdbd",
            lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
            60,
            0.5,
        )

    def stop_slurmdbd(self) -> None:
        self._stop("slurmdbd")

    def _slurm_conf(self) -> None:
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        epilog = f"EpilogSlurmctld={self.epilog}\n" if self.epilog else ""
        if self.suite.root:
            # 24.11's and 26.05's slurmd start a cgroup plugin even with proctrack/pgid
            # and task/none, and the root has no cgroup hierarchy to give it
            self._write("cgroup.conf", "CgroupPlugin=disabled\n")
        options = f"PrivateData={self.private_data}\n" if self.private_data else ""
        options += f"MailProg={self.mail_prog}\n" if self.mail_prog else ""
        self._write(
            "gres.conf",
            f"NodeName=localhost Name=gpu Type=a100 File={self.root}/gpu[0-{self.gpus - 1}]\n",
        )
        self._write(
            "slurm.conf",
            f"""
ClusterName={CLUSTER}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={self.root / "run" / "slurmctld.pid"}
SlurmdPidFile={self.root / "run" / "slurmd.pid"}
SlurmctldLogFile={self.root / "log" / "slurmctld.log"}
SlurmdLogFile={self.root / "log" / "slurmd.log"}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.dbd_port}
AccountingStorageTRES=gres/gpu,gres/gpu:a100
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobCompType=jobcomp/none
MinJobAge=2
KillWait=2
InactiveLimit=0
{epilog}{options}NodeName=localhost NodeAddr=127.0.0.1 CPUs={max(8, self.gpus)} RealMemory=8000 \
    Gres=gpu:a100:{self.gpus} State=UNKNOWN
PartitionName=gpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""",
        )

    def _accounts(self) -> None:
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        for account in sorted(set(USERS.values())):
            self.run("sacctmgr", "-i", "add", "account", account, f"cluster={CLUSTER}")
        for user, account in USERS.items():
            self.run(
                "sacctmgr", "-i", "add", "user", user, f"account={account}", f"cluster={CLUSTER}"
            )

    def _slurmctld_and_slurmd(self) -> None:
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"])
        wait_for(
            "slurmctld",
            lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0,
            60,
            0.5,
        )
        self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-N", "localhost"])
        wait_for(
            "node idle",
            lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False).stdout,
            60,
            0.5,
        )

    # --- use -------------------------------------------------------------------------

    def sbatch(self, user: str, *args: str) -> str:
        """Submit a job as ``user``; returns the job id (``sbatch --parsable``)."""
        out = self.run(
            "sbatch",
            "--parsable",
            "--chdir=/tmp",
            "--output=/dev/null",
            *args,
            user=user,
            timeout=30,
        )
        return out.stdout.strip().split(";")[0]

    def wait_idle(self, timeout: float = 120) -> None:
        """Wait until no job is pending or running."""
        wait_for(
            "the queue to drain",
            lambda: self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip() == "",
            timeout,
            0.5,
        )

    # --- stop ------------------------------------------------------------------------

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            self._stop(name)
        self.suite.leave()

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-30:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


@contextmanager
def temporary_cluster(prefix: str, **options: Any) -> Iterator[SlurmCluster]:
    """A started cluster under a new directory readable by the job users (``root.parent``
    holds what a test puts next to it), or the test skipped where none can run here."""
    import pytest

    missing = missing_components()
    if missing:
        pytest.skip(
            f"no Slurm test cluster: missing {', '.join(missing)}. Enable with "
            "`apt-get install slurm-wlm slurmdbd munge mariadb-server` and run as root"
        )
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # the job users read slurm.conf and what the test puts here
    slurm = SlurmCluster(root / "cluster", **options)
    try:
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_or_show_logs(slurm: SlurmCluster) -> None:
    try:
        slurm.start()
    except Exception:
        print(slurm.logs())
        raise


if __name__ == "__main__":
    import tempfile

    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-")))
    started = time.monotonic()
    try:
        cluster.start()
        print(f"started in {time.monotonic() - started:.1f} s at {cluster.root}")
        job = cluster.sbatch(
            "alice", "--gres=gpu:a100:2", "-c", "2", "--mem=100", "--wrap", "sleep 2"
        )
        cluster.wait_idle()
        time.sleep(2)
        print(
            cluster.run(
                "sacct",
                "-j",
                job,
                "--parsable2",
                "--allusers",
                "--duplicates",
                "--format=JobIDRaw,JobID,User,Account,State,AllocTRES,ElapsedRaw",
            ).stdout
        )
    except Exception:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
