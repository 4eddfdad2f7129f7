"""`jobcarbon serve` scraped by a real Prometheus on loopback, 2.42 and 3.x
(tests/support/prometheus_versions.py).

Checks that what Prometheus stores equals the ledger, that every expression of every
dashboard panel and every rule runs there (with its variables filled in), and that an
exporter restart does not reset a counter. Rule logic itself is unit-tested with
``promtool test rules`` (prometheus/rules.test.yaml).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcarbon.ledger import Filters, Ledger, Running
from jobcarbon.records import JobState
from tests.conftest import ROOT
from tests.support.config import make_config
from tests.support.net import free_port, wait_for
from tests.support.prometheus_versions import VERSIONS, Prometheus
from tests.test_ledger import accounted


@dataclass
class Stack:
    ledger: Path
    config: Path
    exporter_port: int
    prometheus_port: int
    exporter: subprocess.Popen[bytes] | None = None

    def start_exporter(self) -> None:
        self.exporter = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobcarbon",
                "--config",
                str(self.config),
                "serve",
                "--listen",
                f"127.0.0.1:{self.exporter_port}",
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT / "plugin")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            "the exporter",
            lambda: _get(f"http://127.0.0.1:{self.exporter_port}/healthz") is not None,
            30,
        )

    def stop_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.terminate()
            self.exporter.wait(10)
            self.exporter = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float:
        (sample,) = self.query(expr)
        return float(sample["value"][1])


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


@pytest.fixture(scope="module", params=VERSIONS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    version: Prometheus = request.param
    binary = version.tool("prometheus")
    root = tmp_path_factory.mktemp("prom")
    ledger_path = root / "ledger.db"
    with Ledger(ledger_path) as ledger:
        ledger.write(
            [
                accounted("1", 100.0, user="alice", project="p1"),
                accounted("2", 300.0, user="bob", project="p1", partition="big"),
                accounted("3", 50.0, user="alice", project="p2", state=JobState.FAILED),
                accounted("4", 25.0, user="carol", project="p2", cluster="c2"),
            ]
        )
        ledger.add_ingest_errors({"parse": 1})
        ledger.set_gauge("slurm.pending_jobs", 2)
        # what a pod watcher writes: its health, and its running pods' usage so far
        ledger.set_gauge("kubernetes/c1.last_contact", time.time())
        ledger.set_gauge("kubernetes/c1.restarts.expired", 1)
        ledger.set_running(
            "c1",
            [
                Running("c1", "alice", "p1", "A100 SXM4 80 GB", 1, 2.0, 7200.0, 1.2, 480.0),
                Running("c1", "bob", "p1", "", 1, 0.0, 0.0, 0.1, 40.0),
            ],
        )
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            make_config(
                sites={"s1": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 200}}},
                clusters={"c2": {"site": "s1"}},
                ledger={"url": f"sqlite:///{ledger_path}"},
            )
        )
    )
    stack = Stack(ledger_path, config, free_port(), free_port())
    with scraped(stack, binary, root, [str(ROOT / "prometheus" / "rules.yaml")]):
        yield stack


@contextlib.contextmanager
def scraped(stack: Stack, binary: str, root: Path, rule_files: list[str]) -> Iterator[None]:
    """The stack's exporter started and a Prometheus scraping it (``start_prometheus``),
    until three scrapes are in (increase() over a range needs a few samples); both
    stopped at the end."""
    stack.start_exporter()
    prometheus = start_prometheus(binary, root, stack, rule_files)
    try:
        wait_for("three scrapes", lambda: _ready(stack), 60, 0.5)
        yield
    finally:
        stack.stop_exporter()
        prometheus.terminate()
        prometheus.wait(20)


def start_prometheus(
    binary: str, root: Path, stack: Stack, rule_files: list[str]
) -> subprocess.Popen[bytes]:
    """Prometheus scraping the stack's exporter every second, its data under ``root``."""
    (root / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": rule_files,
                "scrape_configs": [
                    {
                        "job_name": "jobcarbon",
                        "static_configs": [{"targets": [f"127.0.0.1:{stack.exporter_port}"]}],
                    }
                ],
            }
        )
    )
    return subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{stack.prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "prometheus.log").open("wb"),
    )


