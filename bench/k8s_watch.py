"""Pod events through the watcher: 10,000 events (2,500 GPU pods, each added pending,
running, succeeded and deleted) read from a watch stream and accounted into a SQLite
ledger.

Usage: python bench/k8s_watch.py [--pods 2500]. The stream comes from the tests' fake
API server (tests/support/kube_api.py) in its own process, as a real API server is, over
loopback HTTP, read by the real kubernetes client; the time runs from opening the
watch until the last pod is in the ledger. Then the
same events handed to the watcher directly (no HTTP) to show what the accounting
itself costs. Figures only; nothing is asserted. The issue's target: 10,000 events in
under 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake API server lives with the tests

from tests.support.kube_api import BASE_TIME, FakeApiServer, gpu_node, gpu_pod  # noqa: E402
from tests.support.net import free_port, wait_for  # noqa: E402

from jobcarbon.config import Config, parse_config  # noqa: E402
from jobcarbon.daemons.watcher import Watcher  # noqa: E402
from jobcarbon.ledger import Ledger  # noqa: E402
from jobcarbon.sources.kubernetes.api import Disconnected, KubeApi  # noqa: E402


def config(ledger: Path) -> Config:
    return parse_config(
        {
            "sites": {"dc": {"pue": 1.3, "grid": {"intensity_g_per_kwh": 300}}},
            "clusters": {"k8s": {"site": "dc"}},
            "ledger": {"url": f"sqlite:///{ledger}"},
            "kubernetes": {"health_listen": None, "running_interval_s": 3600},
        }
    )


def fill(server: FakeApiServer, pods: int) -> None:
    for i in range(pods):
        name, namespace = f"train-{i}", f"team-{i % 50}"
        created = BASE_TIME + timedelta(seconds=i)
        start = created + timedelta(seconds=5)
        server.add_pod(gpu_pod(name, namespace, phase="Pending", created=created, gpus=1 + i % 8))
        server.update_pod(gpu_pod(name, namespace, created=created, gpus=1 + i % 8))
        server.update_pod(
            gpu_pod(
                name,
                namespace,
                phase="Succeeded",
                created=created,
                gpus=1 + i % 8,
                started=start,
                finished=start + timedelta(minutes=10 + i % 600),
            )
        )
        server.delete_pod(namespace, name)


def serve(pods: int, port: int, listed: Any, filled: Any, done: Any) -> None:
    """The API server, in its own process as a real one is: fills its event log once
    the watcher has listed, then serves the watch."""
    server = FakeApiServer(port).start()
    server.add_node(gpu_node("gpu-node-1"))
    listed.wait()
    fill(server, pods)
    filled.set()
    done.wait()
    server.stop()


def over_http(pods: int) -> tuple[float, int]:
    context = multiprocessing.get_context("fork")
    port = free_port()
    listed, filled, done = context.Event(), context.Event(), context.Event()
    process = context.Process(target=serve, args=(pods, port, listed, filled, done))
    process.start()
    wait_for("the API server", lambda: _open(port), 10, 0.05)
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "b", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "b", "user": {}}],
                    "contexts": [{"name": "b", "context": {"cluster": "b", "user": "b"}}],
                    "current-context": "b",
                }
            )
        )
        settings = config(Path(tmp) / "ledger.db")
        stop = threading.Event()
        watchers: list[Watcher] = []
        started: list[float] = []

        def run() -> None:  # SQLite connections stay in the thread that opened them
            with Ledger(Path(tmp) / "ledger.db") as ledger:
                api = KubeApi(str(kubeconfig), None, 500, 600, 60)
                watcher = Watcher(settings, ledger, api)
                watchers.append(watcher)
                watcher.relist()  # empty: the events come after this version
                listed.set()
                filled.wait()
                started.append(time.perf_counter())
                with contextlib.suppress(Disconnected):  # the server stops at the end
                    watcher.watch(stop.is_set)

        thread = threading.Thread(target=run)
        thread.start()
        wait_for("the watch to start", lambda: bool(started), 600, 0.001)
        while watchers[0].report.written < pods and thread.is_alive():
            time.sleep(0.005)
        elapsed = time.perf_counter() - started[0]
        stop.set()
        done.set()
        thread.join(10)
        process.join(10)
        return elapsed, watchers[0].report.written


def _open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def direct(pods: int) -> float:
    server = FakeApiServer()  # only its store and event log: never started
    server.add_node(gpu_node("gpu-node-1"))
    fill(server, pods)
    events = [{"type": e.type, "object": e.object} for e in server.events() if e.resource == "pods"]
    node = gpu_node("gpu-node-1")["metadata"]["labels"]

    class Nodes:
        def node_labels(self, name: str) -> dict[str, str]:
            return dict(node)

    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "ledger.db") as ledger:
        watcher = Watcher(config(Path(tmp) / "ledger.db"), ledger, Nodes())  # type: ignore[arg-type]
        started = time.perf_counter()
        for i, event in enumerate(events):
            watcher.handle(event)
            if i % 500 == 499:
                watcher.flush()
        watcher.flush()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=2500)
    pods = parser.parse_args().pods
    events = 4 * pods
    elapsed, written = over_http(pods)
    print(
        f"watch stream over HTTP: {events:,} events ({written:,} pods accounted) in "
        f"{elapsed:.2f} s: {events / elapsed:,.0f} events/s (target: 10,000 in < 2 s)"
    )
    handled = direct(pods)
    print(
        f"the same events handed to the watcher (no HTTP): {handled:.2f} s: "
        f"{events / handled:,.0f} events/s"
    )


if __name__ == "__main__":
    main()
