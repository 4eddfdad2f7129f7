"""The grid sync on a schedule, for the long-running collector and pod watcher.

Every ``interval_s`` (``slurm.grid_sync_interval_s``, ``kubernetes.grid_sync_interval_s``;
0: never) each provider site's hours are synced by ``gridsync.sync_site`` (from where
the last sync stopped), in a thread with its own ledger connection, so that a slow or
failing provider never holds up the accounting. A failure is logged and counted in the
ledger's ingest errors (stage ``grid``); a refused credential names the site's setting
to fix; the next sync tries again.

When a sync has ended, the daemon's ``accountant`` is built again with the synced hours
(as it is on a config reload, ``use``) and the jobs that waited for hours now synced are
recomputed from their usage (``recompute.recompute_pending``, a run ``ledger history``
lists).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..accounting import Accountant
from ..config import Config
from ..errors import JobcarbonError, LedgerError, PermanentError, TemporaryError
from ..ledger import Ledger, open_ledger
from ..recompute import recompute_pending
from ..sources.grid import Unauthorized
from .gridsync import SiteSync, provider_sites, site_client, sync_site

log = logging.getLogger("jobcarbon.grid")

#: the ingest errors' stage a failed sync is counted in
STAGE = "grid"
#: what a sync of one site may fail with (anything else is a bug, and raised)
_FAILURES = (JobcarbonError, TemporaryError, PermanentError)


@dataclass(slots=True)
class SyncRound:
    """One scheduled sync: each site's outcome, the failures, and the jobs accounted again."""

    synced: list[SiteSync] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    recomputed: int = 0


class GridSchedule:
    """Runs the grid sync of a config's provider sites every ``interval_s`` and keeps the
    ``Accountant`` that accounts with the synced hours."""

    def __init__(
        self,
        config: Config,
        interval_s: float,
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        # the thread opens its own connection to the ledger the daemon opened (a new
        # ledger.url needs a restart, as the daemons say)
        self._ledger_config = config
        self._started_at: float | None = None
        self._thread: threading.Thread | None = None
        self._done: SyncRound | None = None
        self.use(config, interval_s)

    def use(self, config: Config, interval_s: float) -> None:
        """Go on with ``config`` (at the start, and on a reload): its provider sites, and
        an accountant with their synced hours."""
        accountant = Accountant(config, self.ledger.synced_site_factors(config))
        self.config, self.interval_s, self.accountant = config, interval_s, accountant
        self.sites = provider_sites(config)

    @property
    def due(self) -> bool:
        if not self.sites or self.interval_s <= 0 or self._thread is not None:
            return False
        return self._started_at is None or self.clock() - self._started_at >= self.interval_s

    def tick(self, block: bool = False) -> SyncRound | None:
        """Take a sync that has ended (the accountant rebuilt, the waiting jobs accounted
        again), then start one if it is due, in a thread (``block``: here, and take it
        at once). The round taken, if any."""
        taken = self._take()
        if self.due:
            self._started_at = self.clock()
            config = self.config
            if block:
                self._done = self._sync(config)
                return self._take() or taken
            self._thread = threading.Thread(
                target=self._in_background, args=(config,), name="grid-sync", daemon=True
            )
            self._thread.start()
        return taken

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for the sync in its thread to end (it is taken by the next ``tick``)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _in_background(self, config: Config) -> None:
        self._done = self._sync(config)

    def _sync(self, config: Config) -> SyncRound:
        """Every provider site's sync, on a connection of its own; never raises for a
        site that fails (its error is kept in the round)."""
        done = SyncRound()
        now = datetime.fromtimestamp(self.clock(), UTC)
        try:
            with open_ledger(self._ledger_config, migrate=False) as ledger:
                for site in provider_sites(config):
                    try:
                        result = sync_site(ledger, site, site_client(config, site), None, now)
                    except _FAILURES as err:
                        result = SiteSync(site, now, now, 0, err)
                    done.synced.append(result)
                    if result.error is not None:
                        done.errors.append(_failure(config, result))
        except LedgerError as err:
            done.errors.append(f"grid sync: {err}")
        return done

    def _take(self) -> SyncRound | None:
        """A sync that has ended: logged, its failures counted, the accountant rebuilt
        and the waiting jobs whose hours came accounted again."""
        if self._thread is not None:
            if self._thread.is_alive():
                return None
            self._thread.join()
            self._thread = None
        done, self._done = self._done, None
        if done is None:
            return None
        for result in done.synced:
            if result.error is None:
                log.info(
                    "grid sync: site %s, %d hour(s) written, %s to %s",
                    result.site,
                    result.hours_written,
                    f"{result.since:%Y-%m-%d %H:%M}",
                    f"{result.until:%Y-%m-%d %H:%M} UTC",
                )
        for error in done.errors:
            log.warning("%s; the next sync tries again", error)
        try:
            if done.errors:
                self.ledger.add_ingest_errors({STAGE: len(done.errors)})
            self.use(self.config, self.interval_s)
            report = recompute_pending(self.ledger, self.config, self.clock)
        except LedgerError as err:
            log.error("grid sync: cannot account the synced hours yet: %s", err)
            done.errors.append(str(err))
            return done
        if report is not None:
            done.recomputed = report.run.jobs_changed
            log.info(
                "recompute run %d: %d job(s) that waited for grid hours accounted again",
                report.run.run_id,
                report.run.jobs_changed,
            )
        return done


def _failure(config: Config, result: SiteSync) -> str:
    """What failed in a site's sync, and for a refused credential, the setting to fix."""
    provider = config.sites[result.site].grid.provider
    assert provider is not None and result.error is not None
    message = (
        f"grid sync of site {result.site} ({provider.name}) stopped after "
        f"{result.hours_written} hour(s): {result.error}"
    )
    if isinstance(result.error, Unauthorized):
        key = f"sites.{result.site}.grid.provider"
        if provider.token_file is not None:
            message += f"; its credential is read from {key}.token_file ({provider.token_file})"
        elif provider.token_env is not None:
            message += f"; its credential is read from {key}.token_env (${provider.token_env})"
        else:
            message += f"; set {key}.token_env or {key}.token_file"
    return message
