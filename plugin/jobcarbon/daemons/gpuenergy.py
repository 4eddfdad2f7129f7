"""The Slurm collector's GPU-energy step: finished jobs' GPU energy from the GPU
exporter's series in Prometheus (``sources/dcgm.py``), asked once per batch of jobs.

A job whose samples do not reach its end yet (a GPU's last sample in the run more than
``slurm.gpu_scrape_lag_s`` before the end: Prometheus has not scraped, or not yet
received, the rest) is held back like a job whose end record has not reached slurmdbd:
the spool keeps its entry and asks again with backoff, and the sweep keeps its
watermark before the job's end. ``slurm.gpu_wait_s`` after the end the job is accounted
with the samples Prometheus has, the refusal rules deciding as for any job (a run
covered too little keeps its estimate); the wait is logged and counted
(``gpu_samples_late``). Backfill does not wait: its jobs are long over.

A refusal is logged and counted once per job (``gpu_energy_refused``), not again each
time a sweep re-reads the job. Prometheus not answering is no reason to wait: the
batch's new jobs keep their estimates and the failed call is counted (``prometheus``);
a job already in the ledger with its GPUs measured (a sweep reading it again) keeps
the measurement the ledger stored, never overwritten by an estimate.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from ..config import SlurmConfig
from ..ledger import Ledger
from ..records import Component, JobRecord, RecordProblem, RecordRepair
from ..sources.dcgm import GpuJob, Measurement, slurm_gpu_energy, with_measurement

log = logging.getLogger("jobcarbon.slurm")

Record = JobRecord | RecordProblem | RecordRepair


@dataclass(frozen=True, slots=True)
class Held:
    """A job held back until its samples are in: its end (epoch seconds) and why."""

    end_s: float
    reason: str


class GpuEnergyStep:
    """Measures the GPU jobs among records, batch by batch (``slurm.batch_size``).
    ``first_time(key)`` tells whether a job's refusal or late samples are news (the
    collector's memory of problems already counted)."""

    def __init__(
        self,
        settings: SlurmConfig,
        ledger: Ledger,
        clock: Callable[[], float],
        first_time: Callable[[str], bool],
    ) -> None:
        self.reader = slurm_gpu_energy(settings)
        self.batch_size = settings.batch_size
        self.wait_s = settings.gpu_wait_s
        self.ledger = ledger
        self.clock = clock
        self.first_time = first_time

    def measured(
        self, records: Iterable[Record], held: dict[str, Held] | None = None
    ) -> Iterator[Record]:
        """``records`` with their GPUs' measured energy. With ``held``, a job whose samples
        may not all be in Prometheus yet and that ended less than ``gpu_wait_s`` ago is
        left out and put in ``held`` under its raw job id; without, every job is
        accounted with the samples there are."""
        if self.reader is None:
            yield from records
            return
        it = iter(records)
        while batch := list(itertools.islice(it, self.batch_size)):
            gpu_jobs = [
                (r, job)
                for r in batch
                if isinstance(r, JobRecord) and r.gpu_count and (job := _gpu_job(r)) is not None
            ]
            measurements = self.reader.measure_batch([job for _, job in gpu_jobs])
            now = self.clock()
            done: dict[int, Record | None] = {}
            refused = late = 0
            for (record, job), measurement in zip(gpu_jobs, measurements, strict=True):
                end_s = job.end.timestamp()
                if measurement.incomplete and held is not None and now - end_s < self.wait_s:
                    held[job.key[0]] = Held(end_s, measurement.incomplete)
                    done[id(record)] = None
                    continue
                late += self._late(record, measurement, now - end_s)
                refused += self._refused(record, measurement)
                done[id(record)] = with_measurement(record, measurement)
            pairs = zip(gpu_jobs, measurements, strict=True)
            if unreachable := [r for (r, _), m in pairs if m.unreachable]:
                kept = self._kept_measured(unreachable, done)
                log.warning(
                    "GPU energy of %d job(s) estimated, %d kept as measured before: %s",
                    len(unreachable) - kept,
                    kept,
                    next(m for m in measurements if m.unreachable).reason,
                )
                self.ledger.add_ingest_errors({"prometheus": 1})
            counts = {"gpu_energy_refused": refused, "gpu_samples_late": late}
            if counts := {stage: n for stage, n in counts.items() if n}:
                self.ledger.add_ingest_errors(counts)
            for r in batch:
                out = done.get(id(r), r)
                if out is not None:
                    yield out

    def _kept_measured(self, records: list[JobRecord], done: dict[int, Record | None]) -> int:
        """Of the jobs Prometheus could not be asked about, those the ledger holds with
        their GPUs measured get that measurement again (in ``done``); how many."""
        stored = self.ledger.stored_usage([(r.cluster, r.job_id) for r in records])
        kept = 0
        for record in records:
            before = stored.get((record.cluster, record.job_id))
            if before is not None and any(Component.GPU in m.covers for m in before.measured):
                done[id(record)] = replace(
                    record, measured=before.measured, gpu_utilization=before.gpu_utilization
                )
                kept += 1
        return kept

    def _late(self, record: JobRecord, measurement: Measurement, age_s: float) -> int:
        """1 if the job's samples still do not reach its end, the first time it is seen."""
        if not measurement.incomplete:
            return 0
        if not self.first_time(f"job {record.job_id}: late GPU samples"):
            return 0
        log.warning(
            "job %s: %s, %.0f s after its end: accounted with the samples Prometheus has",
            record.job_id,
            measurement.incomplete,
            age_s,
        )
        return 1

    def _refused(self, record: JobRecord, measurement: Measurement) -> int:
        """1 if the exporter's energy cannot be the job's, the first time it is seen."""
        if measurement.energy is not None or measurement.unreachable:
            return 0
        if not self.first_time(f"job {record.job_id}: GPU energy refused: {measurement.reason}"):
            return 0
        log.info("job %s: GPU energy estimated: %s", record.job_id, measurement.reason)
        return 1


def _gpu_job(record: JobRecord) -> GpuJob | None:
    """The job to measure, under the id the exporter labels it with; None if it did not
    run (no start or end)."""
    if record.start_time is None or record.end_time is None:
        return None
    job_id = record.job_id_raw or record.job_id.partition("+")[0]
    return GpuJob((job_id,), record.start_time, record.end_time, record.gpu_count)
