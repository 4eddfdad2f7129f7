"""``ledger recompute``: footprints accounted again from the usage the ledger keeps, with
the current config and factor data (a month's measured PUE, corrected grid hours, a
fixed hardware rule, a new factor table), without asking any scheduler.

Jobs are read in batches in key order (keyset on (cluster, job_id)), each batch inside
one write transaction: read, accounted by the same ``Accountant`` an import uses (with
the ledger's synced grid hours), and only the rows whose footprint changed are written,
through the ledger's own write path, so the running totals follow. The run is a row of
``recompute_runs``, updated in the same transaction with how far it got and what it
changed: a run that is killed is taken up where it stopped by the next run with the
same config, factor data and scope, and a run with nothing left to change changes
nothing (idempotent). Another writer waits for a batch at most. A grid sync runs one
over the jobs that waited for the hours it brought (``recompute_pending``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .accounting import Accountant, config_digest
from .config import Config
from .errors import FactorError, InputError
from .ledger import (
    JOB_COLUMNS,
    MISSING,
    USAGE_COLUMNS,
    Ledger,
    RecomputeRun,
    UsageScope,
    ledger_row,
    usage_record,
)
from .records import RecordProblem

_SITE, _MONTH = JOB_COLUMNS.index("site"), JOB_COLUMNS.index("month")
_CO2E, _KWH = JOB_COLUMNS.index("co2e_g"), JOB_COLUMNS.index("energy_facility_kwh")
_USAGE = len(USAGE_COLUMNS)
#: a run another host started, unchanged this long, is taken as stopped
_STALE_S = 600
#: jobs with incomplete usage and problems listed by name (all are counted)
LISTED = 20


@dataclass(slots=True)
class RecomputeReport:
    """What a recompute did (or, ``dry_run``, would do)."""

    run: RecomputeRun
    dry_run: bool
    resumed: bool = False
    incomplete: list[str] = field(default_factory=list)  # "cluster/job_id: missing ..."
    problems: list[RecordProblem] = field(default_factory=list)


def site_versions(accountant: Accountant) -> str:
    """The factor data each site's footprints are computed with, as the runs record it."""
    return json.dumps(
        {
            name: [site.pue_source, site.intensity_source, site.intensity_version]
            for name, site in sorted(accountant.sites.items())
        }
    )


def _alive(run: RecomputeRun, now: int) -> bool:
    """Whether the process of a run still marked running is still at it."""
    if run.host != socket.gethostname():
        return now - run.updated_at < _STALE_S
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(ledger: Ledger, run: RecomputeRun, now: int) -> bool:
    """Take up the latest stopped run with ``run``'s config, factor data and scope, or
    record ``run`` as a new one; mark the other stopped runs interrupted. Whether one
    was taken up."""
    resumed = False
    key = (run.config_digest, run.intensity_versions, run.scope)
    with ledger.writing():
        for earlier in reversed(ledger.recompute_runs()):  # the latest first
            running = earlier.status == "running"
            if not (earlier.status == "interrupted" or (running and not _alive(earlier, now))):
                continue
            if (
                not resumed
                and (
                    earlier.config_digest,
                    earlier.intensity_versions,
                    earlier.scope,
                )
                == key
            ):
                resumed = True
                run.run_id, run.started_at = earlier.run_id, earlier.started_at
                run.after_cluster, run.after_job_id = earlier.after_cluster, earlier.after_job_id
                run.jobs_seen, run.jobs_changed = earlier.jobs_seen, earlier.jobs_changed
                run.jobs_incomplete, run.jobs_failed = earlier.jobs_incomplete, earlier.jobs_failed
                run.deltas = earlier.deltas
            elif running:
                earlier.status = "interrupted"
                ledger.save_recompute_run(earlier)
        ledger.save_recompute_run(run)
    return resumed


def recompute(
    ledger: Ledger,
    config: Config,
    scope: UsageScope,
    *,
    dry_run: bool = False,
    batch_size: int = 5000,
    on_batch: Callable[[int], None] = lambda jobs: None,
    clock: Callable[[], float] = time.time,
) -> RecomputeReport:
    """Recompute the footprints of the jobs in ``scope``; ``on_batch`` is told after each
    batch how many jobs the run has seen (a run taken up: with those before it stopped).
    ``dry_run`` writes nothing and reports what would change."""
    accountant = Accountant(config, ledger.synced_site_factors(config))
    now = int(clock())
    run = RecomputeRun(
        None,
        now,
        now,
        socket.gethostname(),
        os.getpid(),
        json.dumps(scope.describe(), sort_keys=True),
        config_digest(config),
        accountant.factors_version,
        site_versions(accountant),
    )
    report = RecomputeReport(run, dry_run)
    if not dry_run:
        report.resumed = _start(ledger, run, now)
    after = run.after
    while True:
        with contextlib.nullcontext() if dry_run else ledger.writing():
            rows = ledger.usage_batch(after, scope, batch_size)
            if not rows:
                break
            changed = _recompute_rows(rows, accountant, report, int(clock()))
            after = rows[-1][0], rows[-1][1]
            if not dry_run:
                ledger.replace_footprints(changed)
                run.after_cluster, run.after_job_id = after
                run.updated_at = int(clock())
                ledger.save_recompute_run(run)
        on_batch(run.jobs_seen)
    if not dry_run:
        run.status, run.updated_at = "finished", int(clock())
        with ledger.writing():
            ledger.save_recompute_run(run)
    return report


