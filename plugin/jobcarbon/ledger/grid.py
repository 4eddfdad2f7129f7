"""The grid table: each site's intensity by UTC hour as its provider gave it, the
statements that write and read it (the same in SQLite and PostgreSQL), and
``GridStore``, the ``Ledger``'s readers and writers of it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

from ..errors import LedgerError
from ..site import HourlySeries, SiteFactors
from .connect import Connection

if TYPE_CHECKING:
    from ..config import Config

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


def digest(by_hour: Mapping[int, float]) -> str:
    """The version of a site's synced hours: a digest of every hour and value, so that a
    corrected hour changes it as a new one does."""
    text = ";".join(f"{hour}={by_hour[hour]!r}" for hour in sorted(by_hour))
    return f"{len(by_hour)} hours, sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


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


class GridStore:
    """A part of ``Ledger``: the grid table's hours, on the ledger's connection."""

    _connection: Connection

    def write_grid_hours(
        self, site: str, hours: Sequence[HourIn], fetched_at: int, through_s: int
    ) -> None:
        """Upsert a site's hours (a corrected hour replaces the older row) and move its
        sync's watermark to ``through_s``, in one transaction."""
        connection = self._connection
        try:
            connection.begin_write()
            try:
                connection.run_many(UPSERT, rows(site, list(hours), fetched_at))
                connection.run(
                    connection.dialect.write_statements["watermark"],
                    [watermark_name(site), through_s],
                )
                connection.run("COMMIT")
            except BaseException:
                connection.run("ROLLBACK")
                raise
        except connection.errors as err:
            raise LedgerError(
                f"cannot write {len(hours)} grid hour(s) of site {site!r} to "
                f"{connection.where}: {err}"
            ) from err

    def grid_hours(self, site: str, first_hour: int, stop_hour: int) -> list[GridHour]:
        """A site's stored hours in ``[first_hour, stop_hour)`` (epoch hours), oldest first."""
        found = self._connection.query(SELECT, [site, first_hour, stop_hour]).fetchall()
        return [GridHour(h, float(g), p, s, bool(m), int(f)) for h, g, p, s, m, f in found]

    def grid_sites(self) -> list[str]:
        """The sites with hours in the grid table."""
        return [row[0] for row in self._connection.query(SITES, []).fetchall()]

    def synced_site_factors(self, config: Config) -> dict[str, SiteFactors]:
        """``config.site_factors`` with each provider site's intensity its synced hours,
        the provider's fallback for the hours not synced (their digest its version)."""
        sites = dict(config.site_factors)
        for name, site in config.sites.items():
            provider = site.grid.provider
            if provider is not None:
                found = self._connection.query(SELECT_ALL, [name]).fetchall()
                by_hour = {int(h): float(g) for h, g in found}
                version = digest(by_hour)
                series = HourlySeries(
                    by_hour,
                    provider.fallback(),
                    f"sites.{name}.grid.provider ({provider.name})",
                    version,
                )
                sites[name] = replace(
                    sites[name], intensity_g_per_kwh=series, intensity_version=version
                )
        return sites
