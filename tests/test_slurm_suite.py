"""tests/support/slurm_suite.py and slurm_capture.py point at the repository's own files.

A trixie or sid cluster runs under ``chroot``: slurm.conf's EpilogSlurmctld runs the
repository's ``slurm/epilog`` at its own path, which the root sees only because the
repository is bind-mounted there. When the helpers moved into tests/support/, the
directory they counted up to became tests/ instead: the roots saw tests/ only, every
epilog exited 127 (slurmctld.log: "EpilogSlurmctld exit status 127:0"), and no spool
entry appeared. These checks need no root and no cluster, so they catch that anywhere.
"""

from __future__ import annotations

from tests.conftest import ROOT
from tests.support import slurm_capture, slurm_suite


def test_the_roots_see_the_repository_with_its_epilog() -> None:
    assert slurm_suite.REPOSITORY == ROOT
    assert str(ROOT) in slurm_suite.BIND_MOUNTS
    assert (slurm_suite.REPOSITORY / "slurm" / "epilog").is_file()


def test_captures_go_where_the_version_tests_read_them() -> None:
    # tests/sources/test_sacct_versions.py reads tests/data/slurm/<version>/
    assert slurm_capture.DATA == ROOT / "tests" / "data" / "slurm"
