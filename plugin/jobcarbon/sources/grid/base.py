"""What every grid-intensity client shares: the settings, the hourly points, the
HTTP calls with their retries, and the averaging of sub-hourly values into hours.

A client fetches a zone's history over ``[since, until)`` in windows no longer than
its provider allows. Whatever fails part-way (a 401, retries used up, a body it cannot
read) ends the fetch, and the points got so far come back beside the error, so that a
sync keeps them and resumes from there. Where the provider publishes a forecast,
``forecast`` reads its latest one through the same HTTP calls, credential and retries.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, NamedTuple

from ...backoff import backoff_s
from ...errors import PermanentError, SourceError, TemporaryError
from ...site import HOUR_S, HourlySeries

PROVIDERS = ("electricitymaps", "watttime", "uk-carbon-intensity", "entsoe", "eia")


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """``sites.<name>.grid.provider`` of the site configuration."""

    #: One of ``PROVIDERS``.
    name: str
    #: The provider's zone, region or balancing authority (``DE``, ``CAISO_NORTH``,
    #: ``national`` or a NESO region id, an ENTSO-E EIC code, an EIA respondent).
    zone: str
    #: The API's base URL; ``None`` is the provider's own (tests point it at loopback).
    url: str | None = None
    #: The environment variable holding the credential (for WattTime ``user:password``).
    token_env: str | None = None
    #: A file holding the credential, the alternative to ``token_env``.
    token_file: str | None = None
    #: Where a provider has several: Electricity Maps ``lifecycle``/``direct``, WattTime
    #: ``co2_aoer``/``co2_moer``, ENTSO-E and EIA ``lifecycle``/``direct`` fuel factors.
    signal: str | None = None
    #: g/kWh for hours the provider lacks (``None``: such hours cannot be accounted).
    fallback_g_per_kwh: float | None = None

    def credential(self) -> str:
        """The token from ``token_env`` or ``token_file``; ``PermanentError`` naming the
        setting when neither gives one."""
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise PermanentError(
                    f"{self.name}: the environment variable {self.token_env} named by "
                    "grid.provider.token_env is not set"
                )
            return value
        if self.token_file:
            try:
                value = Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise PermanentError(
                    f"{self.name}: cannot read grid.provider.token_file {self.token_file}: {err}"
                ) from err
            if not value:
                raise PermanentError(
                    f"{self.name}: grid.provider.token_file {self.token_file} is empty"
                )
            return value
        raise PermanentError(
            f"{self.name} needs a credential: "
            "set grid.provider.token_env or grid.provider.token_file"
        )


class GridPoint(NamedTuple):
    """One UTC hour's intensity as a provider gave it (a tuple: a year of them for ten
    sites is made in a sync, and a frozen dataclass costs twice as much to build)."""

    hour: int  # the hour's start, in hours since the epoch (as HourlySeries keys it)
    intensity_g_per_kwh: float
    provider: str
    signal: str
    measured: bool  # False where the provider estimated, imputed or forecast it

    @property
    def hour_start(self) -> datetime:
        return datetime.fromtimestamp(self.hour * HOUR_S, tz=UTC)


@dataclass(slots=True)
class FetchResult:
    """The hours fetched, oldest first, and the error that stopped the fetch, if any."""

    points: list[GridPoint]
    error: Exception | None = None

    def series(self, fallback: float | None, label: str) -> HourlySeries:
        return HourlySeries({p.hour: p.intensity_g_per_kwh for p in self.points}, fallback, label)


class Sample(NamedTuple):
    """A provider's value for ``[start_s, start_s + period_s)`` (epoch seconds)."""

    start_s: int
    period_s: int
    intensity_g_per_kwh: float
    measured: bool


def hourly(
    samples: Iterable[Sample], provider: str, signal: str, since: datetime, until: datetime
) -> list[GridPoint]:
    """Time-weighted means of the samples by UTC hour, for the hours in ``[since, until)``.

    An hour is measured only if every sample in it is. Samples repeated (a provider
    returning a window's edge twice) count once: the last one.
    """
    first_s = _hour_of(since) * HOUR_S
    stop_s = (_hour_of(until - timedelta(microseconds=1)) + 1) * HOUR_S
    unique = {s.start_s: s for s in samples if first_s <= s.start_s < stop_s}
    sums: dict[int, list[float]] = {}
    measured: dict[int, bool] = {}
    for start_s, sample in unique.items():
        hour = start_s // HOUR_S
        weighted = sums.get(hour)
        if weighted is None:
            weighted = sums[hour] = [0.0, 0.0]
            measured[hour] = True
        weighted[0] += sample.intensity_g_per_kwh * sample.period_s
        weighted[1] += sample.period_s
        if not sample.measured:
            measured[hour] = False
    return [
        GridPoint(hour, total / seconds, provider, signal, measured[hour])
        for hour, (total, seconds) in sorted(sums.items())
    ]


def _hour_of(when: datetime) -> int:
    return int(when.timestamp()) // HOUR_S


def windows(
    since: datetime, until: datetime, longest: timedelta
) -> Iterator[tuple[datetime, datetime]]:
    """``[since, until)`` cut into consecutive windows of at most ``longest``."""
    cursor = since
    while cursor < until:
        end = min(cursor + longest, until)
        yield cursor, end
        cursor = end


def parse_time(text: str, where: str) -> datetime:
    """An ISO 8601 time with a zone (``Z`` or an offset) as UTC; ``SourceError`` otherwise."""
    try:
        when = datetime.fromisoformat(text)  # Python 3.11 reads "Z" too
    except (TypeError, ValueError) as err:
        raise SourceError(f"{where}: unreadable time {text!r}") from err
    if when.tzinfo is None:
        raise SourceError(f"{where}: time {text!r} has no time zone")
    return when.astimezone(UTC)


