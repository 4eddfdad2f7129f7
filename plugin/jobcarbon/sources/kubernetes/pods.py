"""Kubernetes pods → ``JobRecord``: what a pod requested, when it ran, how it ended.

Pure functions over pod and node objects as the API server sends them (JSON
dicts, the shapes of the Kubernetes API reference: Pod, PodSpec, PodStatus,
ContainerStatus, Node). No I/O: the watcher (``kubernetes.py``) feeds them.

- GPUs: a pod holds the larger of its init containers' largest request and the sum
  of its app containers' requests (the scheduler's rule), for every resource named
  in ``kubernetes.gpu_resources``; a MIG slice ``nvidia.com/mig-<N>g.<M>gb`` counts
  as N/7 of a GPU (A100 and H100 have seven compute slices). Extended resources are
  given as limits (a request defaults to its limit).
- Run time: from the first container start (init containers included) to the last
  container termination. When a container restarted, its first start is no longer in
  the status; the pod's ``startTime`` stands in for it. A pod deleted without a
  terminated status (node lost, forced deletion) ends when it was seen gone, or at
  its deletion time (the end of its grace period) if that came first.
- State: Succeeded → completed; Failed → timeout (DeadlineExceeded), preempted
  (evicted, node shutdown), out_of_memory (a container OOMKilled), node_fail, or
  failed; deleted before it ended → cancelled.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...config import AttributionConfig, KubernetesConfig
from ...errors import InputError
from ...records import JobRecord, JobState
from ..dcgm import DcgmEnergy, with_measurement

log = logging.getLogger("jobcarbon.kubernetes")

Pod = Mapping[str, Any]

#: MIG compute slices of a whole A100 or H100.
MIG_SLICES = 7
_MIG = re.compile(r"^nvidia\.com/mig-(\d+)g\.")
_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_SUFFIX = {
    None: 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_FINISHED_PHASES = {"Succeeded", "Failed"}
_PREEMPTED_REASONS = {"Evicted", "Preempting", "Shutdown", "NodeShutdown", "Terminated"}
_NODE_FAIL_REASONS = {"NodeLost", "UnexpectedAdmissionError", "NodeAffinity"}
_MODEL_SUFFIX = re.compile(r"-(MIG-.*|SHARED)$")


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity (``"500m"``, ``"64Gi"``, ``"2"``, ``"1e3"``) as a number."""
    if isinstance(text, int | float):
        return float(text)
    found = _QUANTITY.match(text.strip())
    if found is None:
        raise InputError(f"not a Kubernetes quantity: {text!r}")
    return float(found.group(1)) * _SUFFIX[found.group(2)]


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API (``2026-11-23T10:00:00Z``), UTC, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"not an RFC 3339 time: {text!r}") from None


def _requests(container: Mapping[str, Any]) -> dict[str, float]:
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(value) for name, value in merged.items()}


def pod_requests(spec: Mapping[str, Any]) -> dict[str, float]:
    """The pod's effective request per resource: max(largest init container, sum of
    app containers), as the scheduler counts it."""
    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for name, value in _requests(container).items():
            total[name] = total.get(name, 0.0) + value
    for container in spec.get("initContainers") or []:
        for name, value in _requests(container).items():
            total[name] = max(total.get(name, 0.0), value)
    return total


def gpu_count(requests: Mapping[str, float], gpu_resources: Sequence[str]) -> float:
    """GPUs held: whole GPUs of ``gpu_resources`` plus MIG slices as sevenths."""
    count = 0.0
    for name, value in requests.items():
        if name in gpu_resources:
            count += value
        elif (mig := _MIG.match(name)) is not None:
            count += value * int(mig.group(1)) / MIG_SLICES
    return count


def uses_mig(requests: Mapping[str, float]) -> bool:
    return any(_MIG.match(name) and value > 0 for name, value in requests.items())


def gpu_model(node_labels: Mapping[str, str], model_labels: Sequence[str]) -> str | None:
    """The GPU model a node's labels name (GFD's ``NVIDIA-A100-SXM4-80GB``, without the
    ``-MIG-…`` or ``-SHARED`` suffix that MIG and time-slicing add), or None."""
    for label in model_labels:
        value = node_labels.get(label)
        if value:
            return _MODEL_SUFFIX.sub("", value)
    return None


def is_finished(pod: Pod) -> bool:
    return (pod.get("status") or {}).get("phase") in _FINISHED_PHASES


