"""The Kubernetes manifests: kustomize renders them, each built-in object validates against
the Kubernetes 1.32 OpenAPI schemas (kubernetes-validate, offline), the objects agree with
each other (RBAC, labels and selectors, ports, the shared ledger volume) and the config
they carry is a valid jobcarbon config."""

from __future__ import annotations

import itertools
import re
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
NAMESPACE = "jobcarbon"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# The lines of kustomization.yaml that an admin uncomments to get the ServiceMonitor.
COMPONENTS_COMMENTED = "# components:\n#   - components/servicemonitor\n"
COMPONENTS_ENABLED = "components:\n  - components/servicemonitor\n"
# The Prometheus Operator's Duration pattern (monitoring.coreos.com/v1, e.g. `30s`, `1m`).
PROMETHEUS_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)

Doc = dict[str, Any]


def _kustomize(directory: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (its built-in kustomize renders the base)")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return _kustomize(MANIFESTS)


@pytest.fixture(scope="module")
def rendered_with_servicemonitor(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The base as an admin with the Prometheus Operator has it: a copy with the
    `components:` lines of kustomization.yaml uncommented."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s_manifests"
    shutil.copytree(MANIFESTS, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text()
    assert COMPONENTS_COMMENTED in text, "kustomization.yaml lost its commented components"
    kustomization.write_text(text.replace(COMPONENTS_COMMENTED, COMPONENTS_ENABLED))
    return _kustomize(copy)


def _one(docs: list[Doc], kind: str) -> Doc:
    (doc,) = (doc for doc in docs if doc["kind"] == kind)
    return doc


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels-style selector (non-empty) selects these labels."""
    assert selector, "an empty selector selects everything"
    return all(labels.get(key) == value for key, value in selector.items())


def _deployment_pod(docs: list[Doc]) -> Doc:
    template: Doc = _one(docs, "Deployment")["spec"]["template"]
    return template


def _cronjob_pod(docs: list[Doc]) -> Doc:
    template: Doc = _one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    return template


def test_every_object_validates_against_the_kubernetes_schemas(rendered: list[Doc]) -> None:
    assert sorted(doc["kind"] for doc in rendered) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CronJob",
        "Deployment",
        "Namespace",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "jobcarbon"


def test_the_report_runs_on_the_3rd_once_at_a_time(rendered: list[Doc]) -> None:
    cronjob = _one(rendered, "CronJob")
    spec = cronjob["spec"]
    assert (spec["schedule"], spec["timeZone"]) == ("0 6 3 * *", "Etc/UTC")
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "jobcarbon report monthly --send && jobcarbon report monthly --send --leads"
    ]
    configmap = _one(rendered, "ConfigMap")
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]  # hashed name


def test_the_watcher_may_only_read_pods_and_nodes(rendered: list[Doc]) -> None:
    role = _one(rendered, "ClusterRole")
    assert "aggregationRule" not in role
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        granted |= set(itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]))
    assert granted == set(itertools.product([""], ["pods", "nodes"], ["get", "list", "watch"]))


def test_the_binding_gives_the_role_to_the_deployments_service_account(
    rendered: list[Doc],
) -> None:
    role, binding = _one(rendered, "ClusterRole"), _one(rendered, "ClusterRoleBinding")
    account = _one(rendered, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert _deployment_pod(rendered)["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_the_deployment_is_one_writer_replaced_not_rolled(rendered: list[Doc]) -> None:
    spec = _one(rendered, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    containers = {c["name"]: c for c in spec["template"]["spec"]["containers"]}
    assert set(containers) == {"watcher", "exporter"}
    assert (containers["watcher"]["command"], containers["watcher"]["args"]) == (
        ["jobcarbon"],
        ["k8s", "watch"],
    )
    assert (containers["exporter"]["command"], containers["exporter"]["args"]) == (
        ["jobcarbon"],
        ["serve", "--listen", "0.0.0.0:9877"],
    )
    for container in containers.values():
        assert container["image"] == "registry.example.org/jobcarbon:0.1.0"  # images: rewrote it


def test_every_deployment_container_is_locked_down_and_probed(rendered: list[Doc]) -> None:
    pod = _deployment_pod(rendered)["spec"]
    pod_security = pod["securityContext"]
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert (pod_security["runAsUser"], pod_security["fsGroup"]) == (65532, 65532)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        name = container["name"]
        security = {**pod_security, **container["securityContext"]}
        assert security["runAsNonRoot"] is True, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
        ports = {p["name"] for p in container["ports"]} | {
            p["containerPort"] for p in container["ports"]
        }
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, f"{name} has no {probe}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, f"{name}.{probe}"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/etc/jobcarbon"]["readOnly"] is True, name
        assert "persistentVolumeClaim" in volumes[mounts["/var/lib/jobcarbon"]["name"]], name
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name  # the root FS is read-only
        env = {e["name"]: e for e in container["env"]}
        assert env["JOBCARBON_CONFIG"]["value"] == "/etc/jobcarbon/config.yaml", name
        secret = env["JOBCARBON_LEDGER_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "jobcarbon-ledger", "key": "password", "optional": True}
    configmap = _one(rendered, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    claim = _one(rendered, "PersistentVolumeClaim")
    assert volumes["ledger"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_the_watcher_probes_the_port_the_config_serves_health_on(rendered: list[Doc]) -> None:
    config = parse_config(yaml.safe_load(_one(rendered, "ConfigMap")["data"]["config.yaml"]))
    assert config.kubernetes.health_listen is not None
    port = int(config.kubernetes.health_listen.rsplit(":", 1)[1])
    containers = {c["name"]: c for c in _deployment_pod(rendered)["spec"]["containers"]}
    assert {"name": "health", "containerPort": port} in containers["watcher"]["ports"]
    assert containers["watcher"]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert containers["watcher"]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_service_selects_the_deployments_pods_only(rendered: list[Doc]) -> None:
    service = _one(rendered, "Service")
    selector = service["spec"]["selector"]
    assert _selects(selector, _deployment_pod(rendered)["metadata"]["labels"])
    assert not _selects(selector, _cronjob_pod(rendered)["metadata"].get("labels", {}))
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 9877, "metrics")
    container_ports = [
        p for c in _deployment_pod(rendered)["spec"]["containers"] for p in c["ports"]
    ]
    assert {"name": "metrics", "containerPort": 9877} in container_ports


def test_the_report_runs_on_the_node_that_holds_the_ledger(rendered: list[Doc]) -> None:
    pod = _cronjob_pod(rendered)
    affinity = pod["spec"]["affinity"]["podAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert set(term["labelSelector"]) == {"matchLabels"}
    selector = term["labelSelector"]["matchLabels"]
    assert _selects(selector, _deployment_pod(rendered)["metadata"]["labels"])
    assert not _selects(selector, pod["metadata"]["labels"])
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for p in (pod, _deployment_pod(rendered))
        for v in p["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {_one(rendered, "PersistentVolumeClaim")["metadata"]["name"]}


def test_the_servicemonitor_component_adds_only_the_servicemonitor(
    rendered: list[Doc], rendered_with_servicemonitor: list[Doc]
) -> None:
    assert "ServiceMonitor" not in {doc["kind"] for doc in rendered}  # plain clusters apply it
    added = [doc for doc in rendered_with_servicemonitor if doc not in rendered]
    assert [doc["kind"] for doc in added] == ["ServiceMonitor"]
    assert len(rendered_with_servicemonitor) == len(rendered) + 1


def test_the_servicemonitor_scrapes_the_services_metrics_port(
    rendered_with_servicemonitor: list[Doc],
) -> None:
    """kubernetes-validate knows only the built-in kinds, and no package in the
    registries reachable here ships the Prometheus Operator's ServiceMonitor CRD schema
    as data: npm's @kubernetes-models/prometheus-operator (MIT) has it only compiled into
    JavaScript validator functions, PyPI's cloudcoil-models-prometheus-operator
    (Apache-2.0) only as pydantic classes needing the cloudcoil client. So the fields are
    checked here: exactly the ones we use, with the CRD's types and duration pattern, and
    that they agree with the Service."""
    docs = rendered_with_servicemonitor
    monitor, service = _one(docs, "ServiceMonitor"), _one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    spec = monitor["spec"]
    assert set(spec) == {"selector", "endpoints"}  # no namespaceSelector: its own namespace
    assert set(spec["selector"]) == {"matchLabels"}
    assert _selects(spec["selector"]["matchLabels"], service["metadata"]["labels"])
    for other in docs:
        if other["kind"] == "Service" and other is not service:
            assert not _selects(spec["selector"]["matchLabels"], other["metadata"]["labels"])
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("60s", "10s")
    for duration in (endpoint["interval"], endpoint["scrapeTimeout"]):
        assert PROMETHEUS_DURATION.match(duration), duration


def test_the_shipped_config_is_valid() -> None:
    config = parse_config(yaml.safe_load((MANIFESTS / "config.yaml").read_text()))
    assert config.ledger_location() == Path("/var/lib/jobcarbon/ledger.db")
    assert config.kubernetes.cluster == "gpu-platform"


@pytest.fixture(scope="module")
def rendered_with_web_auth(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The base with components/web-tls-auth listed, as its comment says."""
    copy = tmp_path_factory.mktemp("k8s-web") / "k8s_manifests"
    shutil.copytree(MANIFESTS, copy)
    kustomization = copy / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text() + "components:\n  - components/web-tls-auth\n"
    )
    return _kustomize(copy)


def test_the_web_auth_component_serves_tls_and_basic_auth_from_its_secret(
    rendered: list[Doc], rendered_with_web_auth: list[Doc], tmp_path: Path
) -> None:
    from jobcarbon.errors import ConfigError
    from jobcarbon.exporter import load_web_config

    docs = rendered_with_web_auth
    added = [doc["kind"] for doc in docs if doc["kind"] not in {d["kind"] for d in rendered}]
    assert added == ["Secret"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    secret = _one(docs, "Secret")
    pod = _deployment_pod(docs)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    exporter = next(c for c in pod["containers"] if c["name"] == "exporter")
    assert exporter["args"][:3] == ["serve", "--listen", "0.0.0.0:9877"]
    option, web_file = exporter["args"][3:]
    assert option == "--web.config.file"
    mounts = {m["mountPath"]: m["name"] for m in exporter["volumeMounts"]}
    # the file the exporter is given is the Secret's key, where it is mounted
    directory, key = web_file.rsplit("/", 1)
    assert volumes[mounts[directory]]["secret"]["secretName"] == secret["metadata"]["name"]
    web = yaml.safe_load(secret["stringData"][key])
    tls = web["tls_server_config"]
    for path, tls_key in ((tls["cert_file"], "tls.crt"), (tls["key_file"], "tls.key")):
        directory, name = path.rsplit("/", 1)
        assert name == tls_key  # the keys of a kubernetes.io/tls Secret
        assert volumes[mounts[directory]]["secret"]["secretName"] == "jobcarbon-tls"
    for probe in ("livenessProbe", "readinessProbe"):
        assert exporter[probe]["httpGet"]["scheme"] == "HTTPS"
        assert exporter[probe]["httpGet"]["path"] == "/healthz"  # wants no password
    assert {m["name"] for m in exporter["volumeMounts"]} >= {"config", "ledger", "tmp"}
    # the shipped placeholder must be replaced: the exporter refuses to start with it
    placeholder = tmp_path / "web.yml"
    placeholder.write_text(yaml.safe_dump({"basic_auth_users": web["basic_auth_users"]}))
    with pytest.raises(ConfigError, match=r"basic_auth_users\.prometheus: not a bcrypt hash"):
        load_web_config(placeholder)
