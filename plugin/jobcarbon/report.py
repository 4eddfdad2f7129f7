"""The monthly report of each user, or of each project for its leads, read from the ledger.

Every figure is a ledger query over the jobs of the month (by end time, UTC), the same
queries ``jobcarbon summary`` runs, so an e-mail and the summary agree to the digit.
The whole month is read in a handful of grouped queries, not a few per person, so the
reports of thousands of users take seconds. The advice is chosen from the person's own
figures, in the spirit of the seed paper's mitigation section (Lacoste et al. 2019,
section 4): waste less hardware time, pick a cleaner site or time, and report the
footprint. No I/O but the ledger; rendering and sending live in ``mail``.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from . import factors
from .config import Config
from .estimate import EquivalentAmount
from .ledger import Dimension, FactorsUsed, Filters, Habits, Ledger, SummaryRow
from .quantity import co2e, percent, significant
from .site import HOUR_S, Constant, HourlySeries

Audience = Literal["user", "lead"]
AUDIENCES: tuple[Audience, ...] = ("user", "lead")

#: Thresholds of the advice (shares of the person's GPU-hours, or ratios).
FAILED_SHARE = 0.10
CANCELLED_SHARE = 0.20
BUSY_SHARE = 0.50
MIN_GPU_HOURS = 1.0
CLEANER_SITE_RATIO = 0.6
CLEANER_HOURS_RATIO = 0.85
CLEANER_HOURS_WINDOW = 6
LARGEST_JOBS = 5
NO_GPU = "no GPU"
UNNAMED_GPU = "GPU model not known"


@dataclass(frozen=True, slots=True)
class Suggestion:
    key: str  # which rule chose it: failed-jobs, idle-gpus, cleaner-hours, ...
    text: str


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    """One person's (or one project's) month, with what to compare it to."""

    audience: Audience
    name: str  # the user, or the project
    month: str
    totals: SummaryRow
    history: tuple[SummaryRow, ...]  # the months up to this one, oldest first (key: month)
    by_project: tuple[SummaryRow, ...]
    by_cluster: tuple[SummaryRow, ...]
    by_gpu_model: tuple[SummaryRow, ...]
    members: tuple[SummaryRow, ...]  # a project's users (lead reports only)
    largest_jobs: tuple[Mapping[str, Any], ...]
    habits: Habits
    peers: int  # people (or projects) with jobs this month
    lower_percent: float  # share of them whose emissions were lower
    equivalents: tuple[EquivalentAmount, ...]
    factors: tuple[FactorsUsed, ...]
    suggestions: tuple[Suggestion, ...]
    #: how many of the jobs with energy got their market-based figure from each source
    #: (``site.MarketSource``), most first
    market_sources: tuple[tuple[str, int], ...] = ()
    #: how many jobs got their embodied figure from each node figure (a bundled entry's
    #: name, or "site config"), most first; the jobs not configured are not in it
    embodied_sources: tuple[tuple[str, int], ...] = ()

    @property
    def failed_percent(self) -> float:
        """Share of the GPU-hours (or, without GPUs, of nothing) on failed jobs."""
        return _percent(self.habits.failed_gpu_hours, self.habits.gpu_hours)

    @property
    def jobs_without_energy(self) -> int:
        """Jobs that used no energy and so no factors: ``totals.jobs`` less those in ``factors``."""
        return self.totals.jobs - sum(f.jobs for f in self.factors)

    @property
    def busy_percent(self) -> float | None:
        """How busy the allocated GPUs were, where measured; None if never measured."""
        if self.habits.measured_gpu_hours <= 0:
            return None
        return _percent(self.habits.busy_gpu_hours, self.habits.measured_gpu_hours)


def months_up_to(month: str, count: int) -> tuple[str, ...]:
    """``count`` calendar months ending with ``month``, oldest first."""
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + number - 1
    return tuple(f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1))


def previous_month(now: datetime) -> str:
    """The calendar month (UTC) before the one ``now`` is in."""
    return months_up_to(f"{now.astimezone(UTC):%Y-%m}", 2)[0]


def monthly_reports(
    ledger: Ledger,
    config: Config,
    month: str,
    audience: Audience,
    names: Collection[str] | None = None,
) -> list[MonthlyReport]:
    """The reports of everyone with jobs in ``month`` (only ``names`` if given).

    Largest emissions first. A person without jobs that month gets no report.
    """
    outer: Dimension = "user" if audience == "user" else "project"
    month_only = Filters(month=month)
    people = ledger.summary(outer, month_only)
    if names is not None:
        wanted = set(names)
        chosen = [p for p in people if p.key in wanted]
    else:
        chosen = people
    if not chosen:
        return []
    ranked = sorted(p.co2e_kg for p in people)
    chart_months = months_up_to(month, config.mail.history_months)
    history = ledger.grouped(outer, "month", Filters(months=chart_months))
    by_project = ledger.grouped(outer, "project", month_only)
    by_cluster = ledger.grouped(outer, "cluster", month_only)
    by_gpu_model = ledger.grouped(outer, "gpu_model", month_only)
    by_site = ledger.grouped(outer, "site", month_only)
    members = ledger.grouped(outer, "user", month_only) if audience == "lead" else {}
    largest = ledger.largest_jobs(outer, LARGEST_JOBS, month_only)
    habits = ledger.habits(outer, month_only)
    factors_used = ledger.factors_used(outer, month_only)
    market_sources = ledger.market_sources(outer, month_only)
    embodied_sources = ledger.embodied_sources(outer, month_only)
    grid = _GridFacts.of(config, ledger, month)
    equivalents = factors.equivalents()
    reports = []
    for person in chosen:
        name = person.key
        report = MonthlyReport(
            audience=audience,
            name=name,
            month=month,
            totals=person,
            history=_fill_months(history.get(name, []), chart_months),
            by_project=tuple(by_project.get(name, [])),
            by_cluster=tuple(by_cluster.get(name, [])),
            by_gpu_model=tuple(
                replace(row, key=NO_GPU if row.gpu_hours == 0 else UNNAMED_GPU)
                if row.key == "(none)"
                else row
                for row in by_gpu_model.get(name, [])
            ),
            members=tuple(members.get(name, [])),
            largest_jobs=tuple(largest.get(name, [])),
            habits=habits[name],
            peers=len(people),
            lower_percent=_percent(bisect.bisect_left(ranked, person.co2e_kg), len(people)),
            equivalents=tuple(
                EquivalentAmount(
                    e.key, person.co2e_kg * 1000 / e.co2e_g_per_unit, e.description, e.source
                )
                for e in equivalents
            ),
            factors=tuple(factors_used.get(name, [])),
            suggestions=(),
            market_sources=tuple(market_sources.get(name, {}).items()),
            embodied_sources=tuple(embodied_sources.get(name, {}).items()),
        )
        advice = advise(report, by_site.get(name, []), grid)
        reports.append(replace(report, suggestions=advice))
    return reports


def _fill_months(rows: list[SummaryRow], months: tuple[str, ...]) -> tuple[SummaryRow, ...]:
    by_month = {r.key: r for r in rows}
    return tuple(by_month.get(m, SummaryRow(m, 0, 0.0, 0.0, 0.0, 0.0, 0.0)) for m in months)


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


# --- advice ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CleanerHours:
    """The cleanest run of hours of the day (UTC) at a site with hourly intensities."""

    site: str
    start_hour: int
    hours: int
    window_g_per_kwh: float
    day_g_per_kwh: float
    basis: str = ""  # the data it comes from, in words: synced hours or the configured series


@dataclass(frozen=True, slots=True)
class _GridFacts:
    """What the config knows about cleaner places and times to run, for one month."""

    site_of_cluster: Mapping[str, str]
    constant_g_per_kwh: Mapping[str, float]  # sites whose intensity is one number
    cleaner_hours: Mapping[str, CleanerHours]  # sites with hourly intensities

    @classmethod
    def of(cls, config: Config, ledger: Ledger, month: str) -> _GridFacts:
        """The sites' cleaner hours from the hours synced into the ledger for ``month``
        where there are, else from a configured hourly series."""
        constant: dict[str, float] = {}
        hours: dict[str, CleanerHours] = {}
        for name, site in config.site_factors.items():
            intensity = site.intensity_g_per_kwh
            if isinstance(intensity, Constant):
                constant[name] = intensity.value
            found = synced_cleanest_hours(ledger, name, month)
            if found is None and isinstance(intensity, HourlySeries) and intensity.by_hour:
                found = cleanest_hours(name, intensity, month)
                if found is not None:
                    found = replace(
                        found, basis=f"the site's hourly series (sites.{name}.grid.series)"
                    )
            if found is not None:
                hours[name] = found
        return cls(
            {name: cluster.site for name, cluster in config.clusters.items()}, constant, hours
        )


def synced_cleanest_hours(ledger: Ledger, site: str, month: str) -> CleanerHours | None:
    """``cleanest_hours`` of the site's hours synced from its provider for ``month``; None
    when the ledger lacks some hour of the day that month."""
    first, stop = _month_hours(month)
    synced = ledger.grid_hours(site, first, stop)
    series = HourlySeries({h.hour: h.intensity_g_per_kwh for h in synced})
    found = cleanest_hours(site, series, month) if synced else None
    if found is None:
        return None
    providers = ", ".join(sorted({h.provider for h in synced}))
    signals = ", ".join(sorted({h.signal for h in synced} - {""}))
    source = f"{providers} ({signals})" if signals else providers
    return replace(found, basis=f"the {len(synced)} hours synced from {source}")


def _month_hours(month: str) -> tuple[int, int]:
    """``[first, stop)`` of the calendar month (UTC) in epoch hours."""
    year, number = (int(part) for part in month.split("-"))
    first = int(datetime(year, number, 1, tzinfo=UTC).timestamp()) // HOUR_S
    next_year, next_number = (year + 1, 1) if number == 12 else (year, number + 1)
    return first, int(datetime(next_year, next_number, 1, tzinfo=UTC).timestamp()) // HOUR_S


def cleanest_hours(
    site: str, series: HourlySeries, month: str, window: int = CLEANER_HOURS_WINDOW
) -> CleanerHours | None:
    """The ``window`` consecutive hours of the day with the lowest mean intensity in ``month``.

    None when the series lacks some hour of the day in that month.
    """
    first, last = _month_hours(month)
    sums = [0.0] * 24
    counts = [0] * 24
    for hour in range(first, last):
        value = series.by_hour.get(hour)
        if value is not None:
            sums[hour % 24] += value
            counts[hour % 24] += 1
    if not all(counts):
        return None
    means = [s / c for s, c in zip(sums, counts, strict=True)]
    start = min(range(24), key=lambda h: sum(means[(h + i) % 24] for i in range(window)))
    window_mean = sum(means[(start + i) % 24] for i in range(window)) / window
    return CleanerHours(site, start, window, window_mean, sum(means) / 24)


def advise(
    report: MonthlyReport, by_site: list[SummaryRow], grid: _GridFacts
) -> tuple[Suggestion, ...]:
    """Two or three suggestions from the report's own figures, most telling first."""
    whose = "your" if report.audience == "user" else "the project's"
    habits = report.habits
    found: list[Suggestion] = []
    if habits.failed_gpu_hours >= MIN_GPU_HOURS and report.failed_percent >= FAILED_SHARE * 100:
        found.append(
            Suggestion(
                "failed-jobs",
                f"{significant(habits.failed_gpu_hours)} GPU-hours "
                f"({percent(report.failed_percent)} % of {whose} GPU time, "
                f"{co2e(habits.failed_co2e_kg)} CO2e) went to jobs that "
                "failed, timed out or ran out of memory. Try a new setup on a small, short "
                "allocation first, and checkpoint long runs so that a time limit does not "
                "throw the work away.",
            )
        )
    busy = report.busy_percent
    if busy is not None and habits.measured_gpu_hours >= MIN_GPU_HOURS and busy < BUSY_SHARE * 100:
        found.append(
            Suggestion(
                "idle-gpus",
                f"The GPUs of {whose} jobs were busy {percent(busy)} % of the time they were "
                f"allocated (over {significant(habits.measured_gpu_hours)} measured GPU-hours). "
                "An idle GPU still draws power: ask for fewer GPUs, or look at data loading "
                "and batch size.",
            )
        )
    for row in by_site:
        hours = grid.cleaner_hours.get(row.key)
        if hours and hours.window_g_per_kwh <= CLEANER_HOURS_RATIO * hours.day_g_per_kwh:
            end = (hours.start_hour + hours.hours) % 24
            cut = _percent(hours.day_g_per_kwh - hours.window_g_per_kwh, hours.day_g_per_kwh)
            found.append(
                Suggestion(
                    "cleaner-hours",
                    f"At site {row.key}, electricity between {hours.start_hour:02d}:00 and "
                    f"{end:02d}:00 UTC was {cut:.0f} % cleaner than the day's average this "
                    f"month ({hours.window_g_per_kwh:.0f} vs {hours.day_g_per_kwh:.0f} g "
                    f"CO2e/kWh, from {hours.basis}). Jobs that can wait are best run then "
                    "(sbatch --begin).",
                )
            )
            break
    cleaner = _cleaner_cluster(report, by_site, grid)
    if cleaner is not None:
        found.append(cleaner)
    cancelled_percent = _percent(habits.cancelled_gpu_hours, habits.gpu_hours)
    if habits.cancelled_gpu_hours >= MIN_GPU_HOURS and cancelled_percent >= CANCELLED_SHARE * 100:
        found.append(
            Suggestion(
                "cancelled-jobs",
                f"{significant(habits.cancelled_gpu_hours)} GPU-hours "
                f"({percent(cancelled_percent)} %) went "
                "to jobs cancelled before they ended. Watch the first minutes of a long run "
                "(logs, loss curve) and cancel early rather than late.",
            )
        )
    if report.largest_jobs and report.totals.co2e_kg > 0:
        job = report.largest_jobs[0]
        share = _percent(job["co2e_g"] / 1000, report.totals.co2e_kg)
        found.append(
            Suggestion(
                "largest-job",
                f"Job {job['job_id']} ({job['name'] or 'unnamed'}) on {job['cluster']} made "
                f"{percent(share)} % of {whose} emissions this month. Before running it again, "
                "check whether it can finish sooner or on fewer devices (profiling, mixed "
                "precision, a smaller model to try ideas on).",
            )
        )
    found.append(
        Suggestion(
            "report-it",
            "Put the footprint in the compute statement of your papers: `jobcarbon estimate` "
            "prints one (--latex, --markdown), as the seed paper recommends.",
        )
    )
    return tuple(found[:3])


def _cleaner_cluster(
    report: MonthlyReport, by_site: list[SummaryRow], grid: _GridFacts
) -> Suggestion | None:
    """A configured cluster on a much cleaner grid than where most of the emissions were."""
    if not by_site or not grid.constant_g_per_kwh:
        return None
    main = by_site[0]
    if main.energy_kwh <= 0:
        return None
    intensity = main.co2e_kg * 1000 / main.energy_kwh
    options = [
        (grid.constant_g_per_kwh[site], cluster)
        for cluster, site in sorted(grid.site_of_cluster.items())
        if site in grid.constant_g_per_kwh and site != main.key
    ]
    if not options:
        return None
    best_g_per_kwh, best_cluster = min(options)
    if best_g_per_kwh > CLEANER_SITE_RATIO * intensity:
        return None
    cut = _percent(intensity - best_g_per_kwh, intensity)
    return Suggestion(
        "cleaner-site",
        f"Most of this month's emissions came from site {main.key}, on a grid of "
        f"{intensity:.0f} g CO2e/kWh. Cluster {best_cluster} runs on {best_g_per_kwh:.0f} g "
        f"CO2e/kWh: the same energy there would emit about {cut:.0f} % less.",
    )
