"""Reading Slurm accounting as ``sacct --parsable2`` prints it.

The first line is the header (any column order; ``jobcarbon slurm sacct-format``
prints the columns to ask for). Job-level rows carry the allocation; GPU counts
come from ``AllocTRES`` (``gres/gpu=N`` and ``gres/gpu:<type>=N``), never from GRES
strings. Step rows (``JobID`` with a dot) follow their job's row, as sacct prints
them, and carry usage (``TRESUsageInTot``, ``ConsumedEnergyRaw``), which is folded
into the job (``step_usage``); the energy covers what the cluster's
``slurm_energy_covers`` says its energy plugin measures, as sacct cannot tell.
Times are read as UTC (run sacct with ``TZ=UTC``).
A line that cannot be read becomes a ``RecordProblem`` naming its line number; the
lines around it are still read. A line that a ``|`` or a line break in a job name split
is mended and counted (``RecordRepair``): see ``parsable``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from sys import intern

from ...config import SLURM_ENERGY_COVERS, ClusterConfig
from ...records import (
    PLACEHOLDER_JOB_NAME,
    JobRecord,
    JobState,
    MeasuredEnergy,
    RecordProblem,
    RecordRepair,
)
from .fields import DELIMITER, REQUIRED_FIELDS, SACCT_FIELDS
from .parsable import split_lines

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
_MEMORY_UNITS = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "P": 1024.0**2}
_MEMORY = re.compile(r"([0-9.]+)([KMGTP]?)")
#: sacct prints usage with binary unit suffixes unless --noconvert (1687.50K = 1,728,000)
_USAGE_UNITS = {"": 1.0, "K": 1024.0, "M": 1024.0**2, "G": 1024.0**3, "T": 1024.0**4}
_USAGE_VALUE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)")
_CPU_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")
#: Above this a node's average draw is not a measurement but a broken counter (Slurm
#: prints NO_VAL64, 18446744073709551614, for energy it could not read).
MAX_NODE_POWER_W = 100_000.0


def parse_time(text: str) -> datetime | None:
    """A sacct timestamp (``2026-10-03T14:05:00``, read as UTC), or None for Unknown/None."""
    text = text.strip()
    if text in ("", "Unknown", "None"):
        return None
    try:  # sacct prints no offset: naming UTC in the text is 8x cheaper than .replace()
        return datetime.fromisoformat(text + "+00:00")
    except ValueError:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)


def parse_state(text: str) -> JobState:
    """``CANCELLED by 1234`` → cancelled. Raises ValueError for running or unknown states."""
    state = _STATES.get(text)  # most cells are the word alone
    if state is not None:
        return state
    word = text.split()[0] if text.strip() else ""
    if word not in _STATES:
        raise ValueError(f"state {text!r} is not a final state")
    return _STATES[word]


def parse_memory_gb(text: str) -> float:
    match = _MEMORY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"memory {text!r} is not a size like 64G")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2) or "M"]


#: What ``parse_alloc_tres`` is: a job's GPUs, GPU type, CPUs, memory GB and nodes.
AllocTres = tuple[float, str | None, int, float, int]
#: AllocTRES texts read before: a cluster's jobs ask for a few shapes, over and over.
_ALLOC_TRES_READ: dict[str, AllocTres] = {}
_ALLOC_TRES_KEPT = 4096


def parse_alloc_tres(text: str) -> AllocTres:
    """``AllocTRES`` → (GPUs, GPU type or None, CPUs, memory GB, nodes).

    Typed entries (``gres/gpu:a100=4``) name the model; the untyped total
    (``gres/gpu=4``) is the count when present, else the typed entries are summed.
    A text read before is not read again (one that raised is).
    """
    read = _ALLOC_TRES_READ.get(text)
    if read is None:
        if len(_ALLOC_TRES_READ) >= _ALLOC_TRES_KEPT:
            _ALLOC_TRES_READ.clear()
        read = _ALLOC_TRES_READ[text] = _read_alloc_tres(text)
    return read


def _read_alloc_tres(text: str) -> AllocTres:
    gpus_total: float | None = None
    typed: dict[str, float] = {}
    cpus, memory_gb, nodes = 0, 0.0, 1
    for item in filter(None, text.strip().split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"AllocTRES entry {item!r} has no '='")
        if name == "gres/gpu":
            gpus_total = float(value)
        elif name.startswith("gres/gpu:") and len(name) > len("gres/gpu:"):
            typed[name[len("gres/gpu:") :]] = float(value)
        elif name == "cpu":
            cpus = int(value)
        elif name == "mem":
            memory_gb = parse_memory_gb(value)
        elif name == "node":
            nodes = int(value)
    gpu_count = gpus_total if gpus_total is not None else sum(typed.values())
    gpu_type = next(iter(typed)) if len(typed) == 1 else None
    return gpu_count, gpu_type, cpus, memory_gb, nodes


def parse_usage(text: str) -> dict[str, float]:
    """``TRESUsageInTot`` → {TRES: value}: ``cpu`` in seconds, the rest in base units
    (``energy`` J, ``mem`` bytes, ``gres/gpuutil`` percent summed over GPUs and tasks).

    Entries sacct could not measure (``NONE``, or anything unreadable) are left out:
    usage only refines an estimate, it never makes a job unreadable.
    """
    usage: dict[str, float] = {}
    for item in filter(None, text.strip().split(",")):
        name, _, value = item.partition("=")
        if name == "cpu":
            time_match = _CPU_TIME.fullmatch(value)
            if time_match:
                days, hours, minutes, seconds = time_match.groups()
                usage[name] = (
                    int(days or 0) * 86400
                    + int(hours or 0) * 3600
                    + int(minutes) * 60
                    + float(seconds)
                )
            continue
        value_match = _USAGE_VALUE.fullmatch(value)
        if value_match:
            usage[name] = float(value_match.group(1)) * _USAGE_UNITS[value_match.group(2)]
    return usage


@dataclass(frozen=True, slots=True)
class StepUsage:
    """What a job's steps measured: GPU utilisation and energy, when they did."""

    gpu_utilization: float | None  # busy fraction of the allocated GPU-seconds
    energy_j: float | None  # the extern step's energy: the whole allocation, every node
    cpu_s: float | None = None  # CPU time the steps used (TRESUsageInTot cpu, summed)


