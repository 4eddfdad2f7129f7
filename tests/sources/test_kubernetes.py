"""The pod watcher with the real ``kubernetes`` client against a fake API server.

No Kubernetes API server can be had on this machine (no kube-apiserver, kind, k3s or
envtest in the reachable registries), so ``tests/support/kube_api.py`` plays one over real
HTTP on loopback: paged lists, chunked watch streams, bookmarks, 410 Gone, cut
connections, error statuses and restarts. The watcher reads a kubeconfig with a
bearer token, as it would outside a cluster, and writes a real SQLite ledger.

Hand-worked figures: the node's GPUs are A100 SXM4 80 GB (GFD label
NVIDIA-A100-SXM4-80GB; 400 W in the bundled table); without a measured utilisation a
GPU draws its TDP, so 2 GPUs for an hour use 0.8 kWh at the GPUs.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcarbon.config import Config, load_config
from jobcarbon.daemons.watcher import Watcher
from jobcarbon.exporter import probe_app, serve_in_thread
from jobcarbon.ledger import Filters, Ledger
from jobcarbon.sources.kubernetes.api import KubeApi
from tests.support.config import make_config
from tests.support.kube_api import BASE_TIME, Container, FakeApiServer, Request, gpu_node, gpu_pod
from tests.support.net import free_port, wait_for
from tests.support.prometheus_server import PrometheusWithHistory, Series, dcgm_energy_series

TOKEN = "watcher-token"
HOUR = timedelta(hours=1)


def running_pod(name: str, gpus: int, user: str) -> dict[str, Any]:
    """A pod running for the last hour (a running pod's usage so far is up to now)."""
    created = datetime.now(UTC).replace(microsecond=0) - HOUR
    return gpu_pod(name, "ml", gpus=gpus, created=created, labels={"jobcarbon/user": user})


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(token=TOKEN).start()
    server.add_node(gpu_node("gpu-node-1"))
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path: Path, api: FakeApiServer) -> Path:
    """A config file (and a kubeconfig beside it) for the fake API server."""
    (tmp_path / "kubeconfig").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "watcher", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "watcher"}}],
                "current-context": "fake",
            }
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            make_config(
                site="dc",
                cluster="k8s",
                sites={"dc": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 400}}},
                clusters={
                    "k8s": {
                        "attribution": {
                            "user_label": "jobcarbon/user",
                            "namespace_projects": {"ml": "vision"},
                        },
                    }
                },
                ledger={"url": "sqlite:///ledger.db"},
                kubernetes={
                    "retry_first_s": 0.05,
                    "retry_max_s": 0.2,
                    "running_interval_s": 0.2,
                    "read_timeout_s": 10,
                    "watch_timeout_s": 60,
                    "health_listen": None,
                },
            )
        )
    )
    return config


def finished(name: str, gpus: int, hours: float, user: str, **kwargs: Any) -> dict[str, Any]:
    start = BASE_TIME + timedelta(seconds=5)
    return gpu_pod(
        name,
        "ml",
        phase=kwargs.pop("phase", "Succeeded"),
        gpus=gpus,
        started=start,
        finished=start + hours * HOUR,
        labels={"jobcarbon/user": user},
        **kwargs,
    )


def watch_once(config: Path) -> subprocess.CompletedProcess[str]:
    """``jobcarbon k8s watch --once`` as an admin runs it, with the test's kubeconfig."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jobcarbon",
            "--config",
            str(config),
            "k8s",
            "watch",
            "--once",
            "--kubeconfig",
            str(config.parent / "kubeconfig"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def jobs(config: Path) -> dict[str, dict[str, Any]]:
    """The ledger's jobs by pod name."""
    with Ledger(config.parent / "ledger.db") as ledger:
        return {row["name"]: row for row in ledger.jobs(Filters())}


