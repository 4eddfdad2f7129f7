"""The monthly report's figures and advice, from a real SQLite ledger of hand-worked jobs.

Every job runs on GPUs of 300 W (a hardware rule), idle at 15 % (45 W), no CPUs or
memory, at a site with PUE 1.5 and 400 gCO2e/kWh. A one-GPU hour at full power is
0.3 kWh of IT energy, 0.45 kWh with PUE, 180 g CO2e. At a measured utilisation u a
GPU draws 45 + u × 255 W: at 0.2, 96 W.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobcarbon.accounting import Accountant
from jobcarbon.config import Config, parse_config
from jobcarbon.ledger import Filters, Ledger
from jobcarbon.records import JobState
from jobcarbon.report import (
    cleanest_hours,
    monthly_reports,
    months_up_to,
    previous_month,
)
from jobcarbon.site import HourlySeries
from tests.conftest import make_job, utc
from tests.support.config import make_config

OCTOBER = "2026-10"


def site_config(**mail: object) -> Config:
    return parse_config(
        make_config(
            sites={
                "s1": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 400}},
                "green": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 40}},
            },
            clusters={
                "c1": {"hardware": [{"gpu_model": "A100 SXM4 80 GB", "gpu_tdp_w": 300}]},
                "c2": {"site": "green", "hardware": [{"gpu_tdp_w": 300}]},
            },
            mail={"history_months": 3, **mail},
        )
    )


def hours_job(job_id: str, user: str, gpus: int, hours: float, end: object, **fields: object):
    end_time = end
    return make_job(
        job_id=job_id,
        user=user,
        gpu_count=gpus,
        start_time=end_time - timedelta(hours=hours),  # type: ignore[operator]
        end_time=end_time,
        submit_time=end_time - timedelta(hours=hours + 1),  # type: ignore[operator]
        **fields,
    )


def october_ledger(path: Path, config: Config) -> Ledger:
    """alice: 2 jobs in October (one failed) and 1 in September; bob, carol: 1 each."""
    accountant = Accountant(config)
    jobs = [
        # 2 GPUs × 96 W × 1 h = 0.192 kWh → 0.288 kWh → 115.2 g
        hours_job("1", "alice", 2, 1, utc(2026, 10, 5, 12), gpu_utilization=0.2, name="train"),
        # 1 GPU × 300 W × 1 h → 0.45 kWh → 180 g
        hours_job("2", "alice", 1, 1, utc(2026, 10, 6, 12), state=JobState.FAILED, name="oom"),
        hours_job("3", "alice", 1, 1, utc(2026, 9, 20, 12)),  # 180 g in September
        hours_job("4", "bob", 4, 1, utc(2026, 10, 7, 12)),  # 1.8 kWh, 720 g
        hours_job("5", "carol", 1, 0.5, utc(2026, 10, 8, 12)),  # 0.225 kWh, 90 g
        hours_job("6", "dave", 1, 1, utc(2026, 9, 9, 12)),  # September only
    ]
    ledger = Ledger(path)
    ledger.write([accountant.account(job) for job in jobs])
    return ledger


def small_ledger(path: Path, config: Config) -> Ledger:
    """erin, on a new cluster: two jobs of seconds, and one cancelled while pending."""
    accountant = Accountant(config)
    end = utc(2026, 10, 9, 12)
    jobs = [
        # 1 GPU × 300 W × 60 s = 18 kJ = 5 Wh, × PUE 1.5 = 7.5 Wh, × 0.4 g/Wh = 3 g
        hours_job("11", "erin", 1, 60 / 3600, end, name="smoke-test"),
        # 1 GPU × 300 W × 12 s = 1 Wh → 1.5 Wh → 0.6 g
        hours_job("12", "erin", 1, 12 / 3600, end, name="retry"),
        # never started: no energy, no factors
        make_job(job_id="13", user="erin", state=JobState.CANCELLED, start_time=None, end_time=end),
    ]
    ledger = Ledger(path)
    ledger.write([accountant.account(job) for job in jobs])
    return ledger


def test_month_arithmetic() -> None:
    assert months_up_to("2026-01", 3) == ("2025-11", "2025-12", "2026-01")
    assert previous_month(utc(2026, 1, 3, 6)) == "2025-12"
    assert previous_month(utc(2026, 11, 3, 6)) == "2026-10"


def test_a_users_month_worked_by_hand(tmp_path: Path) -> None:
    config = site_config()
    with october_ledger(tmp_path / "l.db", config) as ledger:
        reports = {r.name: r for r in monthly_reports(ledger, config, OCTOBER, "user")}
        assert list(reports) == ["bob", "alice", "carol"]  # largest first; dave had no jobs
        alice = reports["alice"]
        assert alice.totals.jobs == 2
        assert alice.totals.gpu_hours == pytest.approx(3.0)
        assert alice.totals.energy_kwh == pytest.approx(0.288 + 0.45)
        assert alice.totals.co2e_kg == pytest.approx(0.2952)
        # the same figures `jobcarbon summary --user alice --month 2026-10` prints
        assert alice.totals == ledger.summary("user", Filters(month=OCTOBER, user="alice"))[0]
        assert [(m.key, m.co2e_kg) for m in alice.history] == [
            ("2026-08", 0.0),
            ("2026-09", pytest.approx(0.18)),
            ("2026-10", pytest.approx(0.2952)),
        ]
        assert [j["job_id"] for j in alice.largest_jobs] == ["2", "1"]  # 180 g, 115.2 g
        assert alice.habits.failed_gpu_hours == pytest.approx(1.0)
        assert alice.failed_percent == pytest.approx(100 / 3)
        assert alice.busy_percent == pytest.approx(20.0)  # 0.2 over the 2 measured GPU-hours
        assert (alice.peers, alice.lower_percent) == (3, pytest.approx(100 / 3))  # above carol
        assert [(r.key, r.jobs) for r in alice.by_gpu_model] == [("A100 SXM4 80 GB", 2)]
        (factors,) = alice.factors
        assert (factors.site, factors.pue_min, factors.intensity_max_g_per_kwh) == ("s1", 1.5, 400)
        car = next(e for e in alice.equivalents if e.key == "car_km_eu")
        assert car.amount == pytest.approx(295.2 / 175.0)  # 175 gCO2/km (equivalents.csv)


def test_advice_is_chosen_from_the_users_own_figures(tmp_path: Path) -> None:
    config = site_config()
    with october_ledger(tmp_path / "l.db", config) as ledger:
        reports = {r.name: r for r in monthly_reports(ledger, config, OCTOBER, "user")}
    alice = reports["alice"]
    assert [s.key for s in alice.suggestions] == ["failed-jobs", "idle-gpus", "cleaner-site"]
    failed, idle, cleaner = (s.text for s in alice.suggestions)
    # job 2: 1 GPU × 300 W × 1 h × PUE 1.5 = 0.45 kWh × 400 g/kWh = 180 g
    assert "1.00 GPU-hours (33 % of your GPU time, 180 g CO2e)" in failed
    assert "busy 20 %" in idle
    # 400 g/kWh at s1 against 40 at c2's site: 90 % less
    assert "Cluster c2 runs on 40 g" in cleaner and "about 90 % less" in cleaner
    # bob: nothing failed, utilisation never measured: the cleaner site, his largest job
    bob = [s.key for s in reports["bob"].suggestions]
    assert bob == ["cleaner-site", "largest-job", "report-it"]


def test_a_project_for_its_leads_lists_its_members(tmp_path: Path) -> None:
    config = site_config()
    with october_ledger(tmp_path / "l.db", config) as ledger:
        (project,) = monthly_reports(ledger, config, OCTOBER, "lead")
    assert project.name == "proj"
    assert project.totals.co2e_kg == pytest.approx(0.72 + 0.2952 + 0.09)
    assert [(m.key, m.jobs) for m in project.members] == [("bob", 1), ("alice", 2), ("carol", 1)]
    assert project.suggestions[0].text.startswith("1.00 GPU-hours (")
    assert "the project's GPU time" in project.suggestions[0].text


def test_only_the_named_people_are_reported(tmp_path: Path) -> None:
    config = site_config()
    with october_ledger(tmp_path / "l.db", config) as ledger:
        (carol,) = monthly_reports(ledger, config, OCTOBER, "user", ["carol", "dave"])
        assert monthly_reports(ledger, config, "2026-11", "user") == []
    assert carol.name == "carol"
    assert carol.peers == 3  # her place is still among everyone's
    assert carol.lower_percent == 0.0


def test_the_cleanest_hours_of_a_series() -> None:
    # October 2026: 100 g/kWh from 10:00 to 16:00 UTC, 300 otherwise
    start = int(utc(2026, 10, 1).timestamp()) // 3600
    by_hour = {h: (100.0 if 10 <= h % 24 < 16 else 300.0) for h in range(start, start + 31 * 24)}
    found = cleanest_hours("s", HourlySeries(by_hour), OCTOBER)
    assert found is not None
    assert (found.start_hour, found.hours, found.window_g_per_kwh) == (10, 6, 100.0)
    assert found.day_g_per_kwh == pytest.approx((6 * 100 + 18 * 300) / 24)  # 250
    assert cleanest_hours("s", HourlySeries(by_hour), "2026-11") is None  # no data that month


def test_a_series_site_suggests_its_cleaner_hours(tmp_path: Path) -> None:
    start = int(utc(2026, 10, 1).timestamp()) // 3600
    series = tmp_path / "grid.csv"
    series.write_text(
        "timestamp,intensity_g_per_kwh\n"
        + "".join(
            f"{(utc(2026, 10, 1) + timedelta(hours=h - start)).isoformat()},"
            f"{100 if 10 <= h % 24 < 16 else 300}\n"
            for h in range(start, start + 31 * 24)
        )
    )
    config = parse_config(
        make_config(
            sites={"s1": {"pue": 1.5, "grid": {"series": {"path": str(series)}}}},
            clusters={"c1": {"hardware": [{"gpu_tdp_w": 300}]}},
        )
    )
    accountant = Accountant(config)
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.write([accountant.account(hours_job("1", "erin", 1, 1, utc(2026, 10, 5, 3)))])
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
    hours = erin.suggestions[0]
    assert hours.key == "cleaner-hours"
    assert "between 10:00 and 16:00 UTC was 60 % cleaner" in hours.text  # 100 vs 250
    assert "(100 vs 250 g CO2e/kWh, from the site's hourly series (sites.s1.grid.series))" in (
        hours.text
    )


def provider_site_config() -> Config:
    """Site s1 on NESO's API, 300 g/kWh for hours not synced (the job is accounted with it)."""
    provider = {"name": "uk-carbon-intensity", "zone": "national", "fallback_g_per_kwh": 300}
    return parse_config(
        make_config(
            sites={"s1": {"pue": 1.5, "grid": {"provider": provider}}},
            clusters={"c1": {"hardware": [{"gpu_tdp_w": 300}]}},
        )
    )


