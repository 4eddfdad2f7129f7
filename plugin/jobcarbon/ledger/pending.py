"""The jobs waiting for grid hours: accounted with a provider's fallback for an hour of
their run that had no synced value yet (``jobs.intensity_pending``, schema v10), and
the ``Ledger``'s readers that find them again once the grid table has every hour."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..site import HOUR_S
from .dialect import quoted
from .rows import JOB_COLUMNS

# A run's hours, in epoch hours: from the start's hour to the hour of its last second.
_FIRST_HOUR = f"j.start_time / {HOUR_S}"
_LAST_HOUR = f"(j.end_time - 1) / {HOUR_S}"

#: the waiting jobs of a site with as many stored hours in their run as it has hours
COVERED = (
    f"SELECT {quoted(JOB_COLUMNS)} FROM jobs AS j WHERE j.intensity_pending = 1 "
    "AND j.site = ? AND (SELECT COUNT(*) FROM grid_hours AS g WHERE g.site = j.site "
    f"AND g.hour >= {_FIRST_HOUR} AND g.hour <= {_LAST_HOUR}) = "
    f"{_LAST_HOUR} - {_FIRST_HOUR} + 1 ORDER BY j.cluster, j.job_id"
)

EARLIEST = (
    "SELECT MIN(start_time) FROM jobs WHERE intensity_pending = 1 AND site = ? AND end_time >= ?"
)


class PendingJobs:
    """A part of ``Ledger``: its readers of the jobs waiting for grid hours."""

    _query: Callable[[str, Iterable[Any]], Any]

    def pending_covered(self, site: str) -> list[tuple[Any, ...]]:
        """The rows (``JOB_COLUMNS``) of ``site``'s waiting jobs whose every hour is in
        the grid table now: the ones to account again."""
        return [tuple(row) for row in self._query(COVERED, [site]).fetchall()]

    def pending_since(self, site: str, ended_after_s: int) -> int | None:
        """The earliest start (epoch seconds) of ``site``'s waiting jobs that ended at or
        after ``ended_after_s``, or None: where a sync asks its provider again from."""
        (earliest,) = self._query(EARLIEST, [site, ended_after_s]).fetchone()
        return None if earliest is None else int(earliest)
