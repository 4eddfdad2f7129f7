"""NESO's Carbon Intensity API (Great Britain): half-hourly gCO2/kWh, no credential.

``zone: national`` reads ``/intensity/{from}/{to}``: the metered ``actual`` where there
is one, else the ``forecast`` (estimated). A region id (1–17) reads
``/regional/intensity/{from}/{to}/regionid/{id}``, which has forecasts only. Ranges are
at most 14 days. Data: CC BY 4.0, "Carbon Intensity API, National Energy System
Operator (NESO)".
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
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

    def __init__(self, settings: ProviderSettings, http: Http) -> None:
        super().__init__(settings, http)
        zone = settings.zone.strip().lower()
        if zone != "national" and not (zone.isdigit() and 1 <= int(zone) <= 17):
            raise SourceError(
                f"{NAME}: zone must be 'national' or a region id 1-17, got {settings.zone!r}"
            )
        self.region = None if zone == "national" else int(zone)

    def _window(self, start: datetime, end: datetime, credential: str) -> list[Sample]:
        span = f"{_stamp(start)}/{_stamp(end)}"
        if self.region is None:
            path = f"/intensity/{span}"
        else:
            path = f"/regional/intensity/{span}/regionid/{self.region}"
        body = self.http.get(self.url + path, headers={"Accept": "application/json"})
        return _samples(body, path)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%MZ")


def _samples(body: bytes, where: str) -> list[Sample]:
    try:
        data: Any = json.loads(body)["data"]
        if isinstance(data, list) and data and "regionid" in data[0]:
            data = data[0]  # the docs' example wraps the region object in a list
        slots = data["data"] if isinstance(data, dict) else data
        samples = []
        for slot in slots:
            start = parse_time(slot["from"], where)
            end = parse_time(slot["to"], where)
            actual = slot["intensity"].get("actual")
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
