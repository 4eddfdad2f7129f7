"""WattTime API v3: CO2 emission rates of a grid region, usually every 5 minutes.

The credential is ``username:password``; ``/login`` (HTTP Basic) trades it for a
bearer token that lasts 30 minutes, renewed on a 401. ``/v3/historical`` answers at
most 32 days a request, both ends inclusive, in lbs CO2/MWh. ``signal`` is the
``signal_type``: ``co2_aoer`` (average, for accounting: the default) or ``co2_moer``
(marginal). Values WattTime imputed are marked estimated. The data is under a
separate licence with WattTime.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import SourceError
from .base import Http, ProviderSettings, Sample, Unauthorized, WindowedClient, parse_time

NAME = "watttime"
DEFAULT_URL = "https://api.watttime.org"
LONGEST = timedelta(days=30)
SIGNALS = ("co2_aoer", "co2_moer")
G_PER_KWH_PER_LBS_PER_MWH = 0.453592  # 453.592 g per lb, 1000 kWh per MWh
TOKEN_LIFETIME_S = 30 * 60


class WattTime(WindowedClient):
    name = NAME
    default_url = DEFAULT_URL
    longest = LONGEST
    signals = SIGNALS
    needs_credential = False  # read at each login instead

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
        url = self.url + "/v3/historical"
        try:
            body = self.http.get(url, params, {"Authorization": f"Bearer {self._bearer()}"})
        except Unauthorized as err:
            if err.status != 401:
                raise
            body = self.http.get(url, params, {"Authorization": f"Bearer {self._login()}"})
        return _samples(body)


def _samples(body: bytes) -> list[Sample]:
    where = "/v3/historical"
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
