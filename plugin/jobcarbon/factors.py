"""The bundled factor tables: hardware power, grid intensity, PUE, equivalents, embodied.

The CSV files in ``jobcarbon/data`` are built by ``tools/build_factors.py`` from
public sources; every row carries its source, year and licence. Names and keys
are matched forgivingly (case, spaces, dashes, vendor prefixes); an unknown or
ambiguous name raises ``FactorError`` listing the closest entries.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Protocol, TypeVar

from .errors import FactorError

#: Region vintage used unless another is named.
CURRENT_VINTAGE = "current"
#: The seed calculator's own region table (ML CO2 Impact), for reproducing its numbers.
SEED_VINTAGE = "mlco2-impact-2019"
#: Green Algorithms' default CPU power per core when the model is unknown (TDP_cpu.csv, "Any").
DEFAULT_CPU_POWER_W_PER_CORE = 12.0
#: Green Algorithms' memory power (referenceValues.csv, memoryPower).
MEMORY_POWER_W_PER_GB = 0.3725

_DATA_FILES = (
    "hardware.csv",
    "cpus.csv",
    "regions.csv",
    "pue.csv",
    "equivalents.csv",
    "embodied.csv",
)
T = TypeVar("T", "Hardware", "Region", "EmbodiedFactor")
N = TypeVar("N", bound="_Named")
_VENDOR_WORDS = re.compile(r"\b(nvidia|amd|intel|google|geforce)\b")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Hardware:
    name: str
    kind: str
    tdp_w: float
    year: int
    source: str
    licence: str
    in_seed_calculator: bool


@dataclass(frozen=True, slots=True)
class Region:
    vintage: str
    key: str
    name: str
    kind: str
    provider: str
    intensity_g_per_kwh: float
    offset_pct: float | None
    pue: float | None
    year: int
    source: str
    licence: str


@dataclass(frozen=True, slots=True)
class EmbodiedFactor:
    """Embodied (Scope 3) emissions of one accelerator card or one whole node."""

    kind: str  # "accelerator" (one card) or "node" (a server, its GPUs included)
    name: str
    embodied_kg: float  # kgCO2e, the source's central figure
    embodied_kg_low: float  # the least and most the source gives for it (e.g. by CPU)
    embodied_kg_high: float
    gpus: int | None  # GPU cards in the node (1 for an accelerator); None: no GPUs
    lifetime_years: float  # the lifetime the source assumes
    covers: str  # the life-cycle stages the figure includes
    year: int
    source: str
    licence: str


@dataclass(frozen=True, slots=True)
class Equivalent:
    key: str
    description: str
    co2e_g_per_unit: float
    source: str
    licence: str


def normalise(name: str) -> str:
    """The form names are compared in: lower case, no vendor words, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", _VENDOR_WORDS.sub("", name.lower()))


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files("jobcarbon").joinpath("data", filename).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def version() -> str:
    """Version of the bundled tables: a digest of their content, recorded with every footprint."""
    digest = hashlib.sha256()
    for filename in _DATA_FILES:
        digest.update(resources.files("jobcarbon").joinpath("data", filename).read_bytes())
    return f"tables-{digest.hexdigest()[:12]}"


@cache
def hardware_table() -> tuple[Hardware, ...]:
    return tuple(
        Hardware(
            r["name"],
            r["kind"],
            float(r["tdp_w"]),
            int(r["year"]),
            r["source"],
            r["licence"],
            r["in_seed_calculator"] == "yes",
        )
        for r in _rows("hardware.csv")
    )


@cache
def region_table() -> tuple[Region, ...]:
    return tuple(
        Region(
            r["vintage"],
            r["key"],
            r["name"],
            r["kind"],
            r["provider"],
            float(r["intensity_g_per_kwh"]),
            float(r["offset_pct"]) if r["offset_pct"] else None,
            float(r["pue"]) if r["pue"] else None,
            int(r["year"]),
            r["source"],
            r["licence"],
        )
        for r in _rows("regions.csv")
    )


@cache
def equivalents() -> tuple[Equivalent, ...]:
    return tuple(
        Equivalent(
            r["key"], r["description"], float(r["co2e_g_per_unit"]), r["source"], r["licence"]
        )
        for r in _rows("equivalents.csv")
    )


