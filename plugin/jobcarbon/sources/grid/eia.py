"""US EIA API v2, hourly generation by fuel for a balancing authority (EIA-930).

Reads ``/electricity/rto/fuel-type-data/data/`` with ``api_key`` in the query (the only
place EIA reads it), 5,000 rows a page, paged against ``response.total``. Periods are
UTC and hour-ending: ``2025-03-01T08`` is 07:00–08:00. The MWh by fuel become g/kWh
with the bundled fuel factors; ``signal`` picks ``lifecycle`` (default) or ``direct``.
Data: U.S. Energy Information Administration.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import SourceError
from ...site import HOUR_S
from .base import Sample, WindowedClient
from .fuels import SIGNALS, intensity_g_per_kwh

NAME = "eia"
DEFAULT_URL = "https://api.eia.gov/v2"
PATH = "/electricity/rto/fuel-type-data/data/"
LONGEST = timedelta(days=30)
PAGE_ROWS = 5000
FUELS = {
    "COL": "coal",
    "NG": "gas",
    "NUC": "nuclear",
    "OIL": "oil",
    "WAT": "hydro",
    "SUN": "solar",
    "WND": "wind_onshore",
    "GEO": "geothermal",
    "BAT": "storage",
    "PS": "storage",
    "SNB": "storage",
    "OTH": "other",
}


class Eia(WindowedClient):
    name = NAME
    default_url = DEFAULT_URL
    longest = LONGEST
    signals = SIGNALS

    def _window(self, start: datetime, end: datetime, key: str) -> list[Sample]:
        # Hour-ending periods: the hours starting in [start, end) end in (start, end].
        mw_by_period: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        offset = 0
        while True:
            params = [
                ("api_key", key),
                ("frequency", "hourly"),
                ("data[0]", "value"),
                ("facets[respondent][]", self.settings.zone),
                ("start", _stamp(start + timedelta(hours=1))),
                ("end", _stamp(end)),
                ("sort[0][column]", "period"),
                ("sort[0][direction]", "asc"),
                ("offset", str(offset)),
                ("length", str(PAGE_ROWS)),
            ]
            body = self.http.get(self.url + PATH, params)
            try:
                response: Any = json.loads(body)["response"]
                rows = response["data"]
                total = int(response["total"])
                for row in rows:
                    if row.get("value") is None:
                        continue
                    fuel = FUELS.get(str(row["fueltype"]), "other")
                    mw_by_period[str(row["period"])][fuel] += float(row["value"])
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise SourceError(f"{NAME}: unexpected response from {PATH}: {err!r}") from err
            offset += len(rows)
            if not rows or offset >= total:
                break
        samples = []
        for period, mw_by_fuel in mw_by_period.items():
            value = intensity_g_per_kwh(mw_by_fuel, self.signal)
            if value is None:
                continue
            hour_end = _parse_period(period)
            samples.append(Sample(int(hour_end.timestamp()) - HOUR_S, HOUR_S, value, True))
        return samples


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _parse_period(period: str) -> datetime:
    try:
        return datetime.strptime(period, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError as err:
        raise SourceError(
            f"{NAME}: unreadable period {period!r} (frequency=hourly gives UTC)"
        ) from err
