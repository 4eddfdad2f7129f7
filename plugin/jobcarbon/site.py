"""A site's PUE and grid carbon intensity as functions of time.

Both may be constant, or vary: PUE by calendar month (sites measure it monthly),
intensity by hour (a series from the grid operator or Electricity Maps). The
footprint model integrates them over a job's run hour by hour; these classes only
answer "what was the value during the hour that starts at t". No I/O here: a
series is read from its file by the config loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .errors import FactorError

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class Constant:
    """A value that does not change over time."""

    value: float
    label: str = ""
    is_constant = True

    def at(self, when: datetime) -> float:
        return self.value


@dataclass(frozen=True, slots=True)
class MonthlyPue:
    """PUE by calendar month (``"2026-01"`` → 1.21), with a default for months not listed."""

    default: float
    by_month: Mapping[str, float] = field(default_factory=dict)
    is_constant = False

    def at(self, when: datetime) -> float:
        return self.by_month.get(f"{when.year:04d}-{when.month:02d}", self.default)


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """Grid intensity (gCO2e/kWh) for each UTC hour, keyed by the hour's start in epoch hours.

    An hour missing from the series uses ``fallback`` when there is one; otherwise
    the job that needs it cannot be accounted, and ``FactorError`` names the hour.
    """

    by_hour: Mapping[int, float]
    fallback: float | None = None
    label: str = ""
    is_constant = False

    def at(self, when: datetime) -> float:
        hour = int(when.timestamp()) // HOUR_S
        value = self.by_hour.get(hour)
        if value is not None:
            return value
        if self.fallback is not None:
            return self.fallback
        start = datetime.fromtimestamp(hour * HOUR_S, tz=UTC)
        raise FactorError(
            f"intensity series {self.label or '(unnamed)'} has no value for the hour starting "
            f"{start.isoformat()} and no fallback_g_per_kwh"
        )


Schedule = Constant | MonthlyPue | HourlySeries


def hour_segments(start: datetime, end: datetime) -> Iterator[tuple[datetime, float]]:
    """Split ``[start, end)`` at UTC hour boundaries: yields (segment start, seconds)."""
    cursor = start
    while cursor < end:
        boundary = cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        segment_end = min(boundary, end)
        yield cursor, (segment_end - cursor).total_seconds()
        cursor = segment_end


@dataclass(frozen=True, slots=True)
class SiteFactors:
    """What a site contributes to a footprint: PUE, grid intensity and their uncertainty."""

    name: str
    pue: Schedule
    intensity_g_per_kwh: Schedule
    pue_uncertainty: float = 0.05
    region_key: str = ""
