"""A real PostgreSQL server for the ledger tests: Debian's `postgresql` binaries,
`initdb` into a temporary directory and `pg_ctl start` on 127.0.0.1, as an
unprivileged user (``postgres`` when the tests run as root), stopped at the end.

It starts in about a second. Each test gets a fresh database on the one server.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.net import free_port

ROLE = "jobcarbon"
PASSWORD_ROLE, PASSWORD = "carbon", "s3cret-pg"


def _bin_dir() -> Path | None:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda path: int(path.split("/")[4]))  # the newest major version
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip("needs PostgreSQL's server binaries: apt-get install postgresql")
        self.bin_dir = bin_dir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="jobcarbon-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log = self.socket_dir / "server.log"
        for directory in (self.data, self.socket_dir):
            directory.mkdir()
            if os.geteuid() == 0:
                shutil.chown(directory, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.base)

    def start(self, tls: tuple[Path, Path] | None = None) -> PostgresServer:
        """Start; with ``tls`` (certificate, key) it also takes TLS, and the role
        ``PASSWORD_ROLE`` may log in over TLS with ``PASSWORD`` only."""
        init = self._run(
            "initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "--no-sync", "-E", "UTF8"
        )
        assert init.returncode == 0, init.stderr
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c fsync=off -c max_connections=50"
        )
        if tls is not None:
            for source, name in zip(tls, ("server.crt", "server.key"), strict=True):
                shutil.copy(source, self.data / name)
                (self.data / name).chmod(0o600)
                if os.geteuid() == 0:
                    shutil.chown(self.data / name, "postgres", "postgres")
            options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
            hba = self.data / "pg_hba.conf"  # first match wins: the password role first
            hba.write_text(
                f"local all all trust\nhostssl all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
                "host all all 127.0.0.1/32 trust\n"
            )
        started = self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"
        )
        assert started.returncode == 0, started.stderr + self.log.read_text()
        if tls is not None:
            import psycopg

            with psycopg.connect(self.url(), autocommit=True) as connection:
                connection.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
                connection.execute(f"CREATE DATABASE {PASSWORD_ROLE} OWNER {PASSWORD_ROLE}")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
