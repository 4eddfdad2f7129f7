"""The pyslurm backend, against objects built to pyslurm's documented attributes.

PyPI has pyslurm only for Slurm 25.11, and this machine runs Slurm 22.05, so pyslurm
cannot talk to the test cluster. The objects below have the attributes, types and
units of pyslurm 25.11's ``pyslurm.db`` (``pyslurm/db/job.pyx``, ``step.pyx``,
``stats.pyx``, ``tres.pyx`` in the 25.11.2 release): epoch seconds or None for
times, MiB for memory, joules for energy, ``TrackableResources.gres`` as a dict of
GPU entries keyed ``gpu`` / ``gpu:<type>``, ``Jobs.load`` returning a map of jobs.
The same job read through sacct text (the format checked against a real cluster
in ``test_slurm_cluster.py``) must give the same record.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobcarbon.config import SlurmConfig, parse_config
from jobcarbon.daemons.collector import Collector
from jobcarbon.errors import ConfigError, SourceError
from jobcarbon.ledger import Ledger
from jobcarbon.records import JobRecord
from jobcarbon.sources.slurm.fields import SACCT_FIELDS
from jobcarbon.sources.slurm.pyslurm import PySlurm, job_row
from jobcarbon.sources.slurm.runner import Sacct, open_accounting
from jobcarbon.sources.slurm.sacct import read_parsable, to_record
from jobcarbon.sources.slurm.spool import Spool
from tests.support.config import make_config

# 2026-10-01T10:00:00Z and two hours later
START, END = 1_790_848_800, 1_790_856_000


@dataclass
class Resource:  # pyslurm.db.TrackableResource
    type: str
    name: str | None
    count: int

    @property
    def type_and_name(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@dataclass
class Tres:  # pyslurm.db.TrackableResources
    cpu: Resource | None = None
    mem: Resource | None = None  # MiB
    node: Resource | None = None
    gres: dict[str, Resource] = field(default_factory=dict)


def tres(cpus: int, mem_mib: int, nodes: int, gpus: int, gpu_type: str | None) -> Tres:
    gres = {"gpu": Resource("gres", "gpu", gpus)} if gpus else {}
    if gpus and gpu_type:
        gres[f"gpu:{gpu_type}"] = Resource("gres", f"gpu:{gpu_type}", gpus)
    return Tres(
        Resource("cpu", None, cpus),
        Resource("mem", None, mem_mib),
        Resource("node", None, nodes),
        gres,
    )


@dataclass
class Stats:  # pyslurm.db.JobStatistics / JobStepStatistics
    consumed_energy: int = 0  # joules; 0 when not measured


@dataclass
class Step:  # pyslurm.db.JobStep
    state: str
    start_time: int | None
    end_time: int | None
    elapsed_time: int | None
    tres: Tres | None
    stats: Stats


@dataclass
class Job:  # pyslurm.db.Job
    id: int
    cluster: str = "c1"
    user_name: str = "alice"
    account: str = "proj"
    wckey: str = ""
    partition: str = "gpu"
    state: str = "COMPLETED"
    name: str = "train"
    submit_time: int | None = START - 600
    start_time: int | None = START
    end_time: int | None = END
    elapsed_time: int | None = END - START
    num_nodes: int = 1
    nodelist: str = "n1"
    array_id: int | None = None
    array_task_id: int | None = None
    heterogeneous_id: int | None = None
    heterogeneous_offset: int | None = None
    allocated_tres: Tres | None = field(default_factory=lambda: tres(8, 65536, 1, 4, "a100"))
    stats: Stats = field(default_factory=Stats)
    steps: dict[str | int, Step] = field(default_factory=dict)


class RPCError(Exception):  # pyslurm.RPCError
    pass


def fake_pyslurm(jobs: list[Job], version: str = "25.11.2", fail: bool = False) -> Any:
    """A module with pyslurm's names: db.JobFilter, db.Jobs.load, RPCError, __version__."""
    filters: list[dict[str, Any]] = []

    def load(db_filter: dict[str, Any]) -> dict[int, Job]:
        filters.append(db_filter)
        if fail:
            raise RPCError("Failed to get Jobs from slurmdbd")
        ids = db_filter.get("ids")
        return {j.id: j for j in jobs if ids is None or j.id in ids}

    db = SimpleNamespace(JobFilter=dict, Jobs=SimpleNamespace(load=load))
    return SimpleNamespace(__version__=version, db=db, RPCError=RPCError, filters=filters)


