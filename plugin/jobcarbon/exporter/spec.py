"""The metrics jobcarbon serves, each with its type, unit, labels and meaning: the one
list the collector, the text exposition and the metrics reference (docs/metrics.md)
all read. No job id, pod name or address is ever a label.
"""

from __future__ import annotations

from dataclasses import dataclass

JOB_LABELS = ("cluster", "user", "project", "partition", "gpu_model", "state", "method")
RUNNING_LABELS = ("cluster", "user", "project", "gpu_model")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: str
    unit: str
    labels: tuple[str, ...]
    help: str


METRICS = (
    MetricSpec(
        "jobcarbon_jobs_total",
        "counter",
        "jobs",
        JOB_LABELS,
        "Jobs accounted (each job once, whatever its state).",
    ),
    MetricSpec(
        "jobcarbon_gpu_seconds_total",
        "counter",
        "seconds",
        JOB_LABELS,
        "Allocated GPU time: GPUs x run time.",
    ),
    MetricSpec(
        "jobcarbon_cpu_seconds_total",
        "counter",
        "seconds",
        JOB_LABELS,
        "Allocated CPU time: cores x run time.",
    ),
    MetricSpec(
        "jobcarbon_energy_joules_total",
        "counter",
        "joules",
        (*JOB_LABELS, "component"),
        "Energy by component: gpu, cpu, memory (IT energy) and facility_overhead "
        "(IT energy x (PUE - 1)); the sum over components is facility energy.",
    ),
    MetricSpec(
        "jobcarbon_co2e_grams_total",
        "counter",
        "grams",
        (*JOB_LABELS, "scope"),
        "Emissions in grams CO2e; scope=operational (electricity x grid intensity).",
    ),
    MetricSpec(
        "jobcarbon_pue_ratio",
        "gauge",
        "ratio",
        ("cluster", "site"),
        "PUE in use now for the cluster's site.",
    ),
    MetricSpec(
        "jobcarbon_grid_intensity_grams_per_kilowatt_hour",
        "gauge",
        "grams per kilowatt-hour",
        ("cluster", "site"),
        "Grid carbon intensity in use now for the cluster's site (gCO2e/kWh).",
    ),
    MetricSpec(
        "jobcarbon_last_job_end_timestamp_seconds",
        "gauge",
        "seconds",
        ("cluster",),
        "End time of the latest job accounted (Unix time).",
    ),
    MetricSpec(
        "jobcarbon_ingest_pending_jobs",
        "gauge",
        "jobs",
        ("source",),
        "Jobs a collector has seen end but could not account yet.",
    ),
    MetricSpec(
        "jobcarbon_ingest_errors_total",
        "counter",
        "records",
        ("stage",),
        "Records that could not be accounted, by stage: parse (unreadable accounting "
        "line), account (unknown hardware, impossible record), sacct (a failed call to "
        "Slurm accounting, through sacct or pyslurm), kubernetes (a failed call to the "
        "Kubernetes API server), grid (a site's scheduled grid sync that failed: its jobs "
        "wait with the provider's fallback), prometheus (a failed query for a batch's GPU "
        "energy: its jobs estimated), gpu_energy_refused (a GPU exporter's energy that "
        "cannot be the job's own: estimated), gpu_samples_late (a job's GPU samples still "
        "short of its end when its wait was over).",
    ),
    MetricSpec(
        "jobcarbon_sweep_found_jobs_total",
        "counter",
        "jobs",
        ("started",),
        "Slurm jobs that only the collector's sweep found (no spool entry from the "
        'epilog within 5 minutes), by whether they started: for started="true" the '
        "epilog did not run or could not write its spool (its failure signal); Slurm "
        'runs no epilog for a job cancelled while pending (started="false"), so those '
        "are the sweep's to find and no failure.",
    ),
    MetricSpec(
        "jobcarbon_source_last_contact_timestamp_seconds",
        "gauge",
        "seconds",
        ("source",),
        "When a watching source (the Kubernetes pod watcher) last heard from its API "
        "server (Unix time).",
    ),
    MetricSpec(
        "jobcarbon_source_restarts_total",
        "counter",
        "restarts",
        ("source", "reason"),
        "Watches a source started again since it started, by reason: expired (410 Gone, "
        "a full re-list), disconnected (connection cut or silent), api_error (an error "
        "status); counted by the running watcher, so it resets when that restarts.",
    ),
    *(
        MetricSpec(
            f"jobcarbon_running_{name}",
            "gauge",
            unit,
            RUNNING_LABELS,
            f"Jobs still running (pods, written by the watcher every "
            f"kubernetes.running_interval_s; not served once older than "
            f"kubernetes.stale_after_s): {meaning}.",
        )
        for name, unit, meaning in (
            ("jobs", "jobs", "how many"),
            ("gpus", "GPUs", "GPUs they hold"),
            ("gpu_seconds", "seconds", "GPU time so far"),
            ("energy_joules", "joules", "facility energy so far (estimated)"),
            ("co2e_grams", "grams", "emissions so far in grams CO2e (estimated)"),
        )
    ),
    MetricSpec(
        "jobcarbon_ledger_up",
        "gauge",
        "boolean",
        (),
        "1 if the last scrape could read the ledger, 0 otherwise.",
    ),
    MetricSpec(
        "jobcarbon_ledger_errors_total",
        "counter",
        "scrapes",
        (),
        "Scrapes that failed: the ledger missing, locked or from a newer schema, or any "
        "other error (each logged once while it lasts; the next scrape tries again).",
    ),
    MetricSpec(
        "jobcarbon_build_info",
        "gauge",
        "info",
        ("version",),
        "Always 1; the jobcarbon version serving the metrics.",
    ),
)
SPECS = {spec.name: spec for spec in METRICS}

#: The metrics that have one or more series per label set of the ledger's totals.
JOB_METRICS = (
    "jobcarbon_jobs_total",
    "jobcarbon_gpu_seconds_total",
    "jobcarbon_cpu_seconds_total",
    "jobcarbon_energy_joules_total",
    "jobcarbon_co2e_grams_total",
)

Series = tuple[tuple[str, ...], float]  # label values (in the spec's order), value


@dataclass(slots=True)
class Family:
    """One metric's samples for one scrape, before they are rendered."""

    spec: MetricSpec
    series: list[Series]
