"""The package as a user gets it: `python -m build` makes an sdist and a wheel, and the
wheel, installed into a fresh virtual environment away from the repository, runs.

A file missing from the wheel's package data (a factor table, the demo month, a mail
template, ``py.typed``) fails here, where the editable install of the test run would not
notice. The fresh environment takes the wheel from the build and its dependencies from
the package index (pip's cache makes that quick after the first run).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE_DATA = [
    "jobcarbon/py.typed",
    "jobcarbon/data/hardware.csv",
    "jobcarbon/data/cpus.csv",
    "jobcarbon/data/regions.csv",
    "jobcarbon/data/pue.csv",
    "jobcarbon/data/equivalents.csv",
    "jobcarbon/data/fuel_factors.csv",
    "jobcarbon/data/config.example.yaml",
    "jobcarbon/data/demo/sacct-2026-10.txt",
    "jobcarbon/ledger/migrations/sqlite/0001_jobs.sql",
    "jobcarbon/ledger/migrations/sqlite/0007_job_id_raw.sql",
    "jobcarbon/ledger/migrations/sqlite/0009_usage.sql",
    "jobcarbon/ledger/migrations/postgres/0005_schema.sql",
    "jobcarbon/ledger/migrations/postgres/0007_job_id_raw.sql",
    "jobcarbon/ledger/migrations/postgres/0009_usage.sql",
]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    yield out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv, outside the repository, with the wheel installed: its bin/."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    (wheel,) = dist.glob("jobcarbon-*.whl")
    run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        cwd=venv.parent,
    )
    return venv / "bin"


def test_build_makes_an_sdist_and_a_wheel_with_the_package_data(dist: Path) -> None:
    (sdist,) = dist.glob("jobcarbon-*.tar.gz")
    (wheel,) = dist.glob("jobcarbon-*-py3-none-any.whl")
    wheel_names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= wheel_names
    assert "jobcarbon/templates/" in {name[: len("jobcarbon/templates/")] for name in wheel_names}
    with tarfile.open(sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"plugin/{name}" for name in PACKAGE_DATA} <= sdist_names
    assert {"pyproject.toml", "README.md"} <= sdist_names


def test_the_installed_wheel_runs_the_demo_away_from_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    # a clean environment: nothing of the repository on the path, run from elsewhere
    env = {"PATH": f"{installed}:/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    where = run(
        [str(installed / "python"), "-c", "import jobcarbon; print(jobcarbon.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.strip()).is_relative_to(installed.parent), where
    assert not Path(where.strip()).is_relative_to(ROOT), where
    demo = run([str(installed / "jobcarbon"), "demo", "--dir", "out"], cwd=tmp_path, env=env)
    # every job of the bundled month (job rows, not steps: no "." in the id) accounted
    sacct = (ROOT / "plugin" / "jobcarbon" / "data" / "demo" / "sacct-2026-10.txt").read_text()
    jobs = sum(1 for line in sacct.splitlines()[1:] if "." not in line.split("|", 2)[1])
    assert f"accounted {jobs:,} jobs, 0 problem(s)" in demo
    assert (tmp_path / "out" / "config.yaml").is_file()
    hardware = run([str(installed / "jobcarbon"), "factors", "hardware"], cwd=tmp_path, env=env)
    # a device of the seed calculator (300 W, gpus.csv) and one added from NVIDIA's
    # datasheet (700 W), each on its row with its TDP
    rows = {line.split("│")[1].strip(): line for line in hardware.splitlines() if "│" in line}
    assert "│ 300 " in rows["Tesla V100-PCIE-16GB"]
    assert "│ 700 " in rows["H200 SXM"]
    typed = Path(where.strip()).parent / "py.typed"
    assert typed.is_file(), "py.typed is missing from the installed package"
