"""The exporter through a real registry: counters equal the ledger, and survive restarts."""

from __future__ import annotations

import sqlite3
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from jobcarbon.config import parse_config
from jobcarbon.exporter import Exporter, LedgerCollector, metrics_reference, write_textfile
from jobcarbon.ledger import SCHEMA_VERSION, Filters, Ledger, Running
from jobcarbon.records import JobState
from tests.conftest import ROOT
from tests.support.config import make_config, merged
from tests.support.prometheus_versions import VERSIONS, Prometheus
from tests.test_ledger import accounted

CONFIG = make_config(sites={"s1": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 200}}})
SCRAPED_AT = datetime.fromtimestamp(1.8e9, UTC)  # the collectors' clock
LABELS = {
    "cluster": "c1",
    "user": "alice",
    "project": "proj",
    "partition": "gpu",
    "gpu_model": "X",
    "state": "completed",
    "method": "estimated",
}


def fill(path: Path | str) -> None:
    # accounted(): 1 GPU for 1 h, gpu 1 kWh, facility 1.5 kWh, co2e as given
    with Ledger(path) as ledger:
        ledger.write(
            [
                accounted("1", 100.0),
                accounted("2", 300.0),
                accounted("3", 50.0, user="bob", state=JobState.FAILED),
            ]
        )
        ledger.add_ingest_errors({"parse": 2})
        ledger.set_gauge("slurm.pending_jobs", 4)


