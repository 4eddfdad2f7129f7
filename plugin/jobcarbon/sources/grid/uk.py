"""NESO's Carbon Intensity API (Great Britain): half-hourly gCO2/kWh, no credential.

``zone: national`` reads ``/intensity/{from}/{to}``: the metered ``actual`` where there
is one, else the ``forecast`` (estimated). A region id (1–17) reads
``/regional/intensity/{from}/{to}/regionid/{id}``, which has forecasts only. Ranges are
at most 14 days. The forecast is ``{from}/fw48h`` in place of ``{from}/{to}``: the 48
hours of half hours from the one holding ``from``. Data: CC BY 4.0, "Carbon Intensity
API, National Energy System Operator (NESO)".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import SourceError
from .base import Http, ProviderSettings, Sample, WindowedClient, parse_time

NAME = "uk-carbon-intensity"
DEFAULT_URL = "https://api.carbonintensity.org.uk"
LONGEST = timedelta(days=14)


class UkCarbonIntensity(WindowedClient):
    name = NAME
    default_url = DEFAULT_URL
    longest = LONGEST
    needs_credential = False
    forecast_horizon = timedelta(hours=48)

    def __init__(self, settings: ProviderSettings, http: Http) -> None:
        super().__init__(settings, http)
        zone = settings.zone.strip().lower()
        if zone != "national" and not (zone.isdigit() and 1 <= int(zone) <= 17):
            raise SourceError(
                f"{NAME}: zone must be 'national' or a region id 1-17, got {settings.zone!r}"
            )
        self.region = None if zone == "national" else int(zone)

    def _window(self, start: datetime, end: datetime, credential: str) -> list[Sample]:
        path = self._path(f"{_stamp(start)}/{_stamp(end)}")
        return _samples(self._get(path), path, forecast=False)

    def _forecast(self, now: datetime, horizon: timedelta) -> list[Sample]:
        path = self._path(f"{_stamp(now)}/fw48h")
        return _samples(self._get(path), path, forecast=True)

    def _path(self, span: str) -> str:
        if self.region is None:
            return f"/intensity/{span}"
        return f"/regional/intensity/{span}/regionid/{self.region}"

    def _get(self, path: str) -> bytes:
        return self.http.get(self.url + path, headers={"Accept": "application/json"})


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _samples(body: bytes, where: str, forecast: bool) -> list[Sample]:
    """The half hours: their metered ``actual`` where there is one, else (and always for
    a ``forecast``) the forecast value, marked estimated."""
    try:
        data: Any = json.loads(body)["data"]
        if isinstance(data, list) and data and "regionid" in data[0]:
            data = data[0]  # the docs' example wraps the region object in a list
        slots = data["data"] if isinstance(data, dict) else data
        samples = []
        for slot in slots:
            start = parse_time(slot["from"], where)
            end = parse_time(slot["to"], where)
            actual = None if forecast else slot["intensity"].get("actual")
            value = actual if actual is not None else slot["intensity"].get("forecast")
            if value is None:
                continue
            samples.append(
                Sample(
                    int(start.timestamp()),
                    int((end - start).total_seconds()),
                    float(value),
                    actual is not None,
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SourceError(f"{NAME}: unexpected response from {where}: {err!r}") from err
    return samples
