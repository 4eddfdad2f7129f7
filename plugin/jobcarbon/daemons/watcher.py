"""Kubernetes: the pod watcher that accounts every GPU pod once, when it ends.

It lists the pods (in pages) and then watches them from the list's
resourceVersion, with bookmarks, so that a restart of the watch resumes where it
was. Each pod that requested GPUs (or any pod, with ``kubernetes.cpu_pods``) is
accounted when it ends — phase Succeeded or Failed, or deleted — keyed by its UID;
pods already in the ledger are skipped, so a re-list after a restart writes nothing
twice. Running pods are kept in memory, and their usage so far is written every
``running_interval_s`` for the exporter's ``jobcarbon_running_*`` gauges. The provider
sites' grid hours are synced every ``grid_sync_interval_s`` in the background
(``daemons/gridschedule.py``), and pods are accounted with them.

Failures never stop it: ``410 Gone`` (the watch's resourceVersion is too old)
re-lists; a cut or silent connection, an API server restarting or answering with
an error status reconnects after a backoff with jitter (``retry_first_s`` doubling
up to ``retry_max_s``, or the server's Retry-After); a ledger that cannot be written
keeps the finished pods in memory and tries again. The watcher's health (when it
last heard from the API server, its restarts by reason) goes to the ledger, where
``jobcarbon serve`` exposes it; ``/healthz`` and ``/readyz`` answer the kubelet.

The HTTP reading runs in a thread that hands lines to the accounting over a queue:
the accounting writes a batch whenever it has caught up with the stream, so a burst
of events makes large batches and a quiet stream is written at once.

Pods that ended and were deleted while no watcher ran are not seen: the API
keeps no history (keep finished pods longer than a watcher outage, e.g. with a
Job's ``ttlSecondsAfterFinished``).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..accounting import IngestReport, ingest
from ..backoff import backoff_s
from ..config import Config
from ..errors import FactorError, InputError, LedgerError, TemporaryError
from ..ledger import Ledger, Running
from ..records import JobRecord, RecordProblem
from ..sources.dcgm import DcgmEnergy
from ..sources.kubernetes.api import END, ApiError, Disconnected, Expired, PodApi, read_in_thread
from ..sources.kubernetes.pods import (
    Pod,
    PodFacts,
    facts,
    first_start,
    is_finished,
    measured_record,
    pod_record,
)
from .gridschedule import GridSchedule, SyncRound
from .reload import Reloader
from .watchhealth import Health

log = logging.getLogger("jobcarbon.kubernetes")

SOURCE = "kubernetes"
#: Problems a long-running watcher keeps in memory (all are logged and counted).
KEPT_PROBLEMS = 1000


@dataclass(slots=True)
class _Tracked:
    """A running pod the watcher keeps: its latest object and the earliest start seen."""

    pod: Pod
    facts: PodFacts
    seen_start: datetime | None


@dataclass(frozen=True, slots=True)
class _Ended:
    pod: Pod
    facts: PodFacts
    deleted: bool
    seen_start: datetime | None
    observed_at: datetime


class Watcher:
    """Lists, then watches, the pods of a cluster into the ledger."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        api: PodApi,
        energy: DcgmEnergy | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        namespace: str | None = None,
    ) -> None:
        self.config = config
        self.settings = config.kubernetes
        self.cluster = self.settings.cluster or next(iter(config.clusters))
        self.attribution = config.cluster(self.cluster).attribution
        namespaces = [namespace] if namespace else self.settings.namespaces
        self.namespaces = frozenset(namespaces)
        self.ledger = ledger
        self.api = api
        self.energy = energy
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.grid = GridSchedule(config, self.settings.grid_sync_interval_s, ledger, clock)
        self.rng = random.Random()
        self.health = Health()
        self.resource_version: str | None = None
        # everything accounted since the start; the problems themselves only up to
        # KEPT_PROBLEMS (each is logged as it happens), their number in ``problems``
        self.report = IngestReport()
        self.problems = 0
        self._running: dict[str, _Tracked] = {}
        self._done: set[str] = set()  # finished pods already accounted (until deleted)
        self._ended: list[_Ended] = []  # finished pods not written yet
        self._nodes: dict[str, dict[str, str]] = {}
        self._running_written = -float("inf")
        self._reloader: Reloader | None = None

    @property
    def running_pods(self) -> int:
        return len(self._running)

    # -- what the API server says -------------------------------------------------

    def _heard(self) -> None:
        self.health.last_contact = self.clock()
        self.health.last_contact_monotonic = self.monotonic()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _watched(self, pod: Pod) -> bool:
        namespace = (pod.get("metadata") or {}).get("namespace")
        return not self.namespaces or namespace in self.namespaces

    def _node_labels(self, node: str) -> dict[str, str]:
        if not node:
            return {}
        labels = self._nodes.get(node)
        if labels is None:
            labels = self._nodes[node] = self.api.node_labels(node)
        return labels

    def relist(self) -> None:
        """List every pod (page by page) and take the list as the new truth. Only the
        pods that are accounted are kept past their page: a large cluster's list of
        other pods never sits in memory whole."""
        listed = 0
        present: set[str] = set()
        seen: dict[str, tuple[Pod, PodFacts]] = {}
        token: str | None = None
        self._nodes = {}  # labels may have changed; read again as pods need them
        while True:
            page = self.api.list_pods(token)
            self._heard()
            self.health.heartbeat = self.monotonic()
            listed += len(page.items)
            for pod in page.items:
                if not self._watched(pod):
                    continue
                try:
                    pod_facts = facts(pod, self.settings)
                except InputError as err:
                    self._problem(str(err))
                    continue
                present.add(pod_facts.uid)
                if pod_facts.accounted:
                    seen[pod_facts.uid] = (pod, pod_facts)
            token = page.continue_token
            if token is None:
                break
        now = self._now()
        finished = [uid for uid, (obj, _) in seen.items() if is_finished(obj)]
        known = self.ledger.known_jobs(self.cluster, finished) | (self._done & set(finished))
        # pods that were running and are gone: they ended while the watch was down
        for uid, tracked in list(self._running.items()):
            if uid not in present:
                self._end(tracked.pod, tracked.facts, deleted=True, observed_at=now)
        running: dict[str, _Tracked] = {}
        for uid, (obj, pod_facts) in seen.items():
            if uid in known:
                continue
            if is_finished(obj):
                self._end(obj, pod_facts, deleted=False, observed_at=now)
            else:
                previous = self._running.get(uid)
                running[uid] = _Tracked(obj, pod_facts, _earliest(previous, obj))
        self._running = running
        self._done = known
        self.resource_version = page.resource_version
        self.health.listed = True
        log.info(
            "listed %d pod(s) at resourceVersion %s: %d running, %d ended to account",
            listed,
            page.resource_version,
            len(self._running),
            len(self._ended),
        )

    def _end(self, pod: Pod, pod_facts: PodFacts, deleted: bool, observed_at: datetime) -> None:
        self._node_labels(pod_facts.node)  # now, while the node is likely still there
        tracked = self._running.pop(pod_facts.uid, None)
        self._ended.append(_Ended(pod, pod_facts, deleted, _earliest(tracked, pod), observed_at))

    def handle(self, event: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            status = int(obj.get("code") or 0)
            message = f"the watch ended with {status} {obj.get('reason')}: {obj.get('message')}"
            raise Expired(message, status) if status == 410 else ApiError(message, status)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED") or not self._watched(obj):
            return
        try:
            pod_facts = facts(obj, self.settings)
        except InputError as err:
            self._problem(str(err))
        else:
            self._pod_event(kind, obj, pod_facts)
        self.resource_version = version or self.resource_version

    def _pod_event(self, kind: str, pod: Pod, pod_facts: PodFacts) -> None:
        uid = pod_facts.uid
        if kind == "DELETED":
            if uid in self._done:
                self._done.discard(uid)  # accounted when it finished; no more events
            elif pod_facts.accounted:
                self._end(pod, pod_facts, deleted=not is_finished(pod), observed_at=self._now())
            return
        if not pod_facts.accounted or uid in self._done:
            return
        if is_finished(pod):
            self._end(pod, pod_facts, deleted=False, observed_at=self._now())
            self._done.add(uid)
        else:
            self._running[uid] = _Tracked(pod, pod_facts, _earliest(self._running.get(uid), pod))

    def _problem(self, message: str) -> None:
        self._keep([RecordProblem("kubernetes", message)])
        self.ledger.add_ingest_errors({"parse": 1})
        log.warning("%s", message)

    def _keep(self, problems: list[RecordProblem]) -> None:
        self.problems += len(problems)
        room = KEPT_PROBLEMS - len(self.report.problems)
        self.report.problems.extend(problems[: max(room, 0)])

    # -- into the ledger ----------------------------------------------------------

    def _record(self, ended: _Ended) -> JobRecord | RecordProblem:
        pod_facts = ended.facts
        try:
            record = pod_record(
                ended.pod,
                self.cluster,
                self._nodes.get(pod_facts.node, {}),
                self.settings,
                self.attribution,
                ended.observed_at,
                deleted=ended.deleted,
                seen_start=ended.seen_start,
            )
        except InputError as err:
            return RecordProblem(f"pod {pod_facts.namespace}/{pod_facts.name}", str(err))
        return measured_record(record, pod_facts, self.energy)

    def flush(self) -> None:
        """Account the pods that ended, in one batch; kept for the next try if the
        ledger cannot be written."""
        if not self._ended:
            return
        ended = self._ended
        try:
            report = ingest((self._record(e) for e in ended), self.grid.accountant, self.ledger)
        except LedgerError as err:
            log.error("cannot write %d pod(s) to the ledger, will retry: %s", len(ended), err)
            self.health.ledger_error = str(err)
            return
        self.health.ledger_error = None
        self._ended = []
        self.report.seen += report.seen
        self.report.written += report.written
        self.report.unchanged += report.unchanged
        self._keep(report.problems)
        for problem in report.problems:
            log.warning("%s", problem)
        log.info("accounted %d pod(s), %d unchanged", report.written, report.unchanged)

    def write_running(self) -> None:
        """The running pods' usage so far, by label set; and the watcher's health."""
        now = self._now()
        rows: dict[tuple[str, str, str], Running] = {}
        for tracked in self._running.values():
            if tracked.seen_start is None:  # not started yet (it includes the pod's own)
                continue
            try:
                record = pod_record(
                    tracked.pod,
                    self.cluster,
                    self._node_labels(tracked.facts.node),
                    self.settings,
                    self.attribution,
                    now,
                    seen_start=tracked.seen_start,
                )
                accounted = self.grid.accountant.account(record)
            except (InputError, FactorError, ApiError):
                continue  # reported when the pod ends
            key = (record.user, record.project, accounted.gpu_model or "")
            row = Running(
                self.cluster,
                *key,
                jobs=1,
                gpus=record.gpu_count,
                gpu_seconds=record.gpu_seconds,
                energy_facility_kwh=accounted.footprint.energy_facility_kwh,
                co2e_g=accounted.footprint.co2e_g,
            )
            previous = rows.get(key)
            rows[key] = row if previous is None else previous.plus(row)
        source = f"{SOURCE}/{self.cluster}"
        try:
            self.ledger.set_running(self.cluster, list(rows.values()))
            if self.health.last_contact:
                self.ledger.set_gauge(f"{source}.last_contact", self.health.last_contact)
            for reason in ("expired", "disconnected", "api_error"):
                self.ledger.set_gauge(
                    f"{source}.restarts.{reason}", float(self.health.restarts[reason])
                )
            if not self._ended:  # else the pods waiting say the ledger still fails
                self.health.ledger_error = None
        except LedgerError as err:
            log.error("cannot write the running pods to the ledger: %s", err)
            self.health.ledger_error = str(err)
        self._running_written = self.monotonic()

    def reload(self, config: Config) -> None:
        """Go on with ``config``: its clusters, hardware rules, attribution and timing
        (the namespaces, API client and energy source stay until a restart)."""
        cluster = config.kubernetes.cluster or next(iter(config.clusters))
        attribution = config.cluster(cluster).attribution
        self.grid.use(config, config.kubernetes.grid_sync_interval_s)
        self.config, self.settings = config, config.kubernetes
        self.cluster, self.attribution = cluster, attribution

    def _tick(self) -> None:
        if self._reloader is not None:
            self._reloader.take(self.reload)
        self.health.heartbeat = self.monotonic()
        self.grid.tick()
        self.flush()
        if self.monotonic() - self._running_written >= self.settings.running_interval_s:
            self.write_running()

    # -- the loop -----------------------------------------------------------------

    def once(self) -> SyncRound | None:
        """Sync the grid, list, account the pods that have ended, write the running
        ones' usage. The grid's sync, if one was due."""
        synced = self.grid.tick(block=True)
        self.relist()
        self.flush()
        self.write_running()
        return synced

    def watch(self, should_stop: Callable[[], bool]) -> None:
        """One watch from ``resource_version`` until the server ends it (or it fails)."""
        assert self.resource_version is not None
        lines = self.api.watch_pods(self.resource_version)
        self._heard()
        events = read_in_thread(lines)
        while not should_stop():
            wait = self.settings.running_interval_s - (self.monotonic() - self._running_written)
            try:
                item = events.get(timeout=min(max(wait, 0.05), 1.0))
            except queue.Empty:
                self._tick()
                continue
            if item is END:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, str)
            self._heard()
            if item.strip():
                try:
                    event = json.loads(item)
                except ValueError:
                    self._problem(f"the watch sent a line that is not JSON: {item[:200]!r}")
                else:
                    self.handle(event)
            if events.empty():
                self._tick()
        self._tick()

    def run(self, should_stop: Callable[[], bool], reloader: Reloader | None = None) -> None:
        """List and watch until ``should_stop``; every failure is retried. A ``reloader``
        asked to (SIGHUP) gives a new config between two events."""
        self._reloader = reloader
        attempt = 0
        while not should_stop():
            try:
                if self.resource_version is None:
                    self.relist()
                    self._tick()
                self.watch(should_stop)
                attempt = 0
                continue
            except Expired as err:
                log.info("%s; listing again", err)
                self.health.restarts["expired"] += 1
                self.resource_version = None
                attempt += 1
                if attempt == 1:
                    continue  # re-list at once; wait only if it keeps expiring
                wait = 0.0
            except Disconnected as err:
                log.warning("%s; reconnecting", err)
                self.health.restarts["disconnected"] += 1
                attempt += 1
                wait = 0.0
            except TemporaryError as err:  # the API server's other failures
                log.warning("%s; will retry", err)
                self.health.restarts["api_error"] += 1
                self._count_api_error()
                attempt += 1
                wait = err.delay_s
            except LedgerError as err:  # the ledger could not even be read
                log.error("%s; will retry", err)
                attempt += 1
                wait = 0.0
            wait = max(
                wait,
                backoff_s(
                    attempt, self.settings.retry_first_s, self.settings.retry_max_s, self.rng
                ),
            )
            self._pause(wait, should_stop)
        self.flush()

    def _count_api_error(self) -> None:
        try:
            self.ledger.add_ingest_errors({SOURCE: 1})
        except LedgerError as err:
            log.error("cannot count an API error in the ledger: %s", err)

    def _pause(self, seconds: float, should_stop: Callable[[], bool]) -> None:
        deadline = self.monotonic() + seconds
        while not should_stop() and self.monotonic() < deadline:
            self.sleep(min(0.2, max(deadline - self.monotonic(), 0.0)))
            self._tick()

    # -- probes -------------------------------------------------------------------

    def alive(self) -> tuple[bool, str]:
        """``/healthz``: ``Health.alive``."""
        return self.health.alive(self.settings, self.monotonic())

    def ready(self) -> tuple[bool, str]:
        """``/readyz``: ``Health.ready``."""
        return self.health.ready(self.settings, self.monotonic(), len(self._ended))


def _earliest(tracked: _Tracked | None, pod: Pod) -> datetime | None:
    """The earliest start seen of a pod: kept across its status updates (restarts)."""
    starts = [s for s in (first_start(pod), tracked.seen_start if tracked else None) if s]
    return min(starts, default=None)
