"""Pods → JobRecords: GPUs requested, run time, state and attribution, on pod objects
shaped like the API server's (tests/support/kube_api.py's builders, checked against the
Kubernetes 1.32 schemas in tests/test_kube_api.py). Every figure is worked by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobcarbon.config import AttributionConfig, KubernetesConfig
from jobcarbon.errors import InputError
from jobcarbon.records import JobRecord, JobState
from jobcarbon.sources.kubernetes.pods import facts, gpu_model, parse_quantity, pod_record
from tests.support.kube_api import BASE_TIME, Container, Obj, gpu_node, gpu_pod

SETTINGS = KubernetesConfig()
NODE = gpu_node("gpu-node-1")["metadata"]["labels"]  # GFD: NVIDIA-A100-SXM4-80GB
NOW = BASE_TIME + timedelta(days=1)


def record(
    pod: Obj, deleted: bool = False, attribution: AttributionConfig | None = None
) -> JobRecord:
    return pod_record(
        pod, "k8s", NODE, SETTINGS, attribution or AttributionConfig(), NOW, deleted=deleted
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2.0),
        ("500m", 0.5),
        ("64Gi", 64 * 2**30),
        ("1.5G", 1.5e9),
        ("1e3", 1000.0),
        ("128974848", 128974848.0),
        ("100Ki", 102400.0),
    ],
)
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == value


def test_a_bad_quantity_is_named() -> None:
    with pytest.raises(InputError, match="'12 cores'"):
        parse_quantity("12 cores")


def test_a_finished_gpu_pod() -> None:
    started = BASE_TIME + timedelta(seconds=5)
    pod = gpu_pod(
        "train-1",
        "ml",
        phase="Succeeded",
        gpus=2,
        started=started,
        finished=started + timedelta(hours=1),
        labels={"jobcarbon/user": "alice", "jobcarbon/project": "vision"},
    )
    job = pod_record(
        pod,
        "k8s",
        NODE,
        SETTINGS,
        AttributionConfig(user_label="jobcarbon/user", project_label="jobcarbon/project"),
        NOW,
    )
    assert (job.user, job.project, job.partition, job.name) == ("alice", "vision", "ml", "train-1")
    assert job.job_id == pod["metadata"]["uid"]
    assert job.state is JobState.COMPLETED
    assert (job.start_time, job.end_time) == (started, started + timedelta(hours=1))
    assert job.gpu_count == 2 and job.gpu_seconds == 7200.0  # 2 GPUs x 3600 s
    assert job.gpu_model == "NVIDIA-A100-SXM4-80GB"
    assert (job.cpu_count, job.memory_gb) == (8, 64.0)  # "8", "64Gi"
    assert job.nodes == "gpu-node-1"


def test_init_containers_count_from_their_start_and_the_scheduler_rule_for_requests() -> None:
    # init: 1 GPU 10:00:05-10:01:00; app containers 2 + 1 GPUs till 11:01:00.
    # Held: max(1, 2 + 1) = 3 GPUs from 10:00:05 to 11:01:00 = 3,655 s.
    init = Container(
        "fetch",
        gpus=1,
        cpu="2",
        state="terminated",
        started_at=BASE_TIME + timedelta(seconds=5),
        finished_at=BASE_TIME + timedelta(minutes=1),
        exit_code=0,
        reason="Completed",
    )
    app = [
        Container("main", gpus=2, cpu="500m", memory="1Gi"),
        Container("sidecar", gpus=1, cpu="250m", memory="512Mi"),
    ]
    pod = gpu_pod(
        "train-2",
        phase="Succeeded",
        containers=app,
        init_containers=[init],
        started=BASE_TIME + timedelta(minutes=1, seconds=2),
        finished=BASE_TIME + timedelta(hours=1, minutes=1),
    )
    job = record(pod)
    assert job.gpu_count == 3
    assert job.start_time == BASE_TIME + timedelta(seconds=5)
    assert job.run_seconds == 3655.0
    assert job.cpu_count == 2  # max(2 (init), 0.5 + 0.25) = 2 cores
    assert job.memory_gb == 64.0  # max(64Gi (init's default), 1.5Gi)


def test_a_restarted_container_counts_from_the_pods_start() -> None:
    # the first run's start is no longer in the status; the pod's startTime
    # (created + 2 s) stands in for it
    pod = gpu_pod(
        "flaky",
        phase="Succeeded",
        restarts=2,
        started=BASE_TIME + timedelta(minutes=30),
        finished=BASE_TIME + timedelta(hours=1),
    )
    job = record(pod)
    assert job.start_time == BASE_TIME + timedelta(seconds=2)
    assert job.run_seconds == 3600.0 - 2.0


def test_mig_slices_count_as_sevenths() -> None:
    mig = Container(
        gpus=0,
        requests={"cpu": "4", "nvidia.com/mig-3g.20gb": "2"},
        limits={"nvidia.com/mig-3g.20gb": "2"},
    )
    pod = gpu_pod("mig", phase="Running", containers=[mig])
    pod_facts = facts(pod, SETTINGS)
    assert pod_facts.gpus == pytest.approx(6 / 7) and pod_facts.mig
    mig_node = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-3g.20gb"}
    assert gpu_model(mig_node, SETTINGS.gpu_model_labels) == "NVIDIA-A100-SXM4-80GB"
    shared = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-SHARED"}  # time-slicing
    assert gpu_model(shared, SETTINGS.gpu_model_labels) == "NVIDIA-A100-SXM4-80GB"


@pytest.mark.parametrize(
    ("reason", "pod_reason", "state"),
    [
        ("Error", None, JobState.FAILED),
        ("OOMKilled", None, JobState.OUT_OF_MEMORY),
        ("Error", "DeadlineExceeded", JobState.TIMEOUT),
        ("Error", "Evicted", JobState.PREEMPTED),
    ],
)
def test_how_a_failed_pod_ended(reason: str, pod_reason: str | None, state: JobState) -> None:
    pod = gpu_pod("f", phase="Failed", reason=reason, exit_code=137, pod_reason=pod_reason)
    assert record(pod).state is state


def test_a_pod_deleted_while_running_ends_at_its_deletion() -> None:
    deleted_at = BASE_TIME + timedelta(hours=2)
    pod = gpu_pod("killed", phase="Running", deletion_timestamp=deleted_at)
    job = record(pod, deleted=True)
    assert job.state is JobState.CANCELLED
    assert job.end_time == deleted_at
    assert job.start_time == BASE_TIME + timedelta(seconds=5)  # the builder's default start


def test_a_pod_deleted_before_it_started_costs_nothing() -> None:
    pod = gpu_pod("queued", phase="Pending", node_name=None)
    job = record(pod, deleted=True)
    assert job.state is JobState.CANCELLED
    assert job.start_time is None and job.gpu_seconds == 0


def test_attribution_falls_back_to_annotations_then_the_namespace() -> None:
    attribution = AttributionConfig(
        user_label="example.org/user",
        project_label="example.org/project",
        namespace_projects={"team-a": "project-a"},
    )
    annotated = gpu_pod("a", "team-a", annotations={"example.org/user": "dora"})
    job = record(annotated, attribution=attribution)
    assert (job.user, job.project) == ("dora", "project-a")
    bare = gpu_pod("b", "team-b")
    assert (record(bare, attribution=attribution).user, record(bare).project) == (
        "team-b",
        "team-b",
    )


def test_cpu_pods_are_accounted_only_when_asked() -> None:
    pod = gpu_pod("web", containers=[Container(gpus=0, cpu="1500m")])
    assert not facts(pod, SETTINGS).accounted
    assert facts(pod, KubernetesConfig(cpu_pods=True)).accounted
    assert record(pod).cpu_count == 2  # 1.5 cores, rounded up


def test_an_unreadable_pod_is_named() -> None:
    pod = gpu_pod("broken", "ml", phase="Succeeded")
    pod["metadata"]["creationTimestamp"] = "yesterday"
    with pytest.raises(InputError, match="pod ml/broken: not an RFC 3339 time: 'yesterday'"):
        record(pod)
