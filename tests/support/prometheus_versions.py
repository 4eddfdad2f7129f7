"""The two Prometheus versions the exporter, dashboard and rules tests run under.

- 2.42: Debian 12's ``prometheus`` package, ``prometheus`` and ``promtool`` on PATH.
- 3.x: the directory named by ``JOBCARBON_PROMETHEUS`` holds ``prometheus`` and
  ``promtool`` (an unpacked upstream release, or ``usr/bin`` of sid's package: .ci/run
  extracts sid's 3.5 once per run; its binaries need nothing newer than Debian 12's libc).

A test takes ``VERSIONS`` as its parameters and calls ``tool()``, which skips when the
binaries are missing (a failure under CI=true) and fails when they are not the version
asked for, so 2.42 is never tested twice by mistake.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = "JOBCARBON_PROMETHEUS"


@dataclass(frozen=True)
class Prometheus:
    major: int
    directory: Path | None  # where the binaries are; None: on PATH
    hint: str  # how to get them

    def tool(self, program: str) -> str:
        """The path of ``prometheus`` or ``promtool`` of this version."""
        if self.directory is None:
            found = shutil.which(program)
        else:
            candidate = self.directory / program
            found = str(candidate) if os.access(candidate, os.X_OK) else None
        if found is None:
            pytest.skip(f"{program} {self.major}.x not found: {self.hint}")
        version = _version(found)
        assert version.startswith(f"{self.major}."), f"{found} is version {version}"
        return found


@functools.cache
def _version(path: str) -> str:
    """``3.5.3+ds1`` from ``prometheus, version 3.5.3+ds1 (branch: …)``."""
    run = subprocess.run([path, "--version"], capture_output=True, text=True)
    first = run.stdout + run.stderr
    return first.split("version ", 1)[1].split()[0] if "version " in first else first


PROMETHEUS_2 = Prometheus(2, None, "apt-get install prometheus (Debian 12 ships 2.42)")
PROMETHEUS_3 = Prometheus(
    3,
    Path(os.environ.get(ENV) or f"${ENV}-is-not-set"),
    f"set {ENV} to a directory with Prometheus 3's prometheus and promtool "
    "(.ci/run extracts sid's package)",
)
VERSIONS = [
    pytest.param(PROMETHEUS_2, id="prometheus2"),
    pytest.param(PROMETHEUS_3, id="prometheus3"),
]
