"""A site's PUE and grid carbon intensity as functions of time, and its market-based
factors by year.

Both may be constant, or vary: PUE by calendar month (sites measure it monthly),
intensity by hour (a series from the grid operator or Electricity Maps). The
footprint model integrates them over a job's run hour by hour; these classes only
answer "what was the value during the hour that starts at t". No I/O here: a
series is read from its file by the config loader.

The intensity is location-based Scope 2 (the grid's average). The market-based one
(GHG Protocol Scope 2 Guidance) comes from what the site buys, year by year:
``MarketFactors`` holds each year's factor as the config resolved it (``marketconfig``).
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .errors import FactorError

HOUR_S = 3600
_HOUR_US = HOUR_S * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_us(when: datetime) -> int:
    """``when`` in whole microseconds since the epoch: exact, unlike ``timestamp()``."""
    return (when - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class Constant:
    """A value that does not change over time."""

    value: float
    label: str = ""
    is_constant = True

    def at(self, when: datetime) -> float:
        return self.value

    def pieces(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """``[start, end)`` cut where the value may change: here, nowhere."""
        if start < end:
            yield start, end

    def integral(self, start: datetime, end: datetime) -> float:
        """The value times seconds over ``[start, end)``."""
        return self.value * (end - start).total_seconds()


@dataclass(frozen=True, slots=True)
class MonthlyPue:
    """PUE by calendar month (``"2026-01"`` → 1.21), with a default for months not listed."""

    default: float
    by_month: Mapping[str, float] = field(default_factory=dict)
    is_constant = False

    def at(self, when: datetime) -> float:
        return self.by_month.get(f"{when.year:04d}-{when.month:02d}", self.default)

    def pieces(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """``[start, end)`` cut at the starts of calendar months (UTC)."""
        cursor = start
        while cursor < end:
            first = cursor.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            following = first.replace(
                year=first.year + first.month // 12, month=first.month % 12 + 1
            )
            piece_end = min(following, end)
            yield cursor, piece_end
            cursor = piece_end

    def integral(self, start: datetime, end: datetime) -> float:
        """The value times seconds over ``[start, end)``."""
        return sum(self.at(a) * (b - a).total_seconds() for a, b in self.pieces(start, end))


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """Grid intensity (gCO2e/kWh) for each UTC hour, keyed by the hour's start in epoch hours.

    An hour missing from the series uses ``fallback`` when there is one; otherwise
    the job that needs it cannot be accounted, and ``FactorError`` names the hour.

    ``integral`` is what the footprint model asks for, once per job; it reads a dense
    copy of the series (built once) so that a run's hours cost a C-level ``sum`` over
    a list slice rather than a dictionary look-up and a datetime each.
    """

    by_hour: Mapping[int, float]
    fallback: float | None = None
    label: str = ""
    version: str = ""  # the data's version: a file's digest, the synced hours' digest
    is_constant = False
    _first_hour: int = field(init=False, repr=False, compare=False)
    _values: list[float] = field(init=False, repr=False, compare=False)
    _missing: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first = min(self.by_hour, default=0)
        last = max(self.by_hour, default=-1)
        filler = self.fallback if self.fallback is not None else 0.0
        values = [filler] * (last - first + 1)
        for hour, value in self.by_hour.items():
            values[hour - first] = value
        missing = sorted(set(range(first, last + 1)).difference(self.by_hour))
        object.__setattr__(self, "_first_hour", first)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_missing", missing)

    def at(self, when: datetime) -> float:
        hour = int(when.timestamp()) // HOUR_S
        value = self.by_hour.get(hour)
        if value is not None:
            return value
        if self.fallback is not None:
            return self.fallback
        raise self._gap(hour)

    def _gap(self, hour: int) -> FactorError:
        start = datetime.fromtimestamp(hour * HOUR_S, tz=UTC)
        return FactorError(
            f"intensity series {self.label or '(unnamed)'} has no value for the hour starting "
            f"{start.isoformat()} and no fallback_g_per_kwh"
        )

    def pieces(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """``[start, end)`` cut at UTC hour boundaries."""
        for segment_start, seconds in hour_segments(start, end):
            yield segment_start, segment_start + timedelta(seconds=seconds)

    def integral(self, start: datetime, end: datetime) -> float:
        """Σ seconds × g/kWh over ``[start, end)``; ``FactorError`` names the first hour
        of it that has no value when there is no fallback."""
        start_us, end_us = _epoch_us(start), _epoch_us(end)
        if end_us <= start_us:
            return 0.0
        first, last = start_us // _HOUR_US, (end_us - 1) // _HOUR_US
        self._check_covered(first, last)
        if first == last:
            return (end_us - start_us) / 1e6 * self._value(first)
        head_s = ((first + 1) * _HOUR_US - start_us) / 1e6
        tail_s = (end_us - last * _HOUR_US) / 1e6
        return (
            head_s * self._value(first)
            + self._full_hours_sum(first + 1, last) * HOUR_S
            + tail_s * self._value(last)
        )

    def _value(self, hour: int) -> float:
        index = hour - self._first_hour
        if 0 <= index < len(self._values):
            return self._values[index]
        return self.fallback if self.fallback is not None else 0.0

    def _full_hours_sum(self, first: int, stop: int) -> float:
        """Σ g/kWh over the hours ``[first, stop)``, the fallback outside the series."""
        if stop <= first:
            return 0.0
        lo = max(first - self._first_hour, 0)
        hi = min(stop - self._first_hour, len(self._values))
        inside = sum(self._values[lo:hi]) if lo < hi else 0.0
        outside = (stop - first) - max(hi - lo, 0)
        return inside + outside * self.fallback if outside and self.fallback is not None else inside

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether every hour of ``[start, end)`` has a value of its own: none of it
        needs the fallback."""
        start_us, end_us = _epoch_us(start), _epoch_us(end)
        if end_us <= start_us:
            return True
        return self._first_gap(start_us // _HOUR_US, (end_us - 1) // _HOUR_US) is None

    def _first_gap(self, first: int, last: int) -> int | None:
        """The first hour of ``[first, last]`` without a value of its own, or None."""
        if first < self._first_hour or not self._values:
            return first
        index = bisect_left(self._missing, first)
        if index < len(self._missing) and self._missing[index] <= last:
            return self._missing[index]
        stop = self._first_hour + len(self._values)
        return stop if last >= stop else None

    def _check_covered(self, first: int, last: int) -> None:
        """Raise for the first hour of ``[first, last]`` without a value or fallback."""
        if self.fallback is not None:
            return
        gap = self._first_gap(first, last)
        if gap is not None:
            raise self._gap(gap)


Schedule = Constant | MonthlyPue | HourlySeries


def hour_segments(start: datetime, end: datetime) -> Iterator[tuple[datetime, float]]:
    """Split ``[start, end)`` at UTC hour boundaries: yields (segment start, seconds)."""
    cursor = start
    while cursor < end:
        boundary = cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        segment_end = min(boundary, end)
        yield cursor, (segment_end - cursor).total_seconds()
        cursor = segment_end


class MarketSource(enum.StrEnum):
    """Where a job's market-based figure comes from (the ledger's ``market_source``)."""

    CONTRACTS = "contracts"  # its year's instruments, the rest at a supplier or residual mix
    CONTRACTS_AND_LOCATION = "contracts+location"  # the rest at the location-based figure
    RESIDUAL_MIX = "residual-mix"  # a year without contracts: the site's residual mix
    LOCATION_BASED = "location-based"  # no market data for the year: the grid average

    @property
    def words(self) -> str:
        """What it means, for people."""
        return _MARKET_WORDS[self]


_MARKET_WORDS = {
    MarketSource.CONTRACTS: "the site's contracts and certificates for the year",
    MarketSource.CONTRACTS_AND_LOCATION: (
        "the site's contracts for the year, the rest at the location-based figure "
        "(no supplier-specific or residual-mix factor)"
    ),
    MarketSource.RESIDUAL_MIX: "the residual mix (no contracts configured for the year)",
    MarketSource.LOCATION_BASED: (
        "the location-based figure (no contracts or residual mix configured for the year)"
    ),
}


@dataclass(frozen=True, slots=True)
class MarketYear:
    """One year's market-based factor: ``contract_g_per_kwh`` per kWh of the whole
    consumption (each instrument's share × its factor, plus the rest's share × the
    supplier-specific or residual-mix factor), and ``location_share``, the share left at
    the job's location-based figure where the rest has no factor."""

    contract_g_per_kwh: float
    location_share: float
    source: MarketSource


#: What the market-based method gives without any market data: the grid average.
LOCATION_ONLY = MarketYear(0.0, 1.0, MarketSource.LOCATION_BASED)


@dataclass(frozen=True, slots=True)
class MarketFactors:
    """A site's market-based factor for each year (UTC) it has contracts for, and for the
    other years (its residual mix, or the location-based figure)."""

    by_year: Mapping[int, MarketYear] = field(default_factory=dict)
    other_years: MarketYear = LOCATION_ONLY

    def for_year(self, year: int) -> MarketYear:
        return self.by_year.get(year, self.other_years)


NO_MARKET = MarketFactors()


@dataclass(frozen=True, slots=True)
class SiteFactors:
    """What a site contributes to a footprint: PUE, grid intensity and their uncertainty,
    and the market-based factors."""

    name: str
    pue: Schedule
    intensity_g_per_kwh: Schedule
    pue_uncertainty: float = 0.05
    region_key: str = ""
    # where the intensity comes from (constant, region, series, provider <name>) and the
    # version of its data: what a footprint records as its provenance
    intensity_source: str = ""
    intensity_version: str = ""
    market: MarketFactors = NO_MARKET

    @property
    def pue_source(self) -> str:
        return "constant" if isinstance(self.pue, Constant) else "monthly"
