"""The Kubernetes manifests: kustomize renders them, each object validates against the
Kubernetes 1.32 OpenAPI schemas (kubernetes-validate, offline), and the config they
carry is a valid jobcarbon config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from jobcarbon.config import parse_config
from tests.conftest import ROOT

MANIFESTS = ROOT / "k8s_manifests"
KUBERNETES_VERSION = "1.32.0"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (its built-in kustomize renders the base)")
    done = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    assert sorted(doc["kind"] for doc in rendered) == [
        "ConfigMap",
        "CronJob",
        "Namespace",
        "PersistentVolumeClaim",
    ]
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "jobcarbon"


def test_the_report_runs_on_the_3rd_once_at_a_time(rendered: list[dict[str, Any]]) -> None:
    (cronjob,) = (doc for doc in rendered if doc["kind"] == "CronJob")
    spec = cronjob["spec"]
    assert (spec["schedule"], spec["timeZone"]) == ("0 6 3 * *", "Etc/UTC")
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "jobcarbon report monthly --send && jobcarbon report monthly --send --leads"
    ]
    (configmap,) = (doc for doc in rendered if doc["kind"] == "ConfigMap")
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]  # hashed name


def test_the_shipped_config_is_valid() -> None:
    config = parse_config(yaml.safe_load((MANIFESTS / "config.yaml").read_text()))
    assert config.ledger_location() == Path("/var/lib/jobcarbon/ledger.db")
