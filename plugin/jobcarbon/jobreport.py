"""One job's footprint as its owner sees it, in the manner of ``seff`` and jobstats.

It runs on a login node as the job's owner: accounting comes from ``sacct`` (the
collector's runner and parser, ``sources.slurm.runner.Sacct`` and ``sources.slurm.sacct``), so
Slurm's own ``PrivateData`` rules decide who may see which job; the footprint comes
from the site config (which holds no secrets) through the ledger's own model
(``accounting.Accountant``). No ledger is needed; where it is reachable, its figure is
shown next to this one. An array job shows its tasks, a requeued job each run, and a
job not yet ended its footprint so far (to now).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from . import embodied, factors
from .accounting import Accountant
from .config import Config
from .errors import InputError, JobcarbonError
from .footprint import AccountedJob
from .ledger import Filters, open_ledger
from .records import RecordProblem
from .report import BUSY_SHARE
from .sources.slurm.runner import Sacct
from .sources.slurm.sacct import SacctRow, parse_time, to_record
from .statement import figure

#: Ledger and this report agree when their emissions differ by less than this share.
AGREE_SHARE = 1e-6


@dataclass(frozen=True, slots=True)
class RunReport:
    """One run of a job (a task of an array, a run of a requeued job): its footprint."""

    accounted: AccountedJob
    slurm_state: str  # as sacct printed it: RUNNING, COMPLETED, CANCELLED by 1234, ...
    so_far: bool  # not ended: the footprint up to now
    ledger_co2e_g: float | None  # the ledger's figure for this run, where it has one

    @property
    def agrees(self) -> bool | None:
        if self.ledger_co2e_g is None:
            return None
        co2e_g = self.accounted.footprint.co2e_g
        return abs(self.ledger_co2e_g - co2e_g) <= AGREE_SHARE * max(abs(co2e_g), 1e-9)


@dataclass(frozen=True, slots=True)
class JobReport:
    job_id: str
    runs: tuple[RunReport, ...]
    ledger: str  # "read", or why it could not be read


def read_job(sacct: Sacct, config: Config, job_id: str, cluster: str, now: datetime) -> JobReport:
    """Every run of ``job_id`` visible to this user, each with its footprint."""
    rows = sacct.jobs([job_id])
    found = [row for row in rows if isinstance(row, SacctRow)]
    if not found:
        problems = "; ".join(str(row) for row in rows if isinstance(row, RecordProblem))
        raise InputError(
            f"job {job_id} is not in Slurm's accounting as you may see it: it does not exist "
            f"on cluster {cluster}, or it is another user's and Slurm's PrivateData=jobs "
            "keeps it from you (its owner or an administrator can look it up)"
            + (f" ({problems})" if problems else "")
        )
    return _report(job_id, [_run(row, config, cluster, now) for row in found], config, cluster)


def read_mine(
    sacct: Sacct, config: Config, user: str, since: datetime, cluster: str, now: datetime
) -> list[RunReport]:
    """``user``'s jobs since ``since``, newest last, each with its footprint (no ledger)."""
    return [
        _run(row, config, cluster, now)
        for row in sacct.jobs_of(user, since)
        if isinstance(row, SacctRow)
    ]


def _run(row: SacctRow, config: Config, cluster: str, now: datetime) -> RunReport:
    """A sacct row as an accounted run; one not yet ended is accounted up to ``now``."""
    cells = row.cells
    so_far = not row.is_final
    if so_far:  # a running job is read as one ending now; a pending one used nothing
        cells = {**cells, "State": "COMPLETED"}
        if parse_time(cells["Start"]) is not None:
            cells["End"] = f"{now:%Y-%m-%dT%H:%M:%S}"
    settings = config.cluster(cells.get("Cluster") or cluster)
    try:
        record = to_record(cells, cluster, settings, row.steps)
    except ValueError as err:
        raise InputError(f"{row.where}: {err}") from err
    return RunReport(Accountant(config).account(record), row.cells["State"], so_far, None)