def synced_ledger(path: Path, config: Config) -> Ledger:
    """erin's one job at s1, and October 1-10 synced for s1 (240 hours): 01:00-07:00 UTC
    at 60 g/kWh on the 1st to the 5th and 100 on the 6th to the 10th, every other hour 400."""
    start = int(utc(2026, 10, 1).timestamp()) // 3600
    hours = [
        (h, (60.0 if h - start < 5 * 24 else 100.0) if 1 <= h % 24 < 7 else 400.0)
        for h in range(start, start + 10 * 24)
    ]
    ledger = Ledger(path)
    ledger.write([Accountant(config).account(hours_job("1", "erin", 1, 1, utc(2026, 10, 5, 3)))])
    ledger.write_grid_hours(
        "s1",
        [(h, g, "uk-carbon-intensity", "", True) for h, g in hours],
        fetched_at=int(utc(2026, 10, 11).timestamp()),
        through_s=(start + 240) * 3600,
    )
    return ledger


#: what synced_ledger's hours advise: 01:00-07:00 averages (5 × 60 + 5 × 100) / 10 = 80;
#: the day's mean is (6 × 80 + 18 × 400) / 24 = 320, so (320 - 80) / 320 = 75 % cleaner
SYNCED_ADVICE = (
    "At site s1, electricity between 01:00 and 07:00 UTC was 75 % cleaner than the day's "
    "average this month (80 vs 320 g CO2e/kWh, from the 240 hours synced from "
    "uk-carbon-intensity)."
)


