"""A finished job's GPU energy (and busy share) from a GPU exporter's series in Prometheus.

One reader for the pod watcher and the Slurm collector. Two exporters:

- NVIDIA's dcgm-exporter: ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, the millijoules each
  GPU used since the driver loaded, labelled with the GPU's ``UUID`` and the job it was
  assigned to (``namespace``/``pod`` with Kubernetes pod mapping, ``hpc_job`` with
  ``--hpc-job-mapping-dir``). A job's energy is the counter's increase over the run.
- Princeton jobstats' GPU exporter: ``nvidia_gpu_power_usage_milliwatts``, a gauge
  labelled ``uuid`` and ``jobid``. A job's energy is the power integrated over the run
  (trapezoids between samples).

Either way GPU by GPU, scaled from the span the samples cover to the whole run (scrapes
start and stop up to one interval inside the run).

The measurement is refused, with the reason, when it cannot be the job's own: a MIG
slice or a GPU shared with another job during the run (the device's series covers the
whole GPU, and is repeated for every job on it), a counter reset during the run, fewer
GPUs in the series than the job holds, samples covering less than the minimum share of
the run, or an average power no GPU draws. The job is then accounted with the estimate;
nothing here raises for a bad answer.

A GPU whose last sample in the run is more than ``scrape_lag_s`` before the run's end
may not have all its samples in Prometheus yet (a scrape not taken or not received);
the measurement says so (``incomplete``), and the caller decides whether to wait.

Where the energy is the job's own, so is the busy-percent gauge (``DCGM_FI_DEV_GPU_UTIL``,
``nvidia_gpu_duty_cycle``): its average over the run and the job's GPUs becomes the
job's GPU utilisation, which the monthly e-mails' advice reads.

A batch of jobs costs three queries, whatever its size: the jobs' energy series, every
series of their GPUs (for sharing) and the jobs' busy share, each over the span from the
batch's first start (a second before it: Prometheus 3's ranges leave their start out)
to its last end, cut to each job's run here.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from ..config import SlurmConfig
from ..records import Component, JobRecord, MeasuredEnergy

#: No GPU draws more than this on average; above it the series is broken.
MAX_GPU_POWER_W = 2000.0
MILLI = 1000.0

Exporter = Literal["dcgm", "jobstats"]
#: Each exporter's own names: energy (or power) metric, busy metric, GPU label, job label.
EXPORTER_NAMES: dict[Exporter, tuple[str, str, str, str]] = {
    "dcgm": ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_UTIL", "UUID", "hpc_job"),
    "jobstats": ("nvidia_gpu_power_usage_milliwatts", "nvidia_gpu_duty_cycle", "uuid", "jobid"),
}

log = logging.getLogger("jobcarbon.dcgm")

Fetch = Callable[[str, float], bytes]
Samples = list[tuple[float, float]]
#: Samples by (job key, GPU).
BySeries = dict[tuple[tuple[str, ...], str], Samples]


def _fetch(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


@dataclass(frozen=True, slots=True)
class Measurement:
    """The job's GPU energy, or why the estimate is used instead; its GPUs' busy share.
    ``unreachable``: Prometheus did not answer (an error to count, not a refusal).
    ``incomplete``: why the samples may not all be in Prometheus yet ('' if they are)."""

    energy: MeasuredEnergy | None
    reason: str = ""
    gpu_utilization: float | None = None
    unreachable: bool = False
    incomplete: str = ""


@dataclass(frozen=True, slots=True)
class GpuJob:
    """One job to measure: the values of the job labels, its run, its GPUs."""

    key: tuple[str, ...]
    start: datetime
    end: datetime
    gpus: float
    mig: bool = False


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class DcgmEnergy:
    """Queries a Prometheus for jobs' GPU energy from dcgm-exporter's counter, or (with
    ``power=True``) from a power gauge in milliwatts such as jobstats'."""

    def __init__(
        self,
        url: str,
        metric: str = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        timeout_s: float = 10.0,
        min_coverage: float = 0.8,
        job_labels: Sequence[str] = ("namespace", "pod"),
        utilization_metric: str | None = "DCGM_FI_DEV_GPU_UTIL",
        fetch: Fetch = _fetch,
        *,
        gpu_label: str = "UUID",
        power: bool = False,
        scrape_lag_s: float = 60.0,
    ) -> None:
        self.utilization_metric = utilization_metric
        self.url = url.rstrip("/")
        self.job_labels = tuple(job_labels)
        self.metric = metric
        self.timeout_s = timeout_s
        self.min_coverage = min_coverage
        self.fetch = fetch
        self.gpu_label = gpu_label
        self.power = power
        self.scrape_lag_s = scrape_lag_s

    def _query(self, promql: str, at: datetime) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": promql, "time": f"{at.timestamp():.3f}"})
        try:
            body = json.loads(self.fetch(f"{self.url}/api/v1/query?{params}", self.timeout_s))
        except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
            raise _Unreachable(f"Prometheus at {self.url} did not answer: {err}") from err
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise _Unreachable(f"Prometheus at {self.url} refused the query: {error}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else []

    def measure(
        self,
        namespace: str,
        pod: str,
        start: datetime,
        end: datetime,
        gpus: float,
        mig: bool,
    ) -> Measurement:
        """The GPU energy of pod ``namespace/pod`` over ``[start, end]``, holding ``gpus``."""
        job = GpuJob((namespace, pod), start, end, gpus, mig)
        return self.measure_batch([job])[0]

    def measure_batch(self, jobs: Sequence[GpuJob]) -> list[Measurement]:
        """Each job's measurement, in the order given, from three queries for the batch."""
        answers: list[Measurement | None] = [
            Measurement(None, "the job did not run")
            if job.end <= job.start
            else Measurement(None, "a MIG slice: the device counter covers the whole GPU")
            if job.mig
            else None
            for job in jobs
        ]
        wanted = [job for job, answer in zip(jobs, answers, strict=True) if answer is None]
        if not wanted:
            return [answer for answer in answers if answer is not None]
        first = min(job.start for job in wanted)
        last = max(job.end for job in wanted)
        # one second more: a range leaves its start out in Prometheus 3 (not in 2.x)
        window = f"[{math.ceil((last - first).total_seconds()) + 1}s]"
        try:
            energy = self._series(self._selector(self.metric, wanted) + window, last)
            uuids = {uuid for (_, uuid) in energy}
            others = (
                self._series(
                    f"{self.metric}{{{self.gpu_label}=~"
                    f'"{"|".join(map(_regex_literal, sorted(uuids)))}",'
                    f'{self.job_labels[-1]}!=""}}{window}',
                    last,
                )
                if uuids
                else {}
            )
            busy = (
                self._series(self._selector(self.utilization_metric, wanted) + window, last)
                if self.utilization_metric
                else {}
            )
        except _Unreachable as err:
            failed = Measurement(None, str(err), unreachable=True)
            return [failed if answer is None else answer for answer in answers]
        return [
            self._one(job, energy, others, busy) if answer is None else answer
            for job, answer in zip(jobs, answers, strict=True)
        ]

    def _one(self, job: GpuJob, energy: BySeries, others: BySeries, busy: BySeries) -> Measurement:
        incomplete = self._incomplete(job, energy)
        try:
            joules = self._energy_j(job, energy, others)
        except _Refused as refused:
            return Measurement(None, str(refused), incomplete=incomplete)
        return Measurement(
            MeasuredEnergy(joules, frozenset({Component.GPU})),
            gpu_utilization=_utilization(job, busy),
            incomplete=incomplete,
        )

    def _incomplete(self, job: GpuJob, energy: BySeries) -> str:
        """Why the job's samples may not all be in Prometheus yet: a GPU's last sample in
        the run more than ``scrape_lag_s`` before its end ('' if none is)."""
        end_s = job.end.timestamp()
        for (key, uuid), samples in sorted(energy.items()):
            run = _within(samples, job) if key == job.key else []
            if run and end_s - run[-1][0] > self.scrape_lag_s:
                return (
                    f"the samples of GPU {uuid} end {end_s - run[-1][0]:.0f} s before the "
                    f"run's end (a scrape may lag {self.scrape_lag_s:g} s)"
                )
        return ""

    def _selector(self, metric: str, jobs: Sequence[GpuJob]) -> str:
        """``metric`` for the jobs' label values (a superset where there are several
        labels; ``_series`` keeps the exact keys)."""
        matchers = []
        for i, label in enumerate(self.job_labels):
            values = sorted({job.key[i] for job in jobs})
            if len(values) == 1:
                matchers.append(f'{label}="{_label_value(values[0])}"')
            else:
                matchers.append(f'{label}=~"{"|".join(map(_regex_literal, values))}"')
        return f"{metric}{{{','.join(matchers)}}}"

    def _series(self, promql: str, at: datetime) -> BySeries:
        """A range query's samples by (job key, GPU)."""
        by_job_gpu: BySeries = {}
        for item in self._query(promql, at):
            labels = item["metric"]
            key = tuple(labels.get(label, "") for label in self.job_labels)
            uuid = labels.get(self.gpu_label) or labels.get("gpu", "?")
            samples = [(float(t), float(v)) for t, v in item.get("values", [])]
            by_job_gpu.setdefault((key, uuid), []).extend(samples)
        for samples in by_job_gpu.values():
            samples.sort()
        return by_job_gpu

    def _energy_j(
        self,
        job: GpuJob,
        energy: BySeries,
        others: BySeries,
    ) -> float:
        run_s = (job.end - job.start).total_seconds()
        by_gpu = {uuid: _within(s, job) for (key, uuid), s in energy.items() if key == job.key}
        by_gpu = {uuid: samples for uuid, samples in by_gpu.items() if samples}
        if len(by_gpu) != job.gpus:
            raise _Refused(
                f"{self.metric} has {len(by_gpu)} GPU(s) for the job, which holds {job.gpus:g}"
            )
        for (key, uuid), samples in others.items():
            if uuid in by_gpu and key != job.key and _within(samples, job):
                raise _Refused(
                    f"GPU {uuid} served other jobs during the run (shared, time-slicing): "
                    "its series is the whole device's"
                )
        energy_j = 0.0
        for uuid, samples in by_gpu.items():
            if not self.power and any(b[1] < a[1] for a, b in itertools.pairwise(samples)):
                raise _Refused(f"the counter of GPU {uuid} was reset during the run")
            span_s = samples[-1][0] - samples[0][0]
            if span_s <= 0 or span_s < self.min_coverage * run_s:
                raise _Refused(
                    f"the samples of GPU {uuid} cover {span_s:.0f} s of the {run_s:.0f} s run "
                    f"(less than {self.min_coverage:.0%})"
                )
            if self.power:
                power_w = _trapezoids(samples) / MILLI / span_s
            else:
                power_w = (samples[-1][1] - samples[0][1]) / MILLI / span_s
            if not 0 <= power_w <= MAX_GPU_POWER_W:
                raise _Refused(f"GPU {uuid} would have drawn {power_w:.0f} W on average")
            energy_j += power_w * run_s
        return energy_j


def _within(samples: Samples, job: GpuJob) -> Samples:
    start, end = job.start.timestamp(), job.end.timestamp()
    return [(t, v) for t, v in samples if start <= t <= end]


def _trapezoids(samples: Samples) -> float:
    """The integral of a gauge over its samples' span (value × seconds)."""
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(samples))


