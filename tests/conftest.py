"""Shared test set-up.

Under CI (``CI=true``) a skipped test is a failure: an integration test must not
pass quietly because its component is missing. On a laptop, skips stay skips and
their reason says how to enable them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from jobcarbon.records import JobRecord, JobState

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str) -> ModuleType:
    """Import a build script from tools/ (they are scripts, not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def make_job(**overrides: Any) -> JobRecord:
    """A completed one-hour, one-GPU job on cluster "c1"; override any field."""
    fields: dict[str, Any] = {
        "cluster": "c1",
        "job_id": "1",
        "user": "alice",
        "project": "proj",
        "partition": "gpu",
        "state": JobState.COMPLETED,
        "submit_time": utc(2026, 10, 1, 9, 0),
        "start_time": utc(2026, 10, 1, 10, 0),
        "end_time": utc(2026, 10, 1, 11, 0),
        "gpu_count": 1,
        "cpu_count": 0,
        "memory_gb": 0,
    }
    fields.update(overrides)
    return JobRecord(**fields)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One real PostgreSQL server for the session (tests/support/postgres_server.py)."""
    from tests.support.postgres_server import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's ledger lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "l.db"
    server = request.getfixturevalue("postgres")
    return str(server.new_database())
