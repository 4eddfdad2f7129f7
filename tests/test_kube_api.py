"""The fake API server against the real ``kubernetes`` client, and the builders' shapes.

These tests pin down what the watcher's tests rely on: paging and continue tokens,
watch replay from a resourceVersion, bookmarks, 410s (in a watch stream and on a
stale continue token), cut connections, injected errors and restarts, as the real
client sees them. They also record how that client surfaces each one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch

from tests.support.kube_api import (
    BASE_TIME,
    Container,
    FakeApiServer,
    gpu_node,
    gpu_pod,
)

KUBERNETES_VERSION = "1.32.0"


def _server_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("fake-kube-api") or "process_request" in t.name
    ]


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()
    assert _server_threads() == [], "stop() must end every server thread"


@pytest.fixture
def core(api: FakeApiServer) -> Iterator[client.CoreV1Api]:
    with client.ApiClient(api.configuration()) as api_client:
        yield client.CoreV1Api(api_client)


def _body(response: Any) -> Any:
    return json.loads(response.data)


def _watch(core: client.CoreV1Api, resource_version: str, **kwargs: Any) -> Any:
    return core.list_pod_for_all_namespaces(
        watch=True,
        resource_version=resource_version,
        allow_watch_bookmarks=kwargs.pop("allow_watch_bookmarks", True),
        timeout_seconds=kwargs.pop("timeout_seconds", 30),
        _preload_content=False,
        **kwargs,
    )


def lines_of(response: Any) -> Iterator[str]:
    """The watch stream's lines, read the way the watcher reads them."""
    lines: Iterator[str] = watch.iter_resp_lines(response)  # type: ignore[no-untyped-call]
    return lines


def status_of(error: ApiException) -> Any:
    """The v1 Status in an error's body."""
    assert error.body is not None
    return json.loads(error.body)