@contextmanager
def watching(config: Path, namespace: str | None = None) -> Iterator[Watcher]:
    """A watcher running in a thread (its own ledger connection), stopped on exit."""
    settings: Config = load_config(config)
    stop = threading.Event()
    started: list[Watcher] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with Ledger(config.parent / "ledger.db") as ledger:
                k8s = settings.kubernetes
                api = KubeApi(
                    str(config.parent / "kubeconfig"),
                    namespace,
                    k8s.list_page_size,
                    k8s.watch_timeout_s,
                    k8s.read_timeout_s,
                )
                watcher = Watcher(settings, ledger, api, namespace=namespace)
                started.append(watcher)
                watcher.run(stop.is_set)
        except BaseException as err:
            failures.append(err)

    thread = threading.Thread(target=run, name="test-watcher")
    thread.start()
    try:
        wait_for("the watcher to start", lambda: bool(started or failures), 10, 0.01)
        assert not failures, failures
        yield started[0]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "the watcher did not stop"
    assert not failures, failures


def listed(watcher: Watcher, api: FakeApiServer) -> None:
    wait_for("the first list and watch", lambda: watcher.health.listed, 10, 0.01)
    api.wait_for_watches(1)


def test_once_accounts_the_ended_pods_and_a_second_run_writes_nothing(
    api: FakeApiServer, site: Path
) -> None:
    api.add_pod(finished("train-a", 2, 1.0, "alice"))
    api.add_pod(finished("train-b", 1, 0.5, "bob", phase="Failed", reason="OOMKilled"))
    api.add_pod(running_pod("notebook", 1, "carol"))
    api.add_pod(gpu_pod("web", "ml", phase="Succeeded", containers=[Container(gpus=0)]))
    first = watch_once(site)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "accounted 2 pod(s), 0 unchanged, 1 running, 0 problem(s)"
    rows = jobs(site)
    assert sorted(rows) == ["train-a", "train-b"]  # the CPU-only pod is not accounted
    a, b = rows["train-a"], rows["train-b"]
    assert (a["user"], a["project"], a["partition"], a["state"]) == (
        "alice",
        "vision",
        "ml",
        "completed",
    )
    assert a["gpu_seconds"] == 7200.0 and a["gpu_model"] == "NVIDIA-A100-SXM4-80GB"
    assert a["energy_gpu_kwh"] == pytest.approx(0.8)  # 2 x 400 W x 1 h
    assert (b["state"], b["gpu_seconds"]) == ("out_of_memory", 1800.0)
    with Ledger(site.parent / "ledger.db") as ledger:
        (running,) = ledger.running()
    assert (running.user, running.project, running.jobs, running.gpus) == ("carol", "vision", 1, 1)
    again = watch_once(site)
    assert again.stdout.strip() == "accounted 0 pod(s), 0 unchanged, 1 running, 0 problem(s)"
    assert jobs(site) == rows


def test_pods_are_accounted_as_they_end(api: FakeApiServer, site: Path) -> None:
    with watching(site) as watcher:
        listed(watcher, api)
        pending = api.add_pod(gpu_pod("train", "ml", phase="Pending", gpus=2))
        api.update_pod({**gpu_pod("train", "ml", gpus=2), "metadata": pending["metadata"]})
        api.update_pod(finished("train", 2, 1.0, "alice"))
        api.add_pod(running_pod("notebook", 1, "dan"))
        wait_for("train in the ledger", lambda: "train" in jobs(site), 10, 0.05)
        # deleted while running, gone before its 30 s grace period ended: it ends when
        # the watcher saw it go
        before = int(time.time())
        api.delete_pod("ml", "notebook", grace_period_seconds=30)
        wait_for("notebook in the ledger", lambda: "notebook" in jobs(site), 10, 0.05)
        after = time.time()
    rows = jobs(site)
    assert rows["train"]["gpu_seconds"] == 7200.0
    notebook = rows["notebook"]
    assert (notebook["state"], notebook["user"]) == ("cancelled", "dan")
    assert before <= notebook["end_time"] <= after


