"""A recompute seen by a real Prometheus (2.42 and 3.x): the demo month accounted and
served by a real `jobcarbon serve`, then `jobcarbon ledger recompute` under a config
that raises some figures (PUE 1.3 -> 1.38: the facility overhead) and lowers others
(a GPU cap, a cleaner grid). No counter resets, and what was added less what was
removed over a window spanning the recompute is the ledger's change."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcarbon.accounting import Accountant, ingest
from jobcarbon.config import parse_config
from jobcarbon.exporter.spec import JOB_METRICS
from jobcarbon.ledger import Ledger
from tests.support.net import free_port, wait_for
from tests.support.prometheus_versions import VERSIONS, Prometheus
from tests.test_prometheus import Stack, scraped
from tests.test_recompute import changed_config, demo_records, example_config

COUNTERS = JOB_METRICS[::2]  # each counter; its twin of what was removed follows it
# the ledger's net behind each counter, summed over jobs rows (joules and grams)
NET = {
    "jobcarbon_jobs_total": "COUNT(*)",
    "jobcarbon_gpu_seconds_total": "SUM(gpu_seconds)",
    "jobcarbon_cpu_seconds_total": "SUM(cpu_seconds)",
    "jobcarbon_energy_joules_total": "SUM(energy_facility_kwh) * 3.6e6",
    "jobcarbon_co2e_grams_total": "SUM(co2e_g)",
    "jobcarbon_co2e_market_grams_total": "SUM(co2e_market_g)",
}


def _config(path: Path, ledger: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({**data, "ledger": {"url": f"sqlite:///{ledger}"}}))
    return path


def _sums(ledger_path: Path) -> dict[str, float]:
    with Ledger(ledger_path) as ledger:
        row = ledger._query(f"SELECT {', '.join(NET.values())} FROM jobs", []).fetchone()
    return dict(zip(NET, map(float, row), strict=True))


@pytest.fixture(scope="module", params=VERSIONS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    version: Prometheus = request.param
    root = tmp_path_factory.mktemp("prom")
    ledger_path = root / "ledger.db"
    before = _config(root / "before.yaml", ledger_path, example_config())
    with Ledger(ledger_path) as ledger:
        ingest(demo_records(), Accountant(parse_config(yaml.safe_load(before.read_text()))), ledger)
    stack = Stack(ledger_path, before, free_port(), free_port())
    with scraped(stack, version.tool("prometheus"), root, []):
        yield stack


@pytest.mark.integration
def test_a_recompute_resets_no_counter_and_added_less_removed_is_the_change(
    stack: Stack,
) -> None:
    time.sleep(6)  # samples from before the window that spans the recompute
    started = time.time()
    old = _sums(stack.ledger)
    changed = _config(stack.config.with_name("after.yaml"), stack.ledger, changed_config())
    done = subprocess.run(
        [sys.executable, "-m", "jobcarbon", "--config", str(changed), "ledger", "recompute"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    new = _sums(stack.ledger)
    # the change raised the facility energy's overhead and lowered the rest
    assert new["jobcarbon_co2e_grams_total"] < old["jobcarbon_co2e_grams_total"]
    assert new["jobcarbon_jobs_total"] == old["jobcarbon_jobs_total"] == 2026

    def net(name: str, offset: str = "") -> float:
        removed = JOB_METRICS[JOB_METRICS.index(name) + 1]
        return stack.value(f"sum({name}{offset}) - sum({removed}{offset})")

    co2e = "jobcarbon_co2e_grams_total"
    wait_for(
        "the recompute scraped",
        lambda: net(co2e) == pytest.approx(new[co2e], rel=1e-9),
        60,
        0.5,
    )
    time.sleep(max(3.0, started + 27 - time.time()))  # scrapes after it; 30 s at least
    seconds = int(time.time() - started) + 3
    window = f"{seconds}s"  # from before the recompute to now
    for name in COUNTERS:
        removed = JOB_METRICS[JOB_METRICS.index(name) + 1]
        for counter in (name, removed):
            assert stack.value(f"sum(resets({counter}[{window}]))") == 0, counter
        # the served net now and a window ago: the ledger's change, to float rounding
        assert net(name) - net(name, f" offset {window}") == pytest.approx(
            new[name] - old[name], rel=1e-9, abs=1e-6
        ), name
        # increase() over the window: the same change, but each counter's increase is
        # extrapolated to the window's edges, by up to 1.1 scrape intervals at each
        # (less for one that starts from 0, as a removed twin does): off by at most
        # 2.2 s / window of the two increases (at 1 s scrapes, 2.2/30 < 8 %)
        added = stack.value(f"sum(increase({name}[{window}]))")
        taken = stack.value(f"sum(increase({removed}[{window}]))")
        bound = (added + taken) * 2.2 / seconds + 1e-6
        assert abs(added - taken - (new[name] - old[name])) <= bound, (name, added, taken)
    # some counters rose and some fell: both sides were exercised
    rose = stack.value(
        f"sum(increase(jobcarbon_energy_joules_total{{component='facility_overhead'}}[{window}]))"
    )
    fell = stack.value(f"sum(increase(jobcarbon_co2e_removed_grams_total[{window}]))")
    assert rose > 0 and fell > 0