def _read(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    return [json.loads(next(lines)) for _ in range(count)]


# -- the builders -----------------------------------------------------------------------

PODS = {
    "pending-unscheduled": gpu_pod("p", phase="Pending", node_name=None),
    "pending-initializing": gpu_pod(
        "p", phase="Pending", init_containers=[Container("fetch", "busybox:1.36", gpus=0)]
    ),
    "running-restarted": gpu_pod(
        "p",
        phase="Running",
        restarts=2,
        init_containers=[Container("fetch", "busybox:1.36", gpus=0)],
        job_name="train",
        labels={"team": "nlp"},
        annotations={"jobcarbon.io/project": "llm"},
    ),
    "running-two-containers": gpu_pod(
        "p",
        containers=[
            Container("trainer", gpus=4, cpu="32", memory="256Gi"),
            Container("sidecar", "busybox:1.36", gpus=0, requests={"cpu": "100m"}, limits={}),
        ],
    ),
    "succeeded": gpu_pod("p", phase="Succeeded", gpus=2, job_name="train"),
    "failed-oom": gpu_pod("p", phase="Failed", exit_code=137, reason="OOMKilled"),
    "failed-evicted": gpu_pod(
        "p", phase="Failed", pod_reason="Evicted", pod_message="The node was low on memory."
    ),
    "deleting": gpu_pod("p", deletion_timestamp=BASE_TIME),
    "unknown": gpu_pod("p", phase="Unknown"),
}


@pytest.mark.parametrize("pod", PODS.values(), ids=PODS.keys())
def test_pods_match_the_v1_32_schema(pod: dict[str, Any]) -> None:
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_nodes_match_the_v1_32_schema() -> None:
    for node in (
        gpu_node("gpu-node-1"),
        gpu_node("h100-1", {"topology.kubernetes.io/zone": "a"}, product="NVIDIA-H100-80GB-HBM3"),
        gpu_node("down", ready=False, taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]),
    ):
        kubernetes_validate.validate(node, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_is_strict() -> None:
    pod = gpu_pod("p")
    pod["status"]["containerStatuses"][0]["gpuSeconds"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_a_failed_pod_says_why_and_when() -> None:
    pod = gpu_pod("p", phase="Failed", exit_code=137, reason="OOMKilled", restarts=1)
    (main,) = pod["status"]["containerStatuses"]
    assert main["state"]["terminated"] == {
        "containerID": main["containerID"],
        "exitCode": 137,
        "finishedAt": "2025-03-03T10:00:05Z",
        "reason": "OOMKilled",
        "startedAt": "2025-03-03T09:00:05Z",
    }
    assert main["restartCount"] == 1 and main["lastState"]["terminated"]["exitCode"] == 1
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
    }


def test_a_node_carries_gpu_feature_discovery_labels() -> None:
    node = gpu_node("gpu-node-1", {"team": "a"})
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert (labels["nvidia.com/gpu.count"], labels["nvidia.com/gpu.memory"]) == ("8", "81920")
    assert labels["team"] == "a"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"


# -- lists ------------------------------------------------------------------------------


def test_a_list_pages_over_one_snapshot(api: FakeApiServer, core: client.CoreV1Api) -> None:
    for i in range(5):
        api.add_pod(gpu_pod(f"train-{i}", "ml" if i % 2 else "cv"))
    pages, token = [], None
    while True:
        page = _body(
            core.list_pod_for_all_namespaces(limit=2, _continue=token, _preload_content=False)
        )
        pages.append(page)
        if len(pages) == 1:  # a change during the paging is not in the snapshot
            api.add_pod(gpu_pod("late", "aa"))
        token = page["metadata"].get("continue")
        if not token:
            break

    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [3, 1, None]
    assert {p["metadata"]["resourceVersion"] for p in pages} == {"1005"}
    names = [(i["metadata"]["namespace"], i["metadata"]["name"]) for p in pages for i in p["items"]]
    assert names == sorted(names) and len(names) == 5  # etcd's key order, no "late"
    assert "kind" not in pages[0]["items"][0]  # list items carry no kind on the wire
    assert pages[0]["kind"] == "PodList"
    assert [r.query.get("limit") for r in api.lists()] == ["2", "2", "2"]
    assert [r.query.get("continue") for r in api.lists()][1:] == [
        p["metadata"]["continue"] for p in pages[:2]
    ]


def test_a_namespaced_list_with_a_label_selector(
    api: FakeApiServer, core: client.CoreV1Api
) -> None:
    api.add_pod(gpu_pod("a", "ml", labels={"team": "nlp"}))
    api.add_pod(gpu_pod("b", "ml", labels={"team": "cv"}))
    api.add_pod(gpu_pod("c", "other", labels={"team": "nlp"}))
    page = _body(core.list_namespaced_pod("ml", label_selector="team=nlp", _preload_content=False))
    assert [i["metadata"]["name"] for i in page["items"]] == ["a"]
    assert api.lists()[-1].namespace == "ml"


def test_an_expired_continue_token_is_410(api: FakeApiServer, core: client.CoreV1Api) -> None:
    for i in range(3):
        api.add_pod(gpu_pod(f"p{i}"))
    first = _body(core.list_pod_for_all_namespaces(limit=2, _preload_content=False))
    api.expire_continue_tokens()
    with pytest.raises(ApiException) as caught:
        core.list_pod_for_all_namespaces(
            limit=2, _continue=first["metadata"]["continue"], _preload_content=False
        )
    assert caught.value.status == 410
    status = status_of(caught.value)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Expired", 410)
    # as the real server does, it offers a token to go on inconsistently
    rest = _body(
        core.list_pod_for_all_namespaces(
            limit=2, _continue=status["metadata"]["continue"], _preload_content=False
        )
    )
    assert [i["metadata"]["name"] for i in rest["items"]] == ["p2"]


def test_nodes_are_read_and_listed(api: FakeApiServer, core: client.CoreV1Api) -> None:
    api.add_node(gpu_node("gpu-node-1"))
    api.add_node(gpu_node("gpu-node-2", product="NVIDIA-H100-80GB-HBM3"))
    node = _body(core.read_node("gpu-node-2", _preload_content=False))
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node["kind"] == "Node"
    nodes = _body(core.list_node(_preload_content=False))
    assert nodes["kind"] == "NodeList"
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["gpu-node-1", "gpu-node-2"]
    with pytest.raises(ApiException) as caught:
        core.read_node("gpu-node-9", _preload_content=False)
    assert caught.value.status == 404
    assert status_of(caught.value)["message"] == 'nodes "gpu-node-9" not found'


# -- watches ----------------------------------------------------------------------------


def test_a_watch_replays_what_changed_after_the_list(
    api: FakeApiServer, core: client.CoreV1Api
) -> None:
    for i in range(3):
        api.add_pod(gpu_pod(f"p{i}"))
    listed = _body(core.list_pod_for_all_namespaces(_preload_content=False))
    version = int(listed["metadata"]["resourceVersion"])
    api.add_pod(gpu_pod("p3"))  # before the watch starts: replayed from the log
    response = _watch(core, str(version))
    api.update_pod(gpu_pod("p0", phase="Succeeded"))
    api.delete_pod("default", "p1", grace_period_seconds=30)

    events = _read(lines_of(response), 4)
    response.close()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "p3"),
        ("MODIFIED", "p0"),
        ("MODIFIED", "p1"),  # deletionTimestamp set
        ("DELETED", "p1"),
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == [version + 1, version + 2, version + 3, version + 4]
    assert events[1]["object"]["status"]["phase"] == "Succeeded"
    assert "deletionTimestamp" in events[2]["object"]["metadata"]
    assert events[0]["object"]["kind"] == "Pod"  # watch objects do carry kind
    assert api.watches()[-1].query == {
        "watch": "true",
        "resourceVersion": str(version),
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "30",
    }


