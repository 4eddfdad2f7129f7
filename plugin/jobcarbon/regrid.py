"""The jobs that waited for grid hours, accounted again once their hours are synced.

A job at a provider site whose run had an hour without a synced value took the
provider's fallback for it and was marked pending (``AccountedJob.intensity_pending``).
After a sync, ``recompute_pending`` finds the site's pending jobs whose every hour is
in the ledger now (``Ledger.pending_covered``) and writes them again through the
ledger's write path, so the running totals follow.

This is the one place that does it, and it works from the jobs table alone: a job's
IT energy does not depend on its site, so its facility energy and CO2e are the site's
PUE and intensity integrated again over the run for the row's IT energy, as
``footprint.site_emissions`` does for a new job (exact). The low and high bounds are
not stored with their IT energy, so they are scaled with the central CO2e: exact for
the high bound, and for the low one unless the run spans months of different PUE
whose low bound is held at 1.0. Once the ledger keeps each job's usage apart from its
footprint, a recompute from that usage can take this function's place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .footprint import site_emissions
from .ledger import JOB_COLUMNS, Ledger
from .site import HourlySeries, SiteFactors

_INDEX = {column: i for i, column in enumerate(JOB_COLUMNS)}


@dataclass(frozen=True, slots=True)
class Regridded:
    """What ``recompute_pending`` did: jobs written again, and those it could not redo
    from their row (no CO2e to scale the bounds from: a fallback of 0 g/kWh)."""

    recomputed: int
    kept: int


def regridded(row: tuple[Any, ...], site: SiteFactors) -> tuple[Any, ...] | None:
    """A job row (``JOB_COLUMNS``) with ``site``'s factors integrated again over its run,
    and its pending flag as the site's hours say now; None when the row alone cannot
    give the bounds (it has no CO2e)."""
    values = list(row)
    it_kwh, old_co2e_g = values[_INDEX["energy_it_kwh"]], values[_INDEX["co2e_g"]]
    if not old_co2e_g > 0 or not it_kwh > 0:
        return None
    start = datetime.fromtimestamp(values[_INDEX["start_time"]], UTC)
    end = datetime.fromtimestamp(values[_INDEX["end_time"]], UTC)
    (facility_kwh, _, _), (co2e_g, _, _) = site_emissions((it_kwh,) * 3, site, start, end)
    scale = co2e_g / old_co2e_g
    intensity = site.intensity_g_per_kwh
    values[_INDEX["energy_facility_kwh"]] = facility_kwh
    values[_INDEX["co2e_g"]] = co2e_g
    values[_INDEX["co2e_g_low"]] *= scale
    values[_INDEX["co2e_g_high"]] *= scale
    values[_INDEX["pue"]] = facility_kwh / it_kwh
    values[_INDEX["intensity_g_per_kwh"]] = co2e_g / facility_kwh
    values[_INDEX["intensity_pending"]] = int(
        isinstance(intensity, HourlySeries) and not intensity.covers(start, end)
    )
    return tuple(values)


def recompute_pending(
    ledger: Ledger, sites: Mapping[str, SiteFactors], site_names: Iterable[str], now: datetime
) -> Regridded:
    """Account again the pending jobs of ``site_names`` whose hours are all synced now,
    with ``sites``' factors (the synced ones: ``Ledger.synced_site_factors``)."""
    recorded_at = int(now.timestamp())
    recomputed = kept = 0
    for name in site_names:
        rows: list[tuple[Any, ...]] = []
        for row in ledger.pending_covered(name):
            again = regridded(row, sites[name])
            if again is None:
                kept += 1
            else:
                rows.append((*again, recorded_at))
        if rows:
            recomputed += ledger.write_job_rows(rows, ())  # their usage stays as it is
    return Regridded(recomputed, kept)
