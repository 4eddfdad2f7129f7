"""`jobcarbon ledger recompute` on real SQLite and PostgreSQL ledgers: footprints again
from the stored usage with a changed config, equal row for row to a fresh import under
it; resumable after SIGKILL; beside other writers; the v8 -> v9 migration of 100k jobs."""

from __future__ import annotations

import json
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.accounting import Accountant, ingest, ingest_on_two_cores
from jobcarbon.cli import main
from jobcarbon.config import Config, parse_config
from jobcarbon.ledger import (
    JOB_COLUMNS,
    MIGRATIONS,
    POSTGRES_MIGRATIONS,
    SCHEMA_VERSION,
    Ledger,
    UsageScope,
    ledger_row,
)
from jobcarbon.ledger.dialect import POSTGRES as POSTGRES_DIALECT
from jobcarbon.ledger.dialect import sqlite_statements
from jobcarbon.recompute import outdated, recompute
from jobcarbon.records import Component, JobRecord, MeasuredEnergy
from jobcarbon.sources.slurm.sacct import read_parsable
from tests.conftest import make_job, utc
from tests.sources.test_kubernetes import api, finished, site, watch_once  # noqa: F401
from tests.sources.test_kubernetes import jobs as pods
from tests.support.config import make_config
from tests.support.kube_api import FakeApiServer
from tests.test_ledger import running_totals, start_together, totals_from_rows

DEMO = resources.files("jobcarbon").joinpath("data", "demo", "sacct-2026-10.txt")
EVERYTHING = UsageScope()


