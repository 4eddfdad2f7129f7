"""Running sacct (or reading pyslurm) for the Slurm accounting jobcarbon needs.

``Accounting`` is what the collector asks of either backend; ``open_accounting`` picks
the one ``slurm.backend`` names. Failing to reach accounting (slurmdbd down, sacct
missing or timing out) is ``AccountingUnavailable``, a ``TemporaryError``: the caller
retries with its backoff.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from ...config import SlurmConfig
from ...errors import ConfigError, SourceError
from . import AccountingUnavailable
from .fields import DELIMITER, FINAL_STATES, SACCT_FIELDS
from .pyslurm import PySlurm, matches
from .sacct import Rows, read_rows

log = logging.getLogger("jobcarbon.slurm")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class Accounting(Protocol):
    """Where Slurm accounting is read: job rows (with their steps) in sacct's terms.

    ``AccountingUnavailable`` (a ``TemporaryError``) when accounting cannot be read;
    the caller retries.
    """

    def jobs(self, job_ids: Sequence[str]) -> Rows:
        """Every run of these jobs (and, for an array job's id, of all its tasks)."""
        ...

    def ended_between(self, start: datetime, end: datetime) -> Rows:
        """Jobs that ended between ``start`` and ``end`` (and possibly others: callers
        keep the final ones)."""
        ...


class Sacct:
    """Runs ``sacct`` with the options jobcarbon needs; returns its rows."""

    def __init__(
        self,
        command: str = "sacct",
        run: Runner = subprocess.run,
        timeout_s: float = 120.0,
        cluster: str | None = None,
    ) -> None:
        self.command = command
        self.run = run
        self.timeout_s = timeout_s
        self.cluster = cluster  # another cluster of the same slurmdbd (sacct --clusters)

    def _run(self, args: list[str]) -> str:
        """Run the sacct command with ``args``; its output, or ``AccountingUnavailable``."""
        env = {**os.environ, "TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}
        try:
            result = self.run(
                [self.command, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise AccountingUnavailable(f"cannot run {self.command}: {err}") from err
        if result.returncode != 0 or "error:" in result.stderr:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise AccountingUnavailable(
                f"{self.command} failed (exit {result.returncode}): "
                f"{message[-1] if message else 'no output'}"
            )
        return str(result.stdout)

    def _call(self, *selection: str) -> list[str]:
        return self._run(
            [
                "--parsable2",
                f"--delimiter={DELIMITER}",
                "--allusers",
                "--duplicates",
                f"--format={','.join(SACCT_FIELDS)}",
                *([f"--clusters={self.cluster}"] if self.cluster else []),
                *selection,
            ]
        ).splitlines()

    def jobs(self, job_ids: Sequence[str]) -> Rows:
        return list(read_rows(self._call(f"--jobs={','.join(job_ids)}"), source="sacct"))

    def ended_between(self, start: datetime, end: datetime) -> Rows:
        stamp = "%Y-%m-%dT%H:%M:%S"
        lines = self._call(
            f"--starttime={start.strftime(stamp)}",
            f"--endtime={end.strftime(stamp)}",
            f"--state={FINAL_STATES}",
        )
        return list(read_rows(lines, source=f"sacct {start:%Y-%m-%d %H:%M}"))

    def jobs_of(self, user: str, since: datetime) -> Rows:
        """``user``'s jobs that ran, or were pending, at or after ``since``, in any state."""
        lines = self._call(f"--user={user}", f"--starttime={since:%Y-%m-%dT%H:%M:%S}")
        return list(read_rows(lines, source=f"sacct --user={user}"))

    def version(self) -> str:
        """The running Slurm's version, as ``sacct --version`` prints it (``22.05.8``)."""
        printed = self._run(["--version"])
        words = printed.split()
        if len(words) != 2:
            raise SourceError(f"{self.command} --version printed {printed.strip()!r}")
        return words[1]


def _import_pyslurm() -> Any:
    return importlib.import_module("pyslurm")


def open_accounting(
    settings: SlurmConfig,
    import_pyslurm: Callable[[], Any] = _import_pyslurm,
    run: Runner = subprocess.run,
) -> Accounting:
    """The backend ``slurm.backend`` asks for: ``sacct``; ``pyslurm`` (an error when it
    does not import or was built for another Slurm); ``auto``, pyslurm when it imports
    and matches the running Slurm (``sacct --version``), else sacct."""
    sacct = Sacct(settings.sacct, run, settings.sacct_timeout_s)
    if settings.backend == "sacct":
        return sacct
    try:
        pyslurm = import_pyslurm()
        built_for = str(pyslurm.__version__)
    except (ImportError, AttributeError) as err:
        if settings.backend == "pyslurm":
            raise ConfigError(
                [
                    f"slurm.backend: pyslurm, but pyslurm does not import ({err}); install "
                    "the pyslurm release built for this Slurm, or use backend: sacct"
                ]
            ) from err
        log.info("reading accounting with sacct (pyslurm does not import: %s)", err)
        return sacct
    try:
        running = sacct.version()
    except SourceError as err:
        if settings.backend == "pyslurm":
            log.warning("cannot tell the running Slurm's version (%s); using pyslurm", err)
            return PySlurm(pyslurm)
        log.info("reading accounting with sacct (%s)", err)
        return sacct
    if matches(built_for, running):
        log.info("reading accounting with pyslurm %s (Slurm %s)", built_for, running)
        return PySlurm(pyslurm)
    if settings.backend == "pyslurm":
        raise ConfigError(
            [
                f"slurm.backend: pyslurm {built_for} is built for another Slurm than the "
                f"running {running}; install the matching pyslurm, or use backend: sacct"
            ]
        )
    log.info("reading accounting with sacct (pyslurm %s, Slurm %s)", built_for, running)
    return sacct
