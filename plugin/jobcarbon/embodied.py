"""Embodied (Scope 3) emissions of the hardware a job used, amortised over its lifetime.

The method is the Green Software Foundation's SCI (ISO/IEC 21031:2024), M = TE × TS × RS:
the node's embodied emissions TE, times the job's share of the run time over the node's
lifetime (TS = run time ÷ lifetime, a year being 8,766 h or 365.25 days), times its
share of the node's resources (RS: its GPUs of the node's GPUs for a GPU job, its cores
of the node's cores for a CPU job). The amortisation does not stop at the end of the
lifetime: a node kept longer keeps being charged, so a job is never free for running
on old hardware. A cluster without embodied settings gets ``not configured``: no figure
(NULL in the ledger) and said so, never a guess. A job that never ran holds no
hardware: zero.

The range: low takes the least figure the source gives for the node and the longest
lifetime the sources assume (6 years, BLOOM); high the most and the shortest (4 years,
CCF), each widened to include the site's own lifetime.

The accountant (``accounting.py``) puts a job's figures into its ``footprint.Footprint``
(``co2e_embodied_g`` and its range, ``embodied_source``); the settings come from
``clusters.<name>.embodied`` and a hardware rule's ``embodied`` (``embodiedconfig.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import factors
from .errors import FactorError
from .records import JobRecord

HOURS_PER_YEAR = 8766.0  # 365.25 days
#: The shortest and longest lifetimes the bundled sources assume: CCF 4 years, the
#: BLOOM study 6. (The SCI specification itself fixes none.)
SHORTEST_LIFETIME_YEARS = 4.0
LONGEST_LIFETIME_YEARS = 6.0
#: the name (and source) of a node whose figure the site gives: ``node_kg``
SITE_CONFIG = "site config"


@dataclass(frozen=True, slots=True)
class EmbodiedSettings:
    """A cluster's (or a hardware rule's) embodied settings, as the config gives them."""

    node_kg: float | None = None  # kgCO2e of one node, its GPUs included
    node: str | None = None  # or: a bundled node or accelerator name (embodied.csv)
    gpus_per_node: int | None = None  # default: the bundled entry's; required with node_kg
    cores_per_node: int | None = None  # needed for the jobs that use no GPU
    lifetime_years: float | None = None  # default: the bundled entry's


@dataclass(frozen=True, slots=True)
class EmbodiedNode:
    """Settings resolved against the bundled table: what the amortisation needs."""

    name: str  # the bundled entry's name, or "site config"
    node_kg: float
    node_kg_low: float
    node_kg_high: float
    gpus_per_node: int | None
    cores_per_node: int | None
    lifetime_years: float
    covers: str
    source: str  # the bundled entry's source, year and licence, or "site config"


@dataclass(frozen=True, slots=True)
class EmbodiedFootprint:
    """A job's share of its hardware's embodied emissions, in grams CO2e."""

    configured: bool
    co2e_g: float = 0.0
    co2e_g_low: float = 0.0
    co2e_g_high: float = 0.0
    share: float = 0.0  # of one node: GPUs or cores of the node's
    share_of: str = ""  # "gpus" or "cores"
    node: str = "not configured"
    source: str = ""


NOT_CONFIGURED = EmbodiedFootprint(configured=False)


def resolve(settings: EmbodiedSettings, where: str = "embodied") -> EmbodiedNode:
    """The node the settings describe, or ``FactorError`` naming ``where`` and the problem."""
    if (settings.node_kg is None) == (settings.node is None):
        raise FactorError(f"{where}: give exactly one of node_kg or node")
    for key, value in [
        ("node_kg", settings.node_kg),
        ("gpus_per_node", settings.gpus_per_node),
        ("cores_per_node", settings.cores_per_node),
        ("lifetime_years", settings.lifetime_years),
    ]:
        if value is not None and not value > 0:
            raise FactorError(f"{where}.{key} must be > 0, got {value:g}")
    if settings.node is not None:
        entry = factors.find_embodied(settings.node)
        return EmbodiedNode(
            entry.name,
            entry.embodied_kg,
            entry.embodied_kg_low,
            entry.embodied_kg_high,
            settings.gpus_per_node or entry.gpus,
            settings.cores_per_node,
            settings.lifetime_years or entry.lifetime_years,
            entry.covers,
            f"{entry.source} ({entry.year}; {entry.licence})",
        )
    if settings.lifetime_years is None:
        raise FactorError(f"{where}.lifetime_years is needed with node_kg")
    node_kg = float(settings.node_kg or 0.0)
    return EmbodiedNode(
        SITE_CONFIG,
        node_kg,
        node_kg,
        node_kg,
        settings.gpus_per_node,
        settings.cores_per_node,
        settings.lifetime_years,
        "as the site states",
        SITE_CONFIG,
    )


def amortise(
    node: EmbodiedNode | None, *, gpus: float, cores: int, run_seconds: float
) -> EmbodiedFootprint:
    """The embodied emissions of ``run_seconds`` on ``gpus`` (or, with none, ``cores``)."""
    if node is None:
        return NOT_CONFIGURED
    if run_seconds <= 0:  # never ran: held no hardware
        return EmbodiedFootprint(configured=True, node=node.name, source=node.source)
    if gpus > 0:
        if not node.gpus_per_node:
            raise FactorError(f"a GPU job on {node.name}, a node without GPUs")
        share, share_of = gpus / node.gpus_per_node, "gpus"
    else:
        if not node.cores_per_node:
            raise FactorError(f"{node.name}: cores_per_node is needed for jobs without GPUs")
        share, share_of = cores / node.cores_per_node, "cores"
    node_hours = share * run_seconds / 3600

    def grams(kg: float, lifetime_years: float) -> float:
        return kg * 1000 * node_hours / (lifetime_years * HOURS_PER_YEAR)

    return EmbodiedFootprint(
        configured=True,
        co2e_g=grams(node.node_kg, node.lifetime_years),
        co2e_g_low=grams(node.node_kg_low, max(node.lifetime_years, LONGEST_LIFETIME_YEARS)),
        co2e_g_high=grams(node.node_kg_high, min(node.lifetime_years, SHORTEST_LIFETIME_YEARS)),
        share=share,
        share_of=share_of,
        node=node.name,
        source=node.source,
    )


def source_words(stored: str) -> str:
    """What a ledger row's ``embodied_source`` (a bundled entry's name, or "site config")
    rests on, in words: the entry with its source and year, or the site's own figure."""
    if stored == SITE_CONFIG:
        return "the site's own figure for its nodes"
    try:
        entry = factors.find_embodied(stored)
    except FactorError:
        return stored  # an entry a later table renamed: its name as recorded
    return f"{entry.name}: {entry.source}, {entry.year}"


def job_embodied(job: JobRecord, node: EmbodiedNode | None) -> EmbodiedFootprint:
    """A job's embodied footprint, beside the operational one of ``compute_footprint``."""
    return amortise(node, gpus=job.gpu_count, cores=job.cpu_count, run_seconds=job.run_seconds)
