"""Hourly grid carbon intensity from the providers' APIs, one client per provider.

``client(settings, http).fetch(since, until)`` returns a ``FetchResult``: the UTC
hours got, as ``GridPoint``s that ``site.HourlySeries`` takes, and the error that
stopped the fetch, if one did. Storing them (the ledger's grid table and its
watermark) and scheduling the sync belong to the callers. ``forecast(now, horizon)``
returns the provider's latest forecast in its own slots, which ``forecast.best_start``
takes; the providers in ``FORECASTERS`` publish one, the others raise ``NoForecast``.
"""

from __future__ import annotations

from ...errors import SourceError
from .base import (
    PROVIDERS,
    FetchResult,
    GridPoint,
    Http,
    NoForecast,
    ProviderSettings,
    Unauthorized,
    WindowedClient,
)
from .eia import Eia
from .electricitymaps import ElectricityMaps
from .entsoe import Entsoe
from .uk import UkCarbonIntensity
from .watttime import WattTime

__all__ = [
    "FORECASTERS",
    "PROVIDERS",
    "FetchResult",
    "GridPoint",
    "Http",
    "NoForecast",
    "ProviderSettings",
    "Unauthorized",
    "WindowedClient",
    "client",
]


_CLIENTS: dict[str, type[WindowedClient]] = {
    "electricitymaps": ElectricityMaps,
    "watttime": WattTime,
    "uk-carbon-intensity": UkCarbonIntensity,
    "entsoe": Entsoe,
    "eia": Eia,
}

#: the providers that publish a forecast
FORECASTERS = tuple(name for name, kind in _CLIENTS.items() if kind.forecast_horizon is not None)


def client(settings: ProviderSettings, http: Http | None = None) -> WindowedClient:
    """The client for ``settings.name``; ``SourceError`` for a provider not known."""
    try:
        kind = _CLIENTS[settings.name]
    except KeyError:
        raise SourceError(
            f"unknown grid provider {settings.name!r}: expected one of {', '.join(PROVIDERS)}"
        ) from None
    return kind(settings, http or Http(settings.name))
