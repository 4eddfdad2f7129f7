"""The jobs waiting for grid hours: accounted with a provider's fallback for an hour of
their run that had no synced value yet (``jobs.intensity_pending``, schema v10), and
the condition that finds them again once the grid table has every hour of their run
(``UsageScope.pending_covered``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..site import HOUR_S

# A run's hours, in epoch hours: from the start's hour to the hour of its last second.
_FIRST_HOUR = f"j.start_time / {HOUR_S}"
_LAST_HOUR = f"(j.end_time - 1) / {HOUR_S}"

#: a waiting job (``jobs AS j``) with as many stored hours in its run as it has hours
COVERED_NOW = (
    "j.intensity_pending = 1 AND (SELECT COUNT(*) FROM grid_hours AS g WHERE g.site = j.site "
    f"AND g.hour >= {_FIRST_HOUR} AND g.hour <= {_LAST_HOUR}) = "
    f"{_LAST_HOUR} - {_FIRST_HOUR} + 1"
)

EARLIEST = (
    "SELECT MIN(start_time) FROM jobs WHERE intensity_pending = 1 AND site = ? AND end_time >= ?"
)


class PendingJobs:
    """A part of ``Ledger``: its readers of the jobs waiting for grid hours."""

    _query: Callable[[str, Iterable[Any]], Any]

    def pending_since(self, site: str, ended_after_s: int) -> int | None:
        """The earliest start (epoch seconds) of ``site``'s waiting jobs that ended at or
        after ``ended_after_s``, or None: where a sync asks its provider again from."""
        (earliest,) = self._query(EARLIEST, [site, ended_after_s]).fetchone()
        return None if earliest is None else int(earliest)