def recompute_pending(
    ledger: Ledger, config: Config, clock: Callable[[], float] = time.time
) -> RecomputeReport | None:
    """After a grid sync: recompute the jobs that waited for grid hours (accounted with
    a provider's fallback) whose every hour is synced now, as a recompute run of their
    own (``ledger history`` lists it); None when no job waits for hours that came."""
    scope = UsageScope(pending_covered=True)
    if ledger.usage_count(scope) == 0:
        return None
    return recompute(ledger, config, scope, clock=clock)


def _recompute_rows(
    rows: list[tuple[Any, ...]], accountant: Accountant, report: RecomputeReport, now: int
) -> list[tuple[Any, ...]]:
    """The job rows (with ``now`` as recorded_at) whose footprint ``rows`` (usage, then
    the stored jobs row) no longer match; counted in the report's run."""
    run = report.run
    changed: list[tuple[Any, ...]] = []
    for row in rows:
        run.jobs_seen += 1
        usage, old = row[:_USAGE], row[_USAGE:]
        if usage[MISSING] is not None:
            run.jobs_incomplete += 1
            if len(report.incomplete) < LISTED:
                report.incomplete.append(f"{usage[0]}/{usage[1]}: missing {usage[MISSING]}")
        try:
            new = ledger_row(accountant.account(usage_record(usage)))
        except (FactorError, InputError) as err:
            run.jobs_failed += 1
            if len(report.problems) < LISTED:
                report.problems.append(RecordProblem(f"job {usage[0]}/{usage[1]}", str(err)))
            continue
        if new == old:
            continue
        changed.append((*new, now))
        run.jobs_changed += 1
        gained = run.deltas.setdefault((new[_SITE], new[_MONTH]), [0, 0.0, 0.0])
        lost = run.deltas.setdefault((old[_SITE], old[_MONTH]), [0, 0.0, 0.0])
        gained[0] += 1
        gained[1] += new[_CO2E]
        gained[2] += new[_KWH]
        lost[1] -= old[_CO2E]
        lost[2] -= old[_KWH]
    return changed


@dataclass(frozen=True, slots=True)
class Outdated:
    """Jobs of a cluster at a site whose footprints were computed with other factors
    than the current config gives (``data_only``: only a provider's synced hours moved
    on since, which is not the config's doing)."""

    site: str
    cluster: str
    jobs: int
    differences: tuple[str, ...]
    data_only: bool

    @property
    def command(self) -> str:
        """The recompute that brings them up to date."""
        return f"jobcarbon ledger recompute --site {self.site} --cluster {self.cluster}"


def outdated(ledger: Ledger, config: Config) -> list[Outdated]:
    """What in the ledger was computed with other factors than ``config`` gives now, by
    site and cluster (one grouped read of the jobs table)."""
    accountant = Accountant(config, ledger.synced_site_factors(config))
    found: dict[tuple[str, str], tuple[int, set[str], bool]] = {}
    for group in ledger.provenance():
        if group.cluster not in config.clusters:
            differences = {f"cluster {group.cluster} is no longer in the config"}
            data_only = False
        else:
            now = accountant.provenance(group.cluster)
            site = config.clusters[group.cluster].site
            pairs = {
                "site": (group.site, site),
                "factor tables": (group.factors_version, accountant.factors_version),
                "PUE": (group.pue_source, now.pue_source),
                "config": (group.config_digest, now.config_digest),
                "intensity": (group.intensity_source, now.intensity_source),
                "intensity data": (group.intensity_version, now.intensity_version),
            }
            differing = [what for what, (was, is_now) in pairs.items() if was != is_now]
            if not differing:
                continue
            differences = {
                f"{what} {pairs[what][0] or 'not recorded (before schema v9)'}, "
                f"now {pairs[what][1]}"
                for what in differing
            }
            provider = (now.intensity_source or "").startswith("provider")
            data_only = provider and differing == ["intensity data"]
        key = (group.site, group.cluster)
        jobs, seen, only = found.get(key, (0, set(), True))
        found[key] = (jobs + group.jobs, seen | differences, only and data_only)
    return [
        Outdated(site, cluster, jobs, tuple(sorted(differences)), data_only)
        for (site, cluster), (jobs, differences, data_only) in sorted(found.items())
    ]
