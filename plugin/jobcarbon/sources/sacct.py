"""Reading Slurm accounting as ``sacct --parsable2`` prints it.

The first line is the header (any column order; ``jobcarbon slurm sacct-format``
prints the columns to ask for). Job-level rows carry the allocation; GPU counts
come from ``AllocTRES`` (``gres/gpu=N`` and ``gres/gpu:<type>=N``), never from GRES
strings. Step rows (``JobID`` with a dot) are skipped here. Times are read as UTC
(run sacct with ``TZ=UTC``). A line that cannot be read becomes a
``RecordProblem`` naming its line number; the lines around it are still read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ..config import AttributionConfig
from ..records import Component, JobRecord, JobState, MeasuredEnergy, RecordProblem

#: Columns to ask sacct for (``--format``); the reader needs those marked required.
SACCT_FIELDS = (
    "JobIDRaw",
    "JobID",
    "Cluster",
    "User",
    "Account",
    "WCKey",
    "Partition",
    "State",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "AllocTRES",
    "NNodes",
    "NodeList",
    "JobName",
    "ConsumedEnergyRaw",
)
REQUIRED_FIELDS = (
    "JobIDRaw",
    "JobID",
    "User",
    "Account",
    "Partition",
    "State",
    "Submit",
    "Start",
    "End",
    "AllocTRES",
)

_STATES = {
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
    "REQUEUED": JobState.REQUEUED,
    "BOOT_FAIL": JobState.BOOT_FAIL,
    "DEADLINE": JobState.DEADLINE,
}
_PROJECT_FIELDS = {"account": "Account", "wckey": "WCKey", "partition": "Partition"}
#: What jobcarbon asks sacct to separate fields with: a job name may hold a "|".
DELIMITER = "^|^"
_MEMORY_UNITS = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "P": 1024.0**2}
_GPU_TRES = re.compile(r"^gres/gpu(?::(?P<type>[^=]+))?$")


def parse_time(text: str) -> datetime | None:
    """A sacct timestamp (``2026-10-03T14:05:00``, read as UTC), or None for Unknown/None."""
    text = text.strip()
    if text in ("", "Unknown", "None"):
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def parse_state(text: str) -> JobState:
    """``CANCELLED by 1234`` → cancelled. Raises ValueError for running or unknown states."""
    word = text.split()[0] if text.strip() else ""
    if word not in _STATES:
        raise ValueError(f"state {text!r} is not a final state")
    return _STATES[word]


def parse_memory_gb(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)([KMGTP]?)", text.strip())
    if not match:
        raise ValueError(f"memory {text!r} is not a size like 64G")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2) or "M"]


def parse_alloc_tres(text: str) -> tuple[float, str | None, int, float, int]:
    """``AllocTRES`` → (GPUs, GPU type or None, CPUs, memory GB, nodes).

    Typed entries (``gres/gpu:a100=4``) name the model; the untyped total
    (``gres/gpu=4``) is the count when present, else the typed entries are summed.
    """
    gpus_total: float | None = None
    typed: dict[str, float] = {}
    cpus, memory_gb, nodes = 0, 0.0, 1
    for item in filter(None, text.strip().split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"AllocTRES entry {item!r} has no '='")
        gpu = _GPU_TRES.match(name)
        if gpu:
            if gpu.group("type"):
                typed[gpu.group("type")] = float(value)
            else:
                gpus_total = float(value)
        elif name == "cpu":
            cpus = int(value)
        elif name == "mem":
            memory_gb = parse_memory_gb(value)
        elif name == "node":
            nodes = int(value)
    gpu_count = gpus_total if gpus_total is not None else sum(typed.values())
    gpu_type = next(iter(typed)) if len(typed) == 1 else None
    return gpu_count, gpu_type, cpus, memory_gb, nodes


@dataclass(frozen=True, slots=True)
class SacctRow:
    """One job-level row of sacct output, with where it came from."""

    where: str
    cells: dict[str, str]

    @property
    def job_id_raw(self) -> str:
        return self.cells["JobIDRaw"]

    @property
    def is_final(self) -> bool:
        """Ended, and its end record is in: after slurmdbd restarts, sacct shows jobs
        COMPLETED with End=Unknown for a few seconds, until slurmctld replays the end."""
        state = self.cells["State"].split()
        return (
            bool(state)
            and state[0] in _STATES
            and self.cells["End"].strip() not in ("", "Unknown", "None")
        )


def read_rows(lines: Iterable[str], *, source: str = "sacct") -> Iterator[SacctRow | RecordProblem]:
    """Job-level rows of sacct output (steps skipped); unreadable lines become problems.

    The delimiter is ``|`` (``--parsable2``) unless the header uses ``DELIMITER``, which
    jobcarbon asks sacct for so that a ``|`` in a job name cannot split a row.
    """
    iterator = iter(lines)
    header_line = next(iterator, "").rstrip("\n")
    delimiter = DELIMITER if DELIMITER in header_line else "|"
    header = header_line.split(delimiter)
    missing = [f for f in REQUIRED_FIELDS if f not in header]
    if missing:
        yield RecordProblem(
            f"{source} line 1",
            f"header lacks column(s) {', '.join(missing)}; ask sacct for: {','.join(SACCT_FIELDS)}",
        )
        return
    for line_no, line in enumerate(iterator, start=2):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        cells = line.split(delimiter)
        where = f"{source} line {line_no}"
        if len(cells) != len(header):
            yield RecordProblem(
                where,
                f"{len(cells)} fields where the header has {len(header)} "
                f"(a '{delimiter}' or a line break in a job name?)",
            )
            continue
        row = dict(zip(header, cells, strict=True))
        if "." not in row["JobID"]:  # steps carry usage, not the allocation
            yield SacctRow(f"{where} (job {row['JobID']})", row)


def to_records(
    items: Iterable[SacctRow | RecordProblem],
    *,
    cluster: str,
    attributions: Mapping[str, AttributionConfig] | None = None,
) -> Iterator[JobRecord | RecordProblem]:
    """Rows as records; a row that cannot be one becomes a problem naming its line.

    A row's project follows the attribution of the cluster it names (its ``Cluster``
    column, else ``cluster``); clusters not in ``attributions`` use the Slurm account.
    """
    for item in items:
        if isinstance(item, RecordProblem):
            yield item
            continue
        attribution = (attributions or {}).get(item.cells.get("Cluster") or cluster)
        project_from = attribution.project_from if attribution else "account"
        try:
            yield to_record(item.cells, cluster, project_from)
        except (ValueError, KeyError) as err:
            yield RecordProblem(item.where, str(err))


def read_parsable(
    lines: Iterable[str],
    *,
    cluster: str,
    attributions: Mapping[str, AttributionConfig] | None = None,
    source: str = "sacct",
) -> Iterator[JobRecord | RecordProblem]:
    """Stream sacct output as records and problems, in input order."""
    return to_records(read_rows(lines, source=source), cluster=cluster, attributions=attributions)


def to_record(row: dict[str, str], cluster: str, project_from: str = "account") -> JobRecord:
    """A job-level sacct row as a ``JobRecord``; ``ValueError`` names what is wrong.

    Array tasks are keyed ``<array job>_<task>``; an earlier run of a requeued job
    (``--duplicates`` shows it as REQUEUED) is keyed ``<id>+run@<start epoch>``, so
    every run is counted once and the final run keeps the plain id.
    """
    project_field = _PROJECT_FIELDS[project_from]
    if project_field not in row:
        raise ValueError(f"column {project_field} (attribution.project_from) is missing")
    gpus, gpu_type, cpus, memory_gb, nodes = parse_alloc_tres(row["AllocTRES"])
    state = parse_state(row["State"])
    measured = None
    energy = row.get("ConsumedEnergyRaw", "").strip()
    if energy and float(energy) > 0:
        # acct_gather_energy (IPMI) counts the whole node: GPU, CPU and memory
        measured = MeasuredEnergy(float(energy), frozenset(Component))
    start = parse_time(row["Start"])
    if start is not None and parse_time(row["End"]) is None:
        raise ValueError(
            f"State is {row['State']} but End is {row['End']!r}: the accounting "
            "record is not complete yet"
        )
    job_id = row["JobID"] if "_" in row["JobID"] else row["JobIDRaw"]
    if state is JobState.REQUEUED:
        job_id += f"+run@{int((start or _required_time(row, 'Submit')).timestamp())}"
    return JobRecord(
        cluster=row.get("Cluster") or cluster,
        job_id=job_id,
        user=row["User"],
        project=row[project_field],
        partition=row["Partition"],
        state=state,
        submit_time=_required_time(row, "Submit"),
        start_time=start,
        end_time=parse_time(row["End"]),
        gpu_count=gpus,
        gpu_model=gpu_type,
        cpu_count=cpus,
        memory_gb=memory_gb,
        node_count=int(row.get("NNodes") or nodes),
        nodes=row.get("NodeList", ""),
        name=row.get("JobName", ""),
        measured=measured,
    )


def _required_time(row: dict[str, str], name: str) -> datetime:
    value = parse_time(row[name])
    if value is None:
        raise ValueError(f"{name} is {row[name]!r}")
    return value
