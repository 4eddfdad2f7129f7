"""The grid table: each site's intensity by UTC hour as its provider gave it, and the
statements that write and read it (the same in SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import NamedTuple

#: One hour as a source gives it: (hour in epoch hours, g/kWh, provider, signal, measured).
HourIn = tuple[int, float, str, str, bool]

UPSERT = (
    "INSERT INTO grid_hours (site, hour, intensity_g_per_kwh, provider, signal, measured, "
    "fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, hour) DO UPDATE SET "
    "intensity_g_per_kwh = excluded.intensity_g_per_kwh, provider = excluded.provider, "
    "signal = excluded.signal, measured = excluded.measured, fetched_at = excluded.fetched_at"
)

SELECT = (
    "SELECT hour, intensity_g_per_kwh, provider, signal, measured, fetched_at FROM grid_hours "
    "WHERE site = ? AND hour >= ? AND hour < ? ORDER BY hour"
)


SITES = "SELECT DISTINCT site FROM grid_hours ORDER BY site"
SELECT_ALL = "SELECT hour, intensity_g_per_kwh FROM grid_hours WHERE site = ?"


class GridHour(NamedTuple):
    """A stored hour of a site's grid intensity."""

    hour: int  # the hour's start in hours since the epoch
    intensity_g_per_kwh: float
    provider: str
    signal: str
    measured: bool  # False where the provider estimated, imputed or forecast it
    fetched_at: int  # epoch seconds


def watermark_name(site: str) -> str:
    """The watermark of a site's sync: the epoch second up to which its hours are fetched."""
    return f"grid:{site}"


#: past every hour the ledger can hold (epoch hours), for "all of a site's hours"
LAST_HOUR = 2**40


def rows(site: str, hours: list[HourIn], fetched_at: int) -> list[tuple[object, ...]]:
    return [
        (site, h, g, provider, signal, int(measured), fetched_at)
        for h, g, provider, signal, measured in hours
    ]
