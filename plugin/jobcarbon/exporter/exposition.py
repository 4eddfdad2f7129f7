"""The text exposition of the metrics, and it gzip-compressed: rendered again only when
the ledger changed (or a minute passed, for factors that vary with time), so repeated
scrapes are cheap.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterable

from ..ledger import Aggregate
from .collector import LedgerCollector, job_series, last_end_family
from .spec import JOB_METRICS, SPECS, Family, MetricSpec

RERENDER_AFTER_S = 60.0
GZIP_LEVEL = 1  # measured at 5,000 label sets: see the README's Benchmarks


class Exporter:
    """Renders the text exposition, again only when the ledger changed or a minute passed.

    It keeps the rendered lines of every label set and, at each scrape, fetches from
    the ledger only the totals that changed since the last one (``changed_aggregates``),
    so a scrape costs little more than joining strings. It writes the text itself
    rather than through prometheus_client's ``generate_latest``, which re-validates
    every label name of every sample (about a second for 5,000 label sets here); label
    names are fixed in ``METRICS``. With ``drop_user_label`` (totals merged over users)
    every scrape renders afresh. Scrapes at the same moment take turns (``_lock``);
    those that find the ledger unchanged are answered from the cache.
    """

    def __init__(
        self, collector: LedgerCollector, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.collector = collector
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], float, bytes] | None = None
        self._gzipped: tuple[bytes, bytes] | None = None  # a body, and it compressed
        self._seen = -1  # change number of the ledger totals read so far
        self._rows: dict[tuple[str, ...], tuple[Aggregate, list[str]]] = {}

    def render(self) -> bytes:
        """The exposition now. Never raises: a failure answers ``ledger_up 0``."""
        with self._lock:
            try:
                version = self.collector.data_version()
                now = self.clock()
                cached = self._cached
                if (
                    cached is not None
                    and cached[0] == version
                    and now - cached[1] < RERENDER_AFTER_S
                ):
                    return cached[2]
                body = self._render()
            except Exception as err:
                # start again from nothing at the next scrape
                self._cached, self._seen, self._rows = None, -1, {}
                return _text(self.collector.failed(err))
            self._cached = (version, now, body)
            return body

    def render_gzip(self) -> bytes:
        """``render()`` gzip-compressed, compressed again only when the body changed."""
        body = self.render()
        with self._lock:
            if self._gzipped is None or self._gzipped[0] is not body:
                self._gzipped = (body, gzip.compress(body, GZIP_LEVEL, mtime=0))
            return self._gzipped[1]

    def health(self) -> tuple[bool, str]:
        """Whether a scrape now reads the ledger, and what went wrong if not (a
        scrape itself, so answered from the cache while the ledger is unchanged)."""
        self.render()
        error = self.collector.last_error
        if error is None:
            return True, "the ledger is readable"
        return False, f"scrapes fail ({self.collector.ledger_errors} so far): {error}"

    def _render(self) -> bytes:
        if self.collector.config.exporter.drop_user_label:
            return _text(self.collector.read_snapshot())
        changed, seen = self.collector.changed_aggregates(self._seen)
        for row in changed:
            if row.jobs_added:  # emptied label sets stay: their counters keep their value
                self._rows[row.labels] = (row, _row_lines(row))
            else:
                self._rows.pop(row.labels, None)
        self._seen = seen
        out = [_text(self.collector.read_snapshot(include_jobs=False))]
        for index, name in enumerate(JOB_METRICS):
            out.append(_header(SPECS[name]).encode())
            out.append("".join(lines[index] for _, lines in self._rows.values()).encode())
        out.append(_text([last_end_family(row for row, _ in self._rows.values())]))
        return b"".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(spec: MetricSpec) -> str:
    # the text format escapes \ and newline in HELP (not quotes, as in label values)
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n"


# the text format's names for what repr() writes inf, -inf and nan
_NON_FINITE = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _number(value: float) -> str:
    text = repr(value)
    return _NON_FINITE.get(text, text)


def _line(spec: MetricSpec, labels: tuple[str, ...], value: float) -> str:
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(spec.labels, labels, strict=True))
    number = _number(value)
    return f"{spec.name}{{{inner}}} {number}\n" if inner else f"{spec.name} {number}\n"


def _row_lines(row: Aggregate) -> list[str]:
    """The exposition lines of one label set, one string per metric of JOB_METRICS."""
    lines = [""] * len(JOB_METRICS)
    for index, labels, value in job_series(row):
        lines[index] += _line(SPECS[JOB_METRICS[index]], labels, value)
    return lines


def _text(families: Iterable[Family]) -> bytes:
    return "".join(
        _header(f.spec) + "".join(_line(f.spec, labels, value) for labels, value in f.series)
        for f in families
    ).encode()
