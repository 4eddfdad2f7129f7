"""Electricity Maps API v3: hourly gCO2eq/kWh of electricity consumed in a zone.

Reads ``/carbon-intensity/past-range`` (at most 240 hours a request at hourly
granularity) with the ``auth-token`` header. ``signal`` is the emission factor type,
``lifecycle`` (the API's default) or ``direct``. Estimated hours come back flagged.
``/carbon-intensity/forecast`` gives the next hours (``horizonHours`` 6, 24, 48 or 72,
as the plan allows). The data is under Electricity Maps' terms, not an open licence.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import SourceError
from ...site import HOUR_S
from .base import Sample, WindowedClient, parse_time

NAME = "electricitymaps"
DEFAULT_URL = "https://api.electricitymaps.com/v3"
LONGEST = timedelta(hours=240)
SIGNALS = ("lifecycle", "direct")
FORECAST_HORIZONS_H = (6, 24, 48, 72)


class ElectricityMaps(WindowedClient):
    name = NAME
    default_url = DEFAULT_URL
    longest = LONGEST
    signals = SIGNALS
    forecast_horizon = timedelta(hours=FORECAST_HORIZONS_H[-1])

    def _window(self, start: datetime, end: datetime, token: str) -> list[Sample]:
        params = {
            "zone": self.settings.zone,
            "start": _stamp(start),
            "end": _stamp(end),
            "temporalGranularity": "hourly",
            "emissionFactorType": self.signal,
        }
        path = "/carbon-intensity/past-range"
        body = self.http.get(self.url + path, params, {"auth-token": token})
        return _samples(body, path, "data")

    def _forecast(self, now: datetime, horizon: timedelta) -> list[Sample]:
        hours = next(h for h in FORECAST_HORIZONS_H if h * HOUR_S >= horizon.total_seconds())
        params = {
            "zone": self.settings.zone,
            "horizonHours": str(hours),
            "emissionFactorType": self.signal,
        }
        path = "/carbon-intensity/forecast"
        body = self.http.get(self.url + path, params, {"auth-token": self.settings.credential()})
        return _samples(body, path, "forecast")


def _samples(body: bytes, path: str, key: str) -> list[Sample]:
    """The hourly points under ``key`` (``data`` of past-range, ``forecast``)."""
    try:
        points: Any = json.loads(body)[key]
        samples = []
        for point in points:
            value = point.get("carbonIntensity")
            if value is None:
                continue  # the API's way of saying it has nothing for that hour
            when = parse_time(point["datetime"], path)
            estimated = key == "forecast" or point.get("isEstimated", False)
            samples.append(Sample(int(when.timestamp()), HOUR_S, float(value), not estimated))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SourceError(f"{NAME}: unexpected response from {path}: {err!r}") from err
    return samples


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