def _report(job_id: str, runs: list[RunReport], config: Config, cluster: str) -> JobReport:
    """The runs with the ledger's figures, where the ledger can be read."""
    try:
        with open_ledger(config, migrate=False) as ledger:
            rows = ledger.jobs(Filters(cluster=cluster, job_ids=(job_id,)))
            in_ledger = {row["job_id"]: float(row["co2e_g"]) for row in rows}
    except (JobcarbonError, OSError) as err:
        return JobReport(job_id, tuple(runs), f"not reachable ({err})")
    return JobReport(
        job_id,
        tuple(replace(r, ledger_co2e_g=in_ledger.get(r.accounted.job.job_id)) for r in runs),
        "read",
    )


def advice(run: RunReport) -> str:
    """The one piece of advice that fits this run best."""
    job, footprint = run.accounted.job, run.accounted.footprint
    if job.state.value in ("failed", "timeout", "out_of_memory") and footprint.gpu_seconds > 0:
        return (
            "This job did not complete: try a new setup on a small, short allocation first, "
            "and checkpoint long runs so that a time limit does not throw the work away."
        )
    if job.gpu_utilization is not None and job.gpu_utilization < BUSY_SHARE:
        return (
            f"The GPUs were busy {job.gpu_utilization:.0%} of the time: an idle GPU still "
            "draws power; ask for fewer GPUs, or look at data loading and batch size."
        )
    return (
        f"Report it in your paper: `jobcarbon statement --jobs {job.job_id.split('+')[0]} "
        "--latex` writes the paragraph."
    )


def _intensity(run: RunReport, config: Config) -> str:
    site = config.site_factors[run.accounted.site]
    schedule = site.intensity_g_per_kwh
    effective = f"{run.accounted.footprint.intensity_g_per_kwh:.0f} gCO2e/kWh"
    if schedule.is_constant:
        return f"{effective} ({getattr(schedule, 'label', '') or 'constant'})"
    return f"{effective} over the run, hour by hour (hourly series)"


def render_text(report: JobReport, config: Config) -> str:
    lines: list[str] = []
    for run in report.runs:
        lines += _run_lines(run, config)
    if len(report.runs) > 1:
        total_g = sum(r.accounted.footprint.co2e_g for r in report.runs)
        total_kwh = sum(r.accounted.footprint.energy_facility_kwh for r in report.runs)
        lines.append(
            f"Total of the {len(report.runs)} runs or tasks of job {report.job_id}: "
            f"{figure(total_kwh, 'kWh')}, {figure(total_g, 'g CO2e')}"
        )
    if report.ledger != "read":
        lines.append(f"Ledger: {report.ledger}; the figures above come from the site config.")
    return "\n".join(lines)


def _run_lines(run: RunReport, config: Config) -> list[str]:
    job, fp = run.accounted.job, run.accounted.footprint
    state = f"{run.slurm_state} (footprint so far, to now)" if run.so_far else run.slurm_state
    tdp = config.cluster(job.cluster).power_profile(job).gpu_tdp_w if job.gpu_count else 0.0
    gpus = (
        f"{job.gpu_count:g} × {run.accounted.gpu_model or 'GPU of unknown model'} ({tdp:g} W), "
        if job.gpu_count
        else ""
    )
    lines = [
        f"Job {job.job_id} ({job.name or 'unnamed'}) on {job.cluster}: user {job.user}, "
        f"project {job.project}, partition {job.partition}, state {state}",
        f"  run:       {_when(job.start_time)} to {_when(job.end_time)} "
        f"({job.run_seconds / 3600:.2f} h) on {job.nodes or '?'}",
        f"  hardware:  {gpus}{job.cpu_count} CPU core(s), {job.memory_gb:.1f} GB memory",
        f"  hours:     {fp.gpu_seconds / 3600:.2f} GPU-hours, {fp.cpu_seconds / 3600:.2f} "
        "CPU core-hours",
        f"  energy:    GPU {figure(fp.energy_gpu_kwh, 'kWh')}, CPU "
        f"{figure(fp.energy_cpu_kwh, 'kWh')}, memory {figure(fp.energy_memory_kwh, 'kWh')}; "
        f"× PUE {fp.pue:.2f} = {figure(fp.energy_facility_kwh, 'kWh')}",
        f"  intensity: {_intensity(run, config)}",
        f"  CO2e:      {figure(fp.co2e_g, 'g')} (range {figure(fp.co2e_g_low, 'g')} to "
        f"{figure(fp.co2e_g_high, 'g')}), {_how(run)}",
    ]
    lines.append(f"  embodied:  {_embodied(run)}")
    if fp.co2e_g > 0:
        shown = [
            f"{figure(fp.co2e_g / e.co2e_g_per_unit, e.description)}"
            for e in factors.equivalents()[:2]
        ]
        lines.append(f"  as much:   {'; '.join(shown)}")
    if run.ledger_co2e_g is not None:
        verdict = "agrees" if run.agrees else "differs (the ledger used other factors)"
        lines.append(f"  ledger:    {figure(run.ledger_co2e_g, 'g')}, {verdict}")
    lines.append(f"  advice:    {advice(run)}")
    return lines


