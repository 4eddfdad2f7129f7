"""Hourly grid carbon intensity from the providers' APIs, one client per provider.

``client(settings, http).fetch(since, until)`` returns a ``FetchResult``: the UTC
hours got, as ``GridPoint``s that ``site.HourlySeries`` takes, and the error that
stopped the fetch, if one did. Storing them (the ledger's grid table and its
watermark) and scheduling the sync belong to the callers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ...errors import SourceError
from .base import PROVIDERS, FetchResult, GridPoint, Http, ProviderSettings, Unauthorized
from .eia import Eia
from .electricitymaps import ElectricityMaps
from .entsoe import Entsoe
from .uk import UkCarbonIntensity
from .watttime import WattTime

__all__ = [
    "PROVIDERS",
    "Client",
    "FetchResult",
    "GridPoint",
    "Http",
    "ProviderSettings",
    "Unauthorized",
    "client",
]


class Client(Protocol):
    def fetch(self, since: datetime, until: datetime) -> FetchResult: ...


_CLIENTS: dict[str, type[Eia | ElectricityMaps | Entsoe | UkCarbonIntensity | WattTime]] = {
    "electricitymaps": ElectricityMaps,
    "watttime": WattTime,
    "uk-carbon-intensity": UkCarbonIntensity,
    "entsoe": Entsoe,
    "eia": Eia,
}


def client(settings: ProviderSettings, http: Http | None = None) -> Client:
    """The client for ``settings.name``; ``SourceError`` for a provider not known."""
    try:
        kind = _CLIENTS[settings.name]
    except KeyError:
        raise SourceError(
            f"unknown grid provider {settings.name!r}: expected one of {', '.join(PROVIDERS)}"
        ) from None
    return kind(settings, http or Http(settings.name))
