"""The lowest-carbon start of a run of a given length, over a grid-intensity forecast.

A forecast is a list of slots as its provider publishes them (hours, half hours, five
minutes): a start, a length and g/kWh. A run's mean intensity is the time-weighted mean
of the slots it covers, a slot the run cuts counted for the part inside it. The starts
tried are now and each slot start after it up to ``now + within``, wherever the
forecast covers the whole run without a gap; the earliest of equally clean starts wins,
so a start later than now is suggested only when it is cleaner. Pure: no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import InputError

#: two means closer than this share of their size are equally clean (float noise)
_SAME = 1e-9


class Slot(Protocol):
    """A forecast value for ``[start_s, start_s + period_s)`` (epoch seconds)."""

    @property
    def start_s(self) -> int: ...

    @property
    def period_s(self) -> int: ...

    @property
    def intensity_g_per_kwh(self) -> float: ...


@dataclass(frozen=True, slots=True)
class BestStart:
    """The cleanest start found, next to starting now (epoch seconds, g/kWh)."""

    start_s: int
    mean_g_per_kwh: float
    now_s: int
    #: the run's mean if it started now; None where the forecast begins after now
    now_mean_g_per_kwh: float | None
    duration_s: int
    #: the latest start tried whose run the forecast covers
    latest_start_s: int
    #: where the forecast ends: a run must end by then
    forecast_end_s: int

    @property
    def starts_now(self) -> bool:
        return self.start_s == self.now_s

    @property
    def saving_percent(self) -> float | None:
        """How much less CO2e the same energy emits at the best start than starting now."""
        if self.now_mean_g_per_kwh is None or self.now_mean_g_per_kwh <= 0:
            return None
        return 100.0 * (self.now_mean_g_per_kwh - self.mean_g_per_kwh) / self.now_mean_g_per_kwh


class _Timeline:
    """The slots as consecutive segments, gaps included, with running integrals."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        by_start = {s.start_s: s for s in slots if s.period_s > 0}  # a repeated start: the last
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.values: list[float | None] = []  # None: a gap
        for start in sorted(by_start):
            slot = by_start[start]
            if self.ends and start < self.ends[-1]:
                self.ends[-1] = start  # a slot overlapping the next ends where it begins
            if self.ends and start > self.ends[-1]:
                self._append(self.ends[-1], start, None)
            self._append(start, start + slot.period_s, slot.intensity_g_per_kwh)
        self.integral_at = [0.0]  # Σ g/kWh × s over the segments before each index
        self.gaps_before = [0]
        for start, end, value in zip(self.starts, self.ends, self.values, strict=True):
            self.integral_at.append(self.integral_at[-1] + (value or 0.0) * (end - start))
            self.gaps_before.append(self.gaps_before[-1] + (value is None))

    def _append(self, start: int, end: int, value: float | None) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.values.append(value)

    def mean(self, start_s: int, end_s: int) -> float | None:
        """The mean g/kWh over ``[start_s, end_s)``; None where a part of it is not covered."""
        if not self.starts or start_s < self.starts[0] or end_s > self.ends[-1]:
            return None
        first = bisect_right(self.starts, start_s) - 1
        last = bisect_left(self.ends, end_s)
        if self.gaps_before[last + 1] != self.gaps_before[first]:
            return None
        head, tail = self.values[first] or 0.0, self.values[last] or 0.0
        total = (
            self.integral_at[last + 1]
            - self.integral_at[first]
            - head * (start_s - self.starts[first])
            - tail * (self.ends[last] - end_s)
        )
        return total / (end_s - start_s)


def best_start(slots: Sequence[Slot], duration_s: int, now_s: int, within_s: int) -> BestStart:
    """The start in ``[now_s, now_s + within_s]`` whose run of ``duration_s`` has the
    lowest mean intensity; ``InputError`` when no such run fits in the forecast."""
    if duration_s <= 0:
        raise InputError(f"the run's duration must be positive, got {duration_s} s")
    timeline = _Timeline(slots)
    now_mean = timeline.mean(now_s, now_s + duration_s)
    best: tuple[int, float] | None = None if now_mean is None else (now_s, now_mean)
    latest = now_s if now_mean is not None else None
    for start, value in zip(timeline.starts, timeline.values, strict=True):
        if value is None or start <= now_s or start > now_s + within_s:
            continue
        mean = timeline.mean(start, start + duration_s)
        if mean is None:
            continue
        latest = start
        if best is None or mean < best[1] - _SAME * abs(best[1]):
            best = (start, mean)
    if best is None or latest is None:
        reach_s = max(timeline.ends[-1] - now_s, 0) if timeline.ends else 0
        raise InputError(
            f"a run of {_hours(duration_s)} does not fit in the forecast, which reaches "
            f"{_hours(reach_s)} past now (a run must lie inside it, without a gap)"
        )
    return BestStart(best[0], best[1], now_s, now_mean, duration_s, latest, timeline.ends[-1])


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.4g} h"