def _embodied(run: RunReport) -> str:
    """The job's share of its hardware's manufacture (Scope 3), or "not configured"."""
    fp, job = run.accounted.footprint, run.accounted.job
    if fp.co2e_embodied_g is None or fp.embodied_source is None:
        return f"not configured for cluster {job.cluster} (the making of the hardware)"
    held = f"{job.gpu_count:g} GPU(s)" if job.gpu_count > 0 else f"{job.cpu_count} core(s)"
    return (
        f"{figure(fp.co2e_embodied_g, 'g')} CO2e (range "
        f"{figure(fp.co2e_embodied_g_low or 0.0, 'g')} to "
        f"{figure(fp.co2e_embodied_g_high or 0.0, 'g')}), the making of the hardware: "
        f"the share of a node's for {held} over the run, from "
        f"{embodied.source_words(fp.embodied_source)}"
    )


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "not started"


def _how(run: RunReport) -> str:
    method = run.accounted.footprint.method.value
    job = run.accounted.job
    if method == "measured":
        return "measured (Slurm's energy counter covers the whole allocation)"
    if method == "mixed":
        return "mixed (Slurm measured part of the energy, the rest is estimated)"
    why = "no energy counter"
    if job.gpu_count and job.gpu_utilization is None:
        why += ", GPU utilisation unknown so GPUs at their TDP"
    return f"estimated ({why})"


def to_json(report: JobReport) -> str:
    return json.dumps(
        {
            "job_id": report.job_id,
            "ledger": report.ledger,
            "runs": [run_json(run) for run in report.runs],
        },
        indent=2,
    )


def run_json(run: RunReport) -> dict[str, Any]:
    job, fp = run.accounted.job, run.accounted.footprint
    return {
        "job_id": job.job_id,
        "cluster": job.cluster,
        "user": job.user,
        "project": job.project,
        "name": job.name,
        "state": run.slurm_state,
        "so_far": run.so_far,
        "start_time": job.start_time.isoformat() if job.start_time else None,
        "end_time": job.end_time.isoformat() if job.end_time else None,
        "gpu_count": job.gpu_count,
        "gpu_model": run.accounted.gpu_model,
        "cpu_count": job.cpu_count,
        "memory_gb": job.memory_gb,
        "gpu_hours": fp.gpu_seconds / 3600,
        "cpu_hours": fp.cpu_seconds / 3600,
        "energy_gpu_kwh": fp.energy_gpu_kwh,
        "energy_cpu_kwh": fp.energy_cpu_kwh,
        "energy_memory_kwh": fp.energy_memory_kwh,
        "energy_facility_kwh": fp.energy_facility_kwh,
        "pue": fp.pue,
        "intensity_g_per_kwh": fp.intensity_g_per_kwh,
        "co2e_g": fp.co2e_g,
        "co2e_g_low": fp.co2e_g_low,
        "co2e_g_high": fp.co2e_g_high,
        "co2e_embodied_g": fp.co2e_embodied_g,
        "co2e_embodied_g_low": fp.co2e_embodied_g_low,
        "co2e_embodied_g_high": fp.co2e_embodied_g_high,
        "embodied_source": fp.embodied_source or "not configured",
        "method": fp.method.value,
        "site": run.accounted.site,
        "ledger_co2e_g": run.ledger_co2e_g,
        "agrees": run.agrees,
        "advice": advice(run),
    }
