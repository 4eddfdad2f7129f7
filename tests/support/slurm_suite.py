"""Which Slurm the integration tests run: Debian bookworm's, trixie's or sid's.

``JOBCARBON_SLURM_SUITE`` chooses (default ``bookworm``):

- ``bookworm``: Slurm 22.05, the host's own packages (Debian 12);
- ``trixie``: Slurm 24.11, and ``sid``: Slurm 26.05, each in a root file system made
  with ``mmdebstrap`` from Debian's packages, once, and kept in
  ``$JOBCARBON_SUITES_DIR/<suite>`` (default ``/var/cache/jobcarbon-suites``).

A root's Slurm and munge daemons and commands run under ``chroot``, with the host's ``/proc``,
``/sys`` and ``/dev``, and with ``/tmp`` (where the test clusters keep their files)
and the repository (for ``slurm/epilog``) mounted at the same paths, so every path
in slurm.conf means the same inside and out. ``/run`` is the root's own: its munged
listens on the root's ``/run/munge/munge.socket.2`` with the root's own key, so a
chroot cluster never meets the host's munged. The collector under test runs on the
host and reads accounting through ``sacct_wrapper``: a script that runs the root's
own sacct with the cluster's slurm.conf.

Run on its own to build the roots: ``python -m tests.support.slurm_suite build trixie sid``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The repository (tests/support/ is two levels down): a root sees it, so slurm.conf's
#: EpilogSlurmctld can run the repository's own slurm/epilog.
REPOSITORY = Path(__file__).resolve().parents[2]
SUITES = ("bookworm", "trixie", "sid")
HOST_SUITE = "bookworm"
#: What a root holds: the daemons, the clients (sacct, sbatch, scontrol are in
#: slurm-client, which slurm-wlm brings), useradd (passwd). Not MariaDB: every suite's
#: slurmdbd keeps its accounting in the host's (tests/support/slurm_cluster.py says why).
PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "passwd")
MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITES_DIR = Path("/var/cache/jobcarbon-suites")
#: Host paths a root sees at the same place while a cluster runs in it.
BIND_MOUNTS = ("/proc", "/sys", "/dev", "/tmp", str(REPOSITORY))


def suites_dir() -> Path:
    return Path(os.environ.get("JOBCARBON_SUITES_DIR") or DEFAULT_SUITES_DIR)


def selected_name() -> str:
    name = os.environ.get("JOBCARBON_SLURM_SUITE") or HOST_SUITE
    if name not in SUITES:
        raise ValueError(f"JOBCARBON_SLURM_SUITE={name!r}: choose one of {', '.join(SUITES)}")
    return name


@dataclass
class Suite:
    """A Slurm to run: the host's (``root`` None) or a Debian root file system's."""

    name: str
    root: Path | None
    mounted: list[Path] = field(default_factory=list)

    def command(self, args: Sequence[str], user: str | None = None) -> list[str]:
        """``args`` as run in this suite, as ``user`` when given."""
        inner = ["runuser", "-u", user, "--", *args] if user else list(args)
        return ["chroot", str(self.root), *inner] if self.root else inner

    def path(self, inside: str | Path) -> Path:
        """The host's path of a path as this suite's commands see it."""
        return self.root / str(inside).lstrip("/") if self.root else Path(inside)

    def missing(self) -> list[str]:
        """What this machine lacks to run this suite's cluster; empty when it can."""
        if os.geteuid() != 0:
            return ["root (to chroot, start munge and slurmd, create users)"]
        on_host = ("mariadbd", "mariadb-install-db")  # every suite's accounting database
        if self.root is None:
            on_host += ("slurmctld", "slurmd", "slurmdbd", "munged", "sacct")
        elif not self.root.is_dir():
            on_host += ("mmdebstrap",)  # to build the root file system
        return [
            b for b in on_host if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()
        ]

    def build(self) -> float:
        """Make the root file system unless it is there; the seconds it took (0 if it was)."""
        if self.root is None or self.root.is_dir():
            return 0.0
        started = time.monotonic()
        partial = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                # sid's Release file can be older than its Valid-Until on a clock ahead
                '--aptopt=Acquire::Check-Valid-Until "false"',
                f"--include={','.join(PACKAGES)}",
                self.name,
                str(partial),
                MIRROR,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"mmdebstrap {self.name} failed (exit {result.returncode}):\n"
                + result.stderr[-3000:]
            )
        # mmdebstrap writes no /etc/hosts: slurm.conf's "localhost" must resolve
        (partial / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
        partial.rename(self.root)
        return time.monotonic() - started

    def enter(self) -> None:
        """Build the root if needed and mount what its cluster shares with the host."""
        if self.root is None:
            return
        self.build()
        for source in BIND_MOUNTS:
            target = self.path(source)
            target.mkdir(parents=True, exist_ok=True)
            if subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
                continue  # left mounted by an earlier run: use it, leave it
            subprocess.run(["mount", "--bind", source, str(target)], check=True)
            self.mounted.append(target)

    def leave(self) -> None:
        """Unmount what ``enter`` mounted (lazily: a slow process may still hold it)."""
        while self.mounted:
            subprocess.run(["umount", "--lazy", str(self.mounted.pop())], check=False)

    def add_user(self, user: str) -> None:
        """Create ``user`` on the host and, with the host's uid, in the root."""
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", user], check=True)
        if self.root is None:
            return
        if subprocess.run(self.command(["id", user]), capture_output=True).returncode != 0:
            uid = subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout
            subprocess.run(
                self.command(["useradd", "--create-home", "--uid", uid.strip(), user]), check=True
            )

    def sacct_wrapper(self, slurm_conf: Path) -> str:
        """The sacct command for the host's collector: this suite's own sacct, reading
        ``slurm_conf`` (a path the root sees at the same place)."""
        if self.root is None:
            return "sacct"
        wrapper = slurm_conf.with_name("sacct")
        # chroot keeps the rest of the environment: TZ and SLURM_TIME_FORMAT reach sacct
        wrapper.write_text(
            f'#!/bin/sh\nSLURM_CONF={slurm_conf} exec chroot {self.root} /usr/bin/sacct "$@"\n'
        )
        wrapper.chmod(0o755)
        return str(wrapper)


def suite(name: str | None = None) -> Suite:
    """The suite called ``name``, else the one ``JOBCARBON_SLURM_SUITE`` selects."""
    name = name or selected_name()
    return Suite(name, None if name == HOST_SUITE else suites_dir() / name)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2 or argv[0] != "build" or not set(argv[1:]) <= set(SUITES):
        print(f"usage: python -m tests.support.slurm_suite build {{{'|'.join(SUITES)}}}...")
        return 2
    for name in argv[1:]:
        chosen = suite(name)
        seconds = chosen.build()
        done = f"built in {seconds:.0f} s" if seconds else "ready"
        print(f"{name}: {done} ({chosen.root or 'the host'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