def _utilization(job: GpuJob, busy: BySeries) -> float | None:
    """The job's GPUs' average busy share over the run, 0..1; None if not known."""
    means = [
        sum(v for _, v in run) / len(run)
        for (key, _), samples in busy.items()
        if key == job.key and (run := _within(samples, job))
    ]
    if not means:
        return None
    share = sum(means) / len(means) / 100.0
    return share if 0.0 <= share <= 1.0 else None


class _Refused(Exception):
    """The series cannot be the job's measurement; the message says why."""


class _Unreachable(Exception):
    """Prometheus did not answer, or refused the query."""


def _regex_literal(text: str) -> str:
    """``text`` matched literally by a PromQL regex, inside a double-quoted string."""
    return _label_value(re.escape(text))


def slurm_gpu_energy(settings: SlurmConfig) -> DcgmEnergy | None:
    """The reader for a Slurm cluster's GPU exporter (``slurm.prometheus_url``), if any."""
    if not settings.prometheus_url:
        return None
    metric, busy, uuid, job = EXPORTER_NAMES[settings.gpu_exporter]
    return DcgmEnergy(
        settings.prometheus_url,
        settings.gpu_energy_metric or metric,
        settings.prometheus_timeout_s,
        settings.gpu_min_coverage,
        (settings.gpu_job_label or job,),
        settings.gpu_utilization_metric or busy,
        gpu_label=settings.gpu_uuid_label or uuid,
        power=settings.gpu_exporter == "jobstats",
        scrape_lag_s=settings.gpu_scrape_lag_s,
    )


def with_measurement(record: JobRecord, measurement: Measurement) -> JobRecord:
    """``record`` with its GPUs' measured energy, counted once: a measurement that
    covers the GPUs already (Slurm's IPMI counter of the whole node) keeps its energy and
    takes only the busy share; one that does not (RAPL: CPU and memory) is joined by
    the GPUs' energy, each covering its own components."""
    gpu = measurement.energy
    if gpu is None:
        return record
    busy = measurement.gpu_utilization
    utilization = busy if busy is not None else record.gpu_utilization
    if any(Component.GPU in m.covers for m in record.measured):
        return replace(record, gpu_utilization=utilization)
    return replace(record, measured=(*record.measured, gpu), gpu_utilization=utilization)