def test_the_cleanest_hours_come_from_the_synced_hours(tmp_path: Path) -> None:
    config = provider_site_config()
    with synced_ledger(tmp_path / "l.db", config) as ledger:
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
        assert monthly_reports(ledger, config, "2026-11", "user") == []
    advice = erin.suggestions[0]
    assert advice.key == "cleaner-hours"
    assert advice.text.startswith(SYNCED_ADVICE)


def test_a_provider_site_without_synced_hours_gets_no_hours_advice(tmp_path: Path) -> None:
    # today's behaviour: its configured intensity is only the fallback, a constant
    config = provider_site_config()
    accountant = Accountant(config)
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.write([accountant.account(hours_job("1", "erin", 1, 1, utc(2026, 10, 5, 3)))])
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
    assert "cleaner-hours" not in [s.key for s in erin.suggestions]


def test_the_jobs_behind_the_factors_add_up_to_the_months_jobs(tmp_path: Path) -> None:
    config = site_config()
    with small_ledger(tmp_path / "l.db", config) as ledger:
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
    assert erin.totals.jobs == 3
    assert erin.totals.gpu_hours == pytest.approx(72 / 3600)  # 60 s + 12 s
    assert erin.totals.energy_kwh == pytest.approx(0.009)  # 7.5 + 1.5 Wh
    assert erin.totals.co2e_kg == pytest.approx(0.0036)  # 3 + 0.6 g
    (factors,) = erin.factors
    assert factors.jobs == 2  # the pending-cancelled job used no factors
    assert erin.jobs_without_energy == 1
