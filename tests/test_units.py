"""The shipped systemd units parse, as systemd itself reads them (systemd-analyze verify).

They are checked inside a scratch root holding the units, the targets they refer
to and stand-ins for the commands they run at their paths, so that the
check needs no installation and touches nothing on the host.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = sorted(p for p in (ROOT / "slurm").iterdir() if p.suffix in (".service", ".timer"))
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="needs systemd-analyze: apt-get install systemd",
)
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for shipped in UNITS:  # a timer needs its service beside it
        shutil.copy(shipped, root / "etc/systemd/system" / shipped.name)
    for stand_in in ("usr/local/bin/jobcarbon", "bin/kill"):  # ExecStart=, ExecReload=
        command = root / stand_in
        command.parent.mkdir(parents=True, exist_ok=True)
        command.write_text("#!/bin/sh\n")
        command.chmod(0o755)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", unit.name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_every_unit_is_shipped() -> None:
    assert [u.name for u in UNITS] == [
        "jobcarbon-collector.service",
        "jobcarbon-exporter.service",
        "jobcarbon-report.service",
        "jobcarbon-report.timer",
    ]
