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


_COUNTERS_NOTE = (
    " Counts what was added: a job re-accounted lower, or moved to other labels, adds "
    "nothing here and its fall to the twin {removed}; the ledger's change over a window "
    "w is increase({name}[w]) - increase({removed}[w])."
)


def _counted(
    name: str, removed: str, unit: str, labels: tuple[str, ...], meaning: str
) -> tuple[MetricSpec, MetricSpec]:
    """A counter of what was added to the ledger's totals, and its twin of what was
    removed (the same labels): their difference is the ledger's net."""
    return (
        MetricSpec(
            name,
            "counter",
            unit,
            labels,
            meaning + _COUNTERS_NOTE.format(name=name, removed=removed),
        ),
        MetricSpec(
            removed,
            "counter",
            unit,
            labels,
            f"What the ledger's totals lost of {name}: a job re-accounted lower, or moved "
            "to other labels, or a placeholder row replaced by the job's own.",
        ),
    )


METRICS = (
    *_counted(
        "jobcarbon_jobs_total",
        "jobcarbon_jobs_removed_total",
        "jobs",
        JOB_LABELS,
        "Jobs accounted (each job once, whatever its state).",
    ),
    *_counted(
        "jobcarbon_gpu_seconds_total",
        "jobcarbon_gpu_removed_seconds_total",
        "seconds",
        JOB_LABELS,
        "Allocated GPU time: GPUs x run time.",
    ),
    *_counted(
        "jobcarbon_cpu_seconds_total",
        "jobcarbon_cpu_removed_seconds_total",
        "seconds",
        JOB_LABELS,
        "Allocated CPU time: cores x run time.",
    ),
    *_counted(
        "jobcarbon_energy_joules_total",
        "jobcarbon_energy_removed_joules_total",
        "joules",
        (*JOB_LABELS, "component"),
        "Energy by component: gpu, cpu, memory (IT energy) and facility_overhead "
        "(IT energy x (PUE - 1)); the sum over components is facility energy.",
    ),
    *_counted(
        "jobcarbon_co2e_grams_total",
        "jobcarbon_co2e_removed_grams_total",
        "grams",
        (*JOB_LABELS, "scope"),
        "Emissions in grams CO2e, location-based Scope 2 (GHG Protocol: electricity x "
        "the grid's average intensity); scope=operational.",
    ),
    *_counted(
        "jobcarbon_co2e_market_grams_total",
        "jobcarbon_co2e_market_removed_grams_total",
        "grams",
        (*JOB_LABELS, "scope"),
        "Emissions in grams CO2e, market-based Scope 2 (GHG Protocol Scope 2 Guidance: "
        "the sites' contracts, certificates, supplier rates or residual mix; the grid "
        "average where a site has no market data); scope=operational.",
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

#: The metrics that have one or more series per label set of the ledger's totals, each
#: counter followed by its twin of what was removed.
JOB_METRICS = tuple(spec.name for spec in METRICS if spec.labels[: len(JOB_LABELS)] == JOB_LABELS)

Series = tuple[tuple[str, ...], float]  # label values (in the spec's order), value


@dataclass(slots=True)
class Family:
    """One metric's samples for one scrape, before they are rendered."""

    spec: MetricSpec
    series: list[Series]