@cache
def embodied_table() -> tuple[EmbodiedFactor, ...]:
    return tuple(
        EmbodiedFactor(
            r["kind"],
            r["name"],
            float(r["embodied_kg"]),
            float(r["embodied_kg_low"]),
            float(r["embodied_kg_high"]),
            int(r["gpus"]) if r["gpus"] else None,
            float(r["lifetime_years"]),
            r["covers"],
            int(r["year"]),
            r["source"],
            r["licence"],
        )
        for r in _rows("embodied.csv")
    )


@dataclass(frozen=True, slots=True)
class ProviderPue:
    provider: str
    pue: float
    source: str
    licence: str


@cache
def provider_pue() -> tuple[ProviderPue, ...]:
    """Default PUE per cloud provider, and ``Unknown`` for the industry average."""
    return tuple(
        ProviderPue(r["provider"], float(r["pue"]), r["source"], r["licence"])
        for r in _rows("pue.csv")
    )


def _name_index(filename: str, items: tuple[N, ...]) -> dict[str, N]:
    """Each item under its name and its ``;``-separated aliases, in compared form."""
    index: dict[str, N] = {}
    aliases = {r["name"]: r["aliases"] for r in _rows(filename)}
    for item in items:
        for name in [item.name, *filter(None, aliases[item.name].split(";"))]:
            index.setdefault(normalise(name), item)
    return index


@cache
def _hardware_index() -> dict[str, Hardware]:
    return _name_index("hardware.csv", hardware_table())


@cache
def _embodied_index() -> dict[str, EmbodiedFactor]:
    return _name_index("embodied.csv", embodied_table())


@cache
def _region_index(vintage: str) -> dict[str, Region]:
    index: dict[str, Region] = {}
    aliases = {(r["vintage"], r["key"]): r["aliases"] for r in _rows("regions.csv")}
    for item in region_table():
        if item.vintage != vintage:
            continue
        for name in [item.key, *filter(None, aliases[(vintage, item.key)].split(";"))]:
            index.setdefault(normalise(name), item)
    return index


def vintages() -> list[str]:
    return sorted({r.vintage for r in region_table()})


def _lookup(
    query: str, index: dict[str, T], what: str, label: Callable[[T], str], where: str = ""
) -> T:
    key = normalise(query)
    if key in index:
        return index[key]
    partial = list(dict.fromkeys(v for k, v in index.items() if key and key in k))
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = ", ".join(label(v) for v in partial[:8])
        raise FactorError(f"{what} {query!r}{where} is ambiguous; did you mean one of: {names}?")
    close = difflib.get_close_matches(key, list(index), n=5, cutoff=0.5)
    hint = ", ".join(dict.fromkeys(label(index[k]) for k in close))
    raise FactorError(f"unknown {what} {query!r}{where}." + (f" Closest: {hint}." if hint else ""))


@cache
def find_hardware(name: str) -> Hardware:
    """The table entry for ``name`` (forgiving match), or ``FactorError`` with suggestions."""
    return _lookup(name, _hardware_index(), "hardware", lambda h: f"{h.name} ({h.tdp_w:g} W)")


@cache
def find_embodied(name: str) -> EmbodiedFactor:
    """The embodied entry for a node or accelerator ``name`` (forgiving match)."""
    return _lookup(
        name, _embodied_index(), "embodied entry", lambda e: f"{e.name} ({e.embodied_kg:g} kg)"
    )


def find_region(key: str, vintage: str = CURRENT_VINTAGE) -> Region:
    """The region ``key`` in ``vintage`` (forgiving match), or ``FactorError`` with suggestions."""
    if vintage not in vintages():
        raise FactorError(f"unknown dataset {vintage!r}; available: {', '.join(vintages())}")
    return _lookup(
        key,
        _region_index(vintage),
        "region",
        lambda r: f"{r.key} ({r.name})",
        where=f" in dataset {vintage!r}",
    )


def search_hardware(text: str = "") -> list[Hardware]:
    needle = normalise(text)
    return [h for h in hardware_table() if needle in normalise(h.name)]


def search_regions(text: str = "", vintage: str | None = None) -> list[Region]:
    needle = normalise(text)
    return [
        r
        for r in region_table()
        if (vintage is None or r.vintage == vintage)
        and (needle in normalise(r.key) or needle in normalise(r.name))
    ]
