"""A paper-ready statement of the footprint of a project's, a user's or some jobs' work.

The seed paper (Lacoste et al. 2019) asks authors to report their compute's emissions
next to their results. This states, for the jobs the ledger holds: the devices and
device-hours, the energy with the PUE, the emissions with their range, the factors
and where they come from, and the method. Every figure is the ledger's own sum
through the queries ``jobcarbon summary`` runs (``Ledger.totals`` and
``Ledger.summary``), so a statement and the summary for the same jobs agree to the
digit. Emissions are location-based: the grid's average intensity where the jobs ran;
the embodied emissions (Scope 3) of the hardware, where configured, are stated apart.
No I/O but the ledger; the config only names the factors' sources.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime

from . import embodied, factors
from .config import Config, SiteConfig
from .errors import FactorError
from .estimate import CITE, LACOSTE_BIBTEX, amount, latex, markdown
from .ledger import FactorsUsed, Filters, Ledger, SummaryRow
from .report import NO_GPU, UNNAMED_GPU


@dataclass(frozen=True, slots=True)
class DeviceUse:
    """The jobs on one GPU model (or on CPUs only) and their device-hours."""

    model: str
    jobs: int
    gpu_hours: float
    energy_kwh: float
    co2e_kg: float
    tdp_w: float | None  # None for CPU-only jobs, or a model the tables lack
    tdp_source: str | None


@dataclass(frozen=True, slots=True)
class SiteUse:
    """What the jobs used at one site, and the factors behind it with their sources."""

    site: str
    jobs: int
    energy_kwh: float
    co2e_kg: float
    intensity_g_per_kwh: float  # the site's emissions over its energy: the effective one
    pue_min: float
    pue_max: float
    pue_source: str
    intensity_source: str


@dataclass(frozen=True, slots=True)
class Statement:
    scope: str  # whose work: "of project nlp", "of user alice", "under job IDs 1234 and 1240"
    since: datetime | None
    until: datetime | None
    totals: SummaryRow
    cpu_hours: float
    devices: tuple[DeviceUse, ...]
    measured_energy_kwh: float  # of energy_kwh, that of jobs the scheduler measured
    mixed_energy_kwh: float  # that of jobs it measured in part (the rest estimated)
    sites: tuple[SiteUse, ...]
    cpu_power_w_per_core: tuple[float, ...]
    memory_power_w_per_gb: tuple[float, ...]
    uncertainty_tdp: float
    factors_versions: tuple[str, ...]
    #: what the embodied figures rest on (``embodied.source_words``), most jobs first
    embodied_sources: tuple[str, ...] = ()

    def to_json(self) -> str:
        data = asdict(self)
        for name in ("since", "until"):
            moment = getattr(self, name)
            data[name] = moment.isoformat() if moment else None
        data["text"] = render_markdown(self)
        data["bibtex"] = LACOSTE_BIBTEX
        return json.dumps(data, indent=2)


def build_statement(
    ledger: Ledger, config: Config, filters: Filters, scope: str
) -> Statement | None:
    """The statement of the jobs ``filters`` covers; None if the ledger has none."""
    totals = ledger.totals(filters)
    if totals.jobs == 0:
        return None
    by_site = ledger.factors_used("site", filters)
    versions = sorted({f.factors_version for used in by_site.values() for f in used})
    clusters = [row.key for row in ledger.summary("cluster", filters)]
    known = [config.clusters[c] for c in clusters if c in config.clusters]
    methods = {row.key: row.energy_kwh for row in ledger.summary("method", filters)}
    return Statement(
        scope=scope,
        since=filters.since,
        until=filters.until,
        totals=totals,
        cpu_hours=ledger.cpu_hours(filters),
        devices=tuple(_device(row, config) for row in ledger.summary("gpu_model", filters)),
        measured_energy_kwh=methods.get("measured", 0.0),
        mixed_energy_kwh=methods.get("mixed", 0.0),
        sites=tuple(
            _site(row, by_site.get(row.key, []), config)
            for row in ledger.summary("site", filters)
            if row.energy_kwh > 0
        ),
        cpu_power_w_per_core=tuple(sorted({c.cpu_power_w_per_core for c in known})),
        memory_power_w_per_gb=tuple(sorted({c.memory_power_w_per_gb for c in known})),
        uncertainty_tdp=config.uncertainty_tdp,
        factors_versions=tuple(versions),
        embodied_sources=_embodied_sources(ledger, filters),
    )


def _embodied_sources(ledger: Ledger, filters: Filters) -> tuple[str, ...]:
    jobs: dict[str, int] = {}
    for by_source in ledger.embodied_sources("cluster", filters).values():
        for source, count in by_source.items():
            jobs[source] = jobs.get(source, 0) + count
    ranked = sorted(jobs, key=lambda source: (-jobs[source], source))
    return tuple(embodied.source_words(source) for source in ranked)


def _device(row: SummaryRow, config: Config) -> DeviceUse:
    if row.key == "(none)":
        model = NO_GPU if row.gpu_hours == 0 else UNNAMED_GPU
        return DeviceUse(model, row.jobs, row.gpu_hours, row.energy_kwh, row.co2e_kg, None, None)
    tdp_w, source = _tdp(row.key, config)
    return DeviceUse(row.key, row.jobs, row.gpu_hours, row.energy_kwh, row.co2e_kg, tdp_w, source)


def _tdp(model: str, config: Config) -> tuple[float | None, str | None]:
    """A GPU model's power as the site's hardware rules give it, else the tables'."""
    for cluster in config.clusters.values():
        for rule in cluster.hardware:
            if rule.gpu_tdp_w and (rule.gpu_model or rule.match.gpu_type or "") == model:
                return rule.gpu_tdp_w, "the site's own figure"
    try:
        device = factors.find_hardware(model)
    except FactorError:
        return None, None
    return device.tdp_w, device.source


