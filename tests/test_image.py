"""The container image (Containerfile), tested on its own file system.

No container can run here ("crun: setrlimit RLIMIT_NPROC: Operation not permitted" from
podman run, and buildah's RUN steps use the same runtime), so the image is checked the
way a runtime would start it, one layer down: ``buildah mount`` gives its root file
system, which is bind-mounted read only in a mount namespace of its own (``unshare``),
with the config directory, the ledger volume and a /tmp mounted on it as the manifests
do; the image's entry point then runs there under ``chroot`` as the image's user, with
the image's environment and working directory from ``buildah inspect``. Loopback is the
host's, so the fake API server and the test's HTTP client reach it.

``JOBCARBON_IMAGE`` names the image (.ci/run builds it: ``localhost/jobcarbon:0.1.0``).
Needs root, buildah and unshare.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobcarbon.ledger import Filters, Ledger
from tests.conftest import ROOT
from tests.support.config import make_config
from tests.support.kube_api import BASE_TIME, FakeApiServer, gpu_node, gpu_pod
from tests.support.net import free_port, wait_for
from tests.test_ledger import accounted
from tests.test_prometheus import _get

IMAGE = os.environ.get("JOBCARBON_IMAGE")
TOKEN = "image-test-token"
START = BASE_TIME + timedelta(seconds=5)
END = START + timedelta(hours=1)


@dataclass
class Image:
    root: Path  # the image's file system, mounted by buildah
    config: dict[str, Any]  # the image's OCI config: User, Env, Entrypoint, WorkingDir

    def command(self, *args: str, config_dir: Path, ledger_dir: Path) -> list[str]:
        """The image's entry point with ``args``, as a runtime would start it."""
        user = self.config["User"]
        env = list(self.config.get("Env", []))
        entry = [*self.config["Entrypoint"], *args]
        root = shlex.quote(str(self.root))
        mounts = " && ".join(
            [
                f"mount --bind {root} {root}",
                f"mount -o remount,bind,ro {root}",
                f"mount --bind {shlex.quote(str(config_dir))} {root}/etc/jobcarbon",
                f"mount -o remount,bind,ro {root}/etc/jobcarbon",
                f"mount --bind {shlex.quote(str(ledger_dir))} {root}/var/lib/jobcarbon",
                f"mount -t tmpfs tmpfs {root}/tmp",
                f"mount -t proc proc {root}/proc",
            ]
        )
        workdir = self.config.get("WorkingDir") or "/"
        inside = shlex.join(
            ["/bin/sh", "-c", 'cd "$0" && exec "$@"', workdir, "/usr/bin/env", "-i", *env, *entry]
        )
        return [
            "unshare",
            "--mount",
            "--",
            "/bin/sh",
            "-ec",
            f"{mounts} && exec chroot --userspec={user} {root} {inside}",
        ]


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    if IMAGE is None:
        pytest.skip("JOBCARBON_IMAGE not set: build the image as .ci/run does")
    if os.geteuid() != 0 or shutil.which("buildah") is None:
        pytest.skip("needs root and buildah (apt-get install buildah)")
    info = json.loads(
        subprocess.run(
            ["buildah", "inspect", "--type", "image", IMAGE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    container = subprocess.run(
        ["buildah", "from", "--pull-never", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        mounted = subprocess.run(
            ["buildah", "mount", container], capture_output=True, text=True, check=True
        ).stdout.strip()
        yield Image(Path(mounted), info["OCIv1"]["config"])
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True, check=False)
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def _volumes(tmp_path: Path, uid: int, site: dict[str, Any]) -> tuple[Path, Path]:
    """The config directory (read only in the image) and the ledger volume (the image
    user's, as fsGroup makes it in Kubernetes)."""
    config_dir, ledger_dir = tmp_path / "config", tmp_path / "ledger"
    config_dir.mkdir()
    ledger_dir.mkdir()
    os.chown(ledger_dir, uid, uid)
    site = {**site, "ledger": {"url": "sqlite:////var/lib/jobcarbon/ledger.db"}}
    (config_dir / "config.yaml").write_text(yaml.safe_dump(site))
    return config_dir, ledger_dir


SITE = make_config(
    site="dc", cluster="k8s", sites={"dc": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 400}}}
)


def _uid(image: Image) -> int:
    return int(image.config["User"].split(":")[0])


@pytest.mark.integration
def test_the_image_is_what_the_manifests_run(image: Image) -> None:
    deployment = yaml.safe_load((ROOT / "k8s_manifests" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert _uid(image) == pod["securityContext"]["runAsUser"] == 65532
    assert image.config["Entrypoint"] == ["jobcarbon"]
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["command"] == image.config["Entrypoint"]
    # the extras the manifests need: the pod watcher's client and PostgreSQL's driver
    python = image.root / "opt" / "jobcarbon" / "bin" / "python"
    assert python.is_symlink() or python.is_file()
    site_packages = list((image.root / "opt" / "jobcarbon" / "lib").glob("python3*/site-packages"))
    (packages,) = site_packages
    assert (packages / "kubernetes").is_dir() and (packages / "psycopg").is_dir()
    assert (packages / "jobcarbon" / "data" / "regions.csv").is_file()


def test_the_readme_builds_and_pushes_the_image_the_manifests_name() -> None:
    kustomization = yaml.safe_load((ROOT / "k8s_manifests" / "kustomization.yaml").read_text())
    (entry,) = [i for i in kustomization["images"] if i["name"] == "jobcarbon"]
    reference = f"{entry['newName']}:{entry['newTag']}"
    readme = (ROOT / "README.md").read_text()
    assert f"buildah build -f Containerfile -t {reference} " in readme
    assert f"buildah push {reference}" in readme
    assert reference in (ROOT / "Containerfile").read_text()


@pytest.mark.integration
def test_serve_answers_metrics_from_a_mounted_ledger(image: Image, tmp_path: Path) -> None:
    config_dir, ledger_dir = _volumes(tmp_path, _uid(image), SITE)
    with Ledger(ledger_dir / "ledger.db") as ledger:
        ledger.write(
            [
                accounted("1", 100.0, user="alice", project="p1", cluster="k8s"),
                accounted("2", 300.0, user="bob", project="p1", cluster="k8s"),
            ]
        )
        total = ledger.totals(Filters())
    for path in ledger_dir.iterdir():
        os.chown(path, _uid(image), _uid(image))
    port = free_port()
    command = image.command(
        "serve", "--listen", f"127.0.0.1:{port}", config_dir=config_dir, ledger_dir=ledger_dir
    )
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for("serve in the image", lambda: _get(f"http://127.0.0.1:{port}/healthz"), 60, 0.2)
        body = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=20)
    assert body, stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    jobs = sum(v for (name, _), v in samples.items() if name == "jobcarbon_jobs_total")
    co2e_g = sum(v for (name, _), v in samples.items() if name == "jobcarbon_co2e_grams_total")
    assert jobs == total.jobs == 2
    assert co2e_g == pytest.approx(total.co2e_kg * 1000)


@pytest.mark.integration
def test_k8s_watch_reaches_the_api_server(image: Image, tmp_path: Path) -> None:
    site = {
        **SITE,
        "kubernetes": {"health_listen": None, "read_timeout_s": 10, "watch_timeout_s": 60},
    }
    config_dir, ledger_dir = _volumes(tmp_path, _uid(image), site)
    with FakeApiServer(token=TOKEN) as api:
        api.add_node(gpu_node("gpu-node-1"))
        # 2 GPUs for one hour, ended: the watcher accounts it (tests/sources/test_kubernetes.py)
        api.add_pod(
            gpu_pod("train-a", "ml", phase="Succeeded", gpus=2, started=START, finished=END)
        )
        (config_dir / "kubeconfig").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                    "users": [{"name": "watcher", "user": {"token": TOKEN}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "watcher"}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        command = image.command(
            "k8s",
            "watch",
            "--once",
            "--kubeconfig",
            "/etc/jobcarbon/kubeconfig",
            config_dir=config_dir,
            ledger_dir=ledger_dir,
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        requests = api.requests
    assert result.returncode == 0, result.stderr
    assert re.match(r"accounted 1 pod\(s\)", result.stdout.strip()), result.stdout
    # the watcher in the image listed the pods with the token (401 without it)
    assert ("list", "pods", 200) in {(r.kind, r.resource, r.status) for r in requests}
    with Ledger(ledger_dir / "ledger.db") as ledger:
        (row,) = ledger.jobs(Filters())
    assert row["name"] == "train-a" and row["gpu_seconds"] == 7200.0