NO_STEP_USAGE = StepUsage(None, None, None)


def step_usage(steps: Iterable[Mapping[str, str]], gpu_seconds: float) -> StepUsage:
    """Fold a job's step rows into one usage.

    GPU utilisation: Slurm's NVML/RSMI gathering (Slurm >= 23.02.3, gres/gpuutil) reports
    per step the utilisation in percent summed over its GPUs and tasks; × the step's
    elapsed seconds / 100 that is busy GPU-seconds. Their sum over the steps (the
    extern step runs no work), over the job's allocated GPU-seconds, is the job's
    utilisation, at most 1. A step value above 100 % per GPU is NVML's "not
    available" and is left out. Energy: the extern step spans the allocation on every
    node, so its energy is the job's without the overlap of batch and srun steps.
    """
    if not steps:  # a dump of job rows alone (sacct -X): nothing measured
        return NO_STEP_USAGE
    busy_gpu_s = 0.0
    seen_gpu_use = False
    extern_energy_j: float | None = None
    cpu_s: float | None = None
    for step in steps:
        if step.get("JobID", "").endswith(".extern"):
            energy = _float(step.get("ConsumedEnergyRaw", ""))
            if energy is not None and energy > 0:
                extern_energy_j = energy
            continue
        usage = parse_usage(step.get("TRESUsageInTot", ""))
        if "cpu" in usage:
            cpu_s = (cpu_s or 0.0) + usage["cpu"]
        util_percent = usage.get("gres/gpuutil")
        if util_percent is None:
            continue
        try:
            step_gpus = parse_alloc_tres(step.get("AllocTRES", ""))[0]
        except ValueError:
            continue
        elapsed = _float(step.get("ElapsedRaw", ""))
        if elapsed is None or not 0 <= util_percent <= 100 * step_gpus:
            continue
        seen_gpu_use = True
        busy_gpu_s += util_percent / 100 * elapsed
    utilization = min(1.0, busy_gpu_s / gpu_seconds) if seen_gpu_use and gpu_seconds > 0 else None
    return StepUsage(utilization, extern_energy_j, cpu_s)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(slots=True)
