"""Backfill: every Slurm job that ended in a range, window by window, resuming where an
earlier run stopped (a watermark per start day in the ledger)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from ..accounting import IngestReport
from ..ledger import Ledger
from .collector import Collector


def backfill_windows(
    since: datetime, until: datetime, window_s: int = 86400
) -> Iterator[tuple[datetime, datetime]]:
    """``[since, until)`` cut into windows of ``window_s`` seconds."""
    start = since
    while start < until:
        end = min(until, datetime.fromtimestamp(start.timestamp() + window_s, UTC))
        yield start, end
        start = end


class Backfill:
    """The windows of ``[since, until)`` still to read, and the loop that reads them."""

    def __init__(
        self,
        collector: Collector,
        ledger: Ledger,
        since: datetime,
        until: datetime,
        window_s: int,
        restart: bool = False,
    ) -> None:
        self.collector = collector
        self.ledger = ledger
        self.mark_name = f"slurm.backfill.{int(since.timestamp())}"
        mark = None if restart else ledger.watermark(self.mark_name)
        #: where an earlier run stopped, if this one goes on from there
        self.resumed_at: datetime | None = None
        start = since
        if mark is not None and since.timestamp() < mark < until.timestamp():
            start = self.resumed_at = datetime.fromtimestamp(mark, UTC)
        self.windows = list(backfill_windows(start, until, window_s))

    def run(self, window_done: Callable[[datetime], None] = lambda end: None) -> IngestReport:
        """Account each window and move the watermark past it; ``window_done`` is told
        each window's end."""
        total = IngestReport()
        for window_start, window_end in self.windows:
            total.add(self.collector.account_window(window_start, window_end))
            self.ledger.set_watermark(self.mark_name, int(window_end.timestamp()))
            window_done(window_end)
        return total
