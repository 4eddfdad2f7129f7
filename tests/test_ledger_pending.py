"""Jobs pending grid data in the ledger (schema v10), on real SQLite and PostgreSQL: the
flag as accounting sets it, the readers that find the waiting jobs once their hours are
synced, and ``recompute.recompute_pending`` accounting them again from their usage, as a
recompute run of their own, with the totals following.

Hand-worked figures. Site s1 syncs Electricity Maps (no sync here: the tests write its
hours), fallback 200 g/kWh, PUE 1.2. A job on one Tesla V100-PCIE-16GB (300 W in the
bundled table, drawn in full: no utilisation known) for 3 hours uses 0.9 kWh of IT
energy, 1.08 kWh with the PUE. Job "a" runs on 2026-03-29 from 10:30 to 13:30 UTC; the
hours stored are 10:00 (340 g/kWh) and 11:00 (364), then 12:00 (388) and 13:00 (412).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobcarbon.accounting import Accountant
from jobcarbon.config import Config, parse_config
from jobcarbon.ledger import JOB_COLUMNS, POSTGRES, Filters, Ledger, UsageScope
from jobcarbon.recompute import recompute_pending
from jobcarbon.sources.grid import GridPoint
from tests.conftest import make_job
from tests.support.config import make_config
from tests.test_ledger import back_to_v10

HOUR_S = 3600
# 2026-03-29 00:00 UTC is 492 984 hours after the epoch (20 541 days × 24).
H0 = 20_541 * 24
RUN_A = {
    "start_time": datetime(2026, 3, 29, 10, 30, tzinfo=UTC),
    "end_time": datetime(2026, 3, 29, 13, 30, tzinfo=UTC),
}
NOW = datetime(2026, 3, 29, 14, 5, tzinfo=UTC)


def _config(fallback_g_per_kwh: float = 200) -> Config:
    provider = {
        "name": "electricitymaps",
        "zone": "DE",
        "token_env": "EM_TOKEN",
        "fallback_g_per_kwh": fallback_g_per_kwh,
    }
    gpu = [{"match": {"partition": "gpu"}, "gpu_model": "Tesla V100-PCIE-16GB"}]
    return parse_config(
        make_config(
            sites={
                "s1": {"pue": 1.2, "grid": {"provider": provider}},
                "s2": {"pue": 1.2, "grid": {"intensity_g_per_kwh": 100}},
            },
            clusters={"c1": {"hardware": gpu}, "c2": {"site": "s2", "hardware": gpu}},
        )
    )


def _hours(ledger: Ledger, values: dict[int, float]) -> None:
    points = [GridPoint(H0 + h, g, "electricitymaps", "lifecycle", True) for h, g in values.items()]
    ledger.write_grid_hours("s1", points, 1, (H0 + max(values) + 1) * HOUR_S)


def _row(ledger: Ledger, job_id: str) -> dict[str, object]:
    return next(r for r in ledger.jobs() if r["job_id"] == job_id)


@pytest.fixture
def ledger(ledger_location: str | Path) -> Iterator[Ledger]:
    with Ledger(ledger_location) as opened:
        yield opened


def test_the_readers_find_a_waiting_job_once_every_hour_of_it_is_synced(ledger: Ledger) -> None:
    config = _config()
    _hours(ledger, {10: 340, 11: 364})
    accountant = Accountant(config, ledger.synced_site_factors(config))
    ledger.write(
        [
            accountant.account(make_job(job_id="a", **RUN_A)),  # 12:00 and 13:00 missing
            accountant.account(  # 10:00 and 11:00: every hour synced
                make_job(
                    job_id="b",
                    start_time=datetime(2026, 3, 29, 10, tzinfo=UTC),
                    end_time=datetime(2026, 3, 29, 12, tzinfo=UTC),
                )
            ),
            accountant.account(make_job(job_id="c", cluster="c2", **RUN_A)),  # a constant
            accountant.account(make_job(job_id="d", start_time=None, end_time=None)),  # no run
        ]
    )
    assert sorted((r["job_id"], r["intensity_pending"]) for r in ledger.jobs()) == [
        ("a", 1),
        ("b", 0),
        ("c", 0),  # at a site with a constant intensity
        ("d", 0),  # never ran: no energy, nothing to wait for
    ]
    assert ledger.count(Filters(pending=True)) == 1
    assert ledger.count(Filters(pending=False)) == 3
    # a: 0.5 × 340 + 364 + 200 + 0.5 × 200 = 834 g/kWh·h in 3 h, 278 g/kWh
    a = _row(ledger, "a")
    assert a["energy_facility_kwh"] == pytest.approx(1.08)
    assert a["intensity_g_per_kwh"] == pytest.approx(278)
    start_s = int(RUN_A["start_time"].timestamp())
    assert ledger.pending_since("s1", 0) == start_s
    assert ledger.pending_since("s1", start_s + 3 * HOUR_S + 1) is None  # ended before
    assert ledger.pending_since("s2", 0) is None

    covered = UsageScope(pending_covered=True)
    assert ledger.usage_count(covered) == 0
    _hours(ledger, {12: 388})
    assert ledger.usage_count(covered) == 0  # 13:00 still missing
    _hours(ledger, {13: 412})
    (found,) = ledger.usage_batch(None, covered, 10)
    assert found[:2] == ("c1", "a")
    assert ledger.usage_count(UsageScope(site="s2", pending_covered=True)) == 0


def test_the_waiting_jobs_are_accounted_again_and_the_totals_follow(ledger: Ledger) -> None:
    config = _config()
    _hours(ledger, {10: 340, 11: 364})
    accountant = Accountant(config, ledger.synced_site_factors(config))
    ledger.write([accountant.account(make_job(job_id="a", **RUN_A))])
    assert recompute_pending(ledger, config, NOW.timestamp) is None  # nothing came yet
    _hours(ledger, {12: 388, 13: 412})
    synced = ledger.synced_site_factors(config)
    report = recompute_pending(ledger, config, NOW.timestamp)
    assert report is not None and (report.run.jobs_seen, report.run.jobs_changed) == (1, 1)
    (run,) = ledger.recompute_runs()  # `ledger history` lists it, with its scope
    assert (run.status, run.jobs_changed) == ("finished", 1)
    assert '"pending_covered": true' in run.scope
    # 0.5 × 340 + 364 + 388 + 0.5 × 412 = 1 128 g/kWh·h in 3 h, 376 g/kWh
    a = _row(ledger, "a")
    assert a["intensity_pending"] == 0
    assert a["energy_facility_kwh"] == pytest.approx(1.08) and a["pue"] == pytest.approx(1.2)
    assert a["intensity_g_per_kwh"] == pytest.approx(376)
    assert a["co2e_g"] == pytest.approx(1.08 * 376)
    # recomputed whole: its market-based figure too (no contracts: the location-based one)
    assert (a["co2e_market_g"], a["market_source"]) == (pytest.approx(1.08 * 376), "location-based")
    # low: idle GPU (0.15 × 300 W) at PUE 1.2 × 0.95; high: 10 % over TDP at 1.2 × 1.05
    assert a["co2e_g_low"] == pytest.approx(45 * 3 / 1000 * 1.14 * 376)
    assert a["co2e_g_high"] == pytest.approx(330 * 3 / 1000 * 1.26 * 376)
    # the same as accounting the job afresh with every hour synced
    fresh = Accountant(config, synced).account(make_job(job_id="a", **RUN_A)).footprint
    assert (a["co2e_g"], a["co2e_g_low"], a["co2e_g_high"]) == pytest.approx(
        (fresh.co2e_g, fresh.co2e_g_low, fresh.co2e_g_high), rel=1e-12
    )
    (total,) = ledger.aggregates()
    assert (total.jobs, total.co2e_g) == (1, pytest.approx(1.08 * 376))
    assert ledger.totals().co2e_kg == pytest.approx(1.08 * 376 / 1000)
    assert recorded_at(ledger, "a") == int(NOW.timestamp())
    # nothing waits any more: a second pass has nothing to do, and records no run
    assert recompute_pending(ledger, config, NOW.timestamp) is None
    assert len(ledger.recompute_runs()) == 1


def recorded_at(ledger: Ledger, job_id: str) -> int:
    at = len(JOB_COLUMNS)  # job_rows: JOB_COLUMNS, recorded_at, then the usage row
    return next(int(row[at]) for row in ledger.job_rows() if row[1] == job_id)


def test_a_job_accounted_at_a_fallback_of_zero_is_recomputed_from_its_usage(
    ledger: Ledger,
) -> None:
    """A fallback of 0 g/kWh and no hour synced: the row has no CO2e at all, but its usage
    is kept, so once the hours come it gets its footprint like any other."""
    config = _config(fallback_g_per_kwh=0)
    ledger.write(
        [Accountant(config, ledger.synced_site_factors(config)).account(make_job(**RUN_A))]
    )
    (before,) = ledger.jobs()
    assert before["co2e_g"] == 0
    _hours(ledger, {10: 340, 11: 364, 12: 388, 13: 412})
    report = recompute_pending(ledger, config, NOW.timestamp)
    assert report is not None and report.run.jobs_changed == 1
    (after,) = ledger.jobs()
    # 1.08 kWh at 376 g/kWh, as worked above
    assert (after["intensity_pending"], after["co2e_g"]) == (0, pytest.approx(1.08 * 376))
    assert ledger.count(Filters(pending=True)) == 0


def test_v10_adds_the_flag_as_zero_for_the_jobs_before_it(ledger: Ledger) -> None:
    config = _config()
    ledger.write([Accountant(config).account(make_job(job_id="a", **RUN_A))])
    assert _row(ledger, "a")["intensity_pending"] == 1  # no hour synced at all
    back_to_v10(ledger)  # no market-based columns (v11)
    ledger._run("DROP INDEX jobs_intensity_pending")
    ledger._run("ALTER TABLE jobs DROP COLUMN intensity_pending")
    if ledger.dialect is POSTGRES:
        ledger._run("UPDATE schema_version SET version = 9")
    else:
        ledger._run("PRAGMA user_version = 9")
    ledger.migrate()
    assert _row(ledger, "a")["intensity_pending"] == 0
    assert ledger.count(Filters(pending=True)) == 0
