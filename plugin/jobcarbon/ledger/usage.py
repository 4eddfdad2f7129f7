"""A job's usage, kept apart from its footprint (schema v9): the ``job_usage`` table's
columns, a record as its row and back, and the readers and writers that
``ledger recompute`` and ``config check`` use (``UsageStore``, a part of ``Ledger``),
with the ``recompute_runs`` table.

A usage row holds everything the footprint model reads from a ``JobRecord``, as the
source gave it, so that a job can be accounted again with another config long after
its scheduler forgot it (a Kubernetes pod, a job imported from a dump). Rows are plain
tuples: the import writes millions; the labels are JSON only where there are any.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from ..errors import LedgerError
from ..records import Component, JobRecord, JobState, MeasuredEnergy
from .connect import Connection
from .dialect import _Dialect, quoted
from .pending import COVERED_NOW
from .rows import JOB_COLUMNS

USAGE_COLUMNS = (
    "cluster",
    "job_id",
    "job_id_raw",
    "user",
    "project",
    "partition",
    "state",
    "name",
    "submit_time",
    "start_time",
    "end_time",
    "gpu_count",
    "gpu_model",
    "cpu_count",
    "memory_gb",
    "node_count",
    "nodes",
    "labels",
    "gpu_utilization",
    "cpu_used_seconds",
    "measured",
    "missing",
)
#: the position of ``missing`` in a usage row: None when the usage is complete
MISSING = USAGE_COLUMNS.index("missing")

_STATES = {state.value: state for state in JobState}


def _measured_text(measured: tuple[MeasuredEnergy, ...]) -> str | None:
    """``covers:energy_j`` per measurement, ';' between: 'cpu,memory:180000.0;gpu:9e5'
    (``repr`` of a float reads back exactly)."""
    if not measured:
        return None
    return ";".join(
        f"{','.join(sorted(c.value for c in m.covers))}:{m.energy_j!r}" for m in measured
    )


def _measured(text: str | None) -> tuple[MeasuredEnergy, ...]:
    if not text:
        return ()
    measured = []
    for part in text.split(";"):
        covers, _, energy_j = part.rpartition(":")
        measured.append(
            MeasuredEnergy(float(energy_j), frozenset(Component(c) for c in covers.split(",")))
        )
    return tuple(measured)


def usage_row(job: JobRecord) -> tuple[Any, ...]:
    """A record as the ``job_usage`` table stores it: its USAGE_COLUMNS, in order."""
    start, end = job.start_time, job.end_time
    return (
        job.cluster,
        job.job_id,
        job.job_id_raw,
        job.user,
        job.project,
        job.partition,
        job.state.value,
        job.name,
        job.submit_time.timestamp(),
        None if start is None else start.timestamp(),
        None if end is None else end.timestamp(),
        job.gpu_count,
        job.gpu_model,
        job.cpu_count,
        job.memory_gb,
        job.node_count,
        job.nodes,
        json.dumps(job.labels, sort_keys=True) if job.labels else None,
        job.gpu_utilization,
        job.cpu_used_seconds,
        _measured_text(job.measured),
        None,
    )


def _moment(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def usage_record(row: Sequence[Any]) -> JobRecord:
    """The record a usage row was made from (what the migration could not rebuild
    stands in as it was rebuilt: no nodes, no labels, the resolved GPU model)."""
    (cluster, job_id, job_id_raw, user, project, partition, state, name, submit, start, end,
     gpu_count, gpu_model, cpu_count, memory_gb, node_count, nodes, labels, gpu_utilization,
     cpu_used_seconds, measured, _missing) = row  # fmt: skip
    return JobRecord(
        cluster,
        job_id,
        user,
        project,
        partition,
        _STATES[state],
        datetime.fromtimestamp(submit, UTC),
        _moment(start),
        _moment(end),
        gpu_count=gpu_count,
        gpu_model=gpu_model,
        cpu_count=cpu_count,
        memory_gb=memory_gb,
        node_count=node_count,
        nodes=nodes,
        name=name,
        gpu_utilization=gpu_utilization,
        measured=_measured(measured),
        job_id_raw=job_id_raw,
        cpu_used_seconds=cpu_used_seconds,
        labels=json.loads(labels) if labels else {},
    )


@cache
def upsert_usage(dialect: _Dialect) -> str:
    """Insert a usage row, or replace the stored one where it differs."""
    changed = " OR ".join(
        f'NOT (job_usage."{c}" {dialect.same} excluded."{c}")' for c in USAGE_COLUMNS[2:]
    )
    return (
        f"INSERT INTO job_usage ({quoted(USAGE_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(USAGE_COLUMNS))}) ON CONFLICT (cluster, job_id) "
        "DO UPDATE SET "
        + ", ".join(f'"{c}" = excluded."{c}"' for c in USAGE_COLUMNS[2:])
        + f" WHERE {changed}"
    )


def _of(alias: str, columns: Sequence[str]) -> str:
    return ", ".join(f'{alias}."{c}"' for c in columns)


_JOINED = "FROM job_usage AS u JOIN jobs AS j ON j.cluster = u.cluster AND j.job_id = u.job_id"
#: every job as ``job_rows`` streams it: JOB_COLUMNS and recorded_at, then USAGE_COLUMNS
JOB_AND_USAGE_ROWS = (
    f"SELECT {_of('j', JOB_COLUMNS)}, j.recorded_at, {_of('u', USAGE_COLUMNS)} {_JOINED} "
    "ORDER BY j.cluster, j.job_id"
)


@dataclass(frozen=True, slots=True)
class UsageScope:
    """Which jobs a recompute reads: by end time (epoch seconds, ``[since, until)``),
    cluster, and site (stored at ``site``, or of a cluster the config puts there now)."""

    since_s: float | None = None
    until_s: float | None = None
    cluster: str | None = None
    site: str | None = None
    site_clusters: tuple[str, ...] = ()
    #: only the jobs waiting for grid hours (``intensity_pending``) whose every hour is
    #: synced now: what a grid sync accounts again
    pending_covered: bool = False

    def where(self, after: tuple[str, str] | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if after is not None:
            clauses.append("(u.cluster, u.job_id) > (?, ?)")
            params.extend(after)
        if self.since_s is not None:
            clauses.append("u.end_time >= ?")
            params.append(self.since_s)
        if self.until_s is not None:
            clauses.append("u.end_time < ?")
            params.append(self.until_s)
        if self.cluster is not None:
            clauses.append("u.cluster = ?")
            params.append(self.cluster)
        if self.site is not None:
            moved = ", ".join("?" * len(self.site_clusters))
            clauses.append(f"(j.site = ? OR u.cluster IN ({moved}))" if moved else "j.site = ?")
            params.extend([self.site, *self.site_clusters])
        if self.pending_covered:
            clauses.append(COVERED_NOW)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def describe(self) -> dict[str, Any]:
        """The scope as the runs table records it (what a resumed run must match)."""
        described: dict[str, Any] = {
            "since_s": self.since_s,
            "until_s": self.until_s,
            "cluster": self.cluster,
            "site": self.site,
        }
        if self.pending_covered:
            described["pending_covered"] = True
        return described


@dataclass(slots=True)
class RecomputeRun:
    """One ``ledger recompute`` run, as the ``recompute_runs`` table keeps it. ``deltas``
    maps (site, month) to [jobs changed, CO2e change in g, energy change in kWh]."""

    run_id: int | None
    started_at: int
    updated_at: int
    host: str
    pid: int
    scope: str
    config_digest: str
    factors_version: str
    intensity_versions: str
    after_cluster: str | None = None
    after_job_id: str | None = None
    jobs_seen: int = 0
    jobs_changed: int = 0
    jobs_incomplete: int = 0
    jobs_failed: int = 0
    deltas: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    status: str = "running"

    @property
    def after(self) -> tuple[str, str] | None:
        if self.after_cluster is None or self.after_job_id is None:
            return None
        return self.after_cluster, self.after_job_id

    def row(self) -> tuple[Any, ...]:
        """Its columns but run_id, ``deltas`` as JSON."""
        values = astuple(self)[1:]
        deltas = [[site, month, *sums] for (site, month), sums in sorted(self.deltas.items())]
        return (*values[:-2], json.dumps(deltas), values[-1])


_RUN_COLUMNS = tuple(RecomputeRun.__dataclass_fields__)


def _run_from_row(row: Sequence[Any]) -> RecomputeRun:
    run = RecomputeRun(*row[:-2])
    run.status = row[-1]
    run.deltas = {(site, month): [*sums] for site, month, *sums in json.loads(row[-2])}
    return run


@dataclass(frozen=True, slots=True)
class ProvenanceCount:
    """How many jobs of a cluster at a site were computed with one set of factors."""

    cluster: str
    site: str
    pue_source: str | None
    intensity_source: str | None
    intensity_version: str | None
    config_digest: str | None
    factors_version: str
    jobs: int


class UsageStore:
    """A part of ``Ledger``: usage rows and recompute runs, on the ledger's connection."""

    _connection: Connection

    def _write_usage(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Usage rows, inside the caller's write transaction."""
        self._connection.run_many(upsert_usage(self._connection.dialect), rows)

    @contextmanager
    def writing(self, what: str = "") -> Iterator[None]:
        """One write transaction (writers wait for each other): committed at the end,
        rolled back on any error, which is raised as a ``LedgerError`` naming ``what``
        was written (``"3 job(s) "``) and where."""
        connection = self._connection
        try:
            connection.begin_write()
            try:
                yield
                connection.run("COMMIT")
            except BaseException:
                connection.run("ROLLBACK")
                raise
        except connection.errors as err:
            raise LedgerError(f"cannot write {what}to {connection.where}: {err}") from err

    def usage_batch(
        self, after: tuple[str, str] | None, scope: UsageScope, limit: int
    ) -> list[tuple[Any, ...]]:
        """The next ``limit`` jobs after the key ``after`` (keyset order: cluster, job_id),
        each as its USAGE_COLUMNS followed by its jobs row's JOB_COLUMNS."""
        where, params = scope.where(after)
        sql = (
            f"SELECT {_of('u', USAGE_COLUMNS)}, {_of('j', JOB_COLUMNS)} {_JOINED}{where} "
            "ORDER BY u.cluster, u.job_id LIMIT ?"
        )
        return [tuple(row) for row in self._connection.query(sql, [*params, limit]).fetchall()]

    def stored_usage(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], JobRecord]:
        """The usage stored for the jobs of ``keys`` (cluster, job_id) that have some."""
        sql = f"SELECT {quoted(USAGE_COLUMNS)} FROM job_usage WHERE cluster = ? AND job_id = ?"
        found: dict[tuple[str, str], JobRecord] = {}
        for key in keys:
            row = self._connection.query(sql, list(key)).fetchone()
            if row is not None:
                found[key] = usage_record(row)
        return found

    def usage_count(self, scope: UsageScope) -> int:
        where, params = scope.where(None)
        sql = f"SELECT COUNT(*) {_JOINED}{where}"
        return int(self._connection.query(sql, params).fetchone()[0])

    def save_recompute_run(self, run: RecomputeRun) -> int:
        """Insert or update a run (inside the caller's transaction, or on its own)."""
        columns = _RUN_COLUMNS[1:]
        if run.run_id is None:
            sql = (
                f"INSERT INTO recompute_runs ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))}) RETURNING run_id"
            )
            run.run_id = int(self._connection.run(sql, run.row()).fetchone()[0])
        else:
            sql = (
                f"UPDATE recompute_runs SET {', '.join(f'{c} = ?' for c in columns)} "
                "WHERE run_id = ?"
            )
            self._connection.run(sql, [*run.row(), run.run_id])
        return run.run_id

    def recompute_runs(self) -> list[RecomputeRun]:
        """Every recompute run, oldest first."""
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM recompute_runs ORDER BY run_id"
        return [_run_from_row(row) for row in self._connection.query(sql, []).fetchall()]

    def provenance(self) -> list[ProvenanceCount]:
        """The jobs by the factors behind their footprints (jobs that used no energy
        used none: left out)."""
        keys = (
            "cluster, site, pue_source, intensity_source, intensity_version, config_digest, "
            "factors_version"
        )
        sql = (
            f"SELECT {keys}, COUNT(*) FROM jobs WHERE energy_facility_kwh > 0 "
            f"GROUP BY {keys} ORDER BY {keys}"
        )
        return [ProvenanceCount(*row) for row in self._connection.query(sql, []).fetchall()]