class SacctRow:
    """One job-level row of sacct output, its step rows, and where it came from.

    Treated as immutable but not frozen (a frozen one took three times as long to build,
    once for every job of an import)."""

    where: str
    cells: dict[str, str]
    steps: list[dict[str, str]] = field(default_factory=list)

    @property
    def job_id_raw(self) -> str:
        return self.cells["JobIDRaw"]

    @property
    def is_final(self) -> bool:
        return self.not_final_because() is None

    def not_final_because(self, array_task: bool = False) -> str | None:
        """Why this record is not yet the job's final one (``None`` when it is):

        - not ended, or no end record: after slurmdbd restarts, sacct shows jobs
          COMPLETED with End=Unknown for a few seconds, until slurmctld replays the end;
        - not whole: when a job's end reaches slurmdbd before its start, slurmdbd
          writes the job from the end message alone (Slurm 22.05, about a second after
          an array task ends): no partition, JobName ``allocation``, and JobID equal to
          JobIDRaw even for an array task (``tests/data/sacct-22.05-array-task-
          transient.txt``). The start record fills them in later. ``array_task``: the job is
          known to be one (its epilog said so), so its JobID must show ``<array>_<task>``.

        A job its user named ``allocation`` is whole once it has its partition.
        """
        state = self.cells["State"].split()
        if not state or state[0] not in _STATES:
            return f"State is {self.cells['State']!r}"
        if self.cells["End"].strip() in ("", "Unknown", "None"):
            return f"End is {self.cells['End']!r}"
        if not self.cells["Partition"].strip():
            return _without_start_record(self.cells)
        if array_task and "_" not in self.cells["JobID"]:
            return f"JobID is {self.cells['JobID']!r}, not yet the array task's <array>_<task>"
        return None


def _without_start_record(cells: Mapping[str, str]) -> str:
    placeholder = cells.get("JobName") == PLACEHOLDER_JOB_NAME
    return (
        f"Partition is empty{' and JobName is a placeholder' if placeholder else ''}: "
        "slurmdbd has not had the job's start record"
    )


#: What reading accounting gives: job rows (with their steps), unreadable lines, and
#: lines read after mending them.
Rows = list["SacctRow | RecordProblem | RecordRepair"]


def read_rows(
    lines: Iterable[str], *, source: str = "sacct"
) -> Iterator[SacctRow | RecordProblem | RecordRepair]:
    """Job-level rows of sacct output (steps skipped); unreadable lines become problems.

    The delimiter is ``|`` (``--parsable2``) unless the header uses ``DELIMITER``, which
    jobcarbon asks sacct for so that a ``|`` in a job name cannot split a row; lines that
    one did split are mended (``parsable.split_lines``). A byte-order mark is dropped.
    """
    iterator = iter(lines)
    header_line = next(iterator, "").rstrip("\n").lstrip("\ufeff")
    if not header_line.strip():
        yield RecordProblem(
            f"{source} line 1",
            "no header line: the dump is empty (`jobcarbon slurm sacct-format` prints "
            "the sacct command to make one)",
        )
        return
    delimiter = DELIMITER if DELIMITER in header_line else "|"
    header = header_line.split(delimiter)
    missing = [f for f in REQUIRED_FIELDS if f not in header]
    if missing:
        utf16 = " (it reads as UTF-16 without a byte-order mark)" if "\0" in header_line else ""
        yield RecordProblem(
            f"{source} line 1",
            f"header lacks column(s) {', '.join(missing)}{utf16}; "
            f"ask sacct for: {','.join(SACCT_FIELDS)}",
        )
        return
    job: SacctRow | None = None  # held until its steps (the rows after it) are read
    for item in split_lines(enumerate(iterator, start=2), header, delimiter, source):
        if not isinstance(item, tuple):
            yield item
            continue
        line_no, cells = item
        row = dict(zip(header, cells, strict=True))
        if "." in row["JobID"]:  # a step: usage of the job above it
            if job is not None and row["JobIDRaw"].split(".")[0] == job.job_id_raw:
                job.steps.append(row)
            continue
        if job is not None:
            yield job
        job = SacctRow(f"{source} line {line_no} (job {row['JobID']})", row)
    if job is not None:
        yield job


def to_records(
    items: Iterable[SacctRow | RecordProblem | RecordRepair],
    *,
    cluster: str,
    clusters: Mapping[str, ClusterConfig] | None = None,
) -> Iterator[JobRecord | RecordProblem | RecordRepair]:
    """Rows as records; a row that cannot be one becomes a problem naming its line.

    A row is read with the settings of the cluster it names (its ``Cluster`` column,
    else ``cluster``) in ``clusters``: see ``to_record``.
    """
    for item in items:
        if not isinstance(item, SacctRow):
            yield item
            continue
        settings = (clusters or {}).get(item.cells.get("Cluster") or cluster)
        try:
            yield to_record(item.cells, cluster, settings, item.steps)
        except (ValueError, KeyError) as err:
            yield RecordProblem(item.where, str(err))


