"""From generation by fuel to grid intensity: ENTSO-E and EIA publish megawatts by
fuel, not emissions, so the intensity of an hour is Σ(MW × g/kWh of the fuel) / Σ MW
(production-based, imports not counted), with the bundled per-fuel factors of
``data/fuel_factors.csv`` (each row names its source).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from functools import cache
from importlib import resources

from ...errors import SourceError

SIGNALS = ("lifecycle", "direct")


@cache
def fuel_factors(signal: str) -> Mapping[str, float]:
    """g CO2e/kWh by fuel for ``lifecycle`` or ``direct`` (combustion only) factors."""
    if signal not in SIGNALS:
        raise SourceError(
            f"fuel factors: signal must be one of {', '.join(SIGNALS)}, got {signal!r}"
        )
    text = resources.files("jobcarbon").joinpath("data", "fuel_factors.csv").read_text("utf-8")
    return {
        row["fuel"]: float(row[f"{signal}_g_per_kwh"]) for row in csv.DictReader(text.splitlines())
    }


def intensity_g_per_kwh(mw_by_fuel: Mapping[str, float], signal: str) -> float | None:
    """The generation-weighted intensity; ``None`` when nothing was generated. Negative
    figures (storage charging, pumping) are consumption, not generation, and left out."""
    factors = fuel_factors(signal)
    total_mw = weighted = 0.0
    for fuel, mw in mw_by_fuel.items():
        if mw <= 0:
            continue
        total_mw += mw
        weighted += mw * factors[fuel]
    return weighted / total_mw if total_mw > 0 else None
