"""Fake grid-intensity providers on loopback, one per provider, for the grid clients' tests.

The real APIs cannot be reached from here, so each fake speaks its provider's HTTP
API as documented (the shapes gathered in the team's provider notes, from the
providers' docs and OpenAPI files): its paths and query parameters, its credential
(Electricity Maps ``auth-token``, WattTime ``/login`` then Bearer, ENTSO-E
``securityToken``, EIA ``api_key``; NESO takes none), its longest range (answered with
the provider's own 400), its paging (EIA's 5,000 rows) and its resolution (NESO half
hours, WattTime 5 minutes, ENTSO-E 15/60 minutes in local-day periods). The values are
made up: ``g_per_kwh(t)`` changes every 5 minutes, and the fuel-mix fakes generate
``mix_mw(t)``, so tests can work any hour out by hand.

Tests script failures (``fail_next``: a status, headers and body served before the
normal answer), leave hours out (``gap_hours``), and read back every request.

The providers that publish forecasts serve them as documented: Electricity Maps
``/v3/carbon-intensity/forecast`` (hours from the current one, ``horizonHours`` 6, 24,
48 or 72), WattTime ``/v3/forecast`` (5-minute points from the current one,
``horizon_hours`` 24 or 72, no ``co2_aoer``), NESO ``/intensity/{from}/fw48h`` and its
regional form (96 half hours from the one holding ``from``). A test scripts the values
slot by slot (``forecast_g_per_kwh``, which also sets how far the forecast reaches);
``forecast_first_s`` says where the last one served began.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from tests.support.net import free_port

HOUR_S = 3600
LBS_PER_MWH_PER_G_PER_KWH = 1 / 0.453592


def g_per_kwh(t_s: int) -> float:
    """The fakes' intensity during the 5 minutes holding ``t_s``: 100 at each hour's
    start, +1 per 5 minutes, +24 per hour of the day; e.g. 10:30 UTC is 100 + 240 + 6."""
    return 100.0 + (t_s % 86400) // HOUR_S * 24 + (t_s % HOUR_S) // 300


def mix_mw(t_s: int) -> dict[str, float]:
    """MW by the provider's fuel code for ENTSO-E (psrType) during the quarter-hour holding
    ``t_s``: gas 600, nuclear 400, wind onshore 0 in an hour's first half and 200 in its
    second (so an A03 curve can leave out every other quarter)."""
    half = (t_s % HOUR_S) // 1800
    return {"B04": 600.0, "B14": 400.0, "B19": 200.0 * half}


#: EIA rows of each hour besides wind (``100 × (hour-ending epoch hour mod 4)`` MWh): values
#: as strings (v2.1.6 on), as a number (before), a zero and a null.
EIA_MIX_MWH: dict[str, str | float | None] = {"NG": "600", "NUC": 400, "SUN": "0", "OTH": None}


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeProvider:
    """One provider's fake; ``kind`` is the provider's name as the settings spell it."""

    kind: str
    credential: str = "s3cret"
    gap_hours: set[int] = field(default_factory=set)  # epoch hours with no data
    fail_next: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    tokens_issued: int = 0
    live_tokens: set[str] = field(default_factory=set)  # WattTime: bearer tokens not expired
    page_rows: int = 5000  # EIA: the most rows one JSON page holds
    #: forecast values slot by slot from the first (None: g_per_kwh of each slot, as far
    #: as the provider's horizon); a shorter list is a forecast that ends sooner
    forecast_g_per_kwh: list[float] | None = None
    forecast_first_s: int | None = None  # where the last forecast served began
    clock: Callable[[], float] = time.time  # the fakes' "now" for forecasts
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return {"electricitymaps": base + "/v3", "eia": base + "/v2", "entsoe": base + "/api"}.get(
            self.kind, base
        )

    def answer(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append(Received("GET", path, query, headers))
            if self.fail_next:
                return self.fail_next.pop(0)
        handler: Callable[..., tuple[int, dict[str, str], bytes]] = getattr(
            self, "_" + self.kind.replace("-", "_")
        )
        return handler(path, query, headers)

    def _has(self, t_s: int) -> bool:
        return t_s // HOUR_S not in self.gap_hours

    def _forecast_values(self, first_s: int, period_s: int, slots: int) -> list[tuple[int, float]]:
        """(slot start, g/kWh) of the forecast from ``first_s``: the scripted values, or
        the fakes' intensity during each slot's first 5 minutes."""
        self.forecast_first_s = first_s
        values = self.forecast_g_per_kwh
        count = slots if values is None else min(slots, len(values))
        return [
            (
                first_s + i * period_s,
                g_per_kwh(first_s + i * period_s) if values is None else values[i],
            )
            for i in range(count)
        ]

    def expire_token(self) -> None:
        """WattTime: the tokens lapse (30 minutes after login), so the next call gets 401."""
        self.live_tokens.clear()

    # --- Electricity Maps v3 ---------------------------------------------------------
    def _electricitymaps(
        self, path: str, q: dict[str, list[str]], h: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if h.get("auth-token") != self.credential:
            return _json(401, {"error": "Invalid auth-token"})
        if path == "/v3/carbon-intensity/forecast":
            return self._electricitymaps_forecast(q)
        if path != "/v3/carbon-intensity/past-range":
            return _json(404, {"status": "error", "message": f"no route {path}"})
        zone = (q.get("zone") or q.get("zoneKey") or [""])[0]
        start, end = _iso(q["start"][0]), _iso(q["end"][0])
        if end - start > 240 * HOUR_S:
            return _json(400, {"status": "error", "message": "Range exceeds 240 hours for hourly"})
        factor = q.get("emissionFactorType", ["lifecycle"])[0]
        data = []
        for t in range(_ceil_hour(start), end + 1, HOUR_S):  # end inclusive: the client must cope
            present = self._has(t)
            data.append(
                {
                    "zone": zone,
                    "carbonIntensity": g_per_kwh(t) if present else None,
                    "datetime": _z(t, ".000Z"),
                    "updatedAt": _z(t + 2 * HOUR_S, ".000Z"),
                    "createdAt": _z(t - HOUR_S, ".000Z"),
                    "emissionFactorType": factor,
                    "isEstimated": (t // HOUR_S) % 5 == 0,
                    "estimationMethod": "TIME_SLICER_AVERAGE" if (t // HOUR_S) % 5 == 0 else None,
                    "temporalGranularity": "hourly",
                }
            )
        return _json(200, {"zone": zone, "temporalGranularity": "hourly", "data": data})

    def _electricitymaps_forecast(
        self, q: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], bytes]:
        horizon = q.get("horizonHours", ["24"])[0]
        if horizon not in ("6", "24", "48", "72"):
            return _json(400, {"status": "error", "message": f"horizonHours {horizon} not allowed"})
        now = int(self.clock())
        hours = self._forecast_values(now // HOUR_S * HOUR_S, HOUR_S, int(horizon))
        points = [{"carbonIntensity": g, "datetime": _z(t, ".000Z")} for t, g in hours]
        zone = (q.get("zone") or q.get("zoneKey") or [""])[0]
        return _json(200, {"zone": zone, "updatedAt": _z(now, ".000Z"), "forecast": points})

    # --- WattTime v3 -----------------------------------------------------------------
    def _watttime(
        self, path: str, q: dict[str, list[str]], h: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if path == "/login":
            expected = "Basic " + base64.b64encode(self.credential.encode()).decode()
            if h.get("authorization") != expected:
                return _json(
                    403, {"error": "INVALID_CREDENTIALS", "message": "bad username or password"}
                )
            self.tokens_issued += 1
            token = f"jwt-{self.tokens_issued}"
            self.live_tokens.add(token)
            return _json(200, {"token": token})
        if path not in ("/v3/historical", "/v3/forecast"):
            return _json(404, {"error": "NOT_FOUND", "message": path})
        if h.get("authorization", "").removeprefix("Bearer ") not in self.live_tokens:
            return _json(401, {"error": "UNAUTHORIZED", "message": "token invalid or expired"})
        if path == "/v3/forecast":
            return self._watttime_forecast(q)
        if "+" not in q["start"][0] and not q["start"][0].endswith("Z"):
            return _json(400, {"error": "INVALID_QUERY_PARAMS", "msg": "start needs a time zone"})
        start, end = _iso(q["start"][0]), _iso(q["end"][0])
        if end - start > 32 * 86400:
            return _json(400, {"error": "INVALID_QUERY_PARAMS", "msg": "at most 32 days"})
        data = [
            {
                "point_time": _plus(t),
                "value": round(g_per_kwh(t) * LBS_PER_MWH_PER_G_PER_KWH, 6),
                "imputed_data_used": (t // HOUR_S) % 7 == 0,
            }
            for t in range(-(-start // 300) * 300, end + 1, 300)  # both ends inclusive
            if self._has(t)
        ]
        meta = {
            "data_point_period_seconds": 300,
            "region": q["region"][0],
            "signal_type": q["signal_type"][0],
            "units": "lbs_co2_per_mwh",
            "model": {"date": "2024-10-01", "type": "average"},
            "warnings": [],
        }
        return _json(200, {"data": data, "meta": meta})

    def _watttime_forecast(self, q: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        signal, horizon = q["signal_type"][0], q.get("horizon_hours", ["24"])[0]
        if signal == "co2_aoer":  # historical only, "for accounting purposes"
            return _json(400, {"error": "INVALID_SIGNAL", "message": "co2_aoer has no forecast"})
        if horizon not in ("24", "72"):
            return _json(422, {"error": "INVALID_QUERY_PARAMS", "msg": "horizon_hours: 24 or 72"})
        now = int(self.clock())
        first = now // 300 * 300  # the current 5-minute period
        points = self._forecast_values(first, 300, int(horizon) * 12)
        data = [
            {"point_time": _plus(t), "value": round(g * LBS_PER_MWH_PER_G_PER_KWH, 6)}
            for t, g in points
        ]
        meta = {
            "data_point_period_seconds": 300,
            "region": q["region"][0],
            "signal_type": signal,
            "units": "lbs_co2_per_mwh",
            "model": {"date": "2024-10-01"},
            "warnings": [],
            "generated_at_period_seconds": 300,
            "generated_at": _plus(first),
        }
        return _json(200, {"data": data, "meta": meta})

    # --- NESO Carbon Intensity -------------------------------------------------------
    def _uk_carbon_intensity(
        self, path: str, q: dict[str, list[str]], h: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = path.strip("/").split("/")
        regional = parts[0] == "regional"
        if regional:
            parts = parts[1:]
        if len(parts) < 3 or parts[0] != "intensity":
            return _json(400, {"error": {"code": "400 Bad Request", "message": f"bad path {path}"}})
        if parts[2] == "fw48h":
            return self._uk_forecast(_iso(parts[1]), int(parts[-1]) if regional else None)
        start, end = _iso(parts[1]), _iso(parts[2])
        if end - start > 14 * 86400:
            return _json(
                400, {"error": {"code": "400 Bad Request", "message": "Date range exceeds 14 days"}}
            )
        slots = []
        # The API also returns the half hour that ends at ``from``, and the one starting at ``to``.
        for t in range(start - 1800, end + 1, 1800):
            if not self._has(t):
                continue
            value = g_per_kwh(t)
            intensity: dict[str, Any] = {"forecast": value + 7, "index": "moderate"}
            if not regional:
                intensity["actual"] = value if (t // 1800) % 11 else None  # some not metered
            slots.append(
                {
                    "from": _z(t, "Z", seconds=False),
                    "to": _z(t + 1800, "Z", seconds=False),
                    "intensity": intensity,
                }
            )
        if regional:
            return _json(
                200, {"data": {"regionid": int(parts[-1]), "shortname": "London", "data": slots}}
            )
        return _json(200, {"data": slots})

    def _uk_forecast(self, from_s: int, region: int | None) -> tuple[int, dict[str, str], bytes]:
        """48 hours of half hours from the one holding ``from`` (the one ending at it when
        ``from`` is on a boundary, as the range queries do); ``actual`` not yet metered."""
        first = (from_s - 1) // 1800 * 1800
        slots = [
            {
                "from": _z(t, "Z", seconds=False),
                "to": _z(t + 1800, "Z", seconds=False),
                "intensity": {"forecast": g, "index": "moderate"}
                | ({} if region is not None else {"actual": None}),
            }
            for t, g in self._forecast_values(first, 1800, 96)
        ]
        if region is not None:
            return _json(200, {"data": {"regionid": region, "shortname": "London", "data": slots}})
        return _json(200, {"data": slots})

    # --- ENTSO-E ---------------------------------------------------------------------
    def _entsoe(
        self, path: str, q: dict[str, list[str]], h: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if q.get("securityToken", [""])[0] != self.credential:
            return 401, {"Content-Type": "text/xml"}, _ack("999", "Authentication failed.")
        start = int(
            datetime.strptime(q["periodStart"][0], "%Y%m%d%H%M").replace(tzinfo=UTC).timestamp()
        )
        end = int(
            datetime.strptime(q["periodEnd"][0], "%Y%m%d%H%M").replace(tzinfo=UTC).timestamp()
        )
        if end - start > 366 * 86400:
            return (
                200,
                {"Content-Type": "text/xml"},
                _ack("999", "The amount of requested data exceeds allowed limit."),
            )
        return 200, {"Content-Type": "text/xml"}, self._gl_document(start, end, q["in_Domain"][0])

    def _gl_document(self, start: int, end: int, domain: str) -> bytes:
        """Periods are Europe/Brussels days (23 or 25 hours on the days clocks change);
        gas and nuclear at PT60M, wind at PT15M, and a pumping (consumption) series."""
        zone = ZoneInfo("Europe/Brussels")
        day = datetime.fromtimestamp(start, UTC).astimezone(zone).replace(hour=0, minute=0)
        days: list[tuple[int, int]] = []
        while int(day.timestamp()) < end:
            following = (day + timedelta(days=1, hours=3)).replace(hour=0)
            days.append((max(int(day.timestamp()), start), min(int(following.timestamp()), end)))
            day = following
        runs = [run for a, b in days for run in self._runs(a, b)]
        series = []
        for psr, step in (("B04", 3600), ("B14", 3600), ("B19", 900), ("B10-out", 3600)):
            for a, b in runs:
                points = []
                for position, t in enumerate(range(a, b, step), start=1):
                    if psr == "B19" and t % 1800 == 900:
                        continue  # wind's A03 curve leaves out quarters equal to the one before
                    mw = 250.0 if psr == "B10-out" else mix_mw(t)[psr]
                    points.append(
                        f"<Point><position>{position}</position><quantity>{mw:g}</quantity></Point>"
                    )
                if not points:
                    continue
                domain_tag = (
                    "outBiddingZone_Domain.mRID"
                    if psr.endswith("-out")
                    else "inBiddingZone_Domain.mRID"
                )
                series.append(
                    f"<TimeSeries><mRID>{len(series) + 1}</mRID><businessType>A01</businessType>"
                    f'<{domain_tag} codingScheme="A01">{domain}</{domain_tag}>'
                    "<quantity_Measure_Unit.name>MAW</quantity_Measure_Unit.name>"
                    f"<curveType>{'A03' if psr == 'B19' else 'A01'}</curveType>"
                    f"<MktPSRType><psrType>{psr[:3]}</psrType></MktPSRType>"
                    f"<Period><timeInterval><start>{_z(a, 'Z', seconds=False)}</start>"
                    f"<end>{_z(b, 'Z', seconds=False)}</end></timeInterval>"
                    f"<resolution>PT{step // 60}M</resolution>{''.join(points)}"
                    "</Period></TimeSeries>"
                )
        if not series:
            return _ack(
                "999", "No matching data found for Data item ACTUAL_GENERATION_PER_PRODUCTION_TYPE"
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<GL_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-6:generationloaddocument:3:0">'
            "<mRID>fake</mRID><type>A75</type><process.processType>A16</process.processType>"
            + "".join(series)
            + "</GL_MarketDocument>"
        ).encode()

    def _runs(self, a: int, b: int) -> list[tuple[int, int]]:
        """``[a, b)`` split into runs of hours with data (a gap ends one Period)."""
        runs: list[tuple[int, int]] = []
        for t in range(a, b, HOUR_S):
            if not self._has(t):
                continue
            if runs and runs[-1][1] == t:
                runs[-1] = (runs[-1][0], t + HOUR_S)
            else:
                runs.append((t, t + HOUR_S))
        return runs

    # --- EIA v2 ----------------------------------------------------------------------
    def _eia(
        self, path: str, q: dict[str, list[str]], h: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        key = q.get("api_key", [""])[0]
        if not key:
            return _json(
                403, {"error": {"code": "API_KEY_MISSING", "message": "No api_key was supplied."}}
            )
        if key != self.credential:
            return _json(403, {"error": {"code": "API_KEY_INVALID", "message": "Invalid api_key."}})
        if path != "/v2/electricity/rto/fuel-type-data/data/" or q.get("data[0]") != ["value"]:
            return _json(400, {"error": "Invalid route or no data column", "code": 400})
        respondent = q["facets[respondent][]"][0]
        first = int(datetime.strptime(q["start"][0], "%Y-%m-%dT%H").replace(tzinfo=UTC).timestamp())
        last = int(datetime.strptime(q["end"][0], "%Y-%m-%dT%H").replace(tzinfo=UTC).timestamp())
        rows = [
            {
                "period": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H"),  # hour ending
                "respondent": respondent,
                "fueltype": fuel,
                "type-name": fuel,
                "value": mwh,
                "value-units": "megawatthours",
            }
            for t in range(first, last + 1, HOUR_S)
            if self._has(t - HOUR_S)
            for fuel, mwh in [*EIA_MIX_MWH.items(), ("WND", str(100 * ((t // HOUR_S) % 4)))]
        ]
        offset = int(q.get("offset", ["0"])[0])
        length = min(int(q.get("length", ["5000"])[0]), self.page_rows)
        page = rows[offset : offset + length]
        response: dict[str, Any] = {"total": str(len(rows)), "frequency": "hourly", "data": page}
        body: dict[str, Any] = {"response": response, "apiVersion": "2.1.8"}
        if len(rows) - offset > length:
            body["warning"] = "parameter out of range"
        return _json(200, body)


def _json(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _ack(code: str, text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Acknowledgement_MarketDocument '
        'xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0"><mRID>ack</mRID>'
        f"<Reason><code>{code}</code><text>{text}</text></Reason></Acknowledgement_MarketDocument>"
    ).encode()


def _iso(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _ceil_hour(t_s: int) -> int:
    return -(-t_s // HOUR_S) * HOUR_S


def _z(t_s: int, suffix: str, seconds: bool = True) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S" if seconds else "%Y-%m-%dT%H:%M"
    return datetime.fromtimestamp(t_s, UTC).strftime(fmt) + suffix


def _plus(t_s: int) -> str:
    return datetime.fromtimestamp(t_s, UTC).isoformat()


@contextmanager
def serving(fake: FakeProvider) -> Iterator[FakeProvider]:
    """Run ``fake`` on a free loopback port until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            received = {name.lower(): value for name, value in self.headers.items()}
            status, headers, body = fake.answer(parts.path, parse_qs(parts.query), received)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    fake.port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", fake.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