SACCT_TEXT = [
    "|".join(SACCT_FIELDS),
    "41|41|c1|alice|proj||gpu|COMPLETED|2026-10-01T09:50:00|2026-10-01T10:00:00|"
    "2026-10-01T12:00:00|7200|cpu=8,gres/gpu:a100=4,gres/gpu=4,mem=64G,node=1|1|n1|train|"
    "9000000|",
    "41.extern|41.extern|c1||proj||gpu|COMPLETED|2026-10-01T10:00:00|2026-10-01T10:00:00|"
    "2026-10-01T12:00:00|7200|cpu=8,gres/gpu:a100=4,gres/gpu=4,mem=64G,node=1|1|n1|extern|"
    "5000000|energy=5000000",
]


def test_a_job_reads_the_same_through_pyslurm_and_through_sacct() -> None:
    step = Step(
        "COMPLETED", START, END, END - START, tres(8, 65536, 1, 4, "a100"), Stats(5_000_000)
    )
    job = Job(41, stats=Stats(9_000_000), steps={"extern": step})
    row = job_row(job, "pyslurm")
    (from_sacct,) = list(read_parsable(SACCT_TEXT, cluster="c1"))
    assert isinstance(from_sacct, JobRecord)
    from_pyslurm = to_record(row.cells, "c1", steps=row.steps)
    assert from_pyslurm == from_sacct
    assert from_pyslurm.gpu_model == "a100" and from_pyslurm.gpu_count == 4
    assert [m.energy_j for m in from_pyslurm.measured] == [5_000_000]


def test_array_task_zero_and_heterogeneous_components_keep_sacct_ids() -> None:
    # pyslurm reads an array task id of 0 as unset (None)
    assert job_row(Job(50, array_id=50, array_task_id=None), "p").cells["JobID"] == "50_0"
    assert job_row(Job(53, array_id=50, array_task_id=3), "p").cells["JobID"] == "50_3"
    het = job_row(Job(61, heterogeneous_id=60, heterogeneous_offset=1), "p")
    assert (het.cells["JobID"], het.cells["JobIDRaw"]) == ("60+1", "61")


def test_a_job_cancelled_while_pending_costs_nothing() -> None:
    job = Job(70, state="CANCELLED", start_time=None, elapsed_time=None, nodelist="")
    record = to_record(job_row(job, "p").cells, "c1")
    assert record.start_time is None and record.run_seconds == 0


def test_slurmdbd_unreachable_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="pyslurm cannot read slurmdbd"):
        PySlurm(fake_pyslurm([], fail=True)).jobs(["1"])


def sacct_version(version: str) -> Any:
    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert args[1:] == ["--version"]
        return subprocess.CompletedProcess(args, 0, f"slurm {version}\n", "")

    return run


def backend(setting: str, pyslurm: Any, running: str) -> Any:
    def import_pyslurm() -> Any:
        if pyslurm is None:
            raise ImportError("No module named 'pyslurm'")
        return pyslurm

    return open_accounting(
        SlurmConfig(backend=setting),  # type: ignore[arg-type]
        import_pyslurm,
        sacct_version(running),
    )


def test_backend_choice() -> None:
    module = fake_pyslurm([])
    assert isinstance(backend("auto", module, "25.11.0"), PySlurm)
    assert isinstance(backend("auto", module, "22.05.8"), Sacct)
    assert isinstance(backend("auto", None, "25.11.0"), Sacct)
    assert isinstance(backend("sacct", module, "25.11.0"), Sacct)
    assert isinstance(backend("pyslurm", module, "25.11.0"), PySlurm)
    with pytest.raises(ConfigError, match=r"pyslurm 25.11.2 is built for another Slurm .* 22.05.8"):
        backend("pyslurm", module, "22.05.8")
    with pytest.raises(ConfigError, match="pyslurm does not import"):
        backend("pyslurm", None, "25.11.0")


def test_the_collector_accounts_a_spool_entry_through_pyslurm(tmp_path: Path) -> None:
    a100 = {"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}
    config = parse_config(
        make_config(sites={"s1": {"pue": 1.0}}, clusters={"c1": {"hardware": [a100]}})
    )
    module = fake_pyslurm([Job(41), Job(42, user_name="bob")])
    spool = Spool(tmp_path / "spool")
    spool.create()
    (spool.new / "41").write_text("")
    with Ledger(tmp_path / "ledger.db") as ledger:
        report = Collector(config, ledger, PySlurm(module), spool).collect_once()
        assert report.accounted.written == 2 and not report.errors  # 41 by spool, both by sweep
        rows = {r["job_id"]: r for r in ledger.jobs()}
    assert module.filters[0] == {"ids": [41]}
    assert set(module.filters[1]) == {"start_time", "end_time"}
    assert rows["41"]["user"] == "alice" and rows["42"]["user"] == "bob"
    # 4 GPUs × 2 h; an A100 SXM4 (400 W TDP) × 4 × 2 h = 3.2 kWh of GPU energy
    assert rows["41"]["gpu_seconds"] == 4 * 7200
    assert rows["41"]["energy_gpu_kwh"] == pytest.approx(3.2)
    assert not list(spool.new.iterdir())
