"""The seed paper's calculator as a function: hardware × hours × region → emissions.

Defaults follow the ML CO2 Impact calculator (Lacoste et al. 2019): PUE 1.0 and
full utilisation, one device. The run goes through the same footprint model as
cluster jobs, so the calculator and the ledger can never disagree.

Papers and model cards publish total device-hours (Llama 2: 3.3M GPU-hours), and the
seed calculator asks users of several GPUs to enter GPUs × hours, so an estimate is
any number of device-hours, not a job: it is given to the model as a one-hour run of
that many devices (the model is linear in both), which keeps the limits on real jobs'
run time (``records.MAX_RUN``) where they belong.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from . import embodied as scope3
from . import factors
from .errors import InputError
from .footprint import Footprint, PowerProfile, Uncertainty, compute_footprint
from .records import JobRecord, JobState
from .site import Constant, SiteFactors

#: More device-hours than this is a typo: a hundred times the largest published
#: training run (Llama 3, 39.3M GPU-hours, its model card).
MAX_DEVICE_HOURS = 1e10
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Comparison:
    region_key: str
    region_name: str
    intensity_g_per_kwh: float
    co2e_kg: float


@dataclass(frozen=True, slots=True)
class EquivalentAmount:
    key: str
    amount: float
    description: str
    source: str


@dataclass(frozen=True, slots=True)
class EmbodiedEstimate:
    """The run's share of its hardware's embodied emissions (``--embodied``)."""

    node: str
    node_kg: float
    gpus_per_node: int
    lifetime_years: float
    covers: str
    source: str
    co2e_kg: float
    co2e_kg_low: float
    co2e_kg_high: float


@dataclass(frozen=True, slots=True)
class Estimate:
    hardware: str
    tdp_w: float
    count: int | None  # devices, where given
    hours: float | None  # hours each device ran, where the count is given
    device_hours: float
    utilization: float
    pue: float
    region_key: str | None
    region_name: str | None
    provider: str | None
    dataset: str | None
    intensity_g_per_kwh: float
    intensity_source: str
    energy_kwh: float
    co2e_kg: float
    co2e_kg_low: float
    co2e_kg_high: float
    method: str
    offset_pct: float | None
    offset_co2e_kg: float | None
    lowest_region: Comparison | None
    equivalents: tuple[EquivalentAmount, ...]
    embodied: EmbodiedEstimate | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run_footprint(
    tdp_w: float,
    device_hours: float,
    utilization: float,
    pue: float,
    intensity_g_per_kwh: float,
) -> Footprint:
    """The footprint of ``device_hours`` of devices of ``tdp_w`` at a constant intensity."""
    job = JobRecord(
        cluster="estimate",
        job_id="estimate",
        user="",
        project="",
        partition="",
        state=JobState.COMPLETED,
        submit_time=_EPOCH,
        start_time=_EPOCH,
        end_time=_EPOCH + timedelta(hours=1),
        gpu_count=device_hours,
        gpu_utilization=utilization,
    )
    power = PowerProfile(gpu_tdp_w=tdp_w, gpu_idle_w=0.0)
    site = SiteFactors("estimate", Constant(pue), Constant(intensity_g_per_kwh))
    return compute_footprint(job, power, site, Uncertainty())


def estimate(
    *,
    hardware: str | None = None,
    tdp_w: float | None = None,
    count: int | None = None,
    hours: float | None = None,
    device_hours: float | None = None,
    region: str | None = None,
    intensity_g_per_kwh: float | None = None,
    dataset: str = factors.CURRENT_VINTAGE,
    pue: float = 1.0,
    utilization: float = 1.0,
    embodied: str | None = None,
    lifetime_years: float | None = None,
) -> Estimate:
    """Energy and emissions of a run, with the comparisons the seed calculator shows.

    The run is ``hours`` on each of ``count`` devices (1 by default), or
    ``device_hours`` in total (on ``count`` devices, where given). With ``embodied``
    (a bundled node or accelerator), also the devices' share of its embodied emissions.
    """
    if lifetime_years is not None and embodied is None:
        raise InputError("--lifetime-years goes with --embodied")
    if (hardware is None) == (tdp_w is None):
        raise InputError("give exactly one of --hardware or --tdp-w")
    if (region is None) == (intensity_g_per_kwh is None):
        raise InputError("give exactly one of --region or --intensity-g-per-kwh")
    if (hours is None) == (device_hours is None):
        raise InputError("give exactly one of --hours or --device-hours")
    if count is not None and not 1 <= count <= 1_000_000:
        raise InputError(f"--count must be between 1 and 1000000, got {count}")
    if device_hours is None:
        count = count or 1
        hours = float(hours or 0.0)
        device_hours = count * hours
        problem = (
            f"--hours must be > 0 and --count × --hours at most {MAX_DEVICE_HOURS:,.0f} "
            f"device-hours, got {count} × {hours:g}"
        )
    else:
        hours = device_hours / count if count else None
        problem = (
            f"--device-hours must be > 0 and at most {MAX_DEVICE_HOURS:,.0f}, got {device_hours:g}"
        )
    if not 0 < device_hours <= MAX_DEVICE_HOURS:
        raise InputError(problem)
    if not 1.0 <= pue <= 5.0:
        raise InputError(f"--pue must be between 1.0 and 5.0, got {pue:g}")
    if not 0.0 <= utilization <= 1.0:
        raise InputError(f"--utilization must be between 0 and 1, got {utilization:g}")
    if tdp_w is not None and not 0 < tdp_w <= 5000:
        raise InputError(f"--tdp-w must be > 0 and at most 5000, got {tdp_w:g}")

    if hardware is not None:
        device = factors.find_hardware(hardware)
        device_name, device_tdp_w = device.name, device.tdp_w
    else:
        device_tdp_w = float(tdp_w or 0.0)
        device_name = "custom device"

    found = factors.find_region(region, dataset) if region is not None else None
    intensity = found.intensity_g_per_kwh if found else float(intensity_g_per_kwh or 0.0)
    footprint = run_footprint(device_tdp_w, device_hours, utilization, pue, intensity)

    offset_kg = None
    if found and found.offset_pct is not None:
        offset_kg = footprint.co2e_g / 1000 * found.offset_pct / 100
    lowest = None
    if found and found.provider:
        candidates = [
            r
            for r in factors.region_table()
            if r.vintage == found.vintage and r.provider == found.provider
        ]
        best = min(candidates, key=lambda r: r.intensity_g_per_kwh)
        best_fp = run_footprint(
            device_tdp_w, device_hours, utilization, pue, best.intensity_g_per_kwh
        )
        lowest = Comparison(best.key, best.name, best.intensity_g_per_kwh, best_fp.co2e_g / 1000)

    amounts = tuple(
        EquivalentAmount(e.key, footprint.co2e_g / e.co2e_g_per_unit, e.description, e.source)
        for e in factors.equivalents()
    )
    return Estimate(
        hardware=device_name,
        tdp_w=device_tdp_w,
        count=count,
        hours=hours,
        device_hours=device_hours,
        utilization=utilization,
        pue=pue,
        region_key=found.key if found else None,
        region_name=found.name if found else None,
        provider=(found.provider or None) if found else None,
        dataset=found.vintage if found else None,
        intensity_g_per_kwh=intensity,
        intensity_source=f"{found.source} ({found.year}; {found.licence})" if found else "given",
        energy_kwh=footprint.energy_facility_kwh,
        co2e_kg=footprint.co2e_g / 1000,
        co2e_kg_low=footprint.co2e_g_low / 1000,
        co2e_kg_high=footprint.co2e_g_high / 1000,
        method=footprint.method.value,
        offset_pct=found.offset_pct if found else None,
        offset_co2e_kg=offset_kg,
        lowest_region=lowest,
        equivalents=amounts,
        embodied=_embodied(embodied, lifetime_years, device_hours) if embodied else None,
    )


def _embodied(
    node_name: str, lifetime_years: float | None, device_hours: float
) -> EmbodiedEstimate:
    """The devices' share of ``node_name``'s GPUs for ``device_hours``, amortised."""
    settings = scope3.EmbodiedSettings(node=node_name, lifetime_years=lifetime_years)
    node = scope3.resolve(settings, where="--embodied")
    if not node.gpus_per_node:
        raise InputError(
            f"--embodied {node_name!r}: {node.name} has no GPUs; give a GPU node or an accelerator"
        )
    # the estimate's one-hour run of device_hours devices, as for the operational figure
    share = scope3.amortise(node, gpus=device_hours, cores=0, run_seconds=3600.0)
    return EmbodiedEstimate(
        node=node.name,
        node_kg=node.node_kg,
        gpus_per_node=node.gpus_per_node,
        lifetime_years=node.lifetime_years,
        covers=node.covers,
        source=node.source,
        co2e_kg=share.co2e_g / 1000,
        co2e_kg_low=share.co2e_g_low / 1000,
        co2e_kg_high=share.co2e_g_high / 1000,
    )


def _where(e: Estimate) -> str:
    if e.region_key is None:
        return f"a grid of {e.intensity_g_per_kwh:g} gCO2e/kWh"
    return f"{e.region_name} ({e.region_key}), {e.intensity_g_per_kwh:g} gCO2e/kWh"


def _hours(value: float) -> str:
    """Hours as written in papers: 12.5, 184,320, 3,300,000 (never 3.3e+06)."""
    return f"{value:,.10g}"


def _run(e: Estimate) -> str:
    if e.count is None or e.hours is None:
        return f"{_hours(e.device_hours)} device-hours of {e.hardware} ({e.tdp_w:g} W)"
    total = f" ({_hours(e.device_hours)} device-hours)" if e.count > 1 else ""
    return f"{e.count} × {e.hardware} ({e.tdp_w:g} W) for {_hours(e.hours)} h{total}"


def render_text(e: Estimate) -> str:
    lines = [
        f"{_run(e)} at utilisation {e.utilization:g}, PUE {e.pue:g}, in {_where(e)}",
        f"  energy:    {e.energy_kwh:,.2f} kWh",
        f"  emissions: {e.co2e_kg:,.2f} kg CO2e (range {e.co2e_kg_low:,.2f} – "
        f"{e.co2e_kg_high:,.2f}), method {e.method}",
        f"  intensity source: {e.intensity_source}",
    ]
    if e.offset_pct is not None and e.offset_co2e_kg is not None:
        lines.append(
            f"  offset by the provider: {e.offset_pct:g}% "
            f"({e.offset_co2e_kg:,.2f} kg CO2e), as the provider states"
        )
    if e.lowest_region is not None:
        low = e.lowest_region
        lines.append(
            f"  in {low.region_key} ({low.region_name}), the provider's lowest-carbon "
            f"region: {low.co2e_kg:,.2f} kg CO2e at {low.intensity_g_per_kwh:g} "
            "gCO2e/kWh"
        )
    if e.embodied is not None:
        b = e.embodied
        lines += [
            f"  embodied:  {b.co2e_kg:,.2f} kg CO2e (range {b.co2e_kg_low:,.2f} – "
            f"{b.co2e_kg_high:,.2f}), the devices' share of {_node(b)}",
            f"  embodied source: {b.source}",
        ]
    lines.append("  that is as much CO2e as (operational emissions):")
    lines += [f"    {a.amount:,.1f} {a.description} (source: {a.source})" for a in e.equivalents]
    return "\n".join(lines)


def _node(b: EmbodiedEstimate) -> str:
    return (
        f"{b.node} ({b.node_kg:,.6g} kg CO2e for {b.gpus_per_node} GPU(s), {b.covers}) "
        f"over {b.lifetime_years:g} years of 8,766 h"
    )


def amount(value: float) -> str:
    """Three significant figures for small numbers, whole numbers with separators for large."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _statement(e: Estimate) -> str:
    offset = ""
    if e.offset_pct is not None:
        offset = f", {e.offset_pct:g}% of which the provider states it offsets"
    if e.count is None or e.hours is None:
        run = f"used {_hours(e.device_hours)} device-hours of {e.hardware}"
    else:
        run = f"ran for {_hours(e.hours)} hours on {e.count} × {e.hardware}"
    return (
        f"The experiments {run} "
        f"(TDP {e.tdp_w:g} W) in {_where(e)}, at a PUE of {e.pue:g}. "
        f"They used an estimated {amount(e.energy_kwh)} kWh and emitted an estimated "
        f"{amount(e.co2e_kg)} kg CO2e (range {amount(e.co2e_kg_low)} to "
        f"{amount(e.co2e_kg_high)}){offset}. "
        f"{_embodied_sentence(e)}"
        f"Estimated with jobcarbon, following the method of {CITE}."
    )


