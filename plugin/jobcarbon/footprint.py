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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import FactorError
from .records import Component, JobRecord
from .site import SiteFactors, hour_segments

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


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """Relative errors behind the low/high range."""

    tdp: float = 0.10  # the tables' TDP against a board's real draw
    measured: float = 0.05  # a scheduler's energy counter


@dataclass(frozen=True, slots=True)
class Bounds:
    """A central value with its low and high bound, in one unit."""

    central: float
    low: float
    high: float

    def scaled(self, factor: float) -> Bounds:
        return Bounds(self.central * factor, self.low * factor, self.high * factor)

    def __add__(self, other: Bounds) -> Bounds:
        return Bounds(self.central + other.central, self.low + other.low, self.high + other.high)


ZERO = Bounds(0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Footprint:
    """What one job cost. Energies in kWh, emissions in grams CO2e."""

    gpu_seconds: float
    cpu_seconds: float
    energy_gpu_kwh: float
    energy_cpu_kwh: float
    energy_memory_kwh: float
    energy_facility_kwh: float
    co2e_g: float
    co2e_g_low: float
    co2e_g_high: float
    method: Method

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
    gpu = ZERO
    if job.gpu_count > 0:
        if power.gpu_tdp_w <= 0:
            raise FactorError(
                f"job {job.cluster}/{job.job_id} has {job.gpu_count:g} GPU(s) but no GPU power: "
                f"add a hardware rule for partition {job.partition!r} or a GPU model"
            )
        tdp, idle = power.gpu_tdp_w, power.gpu_idle_w
        if job.gpu_utilization is None:
            per_gpu = Bounds(tdp, idle, tdp * (1 + u.tdp))
        else:
            central = idle + job.gpu_utilization * (tdp - idle)
            per_gpu = Bounds(central, central * (1 - u.tdp), central * (1 + u.tdp))
        gpu = per_gpu.scaled(job.gpu_count)
    cpu_central = job.cpu_count * power.cpu_power_w_per_core
    cpu = Bounds(cpu_central, job.cpu_count * power.cpu_idle_w_per_core, cpu_central * (1 + u.tdp))
    memory_central = job.memory_gb * power.memory_power_w_per_gb
    memory = Bounds(memory_central, memory_central * (1 - u.tdp), memory_central * (1 + u.tdp))
    return {Component.GPU: gpu, Component.CPU: cpu, Component.MEMORY: memory}


def _apply_measurement(
    job: JobRecord, energy_kwh: dict[Component, Bounds], u: Uncertainty
) -> Method:
    """Replace the estimate of the measured components by the measurement, in place.

    A measurement that covers several components (a node's IPMI counter) is split
    between them in proportion to their estimates, so per-component totals stay
    meaningful; the sum is the measurement.
    """
    if job.measured is None:
        return Method.ESTIMATED
    covered = [c for c in Component if c in job.measured.covers]
    measured_kwh = job.measured.energy_j / J_PER_KWH
    estimated_kwh = sum(energy_kwh[c].central for c in covered)
    for component in covered:
        if estimated_kwh > 0:
            share = energy_kwh[component].central / estimated_kwh
        else:
            share = 1.0 if component is covered[0] else 0.0
        value = measured_kwh * share
        energy_kwh[component] = Bounds(value, value * (1 - u.measured), value * (1 + u.measured))
    uncovered_cost = any(energy_kwh[c].central > 0 for c in Component if c not in covered)
    return Method.MIXED if uncovered_cost else Method.MEASURED


def compute_footprint(
    job: JobRecord, power: PowerProfile, site: SiteFactors, u: Uncertainty = Uncertainty()
) -> Footprint:
    """The footprint of ``job``. Jobs that never started cost zero."""
    job.validate()
    if job.start_time is None or job.end_time is None or job.run_seconds <= 0:
        return Footprint(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, Method.ESTIMATED)
    hours = job.run_seconds / 3600.0
    power_w = _component_power_w(job, power, u)
    energy_kwh = {c: p.scaled(hours / 1000.0) for c, p in power_w.items()}
    method = _apply_measurement(job, energy_kwh, u)
    it_kwh = energy_kwh[Component.GPU] + energy_kwh[Component.CPU] + energy_kwh[Component.MEMORY]

    if site.pue.is_constant and site.intensity_g_per_kwh.is_constant:
        segments = [(job.start_time, job.run_seconds)]
    else:
        segments = list(hour_segments(job.start_time, job.end_time))
    facility_kwh = 0.0
    co2e = ZERO
    for segment_start, seconds in segments:
        share = seconds / job.run_seconds
        pue = site.pue.at(segment_start)
        pue_low = max(1.0, pue * (1 - site.pue_uncertainty))
        pue_high = pue * (1 + site.pue_uncertainty)
        intensity = site.intensity_g_per_kwh.at(segment_start)
        facility_kwh += it_kwh.central * share * pue
        co2e = co2e + Bounds(
            it_kwh.central * pue, it_kwh.low * pue_low, it_kwh.high * pue_high
        ).scaled(share * intensity)

    return Footprint(
        gpu_seconds=job.gpu_seconds,
        cpu_seconds=job.cpu_seconds,
        energy_gpu_kwh=energy_kwh[Component.GPU].central,
        energy_cpu_kwh=energy_kwh[Component.CPU].central,
        energy_memory_kwh=energy_kwh[Component.MEMORY].central,
        energy_facility_kwh=facility_kwh,
        co2e_g=co2e.central,
        co2e_g_low=co2e.low,
        co2e_g_high=co2e.high,
        method=method,
    )


@dataclass(frozen=True, slots=True)
class AccountedJob:
    """A job with its footprint and the factors behind it: one row of the ledger."""

    job: JobRecord
    footprint: Footprint
    gpu_model: str | None  # as resolved from the config's hardware rules or the TRES type
    site: str
    factors_version: str