class NoForecast(SourceError):
    """The provider publishes history only."""

    def __init__(self, provider: str) -> None:
        super().__init__(f"{provider} publishes no forecast, only past generation")
        self.provider = provider


class Unauthorized(PermanentError):
    """The provider refused the credential (HTTP 401 or 403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Http:
    """GET with retries: 429 after its Retry-After, 5xx and lost connections after a
    doubling backoff; 401/403 raise ``Unauthorized`` at once, other 4xx ``PermanentError``."""

    provider: str
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time  # wall clock, for Retry-After given as a date
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 5
    first_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 60.0

    def get(
        self,
        url: str,
        params: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        query = urllib.parse.urlencode(
            list(params.items()) if isinstance(params, Mapping) else list(params)
        )
        full = f"{url}?{query}" if query else url
        for attempt in range(1, self.attempts + 1):
            try:
                return self._once(full, headers or {})
            except TemporaryError as err:
                if attempt == self.attempts:
                    raise
                delay = err.delay_s or backoff_s(
                    attempt, self.first_backoff_s, self.max_backoff_s, self.rng
                )
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, url: str, headers: Mapping[str, str]) -> bytes:
        request = urllib.request.Request(url, headers=dict(headers))
        shown = url.split("?", 1)[0]  # never log a query that may carry a key
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as err:
            body = err.read()
            text = body.decode("utf-8", "replace")[:300]
            if err.code == 429:
                delay = self._retry_after_s(err.headers.get("Retry-After"))
                raise TemporaryError(
                    f"{self.provider}: HTTP 429 from {shown}: {text}", delay
                ) from err
            if err.code >= 500:
                raise TemporaryError(
                    f"{self.provider}: HTTP {err.code} from {shown}: {text}"
                ) from err
            if err.code in (401, 403):
                raise Unauthorized(
                    f"{self.provider} refused the credential "
                    f"(HTTP {err.code} from {shown}: {text}); "
                    "check grid.provider.token_env or grid.provider.token_file",
                    err.code,
                ) from err
            raise PermanentError(f"{self.provider}: HTTP {err.code} from {shown}: {text}") from err
        except (urllib.error.URLError, OSError) as err:
            raise TemporaryError(f"{self.provider}: cannot reach {shown}: {err}") from err

    def _retry_after_s(self, value: str | None) -> float:
        """Retry-After as seconds (a number or an HTTP date); 0 when absent or unreadable."""
        if not value:
            return 0.0
        if value.strip().isdigit():
            return float(value.strip())
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        return max(0.0, when.timestamp() - self.clock())


def fetch_windows(
    since: datetime,
    until: datetime,
    longest: timedelta,
    fetch_window: Callable[[datetime, datetime], list[Sample]],
    provider: str,
    signal: str,
) -> FetchResult:
    """Fetch ``[since, until)`` window by window; on an error, what came before it."""
    samples: list[Sample] = []
    error: Exception | None = None
    for start, end in windows(since, until, longest):
        first_s, stop_s = int(start.timestamp()), int(end.timestamp())
        try:
            # Providers also return the slots at a window's edges (NESO the half hour
            # ending at ``from``, WattTime both inclusive ends): each window keeps its own.
            samples.extend(s for s in fetch_window(start, end) if first_s <= s.start_s < stop_s)
        except (TemporaryError, PermanentError, SourceError) as err:
            error = err
            break
    return FetchResult(hourly(samples, provider, signal, since, until), error)


class WindowedClient:
    """A provider's client: settings checked at construction, then ``fetch`` window by
    window, each window read by the subclass's ``_window``."""

    name: ClassVar[str]
    default_url: ClassVar[str]
    longest: ClassVar[timedelta]
    signals: ClassVar[tuple[str, ...]] = ()  # the first is the default
    needs_credential: ClassVar[bool] = True  # read once per fetch, handed to _window
    #: the furthest ahead the provider forecasts; None where it publishes no forecast
    forecast_horizon: ClassVar[timedelta | None] = None

    def __init__(self, settings: ProviderSettings, http: Http) -> None:
        self.settings = settings
        self.http = http
        self.url = (settings.url or self.default_url).rstrip("/")
        self.signal = settings.signal or (self.signals[0] if self.signals else "")
        if self.signals and self.signal not in self.signals:
            raise SourceError(
                f"{self.name}: grid.provider.signal must be one of {', '.join(self.signals)}, "
                f"got {self.signal!r}"
            )

    def fetch(self, since: datetime, until: datetime) -> FetchResult:
        credential = self.settings.credential() if self.needs_credential else ""
        return fetch_windows(
            since,
            until,
            self.longest,
            lambda start, end: self._window(start, end, credential),
            self.name,
            self.signal,
        )

    def _window(self, start: datetime, end: datetime, credential: str) -> list[Sample]:
        raise NotImplementedError

    @property
    def forecast_signal(self) -> str:
        """The signal the forecast gives (the configured one, unless the provider
        forecasts another only)."""
        return self.signal

    def forecast(self, now: datetime, horizon: timedelta) -> list[Sample]:
        """The provider's latest forecast from about ``now``, ``horizon`` ahead or as far
        as it reaches, in its own slots (estimated); ``NoForecast`` where it has none."""
        if self.forecast_horizon is None:
            raise NoForecast(self.name)
        return self._forecast(now, min(horizon, self.forecast_horizon))

    def _forecast(self, now: datetime, horizon: timedelta) -> list[Sample]:
        raise NotImplementedError
