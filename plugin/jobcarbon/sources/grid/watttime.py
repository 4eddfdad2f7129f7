"""WattTime API v3: CO2 emission rates of a grid region, usually every 5 minutes.

The credential is ``username:password``; ``/login`` (HTTP Basic) trades it for a
bearer token that lasts 30 minutes, renewed on a 401. ``/v3/historical`` answers at
most 32 days a request, both ends inclusive, in lbs CO2/MWh. ``signal`` is the
``signal_type``: ``co2_aoer`` (average, for accounting: the default) or ``co2_moer``
(marginal). Values WattTime imputed are marked estimated. ``/v3/forecast`` gives the
next 24 or 72 hours (``horizon_hours``), but no ``co2_aoer``: WattTime publishes that
for accounting, as history only, so a site on it gets the ``co2_moer`` forecast. The
data is under a separate licence with WattTime.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import SourceError
from ...site import HOUR_S
from .base import Http, ProviderSettings, Sample, Unauthorized, WindowedClient, parse_time

NAME = "watttime"
DEFAULT_URL = "https://api.watttime.org"
LONGEST = timedelta(days=30)
SIGNALS = ("co2_aoer", "co2_moer")
G_PER_KWH_PER_LBS_PER_MWH = 0.453592  # 453.592 g per lb, 1000 kWh per MWh
TOKEN_LIFETIME_S = 30 * 60
FORECAST_HORIZONS_H = (24, 72)
HISTORY_ONLY = {"co2_aoer": "co2_moer"}  # a signal WattTime does not forecast → the one it does


class WattTime(WindowedClient):
    name = NAME
    default_url = DEFAULT_URL
    longest = LONGEST
    signals = SIGNALS
    needs_credential = False  # read at each login instead
    forecast_horizon = timedelta(hours=FORECAST_HORIZONS_H[-1])

    def __init__(self, settings: ProviderSettings, http: Http) -> None:
        super().__init__(settings, http)
        self._token: str | None = None
        self._token_at = 0.0

    def _login(self) -> str:
        credential = self.settings.credential()
        if ":" not in credential:
            raise Unauthorized(
                f"{NAME}: the credential from grid.provider.token_env or token_file "
                "must be username:password",
                401,
            )
        basic = base64.b64encode(credential.encode()).decode()
        body = self.http.get(self.url + "/login", headers={"Authorization": f"Basic {basic}"})
        try:
            token = str(json.loads(body)["token"])
        except (KeyError, TypeError, ValueError) as err:
            raise SourceError(f"{NAME}: /login answered without a token: {err!r}") from err
        self._token, self._token_at = token, self.http.clock()
        return token

    def _bearer(self) -> str:
        if self._token is None or self.http.clock() - self._token_at > TOKEN_LIFETIME_S - 60:
            return self._login()
        return self._token

    def _window(self, start: datetime, end: datetime, credential: str) -> list[Sample]:
        params = {
            "region": self.settings.zone,
            "signal_type": self.signal,
            "start": start.astimezone(UTC).isoformat(),
            # Both ends are inclusive: stop a second short of the next window's start.
            "end": (end - timedelta(seconds=1)).astimezone(UTC).isoformat(),
            "include_imputed_marker": "true",
        }
        return _samples(self._get("/v3/historical", params), "/v3/historical")

    @property
    def forecast_signal(self) -> str:
        return HISTORY_ONLY.get(self.signal, self.signal)

    def _forecast(self, now: datetime, horizon: timedelta) -> list[Sample]:
        hours = next(h for h in FORECAST_HORIZONS_H if h * HOUR_S >= horizon.total_seconds())
        params = {
            "region": self.settings.zone,
            "signal_type": self.forecast_signal,
            "horizon_hours": str(hours),
        }
        samples = _samples(self._get("/v3/forecast", params), "/v3/forecast")
        return [s._replace(measured=False) for s in samples]

    def _get(self, path: str, params: dict[str, str]) -> bytes:
        """GET with the bearer token, logging in again once when it has expired (401)."""
        url = self.url + path
        try:
            return self.http.get(url, params, {"Authorization": f"Bearer {self._bearer()}"})
        except Unauthorized as err:
            if err.status != 401:
                raise
            return self.http.get(url, params, {"Authorization": f"Bearer {self._login()}"})


def _samples(body: bytes, where: str) -> list[Sample]:
    try:
        doc: Any = json.loads(body)
        meta = doc["meta"]
        units = meta.get("units", "lbs_co2_per_mwh")
        if units != "lbs_co2_per_mwh":
            raise SourceError(f"{NAME}: {where} answered in {units!r}, not lbs_co2_per_mwh")
        period_s = int(meta["data_point_period_seconds"])
        samples = []
        for point in doc["data"]:
            if point.get("value") is None:
                continue
            when = parse_time(point["point_time"], where)
            samples.append(
                Sample(
                    int(when.timestamp()),
                    period_s,
                    float(point["value"]) * G_PER_KWH_PER_LBS_PER_MWH,
                    not point.get("imputed_data_used", False),
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SourceError(f"{NAME}: unexpected response from {where}: {err!r}") from err
    return samples