def test_a_namespaced_watch_sees_its_namespace_only(
    api: FakeApiServer, core: client.CoreV1Api
) -> None:
    version = api.resource_version
    response: Any = core.list_namespaced_pod(
        "ml", watch=True, resource_version=version, timeout_seconds=30, _preload_content=False
    )
    api.add_pod(gpu_pod("a", "cv"))
    api.add_pod(gpu_pod("b", "ml"))
    (event,) = _read(lines_of(response), 1)
    response.close()
    assert event["object"]["metadata"]["name"] == "b"


def test_a_watch_ends_cleanly_at_its_timeout(api: FakeApiServer, core: client.CoreV1Api) -> None:
    response = _watch(core, api.resource_version, timeout_seconds=1)
    assert list(lines_of(response)) == []  # the terminating chunk: no exception


def test_a_bookmark_arrives_when_asked_and_a_watch_resumes_from_it(
    api: FakeApiServer, core: client.CoreV1Api
) -> None:
    response = _watch(core, api.resource_version)
    api.add_pod(gpu_pod("p0"))
    api.add_pod(gpu_pod("p1"))
    version = api.send_bookmark()
    *added, bookmark = _read(lines_of(response), 3)
    response.close()
    assert [e["type"] for e in added] == ["ADDED", "ADDED"]
    assert bookmark == {  # the zero value of a Pod, as the real server sends it
        "type": "BOOKMARK",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": version, "creationTimestamp": None},
            "spec": {"containers": None},
            "status": {},
        },
    }

    api.add_pod(gpu_pod("p2"))
    response = _watch(core, bookmark["object"]["metadata"]["resourceVersion"])
    (event,) = _read(lines_of(response), 1)
    response.close()
    assert event["object"]["metadata"]["name"] == "p2"
    assert [w.resource_version for w in api.watches()] == [str(int(version) - 2), version]


def test_bookmarks_come_periodically_when_configured() -> None:
    with (
        FakeApiServer(bookmark_interval=0.2) as api,
        client.ApiClient(api.configuration()) as api_client,
    ):
        core = client.CoreV1Api(api_client)
        api.add_pod(gpu_pod("p0"))
        response = _watch(core, api.resource_version)
        first, second = _read(lines_of(response), 2)
        response.close()
        assert [first["type"], second["type"]] == ["BOOKMARK", "BOOKMARK"]
        assert first["object"]["metadata"]["resourceVersion"] == api.resource_version

        response = _watch(core, api.resource_version, allow_watch_bookmarks=False)
        api.wait_for_watches()
        time.sleep(0.3)  # past the interval: no bookmark without allowWatchBookmarks
        api.send_bookmark()  # nor one on demand
        api.add_pod(gpu_pod("p1"))
        assert _read(lines_of(response), 1)[0]["type"] == "ADDED"
        response.close()


def test_a_compacted_version_is_an_error_event_with_410(
    api: FakeApiServer, core: client.CoreV1Api
) -> None:
    old = api.resource_version
    api.add_pod(gpu_pod("p0"))
    oldest = api.compact()
    response = _watch(core, old)
    assert response.status == 200  # the failure is in the stream, not the HTTP status
    events = [json.loads(line) for line in lines_of(response)]  # then the stream ends
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old} ({oldest})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    # the way out is a new list, whose version one can watch from
    listed = _body(core.list_pod_for_all_namespaces(_preload_content=False))
    response = _watch(core, listed["metadata"]["resourceVersion"])
    api.add_pod(gpu_pod("p1"))
    assert _read(lines_of(response), 1)[0]["type"] == "ADDED"
    response.close()


