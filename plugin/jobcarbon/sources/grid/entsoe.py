"""ENTSO-E Transparency Platform: actual generation per production type (A75/A16).

One request covers at most a year; ``securityToken`` goes in the query. The XML gives
average MW by production type in periods of 15, 30 or 60 minutes; series whose
``outBiddingZone_Domain`` is set are consumption (pumping) and are left out. The MW
are averaged into hours by fuel, then turned into g/kWh with the bundled fuel factors;
``signal`` picks ``lifecycle`` (default) or ``direct``. An Acknowledgement with reason
999 means no data for the window. Data: ENTSO-E Transparency Platform.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from ...errors import PermanentError, SourceError
from ...site import HOUR_S
from .base import Sample, WindowedClient, parse_time
from .fuels import SIGNALS, intensity_g_per_kwh

NAME = "entsoe"
DEFAULT_URL = "https://web-api.tp.entsoe.eu/api"
LONGEST = timedelta(days=365)
FUELS = {
    "B01": "biomass",
    "B17": "biomass",
    "B02": "coal",
    "B03": "coal",
    "B05": "coal",
    "B07": "coal",
    "B08": "coal",
    "B04": "gas",
    "B06": "oil",
    "B09": "geothermal",
    "B10": "hydro",
    "B11": "hydro",
    "B12": "hydro",
    "B13": "hydro",
    "B14": "nuclear",
    "B16": "solar",
    "B18": "wind_offshore",
    "B19": "wind_onshore",
    "B25": "storage",
}
_RESOLUTION = re.compile(r"PT(\d+)M")


class Entsoe(WindowedClient):
    name = NAME
    default_url = DEFAULT_URL
    longest = LONGEST
    signals = SIGNALS

    def _window(self, start: datetime, end: datetime, token: str) -> list[Sample]:
        params = {
            "securityToken": token,
            "documentType": "A75",
            "processType": "A16",
            "in_Domain": self.settings.zone,
            "periodStart": _stamp(start),
            "periodEnd": _stamp(end),
        }
        body = self.http.get(self.url, params)
        mwh_by_hour = _generation_mwh_by_hour(body)
        samples = []
        for hour, mwh_by_fuel in sorted(mwh_by_hour.items()):
            value = intensity_g_per_kwh(mwh_by_fuel, self.signal)
            if value is not None:
                samples.append(Sample(hour * HOUR_S, HOUR_S, value, True))
        return samples


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%d%H%M")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element, name: str) -> str:
    child = _child(element, name)
    if child is None or child.text is None:
        raise SourceError(f"{NAME}: <{_local(element.tag)}> has no <{name}>")
    return child.text.strip()


def _generation_mwh_by_hour(body: bytes) -> dict[int, dict[str, float]]:
    """MWh by fuel for each UTC hour (epoch hours) of a GL_MarketDocument."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise SourceError(f"{NAME}: unreadable XML: {err}") from err
    if _local(root.tag) == "Acknowledgement_MarketDocument":
        reason = _child(root, "Reason")
        code = _text(reason, "code") if reason is not None else ""
        text = _text(reason, "text") if reason is not None else ""
        if code == "999" and "no matching data" in text.lower():
            return {}
        raise PermanentError(f"{NAME}: the platform refused the query: {code} {text}")
    mwh: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for series in (e for e in root if _local(e.tag) == "TimeSeries"):
        if _child(series, "outBiddingZone_Domain.mRID") is not None:
            continue  # consumption (pumped storage pumping), not generation
        psr = _child(series, "MktPSRType")
        fuel = FUELS.get(_text(psr, "psrType") if psr is not None else "", "other")
        for period in (e for e in series if _local(e.tag) == "Period"):
            _add_period(
                period,
                fuel,
                _text(series, "curveType") if _child(series, "curveType") is not None else "A01",
                mwh,
            )
    return mwh


def _add_period(
    period: ET.Element, fuel: str, curve: str, mwh: dict[int, dict[str, float]]
) -> None:
    interval = _child(period, "timeInterval")
    if interval is None:
        raise SourceError(f"{NAME}: <Period> has no <timeInterval>")
    start = int(parse_time(_text(interval, "start"), NAME).timestamp())
    end = int(parse_time(_text(interval, "end"), NAME).timestamp())
    match = _RESOLUTION.fullmatch(_text(period, "resolution"))
    if match is None:
        raise SourceError(f"{NAME}: unsupported resolution {_text(period, 'resolution')!r}")
    step_s = int(match.group(1)) * 60
    by_position = {
        int(_text(p, "position")): float(_text(p, "quantity"))
        for p in period
        if _local(p.tag) == "Point"
    }
    last_mw: float | None = None
    for position in range(1, (end - start) // step_s + 1):
        mw = by_position.get(position)
        if mw is None and curve == "A03":
            mw = last_mw  # A03: a position left out repeats the one before
        if mw is None:
            continue
        last_mw = mw
        at = start + (position - 1) * step_s
        mwh[at // HOUR_S][fuel] += mw * step_s / HOUR_S