def _embodied_sentence(e: Estimate) -> str:
    if e.embodied is None:
        return ""
    b = e.embodied
    return (
        f"Manufacturing the hardware adds an estimated {amount(b.co2e_kg)} kg CO2e "
        f"(range {amount(b.co2e_kg_low)} to {amount(b.co2e_kg_high)}), the devices' share "
        f"of {_node(b)}, amortised as in the Green Software Foundation's SCI "
        f"(source: {b.source}). "
    )


LACOSTE_BIBTEX = """@article{lacoste2019quantifying,
  title={Quantifying the Carbon Emissions of Machine Learning},
  author={Lacoste, Alexandre and Luccioni, Alexandra and Schmidt, Victor and Dandres, Thomas},
  journal={arXiv preprint arXiv:1910.09700},
  year={2019}
}"""


#: Where a statement's plain text cites the method; ``latex`` and ``markdown`` fill it in.
CITE = "\x00cite\x00"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_SPECIAL = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIALS))


def latex(text: str) -> str:
    """A plain statement as LaTeX (names may hold _, &, %), with the BibTeX as a comment."""
    body = _LATEX_SPECIAL.sub(lambda m: _LATEX_SPECIALS[m.group()], text)
    body = body.replace("CO2e", r"CO$_2$e").replace(
        CITE, r"Lacoste et al.~\cite{lacoste2019quantifying}"
    )
    return f"{body}\n\n% BibTeX:\n" + "\n".join(f"% {line}" for line in LACOSTE_BIBTEX.splitlines())


def markdown(text: str) -> str:
    """A plain statement as Markdown, citing the method by its arXiv link."""
    return text.replace(CITE, "[Lacoste et al. (2019)](https://arxiv.org/abs/1910.09700)")


def render_latex(e: Estimate) -> str:
    return latex(_statement(e))


def render_markdown(e: Estimate) -> str:
    return markdown(_statement(e))