def _ready(stack: Stack) -> bool:
    try:
        result = stack.query("count_over_time(jobcarbon_ledger_up[5m])")
    except OSError:
        return False
    return bool(result) and float(result[0]["value"][1]) >= 3


@pytest.mark.integration
def test_prometheus_totals_equal_the_ledger(stack: Stack) -> None:
    with Ledger(stack.ledger) as ledger:
        total = ledger.totals(Filters())
    assert stack.value("sum(jobcarbon_co2e_grams_total)") == pytest.approx(total.co2e_kg * 1000)
    assert stack.value("sum(jobcarbon_jobs_total)") == total.jobs == 4
    assert stack.value("sum(jobcarbon_gpu_seconds_total)") / 3600 == pytest.approx(total.gpu_hours)
    # the components add up to facility energy
    assert stack.value("sum(jobcarbon_energy_joules_total)") / 3.6e6 == pytest.approx(
        total.energy_kwh
    )
    assert stack.value("jobcarbon_ledger_up") == 1


def _panel_expressions() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
        for variable in board["templating"]["list"]:
            query = variable["query"] if variable["type"] == "query" else ""
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
            if match:  # label_values(selector, label) as PromQL
                found.append(
                    (
                        f"{path.name}: ${variable['name']}",
                        f"group by ({match.group(2)}) ({match.group(1)})",
                    )
                )
    return found


def _fill(expr: str) -> str:
    for name, value in (
        ("$__range", "1h"),
        ("$cluster", ".*"),
        ("$project", "p1"),
        ("$user", "alice"),
    ):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


@pytest.mark.integration
@pytest.mark.parametrize(("where", "expr"), _panel_expressions())
def test_every_dashboard_expression_returns_data(stack: Stack, where: str, expr: str) -> None:
    assert stack.query(_fill(expr)), f"{where}: no data for {_fill(expr)}"


def _rules() -> list[tuple[str, str, bool]]:
    groups = yaml.safe_load((ROOT / "prometheus" / "rules.yaml").read_text())["groups"]
    return [
        (rule.get("record") or rule["alert"], rule["expr"], "record" in rule)
        for group in groups
        for rule in group["rules"]
    ]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "expr", "recording"), _rules())
def test_every_rule_expression_runs(stack: Stack, name: str, expr: str, recording: bool) -> None:
    result = stack.query(expr)  # raises on a PromQL error
    if recording:
        assert result, f"recording rule {name} returns no data"


@pytest.mark.integration
def test_rules_load_in_prometheus(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/rules"
    with urllib.request.urlopen(url, timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {name for name, _, _ in _rules()}
    assert all(rule["health"] != "err" for group in groups for rule in group["rules"])


@pytest.mark.integration
def test_an_exporter_restart_does_not_reset_counters(stack: Stack) -> None:
    before = stack.value("sum(jobcarbon_jobs_total)")
    stack.stop_exporter()
    wait_for("a failed scrape", lambda: stack.value('up{job="jobcarbon"}') == 0, 30, 0.5)
    stack.start_exporter()
    wait_for("scrapes again", lambda: stack.value('up{job="jobcarbon"}') == 1, 30, 0.5)
    assert stack.value("sum(jobcarbon_jobs_total)") == before
    assert stack.value("sum(resets(jobcarbon_jobs_total[10m]))") == 0
    assert stack.value("sum(resets(jobcarbon_co2e_grams_total[10m]))") == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_rules_pass_promtool_unit_tests(version: Prometheus) -> None:
    result = subprocess.run(
        [version.tool("promtool"), "test", "rules", "rules.test.yaml"],
        cwd=ROOT / "prometheus",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_what_the_generator_makes() -> None:
    from tests.conftest import load_tool

    module = load_tool("make_dashboards")
    for name, make in module.DASHBOARDS.items():
        board = json.loads((ROOT / "dashboards" / name).read_text())
        assert (ROOT / "dashboards" / name).read_text() == module.render(make), name
        variables = [v["name"] for v in board["templating"]["list"]]
        assert variables[0] == "datasource" and "cluster" in variables
        text = json.dumps(board)
        assert '"uid": "${datasource}"' in text
        assert not re.search(r'"uid": "(?!\$\{datasource\}|jobcarbon-)', text), "hard-coded uid"