def example_config() -> dict[str, Any]:
    """The example config (the demo's: cluster aurora at site lyon, region DE)."""
    text = resources.files("jobcarbon").joinpath("data", "config.example.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def changed_config() -> dict[str, Any]:
    """The example with the month's measured PUE, a fixed hardware rule and another grid."""
    data = example_config()
    lyon = data["sites"]["lyon"]
    lyon["pue_monthly"] = {**lyon["pue_monthly"], "2026-10": 1.38}
    lyon["grid"] = {"region": "FR"}
    rules = data["clusters"]["aurora"]["hardware"]
    rules[0] = {**rules[0], "gpu_tdp_w": 350}  # the A100 partition's boards, capped
    return data


def second_location(ledger_location: str | Path, request: pytest.FixtureRequest) -> str | Path:
    """Another empty ledger on the same backend as ``ledger_location``."""
    if isinstance(ledger_location, Path):
        return ledger_location.with_name("fresh.db")
    return str(request.getfixturevalue("postgres").new_database())


def demo_records() -> list[Any]:
    return list(read_parsable(DEMO.read_text().splitlines(), cluster="aurora"))


def same_row(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Equal, figures to 1e-12."""
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-12) if isinstance(x, float) else x == y
        for x, y in zip(a, b, strict=True)
    )


Totals = dict[tuple[str, ...], tuple[int, float]]


def assert_same_totals(kept: Totals, expected: Totals) -> None:
    """The same label sets, each with the same jobs and CO2e (to 1e-9: sums of floats
    added in another order)."""
    assert kept.keys() == expected.keys()
    for labels, (count, co2e_g) in expected.items():
        assert kept[labels][0] == count
        assert kept[labels][1] == pytest.approx(co2e_g, rel=1e-9, abs=1e-9)


def assert_totals_are_the_rows(ledger: Ledger) -> None:
    """The running totals equal the sums of the job rows, label set by label set."""
    assert_same_totals(running_totals(ledger), totals_from_rows(ledger))


def test_a_recompute_equals_a_fresh_import_under_the_new_config(
    ledger_location: str | Path, request: pytest.FixtureRequest
) -> None:
    before, after = parse_config(example_config()), parse_config(changed_config())
    with Ledger(ledger_location) as ledger:
        imported = ingest_on_two_cores(demo_records(), Accountant(before), ledger)
        assert (imported.written, imported.failed) == (2026, 0)
        assert recompute(ledger, before, EVERYTHING).run.jobs_changed == 0  # nothing to do
        old_total = ledger.totals()
        found = outdated(ledger, after)
        assert [(o.site, o.cluster, o.data_only) for o in found] == [("lyon", "aurora", False)]
        assert found[0].command == "jobcarbon ledger recompute --site lyon --cluster aurora"
        report = recompute(ledger, after, EVERYTHING, batch_size=500)
        run = report.run
        assert (run.jobs_seen, run.jobs_failed, run.jobs_incomplete) == (2026, 0, 0)
        recomputed = list(ledger.jobs())
        recomputed_totals = running_totals(ledger)
        new_total = ledger.totals()
        assert_totals_are_the_rows(ledger)
        assert outdated(ledger, after) == []
        again = recompute(ledger, after, EVERYTHING)
        assert (again.run.jobs_seen, again.run.jobs_changed) == (2026, 0)  # idempotent
        assert [r.status for r in ledger.recompute_runs()] == ["finished"] * 3
    with Ledger(second_location(ledger_location, request)) as fresh:
        ingest(demo_records(), Accountant(after), fresh)
        assert list(fresh.jobs()) == recomputed  # row for row, provenance included
        assert_same_totals(running_totals(fresh), recomputed_totals)
    # every job changed (the grid), and the run's deltas are the totals' change
    assert run.jobs_changed == 2026
    assert sum(d[1] for d in run.deltas.values()) / 1000 == pytest.approx(
        new_total.co2e_kg - old_total.co2e_kg
    )
    assert sum(d[2] for d in run.deltas.values()) == pytest.approx(
        new_total.energy_kwh - old_total.energy_kwh
    )
    assert {where for where, _month in run.deltas} == {"lyon"}


def test_pods_accounted_by_the_watcher_are_recomputed_without_an_api_server(
    api: FakeApiServer,  # noqa: F811
    site: Path,  # noqa: F811
) -> None:
    api.add_pod(finished("train-a", 2, 1.0, "alice"))
    watched = watch_once(site)
    assert watched.returncode == 0, watched.stderr
    before = pods(site)["train-a"]
    assert before["energy_gpu_kwh"] == pytest.approx(0.8)  # 2 x 400 W (A100's TDP) x 1 h
    api.stop()  # from here on, no API server
    data = yaml.safe_load(site.read_text())
    product = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}  # the node's own label
    data["clusters"]["k8s"]["hardware"] = [{"match": {"node_label": product}, "gpu_tdp_w": 300}]
    data["sites"]["dc"]["pue"] = 1.25
    site.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["--config", str(site), "ledger", "recompute", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert (answer["jobs_seen"], answer["jobs_changed"], answer["jobs_incomplete"]) == (1, 1, 0)
    after = pods(site)["train-a"]
    assert after["energy_gpu_kwh"] == pytest.approx(0.6)  # 2 x 300 W x 1 h: the label matched
    it_kwh = after["energy_gpu_kwh"] + after["energy_cpu_kwh"] + after["energy_memory_kwh"]
    assert after["energy_facility_kwh"] == pytest.approx(it_kwh * 1.25)
    assert after["co2e_g"] == pytest.approx(after["energy_facility_kwh"] * 400)
    (delta,) = answer["deltas"]
    assert delta["co2e_g"] == pytest.approx(after["co2e_g"] - before["co2e_g"])


def cli_config(tmp_path: Path, data: dict[str, Any], ledger: str | Path) -> Path:
    url = f"sqlite:///{ledger}" if isinstance(ledger, Path) else str(ledger)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**data, "ledger": {"url": url}}))
    return path


def many_jobs(count: int, first: int = 0) -> list[JobRecord]:
    """``count`` one-GPU jobs of cluster c1 in October 2026, some measured."""
    return [
        make_job(
            job_id=str(i),
            user=f"u{i % 7}",
            gpu_model="A100 SXM4 80 GB",
            end_time=utc(2026, 10, 1, 11, i % 60),
            measured=_two_measured(i),
        )
        for i in range(first, first + count)
    ]


def end_state(location: Path) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    with Ledger(location) as ledger:
        return list(ledger.jobs()), running_totals(ledger)


def test_a_recompute_killed_midway_and_run_again_ends_as_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    killed, whole = tmp_path / "killed.db", tmp_path / "whole.db"
    with Ledger(killed) as ledger:
        ingest(many_jobs(40_000), Accountant(parse_config(make_config())), ledger)
    shutil.copy(killed, whole)
    config = cli_config(tmp_path, make_config(sites={"s1": {"pue": 1.35}}), killed)
    command = [sys.executable, "-m", "jobcarbon", "--config", str(config), "ledger", "recompute"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = sqlite3.connect(killed)
    deadline = time.monotonic() + 60
    while not db.execute("SELECT COUNT(*) FROM recompute_runs WHERE jobs_seen > 0").fetchone()[0]:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # after its first batch, inside a later one
    process.wait()
    ((seen, status),) = db.execute("SELECT jobs_seen, status FROM recompute_runs").fetchall()
    db.close()
    assert 0 < seen < 40_000 and status == "running"
    rerun = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads(rerun.stdout)
    assert (resumed["resumed"], resumed["jobs_seen"]) == (True, 40_000)
    config.write_text(config.read_text().replace(str(killed), str(whole)))
    once = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    uninterrupted = json.loads(once.stdout)
    assert (uninterrupted["resumed"], uninterrupted["jobs_changed"]) == (False, 40_000)
    assert resumed["jobs_changed"] == 40_000
    assert resumed["co2e_g"] == pytest.approx(uninterrupted["co2e_g"])
    assert end_state(killed)[0] == end_state(whole)[0]
    assert_same_totals(end_state(killed)[1], end_state(whole)[1])
    history = CliRunner().invoke(main, ["--config", str(config), "ledger", "history", "--json"])
    assert [r["status"] for r in json.loads(history.output)] == ["finished"]


V8_COLUMNS = JOB_COLUMNS[: JOB_COLUMNS.index("job_id_raw") + 1]


def v8_ledger(location: str | Path, records: list[JobRecord], config: Config) -> None:
    """A v8 ledger built by its own migrations, holding ``records`` accounted with
    ``config`` as jobcarbon 8 wrote them, and their running totals."""
    rows = [
        (*ledger_row(a)[: len(V8_COLUMNS)], 0) for a in map(Accountant(config).account, records)
    ]
    columns = ", ".join(f'"{c}"' for c in (*V8_COLUMNS, "recorded_at"))
    insert = f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * (len(V8_COLUMNS) + 1))})"
    totals = (
        "INSERT INTO totals SELECT cluster, \"user\", project, partition, COALESCE(gpu_model, ''), "
        "state, method, COUNT(*), SUM(gpu_seconds), SUM(cpu_seconds), SUM(energy_gpu_kwh), "
        "SUM(energy_cpu_kwh), SUM(energy_memory_kwh), SUM(energy_facility_kwh), SUM(co2e_g), "
        "COALESCE(MAX(end_time), 0), 0 FROM jobs GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    if isinstance(location, Path):
        db = sqlite3.connect(location, isolation_level=None)
        for version in range(1, 9):
            for statement in sqlite_statements(MIGRATIONS[version]):
                db.execute(statement)
        db.execute("PRAGMA user_version = 8")
        db.execute("BEGIN")
        db.executemany(insert, rows)
        db.execute(totals)
        db.execute("COMMIT")
        db.close()
        return
    import psycopg

    with psycopg.connect(str(location), autocommit=True) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version in range(5, 9):
            for statement in POSTGRES_DIALECT.statements(POSTGRES_MIGRATIONS[version]):
                db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (8)")
        with db.cursor() as cursor:
            cursor.executemany(POSTGRES_DIALECT.params(insert), rows)
        db.execute(totals)


def test_a_v8_ledger_of_100k_jobs_migrates_keeping_every_job(ledger_location: str | Path) -> None:
    config = parse_config(make_config())
    # every fifth job measured by Slurm's node counter (all components), every
    # seventh by a GPU counter only (a mixed footprint: CPU estimated beside it) (a v8
    # ledger held one measurement per job)
    records = [
        JobRecord(**{**_fields(job), "cpu_count": 4, "measured": _measured(i)})
        for i, job in enumerate(many_jobs(100_000))
    ]
    v8_ledger(ledger_location, records, config)
    with Ledger(ledger_location) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION >= 9
        assert ledger.count() == 100_000
        assert ledger.usage_count(EVERYTHING) == 100_000
        missing = dict(
            ledger._query("SELECT missing, COUNT(*) FROM job_usage GROUP BY 1", []).fetchall()
        )
        whole = "nodes,labels,gpu_model,cpu_used_seconds"
        measured = sum(1 for r in records if r.measured)
        assert missing == {whole: 100_000 - measured, f"{whole},measured": measured}
        before = ledger.totals()
        # the same config again: the figures stay (the measurement inferred from the
        # method gives it back), only the provenance is new
        report = recompute(ledger, config, EVERYTHING, batch_size=20_000)
        assert (report.run.jobs_incomplete, report.run.jobs_failed) == (100_000, 0)
        assert len(report.incomplete) == 20
        after = ledger.totals()
        assert after.co2e_kg == pytest.approx(before.co2e_kg, rel=1e-12)
        assert after.energy_kwh == pytest.approx(before.energy_kwh, rel=1e-12)
        assert_totals_are_the_rows(ledger)
        accountant = Accountant(config)
        expected = {r.job_id: ledger_row(accountant.account(r)) for r in records}
        for row in ledger.jobs():  # as jobcarbon 9 accounts them
            assert same_row(tuple(row.values()), expected[row["job_id"]]), row


def _two_measured(i: int) -> tuple[MeasuredEnergy, ...]:
    """A node counter on every fifth job; on every eleventh, RAPL's CPU and memory
    beside the GPUs' energy from Prometheus (two measurements, kept apart in usage)."""
    if i % 5 == 0:
        return (MeasuredEnergy(1e6, frozenset(Component)),)
    if i % 11 == 0:
        return (
            MeasuredEnergy(0.3e6, frozenset({Component.CPU, Component.MEMORY})),
            MeasuredEnergy(1.1e6, frozenset({Component.GPU})),
        )
    return ()


def _fields(job: JobRecord) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__dataclass_fields__}


def _measured(i: int) -> tuple[MeasuredEnergy, ...]:
    if i % 5 == 0:  # a node counter (IPMI)
        return (MeasuredEnergy(2.5e6, frozenset(Component)),)
    if i % 7 == 0:  # dcgm-exporter's GPU energy
        return (MeasuredEnergy(1.2e6, frozenset({Component.GPU})),)
    return ()


RACER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from jobcarbon.accounting import Accountant, ingest
    from jobcarbon.config import parse_config
    from jobcarbon.ledger import Ledger, UsageScope
    from jobcarbon.recompute import recompute
    from tests.support.config import make_config
    from tests.test_recompute import many_jobs
    ledger = Ledger(sys.argv[1])
    config = parse_config(make_config(sites={"s1": {"pue": 1.45}}))
    print("ready", flush=True)
    sys.stdin.readline()  # all start together
    if sys.argv[3] == "recompute":
        print(recompute(ledger, config, UsageScope(), batch_size=700).run.jobs_changed)
    else:  # a collector writing new jobs with the new config
        for first in range(10_000, 13_000, 300):
            ingest(many_jobs(300, first), Accountant(config), ledger)
""")


def test_two_recomputes_and_a_collector_at_once_lose_and_double_nothing(
    ledger_location: str | Path,
) -> None:
    with Ledger(ledger_location) as ledger:
        ingest(many_jobs(10_000), Accountant(parse_config(make_config())), ledger)
    location = str(ledger_location)
    racers = start_together(
        RACER, [[location, "recompute"], [location, "recompute"], [location, "collect"]]
    )
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0], outputs
    changed = [int(out.strip().splitlines()[-1]) for out, _ in outputs[:2]]
    assert sum(changed) == 10_000  # each old job changed by one of the two, once
    new_config = parse_config(make_config(sites={"s1": {"pue": 1.45}}))
    accountant = Accountant(new_config)
    with Ledger(ledger_location) as ledger:
        assert ledger.count() == 13_000
        assert_totals_are_the_rows(ledger)
        expected = {r.job_id: ledger_row(accountant.account(r)) for r in many_jobs(13_000)}
        for row in ledger.jobs():
            assert tuple(row.values()) == expected[row["job_id"]]
        runs = ledger.recompute_runs()
        assert [r.status for r in runs] == ["finished", "finished"]


def test_a_dry_run_changes_nothing_and_says_what_would_change(tmp_path: Path) -> None:
    location = tmp_path / "l.db"
    with Ledger(location) as ledger:
        ingest(many_jobs(50), Accountant(parse_config(make_config())), ledger)
    config = cli_config(tmp_path, make_config(sites={"s1": {"pue": 1.5}}), location)
    before = end_state(location)
    result = CliRunner().invoke(
        main, ["--config", str(config), "ledger", "recompute", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert (answer["dry_run"], answer["jobs_changed"], answer["run_id"]) == (True, 50, None)
    assert end_state(location) == before
    with Ledger(location) as ledger:
        assert ledger.recompute_runs() == []
        # PUE 1.2 -> 1.5 over the same IT energy: CO2e grows by a quarter
        assert answer["co2e_g"] == pytest.approx(ledger.totals().co2e_kg * 1000 * 0.25)
    checked = CliRunner().invoke(main, ["config", "check", str(config)])
    assert checked.exit_code == 1
    assert "`jobcarbon ledger recompute --site s1 --cluster c1` updates them" in checked.output
