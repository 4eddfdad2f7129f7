"""Connections to a ledger's database: a SQLite file, created private (0640 in a 0750
directory: it names every user's jobs) and in WAL mode, or a PostgreSQL database given
by its URL, its password from the config's environment variable or file. A
``Connection`` runs statements in either backend's parameter style and turns the
driver's errors into ``LedgerError``s naming the ledger."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import access
from ..errors import LedgerError
from .dialect import POSTGRES, SQLITE, _Dialect

#: Taken by each writer of a PostgreSQL ledger for its batch (an arbitrary number, the
#: same in every jobcarbon).
_WRITE_LOCK = 7_715_518


class Connection:
    """One open ledger database; ``where`` names it in messages (no password)."""

    def __init__(
        self, db: Any, dialect: _Dialect, where: str, errors: tuple[type[BaseException], ...]
    ) -> None:
        self.db = db
        self.dialect = dialect
        self.where = where
        self.errors = errors  # the driver's
        self._streams = 0

    def close(self) -> None:
        self.db.close()

    def run(self, sql: str, params: Any = ()) -> Any:
        """Execute one statement in this backend's parameter style; the cursor."""
        return self.db.execute(self.dialect.params(sql), params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect is POSTGRES:
            with self.db.cursor() as cursor:
                cursor.executemany(self.dialect.params(sql), rows)
        else:
            self.db.executemany(sql, rows)

    def query(self, sql: str, params: Iterable[Any]) -> Any:
        """``run`` for a reader: a failure is a LedgerError."""
        try:
            return self.run(sql, list(params))
        except self.errors as err:
            raise LedgerError(f"cannot read ledger {self.where}: {err}") from err

    def stream(self, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of a query a thousand at a time (PostgreSQL: a server-side cursor)."""
        try:
            if self.dialect is POSTGRES:
                self._streams += 1  # each stream its own cursor: several may be open
                cursor = self.db.cursor(name=f"jobcarbon_{self._streams}", withhold=True)
                cursor.execute(self.dialect.params(sql), params)
            else:
                cursor = self.db.execute(sql, params)
        except self.errors as err:
            raise LedgerError(f"cannot read ledger {self.where}: {err}") from err
        try:
            while chunk := cursor.fetchmany(1000):
                yield from (tuple(row) for row in chunk)
        finally:
            cursor.close()

    def begin_write(self) -> None:
        if self.dialect is POSTGRES:
            self.run("BEGIN")
            # one writer at a time, as SQLite has it. An advisory lock, not a table lock:
            # readers are not blocked, and neither is autovacuum, which the totals' many
            # updates need (a table lock held by each batch starved it: 81 MB of dead rows
            # for 5,000 live ones after a million jobs, and 4.6 s batches)
            self.run(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
        else:
            self.run("BEGIN IMMEDIATE")


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def connect(
    location: str | Path, *, create: bool, busy_timeout_s: float, password: str | None
) -> Connection:
    """The database at ``location``; a SQLite file is made if ``create``, else must exist."""
    text = str(location)
    if is_postgres(text):
        where = _redact(text)
        db, errors = _connect_postgres(text, password, busy_timeout_s, where)
        return Connection(db, POSTGRES, where, errors)
    path = Path(location)
    db = _connect_sqlite(path, create, busy_timeout_s)
    return Connection(db, SQLITE, str(path), (sqlite3.Error,))


def _connect_sqlite(path: Path, create: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to the ledger file at ``path`` (created private if ``create``)."""
    try:
        if create:
            _create_private(path)
        elif not path.exists():
            raise LedgerError(f"no ledger at {path}")
    except OSError as err:
        action = "create the ledger" if create else "open the ledger"
        raise LedgerError(access.describe(path, action, err, write=create)) from err
    try:
        db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _wal_mode(db, busy_timeout_s)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA temp_store = MEMORY")  # the staged batch
    except sqlite3.Error as err:
        raise LedgerError(
            access.describe(path, "open the ledger", write=create) + f" ({err})"
        ) from err
    return db


def _create_private(path: Path) -> None:
    """The ledger file, made 0640 (its directory 0750) if it does not exist: it names
    every user's jobs. SQLite gives its -wal and -shm files the mode of the main file."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o640))  # an existing file: as it is


def _wal_mode(db: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL. Processes creating one file at once can get "database is locked"
    here without SQLite's busy handler being asked: wait and try again, as it would."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"^(\w+://[^/@:]+):[^/@]*@", r"\1:***@", url)


def _connect_postgres(
    url: str, password: str | None, timeout_s: float, where: str
) -> tuple[Any, tuple[type[BaseException], ...]]:
    try:
        import psycopg
    except ImportError as err:
        raise LedgerError(
            f"ledger {where} is PostgreSQL: install the driver with "
            "pip install 'jobcarbon[postgres]'"
        ) from err
    options: dict[str, Any] = {"connect_timeout": max(1, int(timeout_s))}
    if password:
        options["password"] = password
    try:
        connection = psycopg.connect(url, autocommit=True, **options)
        # a waiting writer gives up, as SQLite's busy timeout does
        connection.execute(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'")
    except psycopg.Error as err:
        raise LedgerError(f"cannot open ledger {where}: {err}") from err
    return connection, (psycopg.Error,)