def read_parsable(
    lines: Iterable[str],
    *,
    cluster: str,
    clusters: Mapping[str, ClusterConfig] | None = None,
    source: str = "sacct",
) -> Iterator[JobRecord | RecordProblem | RecordRepair]:
    """Stream sacct output as records and problems, in input order."""
    return to_records(read_rows(lines, source=source), cluster=cluster, clusters=clusters)


def to_record(
    row: dict[str, str],
    cluster: str,
    settings: ClusterConfig | None = None,
    steps: Iterable[Mapping[str, str]] = (),
) -> JobRecord:
    """A job-level sacct row (with its step rows) as a ``JobRecord``; ``ValueError``
    names what is wrong.

    ``settings`` (the row's cluster's, or None for the defaults) say which field names
    the project (``attribution.project_from``, the account) and what the energy covers
    (``slurm_energy_covers``, the whole node).

    Array tasks are keyed ``<array job>_<task>``; an earlier run of a requeued job
    (``--duplicates`` shows it as REQUEUED) is keyed ``<id>+run@<start epoch>``, so
    every run is counted once and the final run keeps the plain id. The key follows
    the job's JobID, so it depends on the record being whole (``SacctRow.
    not_final_because``); ``JobIDRaw`` is kept as ``job_id_raw``, under which the
    ledger finds a record of the job written before it was.
    """
    project_from = settings.attribution.project_from if settings else "account"
    project_field = _PROJECT_FIELDS[project_from]
    if project_field not in row:
        raise ValueError(f"column {project_field} (attribution.project_from) is missing")
    gpus, gpu_type, cpus, memory_gb, nodes = parse_alloc_tres(row["AllocTRES"])
    state = parse_state(row["State"])
    start, end = parse_time(row["Start"]), parse_time(row["End"])
    if start is not None and end is None:
        raise ValueError(
            f"State is {row['State']} but End is {row['End']!r}: the accounting "
            "record is not complete yet"
        )
    if not row["Partition"].strip():  # slurmdbd's placeholder: in a dump, say, or a test
        raise ValueError(f"{_without_start_record(row)}; the accounting record is not complete yet")
    run_s = (end - start).total_seconds() if start is not None and end is not None else 0.0
    usage = step_usage(steps, gpus * run_s)
    energy_j = usage.energy_j or _float(row.get("ConsumedEnergyRaw", "").strip() or "0")
    node_count = int(row.get("NNodes") or nodes)
    measured: tuple[MeasuredEnergy, ...] = ()
    if energy_j and run_s > 0 and energy_j / run_s / max(node_count, 1) <= MAX_NODE_POWER_W:
        covers = settings.slurm_energy_components if settings else SLURM_ENERGY_COVERS["node"]
        measured = (MeasuredEnergy(energy_j, covers),)
    job_id = row["JobID"] if "_" in row["JobID"] else row["JobIDRaw"]
    if state is JobState.REQUEUED:
        job_id += f"+run@{int((start or _required_time(row, 'Submit')).timestamp())}"
    # the texts many jobs share, interned: one object each, which the import pickles once
    # a batch (the pickler's memo) and its writer then holds once. Positional, in the
    # fields' order: keywords took 2.2 µs a record against 0.8, once for every job.
    return JobRecord(
        intern(row.get("Cluster") or cluster),  # cluster
        job_id,
        intern(row["User"]),  # user
        intern(row[project_field]),  # project
        intern(row["Partition"]),  # partition
        state,
        _required_time(row, "Submit"),  # submit_time
        start,  # start_time
        end,  # end_time
        gpus,  # gpu_count
        gpu_type,  # gpu_model
        cpus,  # cpu_count
        memory_gb,
        node_count,
        intern(row.get("NodeList", "")),  # nodes
        intern(row.get("JobName", "")),  # name
        usage.gpu_utilization,
        measured,
        row["JobIDRaw"],  # job_id_raw
        usage.cpu_s,  # cpu_used_seconds
    )


def _required_time(row: dict[str, str], name: str) -> datetime:
    value = parse_time(row[name])
    if value is None:
        raise ValueError(f"{name} is {row[name]!r}")
    return value