def test_an_api_server_outage_410_and_relist_lose_and_double_nothing(
    api: FakeApiServer, site: Path
) -> None:
    api.add_pod(gpu_pod("long", "ml", gpus=4))
    with watching(site) as watcher:
        listed(watcher, api)
        api.stop()  # the API server goes away: the watch is cut, reconnects are refused
        api.update_pod(finished("long", 4, 2.0, "erin"))
        api.add_pod(finished("short", 1, 0.25, "erin"))
        api.compact()  # it comes back with a fresh watch cache: old versions are gone
        wait_for("a refused reconnect", lambda: watcher.health.restarts["api_error"] > 0, 10)
        api.start()
        wait_for("both pods", lambda: {"long", "short"} <= set(jobs(site)), 15, 0.05)
        restarts = dict(watcher.health.restarts)
    assert restarts["expired"] >= 1  # 410 in the stream → a new list
    assert len(api.lists()) >= 2
    rows = jobs(site)
    assert len(rows) == 2
    assert (rows["long"]["gpu_seconds"], rows["short"]["gpu_seconds"]) == (28800.0, 900.0)
    with Ledger(site.parent / "ledger.db") as ledger:
        assert ledger.ingest_errors()["kubernetes"] >= 1
        assert ledger.totals(Filters()).jobs == 2


def test_a_paged_list_whose_continue_token_expires_starts_again(
    api: FakeApiServer, site: Path
) -> None:
    config = yaml.safe_load(site.read_text())
    config["kubernetes"]["list_page_size"] = 2
    site.write_text(yaml.safe_dump(config))
    for n in range(5):
        api.add_pod(finished(f"p{n}", 1, 1.0, "ned"))
    expired: list[str] = []

    def expire_once(request: Request) -> None:
        if request.kind == "list" and request.query.get("continue") and not expired:
            expired.append(request.query["continue"])
            api.expire_continue_tokens()  # as after etcd compaction: this page gets 410

    api.on_request = expire_once
    with watching(site) as watcher:
        listed(watcher, api)
        wait_for("five pods", lambda: len(jobs(site)) == 5, 10, 0.05)
        assert watcher.health.restarts["expired"] == 1
    pages = [r.query.get("continue") for r in api.lists()]
    assert pages[:2] == [None, expired[0]]  # the first list, cut short at its second page
    assert pages[2] is None and len(pages) == 5  # then 3 pages of 2, 2 and 1 pods
    with Ledger(site.parent / "ledger.db") as ledger:
        assert ledger.totals(Filters()).jobs == 5


def test_a_cut_watch_resumes_from_the_last_bookmark(api: FakeApiServer, site: Path) -> None:
    with watching(site) as watcher:
        listed(watcher, api)
        api.add_pod(gpu_pod("idle", "other", gpus=1))
        version = api.send_bookmark()
        wait_for("the bookmark", lambda: watcher.resource_version == version, 10, 0.01)
        assert api.cut_watches() == 1
        api.wait_for_watches(1)
        api.add_pod(finished("after", 1, 1.0, "fay"))
        wait_for("after", lambda: "after" in jobs(site), 10, 0.05)
        assert watcher.health.restarts["disconnected"] == 1
    assert len(api.lists()) == 1  # resumed, not re-listed
    assert api.watches()[1].resource_version == version


def test_error_statuses_never_stop_the_watcher(api: FakeApiServer, site: Path) -> None:
    api.fail_next(2, 500, kind="watch")
    with watching(site) as watcher:
        wait_for("a watch after two 500s", lambda: len(api.watches()) >= 3, 10, 0.01)
        api.add_pod(finished("ok", 1, 1.0, "gus"))
        wait_for("ok", lambda: "ok" in jobs(site), 10, 0.05)
        assert watcher.health.restarts["api_error"] == 2
    with Ledger(site.parent / "ledger.db") as ledger:
        assert ledger.ingest_errors()["kubernetes"] == 2


