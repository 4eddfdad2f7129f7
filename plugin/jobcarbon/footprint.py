"""The footprint model: a job, its hardware's power and its site's factors → energy and CO2e.

Pure: no I/O, no clock, no config lookups. The method is the seed paper's
(Lacoste et al. 2019: power × time × grid intensity), extended as Green Algorithms
does (Lannelongue et al. 2021: CPU cores × W/core + GPUs × W + memory GB × W/GB,
× PUE) and with measured energy taking the place of the estimate for what it covers.

Power of a GPU is ``idle + utilisation × (TDP − idle)`` when utilisation is known and
its TDP otherwise. The range (low, high) is a bound, not a confidence interval: low
assumes idle hardware where utilisation is unknown, the TDP table's error below and
the PUE's uncertainty below; high the same above. Grid intensity and PUE that vary
over time are integrated over the run hour by hour.

Both Scope 2 figures come out at once: ``co2e_g`` location-based (the grid's average
intensity), ``co2e_market_g`` market-based (the site's contracts for the year the job
ended in, GHG Protocol Scope 2 Guidance), its range the same relative range as the
energy's. The embodied (Scope 3) share of the hardware is computed beside this model
(``embodied.py``), and the accountant puts it into the same ``Footprint``.

``Footprint`` and ``AccountedJob`` are built once per job, millions of times in an
import: they are plain slots dataclasses (a frozen one costs 2-3 times as much to build),
to be treated as immutable all the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from .errors import FactorError
from .records import Component, JobRecord
from .site import Constant, MarketSource, SiteFactors

J_PER_KWH = 3.6e6


class Method(enum.StrEnum):
    """How the IT energy was obtained."""

    MEASURED = "measured"  # every component with a cost was measured by the scheduler
    MIXED = "mixed"  # some components measured, the rest estimated
    ESTIMATED = "estimated"  # estimated from TDP tables and allocation


@dataclass(frozen=True, slots=True)
class PowerProfile:
    """Power figures of the hardware a job ran on, resolved from config and tables."""

    gpu_model: str | None = None
    gpu_tdp_w: float = 0.0
    gpu_idle_w: float = 0.0
    cpu_power_w_per_core: float = 0.0
    cpu_idle_w_per_core: float = 0.0
    memory_power_w_per_gb: float = 0.0
    # CPU energy from the CPU time used (idle allocated cores at idle power), not the
    # allocation: ``cpu_energy_from: usage``
    cpu_from_usage: bool = False


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """Relative errors behind the low/high range."""

    tdp: float = 0.10  # the tables' TDP against a board's real draw
    measured: float = 0.05  # a scheduler's energy counter


#: A central value with its low and high bound, in one unit. Plain tuples: the model
#: runs once per job, millions of times in an import, and a frozen dataclass costs
#: ten times as much to build.
Bounds = tuple[float, float, float]


@dataclass(slots=True)
class Footprint:
    """What one job cost. Energies in kWh, emissions in grams CO2e."""

    gpu_seconds: float
    cpu_seconds: float
    energy_gpu_kwh: float
    energy_cpu_kwh: float
    energy_memory_kwh: float
    energy_facility_kwh: float
    co2e_g: float  # location-based: the grid's average intensity
    co2e_g_low: float
    co2e_g_high: float
    method: Method
    co2e_market_g: float  # market-based: the site's contracts, residual mix
    co2e_market_g_low: float
    co2e_market_g_high: float
    market_source: MarketSource
    #: embodied (Scope 3): the job's share of its node's manufacture (``embodied.py``),
    #: filled in by the accountant; None where the cluster has no embodied settings
    co2e_embodied_g: float | None = None
    co2e_embodied_g_low: float | None = None
    co2e_embodied_g_high: float | None = None
    embodied_source: str | None = None  # the bundled entry's name, or "site config"

    @property
    def energy_it_kwh(self) -> float:
        return self.energy_gpu_kwh + self.energy_cpu_kwh + self.energy_memory_kwh

    @property
    def pue(self) -> float:
        """Effective PUE over the run (0 when the job used no energy)."""
        it = self.energy_it_kwh
        return self.energy_facility_kwh / it if it > 0 else 0.0

    @property
    def intensity_g_per_kwh(self) -> float:
        """Effective grid intensity over the run (0 when the job used no energy)."""
        return self.co2e_g / self.energy_facility_kwh if self.energy_facility_kwh > 0 else 0.0


def _component_power_w(
    job: JobRecord, power: PowerProfile, u: Uncertainty
) -> dict[Component, Bounds]:
    gpu = (0.0, 0.0, 0.0)
    if job.gpu_count > 0:
        if power.gpu_tdp_w <= 0:
            raise FactorError(
                f"job {job.cluster}/{job.job_id} has {job.gpu_count:g} GPU(s) but no GPU power: "
                f"add a hardware rule for partition {job.partition!r} or a GPU model"
            )
        tdp, idle, n = power.gpu_tdp_w, power.gpu_idle_w, job.gpu_count
        if job.gpu_utilization is None:
            gpu = (tdp * n, idle * n, tdp * (1 + u.tdp) * n)
        else:
            central = idle + job.gpu_utilization * (tdp - idle)
            gpu = (central * n, central * (1 - u.tdp) * n, central * (1 + u.tdp) * n)
    cpu_central = job.cpu_count * power.cpu_power_w_per_core
    if power.cpu_from_usage and job.cpu_used_seconds is not None and job.run_seconds > 0:
        busy_cores = min(job.cpu_used_seconds / job.run_seconds, float(job.cpu_count))
        cpu_central = (
            busy_cores * power.cpu_power_w_per_core
            + (job.cpu_count - busy_cores) * power.cpu_idle_w_per_core
        )
    cpu = (cpu_central, job.cpu_count * power.cpu_idle_w_per_core, cpu_central * (1 + u.tdp))
    memory_central = job.memory_gb * power.memory_power_w_per_gb
    memory = (memory_central, memory_central * (1 - u.tdp), memory_central * (1 + u.tdp))
    return {Component.GPU: gpu, Component.CPU: cpu, Component.MEMORY: memory}


def _apply_measurement(
    job: JobRecord, energy_kwh: dict[Component, Bounds], u: Uncertainty
) -> Method:
    """Replace the estimate of the measured components by the measurements, in place.

    A measurement that covers several components (a node's IPMI counter, RAPL's CPU
    and memory) is split between them in proportion to their estimates, so
    per-component totals stay meaningful; the sum is the measurement. Each
    measurement covers components of its own (``JobRecord.validate``).
    """
    if not job.measured:
        return Method.ESTIMATED
    covered: list[Component] = []
    for measurement in job.measured:
        parts = [c for c in Component if c in measurement.covers]
        covered += parts
        measured_kwh = measurement.energy_j / J_PER_KWH
        estimated_kwh = sum(energy_kwh[c][0] for c in parts)
        for component in parts:
            if estimated_kwh > 0:
                share = energy_kwh[component][0] / estimated_kwh
            else:
                share = 1.0 if component is parts[0] else 0.0
            value = measured_kwh * share
            energy_kwh[component] = (value, value * (1 - u.measured), value * (1 + u.measured))
    uncovered_cost = any(energy_kwh[c][0] > 0 for c in Component if c not in covered)
    return Method.MIXED if uncovered_cost else Method.MEASURED


def site_emissions(
    it_kwh: Bounds, site: SiteFactors, start: datetime, end: datetime
) -> tuple[Bounds, Bounds]:
    """Facility energy (kWh) and CO2e (g), each central, low and high, of IT energy (kWh;
    central, low, high) drawn evenly over ``[start, end)`` at ``site``.

    The PUE holds still over each piece of the run (the whole run, or its calendar
    months); the intensity is integrated over the piece (at once for an hourly series).
    """
    run_s = (end - start).total_seconds()
    it_central, it_low, it_high = it_kwh
    intensity = site.intensity_g_per_kwh
    facility_kwh = facility_low = facility_high = co2e_central = co2e_low = co2e_high = 0.0
    for piece_start, piece_end in site.pue.pieces(start, end):
        share = (piece_end - piece_start).total_seconds() / run_s
        pue = site.pue.at(piece_start)
        pue_low = max(1.0, pue * (1 - site.pue_uncertainty))
        pue_high = pue * (1 + site.pue_uncertainty)
        if isinstance(intensity, Constant):
            weight = share * intensity.value
        else:
            weight = intensity.integral(piece_start, piece_end) / run_s
        facility_kwh += it_central * share * pue
        facility_low += it_low * share * pue_low
        facility_high += it_high * share * pue_high
        co2e_central += it_central * pue * weight
        co2e_low += it_low * pue_low * weight
        co2e_high += it_high * pue_high * weight
    return (facility_kwh, facility_low, facility_high), (co2e_central, co2e_low, co2e_high)


#: What a job that never ran costs: nothing both ways (``compute_footprint`` gives it
#: its year's market source).
NOTHING = Footprint(*(0.0,) * 9, Method.ESTIMATED, *(0.0,) * 3, MarketSource.LOCATION_BASED)


def compute_footprint(
    job: JobRecord, power: PowerProfile, site: SiteFactors, u: Uncertainty = Uncertainty()
) -> Footprint:
    """The footprint of ``job``. Jobs that never started cost zero."""
    job.validate()
    run_s = job.run_seconds
    if job.start_time is None or job.end_time is None or run_s <= 0:
        year = (job.end_time or job.submit_time).year  # the ledger's month's
        return replace(NOTHING, market_source=site.market.for_year(year).source)
    kwh_per_w = run_s / 3600.0 / 1000.0
    energy_kwh = {
        component: (central * kwh_per_w, low * kwh_per_w, high * kwh_per_w)
        for component, (central, low, high) in _component_power_w(job, power, u).items()
    }
    method = _apply_measurement(job, energy_kwh, u)
    gpu, cpu, memory = (
        energy_kwh[Component.GPU],
        energy_kwh[Component.CPU],
        energy_kwh[Component.MEMORY],
    )
    it_kwh = (
        gpu[0] + cpu[0] + memory[0],
        gpu[1] + cpu[1] + memory[1],
        gpu[2] + cpu[2] + memory[2],
    )
    (facility_kwh, facility_low, facility_high), (co2e_central, co2e_low, co2e_high) = (
        site_emissions(it_kwh, site, job.start_time, job.end_time)
    )

    # market-based: the year's contracts per kWh, and the share without a contractual
    # factor at the location-based figure (the grid average stands in)
    market = site.market.for_year(job.end_time.year)
    contract, location = market.contract_g_per_kwh, market.location_share

    return Footprint(
        gpu_seconds=job.gpu_seconds,
        cpu_seconds=job.cpu_seconds,
        energy_gpu_kwh=gpu[0],
        energy_cpu_kwh=cpu[0],
        energy_memory_kwh=memory[0],
        energy_facility_kwh=facility_kwh,
        co2e_g=co2e_central,
        co2e_g_low=co2e_low,
        co2e_g_high=co2e_high,
        method=method,
        co2e_market_g=facility_kwh * contract + location * co2e_central,
        co2e_market_g_low=facility_low * contract + location * co2e_low,
        co2e_market_g_high=facility_high * contract + location * co2e_high,
        market_source=market.source,
    )


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a footprint was computed with, beside the factor tables' version: where the
    PUE came from (``constant`` or ``monthly``), the intensity's source (``constant``,
    ``region``, ``series``, ``provider <name>``) and data version, and a digest of the
    config's factors behind it (``None`` where unknown: jobs accounted before schema v9)."""

    pue_source: str | None = None
    intensity_source: str | None = None
    intensity_version: str | None = None
    config_digest: str | None = None


UNKNOWN = Provenance()


@dataclass(slots=True)
class AccountedJob:
    """A job with its footprint and the factors behind it: one row of the ledger."""

    job: JobRecord
    footprint: Footprint
    gpu_model: str | None  # as resolved from the config's hardware rules or the TRES type
    site: str
    factors_version: str
    provenance: Provenance = UNKNOWN  # one per cluster and site's factors: shared
    #: some hour of the run had no synced value from the site's provider yet and took
    #: its fallback: the footprint is recomputed once the hour arrives
    intensity_pending: bool = False
