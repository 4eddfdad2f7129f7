"""Reading Slurm accounting through pyslurm (``pyslurm.db``) instead of running sacct.

Each ``pyslurm.db.Job`` is put in sacct's terms (``sacct.SACCT_FIELDS`` cells, step
rows) so that one mapping (``sacct.to_record``) turns both into records. Written to
pyslurm 25.11's ``pyslurm.db`` (``Jobs.load``, ``JobFilter``, ``Job``, ``JobStep``,
``TrackableResources``). What pyslurm does not give, compared with sacct:

- no duplicates flag: the earlier runs of a requeued job are not returned (sacct
  ``--duplicates`` counts each run); sites that requeue should use ``backend: sacct``;
- no ``TRESUsageInTot``: GPU utilisation of steps (``gres/gpuutil``) is not seen;
  step energy is (``JobStep.stats.consumed_energy``);
- no state filter: a window returns jobs that ran in it; the caller keeps the final ones;
- ``array_task_id`` is None for task 0 (pyslurm reads 0 as unset): a job with an
  ``array_id`` and no task id is task 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ...records import RecordProblem
from . import AccountingUnavailable
from .fields import SACCT_FIELDS
from .sacct import Rows, SacctRow


def _time(epoch: int | None) -> str:
    if not epoch:
        return "None"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _tres(tres: Any) -> str:
    """``TrackableResources`` as an ``AllocTRES`` string (memory in MiB)."""
    if tres is None:
        return ""
    items = []
    for name in ("cpu", "mem", "node"):
        resource = getattr(tres, name, None)
        if resource is not None:
            items.append(f"{name}={resource.count}{'M' if name == 'mem' else ''}")
    for gres in (tres.gres or {}).values():
        items.append(f"{gres.type_and_name}={gres.count}")
    return ",".join(items)


def _job_id(job: Any) -> str:
    """The JobID sacct shows: ``<array>_<task>``, ``<het>+<offset>``, or the id."""
    if job.array_id is not None:
        return f"{job.array_id}_{job.array_task_id or 0}"
    if job.heterogeneous_id is not None:
        return f"{job.heterogeneous_id}+{job.heterogeneous_offset or 0}"
    return str(job.id)


def job_row(job: Any, where: str) -> SacctRow:
    """A ``pyslurm.db.Job`` with its steps, as sacct rows."""
    job_id = _job_id(job)
    cells = dict.fromkeys(SACCT_FIELDS, "")
    cells.update(
        JobIDRaw=str(job.id),
        JobID=job_id,
        Cluster=job.cluster or "",
        User=job.user_name or "",
        Account=job.account or "",
        WCKey=job.wckey or "",
        Partition=job.partition or "",
        State=job.state or "",
        Submit=_time(job.submit_time),
        Start=_time(job.start_time),
        End=_time(job.end_time),
        ElapsedRaw=str(job.elapsed_time or 0),
        AllocTRES=_tres(job.allocated_tres),
        NNodes=str(job.num_nodes or 1),
        NodeList=job.nodelist or "",
        JobName=job.name or "",
        ConsumedEnergyRaw=str(job.stats.consumed_energy if job.stats else 0),
    )
    steps = []
    for step_id, step in (job.steps or {}).items():
        step_cells = dict.fromkeys(SACCT_FIELDS, "")
        step_cells.update(
            JobIDRaw=f"{job.id}.{step_id}",
            JobID=f"{job_id}.{step_id}",
            State=step.state or "",
            Start=_time(step.start_time),
            End=_time(step.end_time),
            ElapsedRaw=str(step.elapsed_time or 0),
            AllocTRES=_tres(step.tres),
            ConsumedEnergyRaw=str(step.stats.consumed_energy if step.stats else 0),
        )
        steps.append(step_cells)
    return SacctRow(f"{where} (job {job_id})", cells, steps)


class PySlurm:
    """Slurm accounting through a ``pyslurm`` module (passed in: tests give their own)."""

    def __init__(self, pyslurm: Any) -> None:
        self.pyslurm = pyslurm

    def _load(self, where: str, **conditions: Any) -> Rows:
        db = self.pyslurm.db
        try:
            jobs = db.Jobs.load(db.JobFilter(**conditions))
        except self.pyslurm.RPCError as err:
            raise AccountingUnavailable(f"pyslurm cannot read slurmdbd: {err}") from err
        rows: Rows = []
        for job in jobs.values():
            try:
                rows.append(job_row(job, where))
            except (AttributeError, TypeError, ValueError) as err:
                rows.append(RecordProblem(f"{where} (job {getattr(job, 'id', '?')})", str(err)))
        return rows

    def jobs(self, job_ids: Sequence[str]) -> Rows:
        return self._load("pyslurm", ids=[int(i) for i in job_ids])

    def ended_between(self, start: datetime, end: datetime) -> Rows:
        return self._load(f"pyslurm {start:%Y-%m-%d %H:%M}", start_time=start, end_time=end)


def matches(pyslurm_version: str, slurm_version: str) -> bool:
    """pyslurm is built for one Slurm release: its version starts with that release's
    (``25.11.2`` for Slurm 25.11.x)."""
    return pyslurm_version.split(".")[:2] == slurm_version.split(".")[:2]