def registry_for(path: Path | str, **exporter: object) -> CollectorRegistry:
    config = parse_config(merged(CONFIG, {"exporter": exporter}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(path, config, clock=SCRAPED_AT.timestamp))
    return registry


def test_counters_equal_the_ledger(ledger_location: Path | str) -> None:
    path = ledger_location  # a SQLite file, or a PostgreSQL database
    fill(path)
    registry = registry_for(path)
    value = registry.get_sample_value
    assert value("jobcarbon_jobs_total", LABELS) == 2
    assert value("jobcarbon_gpu_seconds_total", LABELS) == 7200
    assert value("jobcarbon_co2e_grams_total", {**LABELS, "scope": "operational"}) == 400
    # per job: gpu 1 kWh = 3.6 MJ, facility 1.5 kWh → overhead 0.5 kWh = 1.8 MJ
    assert value("jobcarbon_energy_joules_total", {**LABELS, "component": "gpu"}) == 7.2e6
    assert value(
        "jobcarbon_energy_joules_total", {**LABELS, "component": "facility_overhead"}
    ) == pytest.approx(3.6e6)
    failed = {**LABELS, "user": "bob", "state": "failed"}
    assert value("jobcarbon_jobs_total", failed) == 1
    assert value("jobcarbon_ingest_errors_total", {"stage": "parse"}) == 2
    assert value("jobcarbon_ingest_pending_jobs", {"source": "slurm"}) == 4
    assert value("jobcarbon_pue_ratio", {"cluster": "c1", "site": "s1"}) == 1.5
    assert (
        value("jobcarbon_grid_intensity_grams_per_kilowatt_hour", {"cluster": "c1", "site": "s1"})
        == 200
    )
    assert value("jobcarbon_ledger_up") == 1
    assert value("jobcarbon_build_info", {"version": "0.1.0"}) == 1
    with Ledger(path) as ledger:
        total = ledger.totals(Filters())
    co2e = sum(
        s.value for m in registry.collect() if m.name == "jobcarbon_co2e_grams" for s in m.samples
    )
    assert co2e == pytest.approx(total.co2e_kg * 1000)


def test_a_restarted_exporter_serves_the_same_counters(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    fill(path)
    first = registry_for(path).get_sample_value("jobcarbon_jobs_total", LABELS)
    assert registry_for(path).get_sample_value("jobcarbon_jobs_total", LABELS) == first == 2


def test_totals_follow_a_changed_job_to_its_new_series(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    fill(path)
    with Ledger(path) as ledger:
        ledger.write([accounted("2", 300.0, state=JobState.TIMEOUT)])
        ledger.write([accounted("2", 300.0, state=JobState.TIMEOUT)])  # unchanged: no-op
    registry = registry_for(path)
    # the completed series keeps the 2 jobs it was given and counts 1 removed (the job
    # moved to timeout): 2 - 1 = 1 there now; the timeout series was given 1
    assert registry.get_sample_value("jobcarbon_jobs_total", LABELS) == 2
    assert registry.get_sample_value("jobcarbon_jobs_removed_total", LABELS) == 1
    assert registry.get_sample_value("jobcarbon_jobs_total", {**LABELS, "state": "timeout"}) == 1
    timeout = {**LABELS, "state": "timeout"}
    assert registry.get_sample_value("jobcarbon_jobs_removed_total", timeout) == 0
    with sqlite3.connect(path) as db:
        by_jobs = db.execute(
            "SELECT user, state, COUNT(*), SUM(co2e_g) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        by_totals = db.execute(
            "SELECT user, state, SUM(jobs), SUM(co2e_g) FROM totals "
            "WHERE jobs != 0 GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    assert by_jobs == by_totals


def test_drop_user_label_sums_over_users(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path) as ledger:
        ledger.write([accounted("1", 100.0), accounted("2", 300.0, user="bob")])
    registry = registry_for(path, drop_user_label=True)
    assert registry.get_sample_value("jobcarbon_jobs_total", {**LABELS, "user": ""}) == 2
    assert registry.get_sample_value("jobcarbon_jobs_total", LABELS) is None


def test_running_pods_and_watcher_health(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path) as ledger:
        ledger.set_running(
            "c1",
            [
                Running("c1", "alice", "p1", "A100", 2, 3.0, 7200.0, 2.5, 1000.0),
                Running("c1", "bob", "p1", "A100", 1, 1.0, 3600.0, 0.5, 200.0),
            ],
            now=SCRAPED_AT,
        )
        ledger.set_gauge("kubernetes/c1.last_contact", 1_800_000_000.0)
        ledger.set_gauge("kubernetes/c1.restarts.expired", 2)
        ledger.add_ingest_errors({"kubernetes": 3})
    registry = registry_for(path)
    alice = {"cluster": "c1", "user": "alice", "project": "p1", "gpu_model": "A100"}
    assert registry.get_sample_value("jobcarbon_running_gpus", alice) == 3.0
    assert registry.get_sample_value("jobcarbon_running_energy_joules", alice) == 2.5 * 3.6e6
    assert registry.get_sample_value("jobcarbon_running_co2e_grams", alice) == 1000.0
    source = {"source": "kubernetes/c1"}
    assert (
        registry.get_sample_value("jobcarbon_source_last_contact_timestamp_seconds", source)
        == 1_800_000_000.0
    )
    assert (
        registry.get_sample_value(
            "jobcarbon_source_restarts_total", {**source, "reason": "expired"}
        )
        == 2
    )
    assert registry.get_sample_value("jobcarbon_ingest_errors_total", {"stage": "kubernetes"}) == 3
    merged = registry_for(path, drop_user_label=True)
    everyone = {**alice, "user": ""}
    assert merged.get_sample_value("jobcarbon_running_jobs", everyone) == 3  # 2 + 1
    assert merged.get_sample_value("jobcarbon_running_gpu_seconds", everyone) == 10800.0


def test_running_usage_a_watcher_stopped_writing_is_not_served(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path) as ledger:
        row = Running("c1", "alice", "p1", "A100", 1, 1.0, 60.0, 0.1, 40.0)
        # kubernetes.stale_after_s is 600
        ledger.set_running("c1", [row], now=SCRAPED_AT - timedelta(seconds=601))
        ledger.set_running(
            "c2", [replace(row, cluster="c2")], now=SCRAPED_AT - timedelta(seconds=599)
        )
    registry = registry_for(path)
    labels = {"user": "alice", "project": "p1", "gpu_model": "A100"}
    assert registry.get_sample_value("jobcarbon_running_jobs", {**labels, "cluster": "c1"}) is None
    assert registry.get_sample_value("jobcarbon_running_jobs", {**labels, "cluster": "c2"}) == 1


@pytest.mark.parametrize("damage", ["missing", "newer", "locked"])
def test_a_broken_ledger_answers_ledger_up_0(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.db"
    blocker = None
    if damage != "missing":
        fill(path)
    if damage == "newer":
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    if damage == "locked":
        # exclusive locking mode on a WAL database: no other connection may even read
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
        blocker.execute("BEGIN EXCLUSIVE")
        blocker.execute("UPDATE gauges SET value = value")
    registry = registry_for(path)
    served = Exporter(LedgerCollector(path, parse_config(CONFIG))).render()
    assert b"jobcarbon_ledger_up 0.0\n" in served  # the HTTP path answers too, no traceback
    value = registry.get_sample_value
    assert value("jobcarbon_ledger_up") == 0
    assert value("jobcarbon_ledger_errors_total") == 2  # one per scrape, two scrapes so far
    assert value("jobcarbon_jobs_total", LABELS) is None
    assert value("jobcarbon_build_info", {"version": "0.1.0"}) == 1
    assert "scrape cannot read the ledger" in caplog.text
    if blocker is not None:
        blocker.execute("ROLLBACK")
        blocker.close()
        assert value("jobcarbon_ledger_up") == 1  # back as soon as the lock is gone


def test_render_is_cached_until_the_ledger_changes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    fill(path)
    exporter = Exporter(LedgerCollector(path, parse_config(CONFIG)))
    first = exporter.render()
    assert exporter.render() is first
    with Ledger(path) as ledger:
        ledger.write([accounted("9", 10.0)])
    assert exporter.render() != first


def test_textfile_is_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    fill(path)
    exporter = Exporter(LedgerCollector(path, parse_config(CONFIG)))
    target = tmp_path / "jobcarbon.prom"
    write_textfile(exporter, target)
    assert target.read_bytes() == exporter.render()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("version", VERSIONS)
def test_exposition_passes_promtool(tmp_path: Path, version: Prometheus) -> None:
    promtool = version.tool("promtool")
    path = tmp_path / "l.db"
    fill(path)
    body = Exporter(LedgerCollector(path, parse_config(CONFIG))).render()
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "metrics.md").read_text() == metrics_reference()


def test_no_per_job_labels() -> None:
    from jobcarbon.exporter import METRICS

    for spec in METRICS:
        assert not {"job_id", "name", "pod", "email"} & set(spec.labels), spec.name


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_incremental_scrapes_equal_a_full_render(tmp_path: Path) -> None:
    """The exporter re-reads only changed totals; what it serves must equal a full read."""
    from jobcarbon.exporter.exposition import _text

    path = tmp_path / "l.db"
    fill(path)
    collector = LedgerCollector(path, parse_config(CONFIG))
    exporter = Exporter(collector)
    exporter.render()
    with Ledger(path) as ledger:
        ledger.write([accounted("10", 5.0, user="dave"), accounted("11", 7.0)])
        ledger.write([accounted("3", 50.0, user="bob", state=JobState.COMPLETED)])  # moves
    incremental = _samples(exporter.render())
    assert incremental == _samples(_text(collector.snapshot()))
    failed_bob = tuple(sorted({**LABELS, "user": "bob", "state": "failed"}.items()))
    # bob's failed series lost its one job and is served on, at 1 added and 1 removed
    assert incremental[("jobcarbon_jobs_total", failed_bob)] == 1
    assert incremental[("jobcarbon_jobs_removed_total", failed_bob)] == 1
    assert incremental[("jobcarbon_jobs_total", tuple(sorted(LABELS.items())))] == 3


@pytest.mark.parametrize("version", VERSIONS)
def test_non_finite_values_in_the_text_format_s_words(version: Prometheus) -> None:
    """repr() writes inf, -inf and nan; the text format wants +Inf, -Inf and NaN."""
    from jobcarbon.exporter import Family
    from jobcarbon.exporter.exposition import _text
    from jobcarbon.exporter.spec import SPECS

    spec = SPECS["jobcarbon_ingest_pending_jobs"]
    values = [float("inf"), float("-inf"), float("nan"), 0.1]
    body = _text([Family(spec, [((f"s{i}",), v) for i, v in enumerate(values)])]).decode()
    assert body.splitlines()[2:] == [
        'jobcarbon_ingest_pending_jobs{source="s0"} +Inf',
        'jobcarbon_ingest_pending_jobs{source="s1"} -Inf',
        'jobcarbon_ingest_pending_jobs{source="s2"} NaN',
        'jobcarbon_ingest_pending_jobs{source="s3"} 0.1',
    ]
    result = subprocess.run([version.tool("promtool"), "check", "metrics"], input=body.encode())
    assert result.returncode == 0


def test_help_text_is_escaped() -> None:
    """In HELP a backslash is written \\\\ and a newline \\n (quotes stay as they are)."""
    from prometheus_client.parser import text_string_to_metric_families

    from jobcarbon.exporter import Family, MetricSpec
    from jobcarbon.exporter.exposition import _text

    help_text = 'a path C:\\jobs, "quoted",\nand a second line'
    spec = MetricSpec("jobcarbon_example", "gauge", "jobs", (), help_text)
    body = _text([Family(spec, [((), 1.0)])]).decode()
    assert body.splitlines()[0] == (
        '# HELP jobcarbon_example a path C:\\\\jobs, "quoted",\\nand a second line'
    )
    [family] = text_string_to_metric_families(body)
    assert family.documentation == help_text


def test_the_docstring_tells_how_the_totals_are_kept(tmp_path: Path) -> None:
    """The totals are kept by Ledger.write (the migration dropped the triggers)."""
    import jobcarbon.exporter

    fill(tmp_path / "l.db")
    with sqlite3.connect(tmp_path / "l.db") as db:
        triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    assert triggers == []
    doc = jobcarbon.exporter.__doc__ or ""
    assert "trigger" not in doc and "``Ledger.write`` keeps" in doc