def test_a_cut_watch_raises_protocol_error(api: FakeApiServer, core: client.CoreV1Api) -> None:
    """A chunked response closed before its last chunk: urllib3 raises ProtocolError
    ("Response ended prematurely") from the line iteration; it does not just end."""
    response = _watch(core, api.resource_version)
    lines = lines_of(response)
    api.add_pod(gpu_pod("p0"))
    _read(lines, 1)
    assert api.cut_watches() == 1
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(lines)
    assert api.active_watches == 0


# -- failures ---------------------------------------------------------------------------


def test_an_injected_500_is_an_api_exception(api: FakeApiServer, core: client.CoreV1Api) -> None:
    api.fail_next(1, 500)
    with pytest.raises(ApiException) as caught:
        core.list_pod_for_all_namespaces(limit=500, _preload_content=False)
    assert caught.value.status == 500
    assert status_of(caught.value)["reason"] == "InternalError"
    core.list_pod_for_all_namespaces(limit=500, _preload_content=False)  # only the next one
    assert [r.status for r in api.lists()] == [500, 200]


def test_failures_can_target_watches_only(api: FakeApiServer, core: client.CoreV1Api) -> None:
    api.fail_next(1, 503, kind="watch")
    core.list_pod_for_all_namespaces(_preload_content=False)
    with pytest.raises(ApiException) as caught:
        _watch(core, api.resource_version)
    assert caught.value.status == 503


def test_urllib3_retries_a_429_with_retry_after_by_itself(
    api: FakeApiServer, core: client.CoreV1Api
) -> None:
    """The client's default urllib3 Retry (3 retries) honours Retry-After on 413, 429
    and 503: the caller sees success, or after 4 attempts an ApiException 429."""
    api.fail_next(1, 429, retry_after=0)
    core.list_pod_for_all_namespaces(_preload_content=False)
    assert [r.status for r in api.lists()] == [429, 200]

    api.clear_requests()
    api.fail_next(5, 429, retry_after=0, text=True)
    with pytest.raises(ApiException) as caught:
        core.list_pod_for_all_namespaces(_preload_content=False)
    assert caught.value.status == 429
    assert caught.value.body == "Too many requests, please try again later.\n"
    assert [r.status for r in api.lists()] == [429, 429, 429, 429]


def test_a_bearer_token_is_required_when_set() -> None:
    with FakeApiServer(token="s3cret") as api:
        with client.ApiClient(api.configuration()) as api_client:
            client.CoreV1Api(api_client).list_node(_preload_content=False)
        anonymous = client.Configuration(host=api.url)
        with client.ApiClient(anonymous) as api_client, pytest.raises(ApiException) as caught:
            client.CoreV1Api(api_client).list_node(_preload_content=False)
        assert caught.value.status == 401
        assert [r.authorization for r in api.requests] == ["Bearer s3cret", None]


def test_a_restart_on_the_same_port(api: FakeApiServer, core: client.CoreV1Api) -> None:
    api.add_pod(gpu_pod("p0"))
    response = _watch(core, api.resource_version)
    lines = lines_of(response)
    port = api.port

    api.stop()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(lines)  # the open watch is cut
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # connection refused
        core.list_pod_for_all_namespaces(_preload_content=False)

    api.start()
    assert api.port == port
    listed = _body(core.list_pod_for_all_namespaces(_preload_content=False))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["p0"]  # the store survives
    response = _watch(core, listed["metadata"]["resourceVersion"])
    api.add_pod(gpu_pod("p1"))
    assert _read(lines_of(response), 1)[0]["object"]["metadata"]["name"] == "p1"


def test_stop_ends_idle_and_streaming_connections() -> None:
    api = FakeApiServer().start()
    with client.ApiClient(api.configuration()) as api_client:
        core = client.CoreV1Api(api_client)
        core.list_node(_preload_content=False)  # leaves an idle keep-alive connection
        response = _watch(core, api.resource_version, timeout_seconds=600)
        api.wait_for_watches(1)
        api.stop()
        response.close()
    assert _server_threads() == []
