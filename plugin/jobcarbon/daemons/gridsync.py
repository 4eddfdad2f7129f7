"""`jobcarbon grid sync`: each provider site's hourly intensity from its provider into the
ledger's grid table, resuming from the site's watermark.

A site's range is fetched in its provider's longest windows; each window's hours are
written with the watermark moved past them in one transaction, so a failure keeps
every window before it and the next sync starts where this one stopped. Where the
site has jobs waiting for hours (accounted with the fallback, ``intensity_pending``)
that ended within ``PENDING_REASK``, it starts at the earliest one's start instead
when that is before the watermark: a provider that fills a gap late is asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..config import Config
from ..errors import ConfigError, SourceError
from ..ledger import Ledger
from ..ledger.grid import watermark_name
from ..site import HOUR_S
from ..sources import grid
from ..sources.grid.base import windows

#: how far back a site's first sync reads when no ``since`` is given
FIRST_LOOKBACK = timedelta(days=30)
#: how long after its end a job waiting for hours has its run asked for again: a
#: provider's late or corrected hours come within days; a gap never filled costs a
#: week of hours asked again at each sync, then no more
PENDING_REASK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SiteSync:
    """What one site's sync did: the hours written over ``[since, until)``, and the
    error that stopped it (the hours before it are kept)."""

    site: str
    since: datetime
    until: datetime
    hours_written: int
    error: Exception | None = None


def provider_sites(config: Config, only: str | None = None, what: str = "sync") -> list[str]:
    """The sites with a provider (``only``: that one, which must have one to ``what``)."""
    if only is not None:
        if only not in config.sites:
            raise ConfigError([f"--site: unknown site {only!r} (sites: {', '.join(config.sites)})"])
        if config.sites[only].grid.provider is None:
            raise ConfigError(
                [f"sites.{only}.grid.provider: not set, so there is nothing to {what}"]
            )
        return [only]
    return [name for name, site in config.sites.items() if site.grid.provider is not None]


def site_client(config: Config, site: str, http: grid.Http | None = None) -> grid.WindowedClient:
    """The client for a site's provider; a ``ConfigError`` at the key when its settings
    do not suit the provider (a signal it does not have)."""
    provider = config.sites[site].grid.provider
    assert provider is not None
    settings = grid.ProviderSettings(**provider.settings(config.base_dir))
    try:
        return grid.client(settings, http)
    except SourceError as err:
        raise ConfigError([f"sites.{site}.grid.provider: {err}"]) from err


def sync_site(
    ledger: Ledger,
    site: str,
    client: grid.WindowedClient,
    since: datetime | None,
    now: datetime,
    on_window: Callable[[int, int], None] = lambda done, total: None,
) -> SiteSync:
    """Fetch ``[since, the current hour)`` window by window into the ledger; without
    ``since``, from the watermark (or the hour of the earliest start of the site's jobs
    waiting for hours, when that is earlier). ``on_window(done, total)`` follows the
    windows."""
    until = datetime.fromtimestamp(int(now.timestamp()) // HOUR_S * HOUR_S, UTC)
    if since is None:
        mark = ledger.watermark(watermark_name(site))
        waiting = ledger.pending_since(site, int((now - PENDING_REASK).timestamp()))
        if mark is None:
            since = until - FIRST_LOOKBACK
        elif waiting is not None and waiting < mark:
            since = datetime.fromtimestamp(waiting // HOUR_S * HOUR_S, UTC)
        else:
            since = datetime.fromtimestamp(mark, UTC)
    parts = list(windows(since, until, client.longest))
    written = 0
    for done, (start, end) in enumerate(parts, 1):
        result = client.fetch(start, end)
        fetched_at = int(datetime.now(UTC).timestamp())
        through_s = int(end.timestamp())
        if result.error is not None:  # the hours before the failing request are whole
            through_s = (result.points[-1].hour + 1) * HOUR_S if result.points else 0
        if result.points or result.error is None:
            ledger.write_grid_hours(site, result.points, fetched_at, through_s)
        written += len(result.points)
        on_window(done, len(parts))
        if result.error is not None:
            return SiteSync(site, since, until, written, result.error)
    return SiteSync(site, since, until, written)