def _statuses(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _container_state(container: Mapping[str, Any], key: str, phase: str) -> Mapping[str, Any]:
    """A container status's ``state`` or ``lastState`` in ``phase`` (running,
    terminated), or {} when it is not in that phase."""
    return ((container.get(key) or {}).get(phase)) or {}


def _finished_at(container: Mapping[str, Any]) -> datetime | None:
    return parse_time(_container_state(container, "state", "terminated").get("finishedAt"))


def first_start(pod: Pod) -> datetime | None:
    """The earliest container start the pod's status shows (restarts: its ``startTime``)."""
    status = pod.get("status") or {}
    starts: list[datetime] = []
    restarted = False
    for container in _statuses(status):
        restarted = restarted or bool(container.get("restartCount"))
        for key in ("state", "lastState"):
            for phase in ("running", "terminated"):
                started = parse_time(_container_state(container, key, phase).get("startedAt"))
                if started is not None:
                    starts.append(started)
    pod_start = parse_time(status.get("startTime"))
    if pod_start is not None and (restarted or (not starts and status.get("phase") != "Pending")):
        starts.append(pod_start)
    return min(starts, default=None)


def _end(pod: Pod, start: datetime, observed_at: datetime) -> datetime:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    ends = [_finished_at(c) for c in containers]
    if containers and all(end is not None for end in ends):
        init_ends = [_finished_at(c) for c in status.get("initContainerStatuses") or []]
        end = max(e for e in [*ends, *init_ends] if e is not None)
    else:  # deletionTimestamp is when the grace period ends; the pod may go sooner
        deleted = parse_time((pod.get("metadata") or {}).get("deletionTimestamp"))
        end = min(deleted, observed_at) if deleted else observed_at
    return max(end, start)


def _state(pod: Pod, deleted: bool) -> JobState:
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return JobState.COMPLETED
    if phase != "Failed":  # deleted before it ended; or still running (its run so far)
        return JobState.CANCELLED if deleted else JobState.COMPLETED
    reason = status.get("reason") or ""
    if reason == "DeadlineExceeded":
        return JobState.TIMEOUT
    if reason in _PREEMPTED_REASONS:
        return JobState.PREEMPTED
    if reason in _NODE_FAIL_REASONS:
        return JobState.NODE_FAIL
    for container in _statuses(status):
        for key in ("state", "lastState"):
            if _container_state(container, key, "terminated").get("reason") == "OOMKilled":
                return JobState.OUT_OF_MEMORY
    return JobState.FAILED


def _named(metadata: Mapping[str, Any], key: str | None) -> str | None:
    """A label's value, else the annotation of the same key."""
    if not key:
        return None
    value = (metadata.get("labels") or {}).get(key) or (metadata.get("annotations") or {}).get(key)
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the watcher needs to know about a pod before making it a record."""

    uid: str
    namespace: str
    name: str
    node: str
    gpus: float
    mig: bool
    accounted: bool  # requested GPUs, or CPU pods are accounted too


def facts(pod: Pod, settings: KubernetesConfig) -> PodFacts:
    metadata = pod.get("metadata") or {}
    uid = metadata.get("uid")
    if not uid:
        raise InputError(f"pod {metadata.get('namespace')}/{metadata.get('name')} has no uid")
    requests = pod_requests(pod.get("spec") or {})
    gpus = gpu_count(requests, settings.gpu_resources)
    return PodFacts(
        uid=str(uid),
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        gpus=gpus,
        mig=uses_mig(requests),
        accounted=gpus > 0 or settings.cpu_pods,
    )


def pod_record(
    pod: Pod,
    cluster: str,
    node_labels: Mapping[str, str],
    settings: KubernetesConfig,
    attribution: AttributionConfig,
    observed_at: datetime,
    deleted: bool = False,
    seen_start: datetime | None = None,
) -> JobRecord:
    """The pod as a finished job (or, with ``deleted=False`` on a running pod and
    ``observed_at`` now, its run so far). ``seen_start``: the earliest start the
    watcher saw earlier, when the status no longer shows it. ``InputError`` names the
    pod when it is unreadable."""
    metadata = pod.get("metadata") or {}
    where = f"pod {metadata.get('namespace')}/{metadata.get('name')}"
    try:
        requests = pod_requests(pod.get("spec") or {})
        start = first_start(pod)
        if seen_start is not None and (start is None or seen_start < start):
            start = seen_start
        submit = parse_time(metadata.get("creationTimestamp")) or start or observed_at
        end = _end(pod, start, observed_at) if start is not None else None
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    namespace = str(metadata.get("namespace") or "")
    project = (
        _named(metadata, attribution.project_label)
        or attribution.namespace_projects.get(namespace)
        or namespace
    )
    return JobRecord(
        cluster=cluster,
        job_id=str(metadata.get("uid") or ""),
        user=_named(metadata, attribution.user_label) or namespace,
        project=project,
        partition=namespace,
        state=_state(pod, deleted),
        submit_time=min(submit, start) if start is not None else submit,
        start_time=start,
        end_time=end,
        gpu_count=gpu_count(requests, settings.gpu_resources),
        gpu_model=gpu_model(node_labels, settings.gpu_model_labels),
        cpu_count=math.ceil(requests.get("cpu", 0.0) - 1e-9),
        memory_gb=requests.get("memory", 0.0) / 2.0**30,
        node_count=1,
        nodes=str((pod.get("spec") or {}).get("nodeName") or ""),
        name=str(metadata.get("name") or ""),
        labels=dict(node_labels),
    )


def measured_record(record: JobRecord, pod_facts: PodFacts, energy: DcgmEnergy | None) -> JobRecord:
    """``record`` with its GPUs' energy as DCGM measured it over the pod's run; as it was
    (its energy estimated) when there is no ``energy`` source or it cannot tell."""
    if energy is None or not record.gpu_count or record.run_seconds <= 0:
        return record
    assert record.start_time is not None and record.end_time is not None
    measurement = energy.measure(
        pod_facts.namespace,
        pod_facts.name,
        record.start_time,
        record.end_time,
        record.gpu_count,
        pod_facts.mig,
    )
    if measurement.energy is None:
        log.info(
            "pod %s/%s: GPU energy estimated, not measured: %s",
            pod_facts.namespace,
            pod_facts.name,
            measurement.reason,
        )
    return with_measurement(record, measurement)