def test_forbidden_says_which_permissions_are_missing(
    api: FakeApiServer, site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail_next(1, 403, kind="list")
    with watching(site) as watcher:
        listed(watcher, api)  # retried, then listed
    assert "listing pods on http://127.0.0.1" in caplog.text
    assert "403" in caplog.text
    assert "needs get, list and watch on pods and nodes: k8s_manifests/rbac.yaml" in caplog.text


def test_a_restarted_watcher_writes_nothing_twice(api: FakeApiServer, site: Path) -> None:
    api.add_pod(finished("done", 2, 1.0, "hal"))
    with watching(site) as first:
        listed(first, api)
        wait_for("done", lambda: "done" in jobs(site), 10, 0.05)
        assert first.report.written == 1
    before = jobs(site)
    with Ledger(site.parent / "ledger.db") as ledger:
        change = ledger.changed_aggregates(0)[1]  # the totals' latest change number
    with watching(site) as second:
        listed(second, api)
        assert (second.report.written, second.report.unchanged) == (0, 0)  # skipped
    assert jobs(site) == before
    with Ledger(site.parent / "ledger.db") as ledger:
        assert ledger.changed_aggregates(0)[1] == change


def test_one_namespace_only(api: FakeApiServer, site: Path) -> None:
    api.add_pod(finished("mine", 1, 1.0, "ida"))
    other = finished("theirs", 1, 1.0, "jon")
    other["metadata"]["namespace"] = "other"
    api.add_pod(other)
    with watching(site, namespace="ml") as watcher:
        listed(watcher, api)
        wait_for("mine", lambda: "mine" in jobs(site), 10, 0.05)
    assert sorted(jobs(site)) == ["mine"]
    assert {r.namespace for r in api.requests if r.resource == "pods"} == {"ml"}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_probes_and_the_health_the_exporter_serves(api: FakeApiServer, site: Path) -> None:
    api.add_pod(running_pod("running", 2, "kim"))
    settings = load_config(site)
    with Ledger(site.parent / "ledger.db") as ledger:
        kube = KubeApi(str(site.parent / "kubeconfig"), None, 500, 60, 10)
        watcher = Watcher(settings, ledger, kube)
        port = free_port()
        server = serve_in_thread(
            probe_app({"/healthz": watcher.alive, "/readyz": watcher.ready}), "127.0.0.1", port
        )
        try:
            assert _get(f"http://127.0.0.1:{port}/readyz") == (503, "failing: not listed yet\n")
            watcher.once()
            status, text = _get(f"http://127.0.0.1:{port}/readyz")
            assert status == 200 and text.startswith("ok: API server last heard")
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        finally:
            server.shutdown()
            server.server_close()
    metrics = subprocess.run(
        [sys.executable, "-m", "jobcarbon", "--config", str(site), "metrics"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    labels = 'cluster="k8s",user="kim",project="vision",gpu_model="NVIDIA-A100-SXM4-80GB"'
    assert samples[f"jobcarbon_running_gpus{{{labels}}}"] == 2.0
    assert samples[f"jobcarbon_running_jobs{{{labels}}}"] == 1.0
    assert samples['jobcarbon_source_restarts_total{source="kubernetes/k8s",reason="expired"}'] == 0
    contact = samples['jobcarbon_source_last_contact_timestamp_seconds{source="kubernetes/k8s"}']
    assert contact == pytest.approx(watcher.health.last_contact)


def test_probes_answer_at_once_and_readyz_fails_while_the_ledger_cannot_be_written(
    api: FakeApiServer, site: Path
) -> None:
    api.add_pod(finished("done", 1, 1.0, "kim"))
    path = site.parent / "ledger.db"
    with Ledger(path, busy_timeout_s=0.2) as ledger:
        kube = KubeApi(str(site.parent / "kubeconfig"), None, 500, 60, 10)
        watcher = Watcher(load_config(site), ledger, kube)
        port = free_port()
        server = serve_in_thread(
            probe_app({"/healthz": watcher.alive, "/readyz": watcher.ready}), "127.0.0.1", port
        )

        def probes() -> list[tuple[int, str]]:  # 16 at the same moment, each path
            with ThreadPoolExecutor(16) as pool:
                urls = [f"http://127.0.0.1:{port}/{p}" for p in ("readyz", "healthz") * 16]
                return list(pool.map(_get, urls))

        blocker = sqlite3.connect(path, isolation_level=None)  # another writer holds the lock
        try:
            blocker.execute("BEGIN IMMEDIATE")
            watcher.once()
            answers = probes()
            assert {a for a in answers[0::2]} == {
                (
                    503,
                    "failing: cannot write the ledger (1 pod(s) waiting): cannot write "
                    f"running jobs to {path}: database is locked\n",  # the last write that failed
                )
            }
            assert {status for status, _ in answers[1::2]} == {200}  # alive all the same
            blocker.execute("ROLLBACK")
            watcher.flush()
            answers = probes()
            assert {status for status, _ in answers} == {200}
            assert all(text.startswith("ok: API server last heard") for _, text in answers[0::2])
            assert ledger.count() == 1
        finally:
            blocker.close()
            server.shutdown()
            server.server_close()


def test_measured_gpu_energy_from_dcgm_exporter(api: FakeApiServer, site: Path) -> None:
    # train: 2 GPUs at 250 W and 300 W for its hour → 1,980,000 J = 0.55 kWh, measured;
    # the notebook has no counter in Prometheus → estimated (2 x 400 W x 1 h = 0.8 kWh)
    start = BASE_TIME + timedelta(seconds=5)
    history = [
        dcgm_energy_series(
            uuid=f"GPU-{index}",
            gpu=index,
            hostname="gpu-node-1",
            namespace="ml",
            pod="train",
            container="main",
            start=start,
            end=start + HOUR,
            watts=watts,
        )
        for index, watts in ((0, 250), (1, 300))
    ]
    busy = [  # the GPUs' busy percent at the same scrapes: 80 and 40, 0.6 on average
        Series(energy.labels, [(t, percent) for t, _ in energy.samples], "DCGM_FI_DEV_GPU_UTIL")
        for energy, percent in zip(history, (80.0, 40.0), strict=True)
    ]
    history += busy
    api.add_pod(finished("train", 2, 1.0, "lea"))
    api.add_pod(finished("notebook", 2, 1.0, "lea"))
    with PrometheusWithHistory(history) as prometheus:
        config = yaml.safe_load(site.read_text())
        config["kubernetes"]["prometheus_url"] = prometheus.url
        site.write_text(yaml.safe_dump(config))
        once = watch_once(site)
    assert once.returncode == 0, once.stderr
    assert "pod ml/notebook: GPU energy estimated, not measured: " in once.stderr
    rows = jobs(site)
    assert rows["train"]["method"] == "mixed"  # GPUs measured, CPU and memory estimated
    assert rows["train"]["energy_gpu_kwh"] == pytest.approx(0.55)
    assert rows["train"]["gpu_utilization"] == pytest.approx(0.6)
    assert rows["notebook"]["method"] == "estimated"
    assert rows["notebook"]["energy_gpu_kwh"] == pytest.approx(0.8)


def test_the_watcher_service_answers_probes_and_stops_on_sigterm(
    api: FakeApiServer, site: Path
) -> None:
    port = free_port()
    config = yaml.safe_load(site.read_text())
    config["kubernetes"]["health_listen"] = f"127.0.0.1:{port}"
    site.write_text(yaml.safe_dump(config))
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobcarbon",
            "--config",
            str(site),
            "k8s",
            "watch",
            "--kubeconfig",
            str(site.parent / "kubeconfig"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for("ready", lambda: _answer(f"http://127.0.0.1:{port}/readyz") == 200, 20, 0.05)
        assert _answer(f"http://127.0.0.1:{port}/healthz") == 200
        api.wait_for_watches(1)
        api.add_pod(finished("served", 1, 1.0, "max"))
        wait_for("served", lambda: "served" in jobs(site), 10, 0.05)
    finally:
        service.terminate()
        output, _ = service.communicate(timeout=10)
    assert service.returncode == 0, output
    assert "accounted 1 pod(s), 0 unchanged" in output


def _answer(url: str) -> int:
    try:
        return _get(url)[0]
    except OSError:
        return 0