def _site(row: SummaryRow, used: list[FactorsUsed], config: Config) -> SiteUse:
    site = config.sites.get(row.key)
    return SiteUse(
        site=row.key,
        jobs=row.jobs,
        energy_kwh=row.energy_kwh,
        co2e_kg=row.co2e_kg,
        intensity_g_per_kwh=row.co2e_kg * 1000 / row.energy_kwh,
        pue_min=min((f.pue_min for f in used), default=0.0),
        pue_max=max((f.pue_max for f in used), default=0.0),
        pue_source=_pue_source(site),
        intensity_source=_intensity_source(site),
    )


def _pue_source(site: SiteConfig | None) -> str:
    if site is None:
        return "a site no longer in the configuration"
    return "the site's monthly measurements" if site.pue_monthly else "the site's own figure"


def _intensity_source(site: SiteConfig | None) -> str:
    if site is None:
        return "a site no longer in the configuration"
    grid = site.grid
    if grid.region is not None:
        region = factors.find_region(grid.region, grid.dataset)
        return f"{region.name} ({region.key}): {region.source}, {region.year}"
    if grid.series is not None:
        return f"hourly grid intensity ({grid.series.path.name}), integrated over each job's run"
    return "the site's own figure"


def figure(value: float, unit: str) -> str:
    """One figure with its unit: three significant figures, never an exponent (0.0000728)."""
    if value == 0 or abs(value) >= 0.01:
        return f"{amount(value)} {unit}"
    digits = 2 - math.floor(math.log10(abs(value)))
    return f"{value:.{digits}f} {unit}"


def _range(low: float, high: float) -> str:
    low_text, high_text = f"{low:.2f}", f"{high:.2f}"
    return low_text if low_text == high_text else f"{low_text}–{high_text}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _period(s: Statement) -> str:
    if s.since and s.until:
        return f" that ended between {s.since:%Y-%m-%d} and {s.until:%Y-%m-%d}"
    if s.since:
        return f" that ended on or after {s.since:%Y-%m-%d}"
    if s.until:
        return f" that ended before {s.until:%Y-%m-%d}"
    return ""


def _devices(s: Statement) -> str:
    parts = []
    for d in s.devices:
        if d.model == NO_GPU:
            continue
        hours = figure(d.gpu_hours, "GPU-hours")
        if d.model == UNNAMED_GPU:
            parts.append(f"{hours} of GPUs whose model is not known")
        else:
            parts.append(f"{hours} of {d.model}" + (f" (TDP {d.tdp_w:g} W)" if d.tdp_w else ""))
    cpu = f"{figure(s.cpu_hours, 'CPU core-hours')}"
    return f"{_join(parts)}, and {cpu}" if parts else cpu


def _sites(s: Statement) -> str:
    parts = [
        f"PUE {_range(site.pue_min, site.pue_max)} ({site.pue_source}) and "
        f"{site.intensity_g_per_kwh:.0f} gCO2e/kWh ({site.intensity_source}) at site {site.site}"
        for site in s.sites
    ]
    return _join(parts) if parts else "no energy used"


def _method(s: Statement) -> str:
    energy_kwh = s.totals.energy_kwh
    sources = sorted({d.tdp_source for d in s.devices if d.tdp_source})
    tdp = f" ({'; '.join(sources)})" if sources else ""
    per_core = "/".join(f"{w:g}" for w in s.cpu_power_w_per_core) or "12"
    per_gb = "/".join(f"{w:g}" for w in s.memory_power_w_per_gb) or "0.3725"
    measured = [
        f"{100 * kwh / energy_kwh:.0f}% of the energy was {how}"
        for kwh, how in (
            (s.measured_energy_kwh, "measured by the scheduler's energy counters"),
            (s.mixed_energy_kwh, "measured in part"),
        )
        if kwh > 0 and energy_kwh > 0
    ]
    return (
        (f"{_join(measured)}; the rest " if measured else "The energy ")
        + "was estimated from the allocated hardware and run time: GPUs at "
        f"their thermal design power{tdp} or, where their utilisation was measured, between "
        f"idle and that power; CPU cores at {per_core} W each and memory at {per_gb} W/GB "
        "(Green Algorithms, Lannelongue et al. 2021). The range assumes idle hardware where "
        f"utilisation is unknown and {s.uncertainty_tdp:.0%} error in the power tables."
    )


def _embodied(s: Statement) -> str:
    """The embodied emissions in one sentence, or that they are not counted."""
    t = s.totals
    if not t.embodied_configured:
        return (
            "The embodied emissions of the hardware (Scope 3, its manufacture) are not "
            "included: they are not configured for these clusters."
        )
    missing = (
        f" ({t.not_configured_jobs:,} of the jobs ran where they are not configured and "
        "are not counted)"
        if t.not_configured_jobs
        else ""
    )
    return (
        f"The manufacture of the hardware adds {figure(t.co2e_embodied_kg, 'kg CO2e')} "
        f"(embodied, Scope 3; range {amount(t.co2e_embodied_kg_low)} to "
        f"{figure(t.co2e_embodied_kg_high, 'kg')}){missing}, the jobs' share of each node's "
        "emissions by the GPUs or cores they held and their run time over the node's "
        f"lifetime (Green Software Foundation SCI), from {'; '.join(s.embodied_sources)}."
    )


def plain_text(s: Statement) -> str:
    """The statement as plain text, with ``CITE`` where the method is cited."""
    t = s.totals
    versions = ", ".join(s.factors_versions)
    jobs = "job" if t.jobs == 1 else "jobs"
    return (
        f"The {t.jobs:,} {jobs} {s.scope}{_period(s)} used {_devices(s)}. "
        f"They consumed {figure(t.energy_kwh, 'kWh')} of electricity, including the data "
        f"centre's overhead, and emitted {figure(t.co2e_kg, 'kg CO2e')} (location-based; "
        f"range {amount(t.co2e_kg_low)} to {figure(t.co2e_kg_high, 'kg')}), with "
        f"{_sites(s)}. {_embodied(s)} {_method(s)} Accounted with jobcarbon (factor tables "
        f"{versions}), following the method of {CITE}."
    )


def render_latex(s: Statement) -> str:
    return latex(plain_text(s))


def render_markdown(s: Statement) -> str:
    return markdown(plain_text(s))


def scope_filters(
    project: str | None,
    user: str | None,
    job_ids: tuple[str, ...] | None,
    cluster: str | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[Filters, str]:
    """The ledger filter for one of ``project``, ``user`` or ``job_ids``, and its words."""
    if job_ids is not None:
        scope = f"under job ID{'s' if len(job_ids) > 1 else ''} {_join(list(job_ids))}"
    elif project is not None:
        scope = f"of project {project}"
    else:
        scope = f"of user {user}"
    if cluster:
        scope += f" on cluster {cluster}"
    filters = Filters(
        since=since, until=until, project=project, user=user, cluster=cluster, job_ids=job_ids
    )
    return filters, scope
