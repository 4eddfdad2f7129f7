"""Market-based Scope 2 in the ledger (schema v11) and what reads it: rows on SQLite and
PostgreSQL, the migration of older rows, ``ledger copy``, ``summary``, ``export`` and
the monthly e-mail, each figure worked by hand.

The site: PUE 1.5 (uncertainty 0 here, so each range is the energy's alone), a constant
400 gCO2e/kWh; in 2026 a PPA covers 60 % of its consumption at 0 g/kWh and the residual
mix, 500 g/kWh, the rest: 0.4 × 500 = 200 g per kWh. 2025 has no contracts and no
residual mix is given for it, so the location-based figure stands in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.accounting import Accountant
from jobcarbon.cli import main
from jobcarbon.config import Config, parse_config
from jobcarbon.ledger import SCHEMA_VERSION, Ledger, copy_ledger
from jobcarbon.mail import Composer
from jobcarbon.report import monthly_reports
from jobcarbon.site import MarketSource
from tests.conftest import utc
from tests.support.config import make_config
from tests.test_ledger import back_to_v10
from tests.test_report import hours_job

MARKET = {
    "years": {2026: {"instruments": [{"kind": "ppa", "share": 0.6}], "residual_mix_g_per_kwh": 500}}
}


def market_data(market: dict[str, Any] | None = MARKET, **overrides: Any) -> dict[str, Any]:
    site: dict[str, Any] = {"pue": 1.5, "pue_uncertainty": 0, "grid": {"intensity_g_per_kwh": 400}}
    if market is not None:
        site["market"] = market
    return make_config(
        sites={"s1": site},
        clusters={"c1": {"hardware": [{"gpu_model": "A100 SXM4 80 GB", "gpu_tdp_w": 300}]}},
        **overrides,
    )


def market_config(market: dict[str, Any] | None = MARKET) -> Config:
    return parse_config(market_data(market))


def jobs() -> list[Any]:
    return [
        # 1 GPU × 300 W × 1 h = 0.3 kWh → × 1.5 = 0.45 kWh: 180 g location-based,
        # 0.45 × 200 = 90 g market-based (low: idle, 0.15 × 300 W → 0.0675 kWh, 13.5 g;
        # high: +10 %, 0.495 kWh, 99 g)
        hours_job("1", "alice", 1, 1, utc(2026, 10, 5, 12)),
        # 2 GPUs, 2 h: 1.2 kWh → 1.8 kWh: 720 g location-based, 360 g market-based
        hours_job("2", "bob", 2, 2, utc(2026, 10, 6, 12)),
        # in 2025, without contracts: 0.45 kWh, 180 g both ways
        hours_job("3", "alice", 1, 1, utc(2025, 12, 20, 12)),
    ]


def write_jobs(ledger: Ledger, config: Config) -> None:
    accountant = Accountant(config)
    ledger.write([accountant.account(job) for job in jobs()])


def test_both_figures_round_trip_on_either_backend(ledger_location: str | Path) -> None:
    config = market_config()
    with Ledger(ledger_location) as ledger:
        write_jobs(ledger, config)
        rows = {r["job_id"]: r for r in ledger.jobs()}
        market = {
            k: (r["co2e_g"], r["co2e_market_g"], r["co2e_market_g_low"], r["co2e_market_g_high"])
            for k, r in rows.items()
        }
        assert market == {
            "1": pytest.approx((180.0, 90.0, 13.5, 99.0)),
            "2": pytest.approx((720.0, 360.0, 54.0, 396.0)),
            "3": pytest.approx((180.0, 180.0, 27.0, 198.0)),
        }
        assert {k: r["market_source"] for k, r in rows.items()} == {
            "1": "contracts",
            "2": "contracts",
            "3": "location-based",
        }
        total = ledger.totals()  # 1,080 g location-based, 90 + 360 + 180 = 630 g market-based
        assert (total.co2e_kg, total.co2e_market_kg) == pytest.approx((1.08, 0.63))
        assert (total.co2e_market_kg_low, total.co2e_market_kg_high) == pytest.approx(
            (0.0945, 0.693)
        )
        assert ledger.market_sources("user") == {
            "alice": {"contracts": 1, "location-based": 1},
            "bob": {"contracts": 1},
        }
        # the same config again: nothing changed; a residual mix for 2025 changes job 3's
        # figures only (every row is written: its provenance names the new config digest)
        again = Accountant(config)
        assert ledger.write([again.account(job) for job in jobs()]).written == 0
        before = {r["job_id"]: r["co2e_market_g"] for r in ledger.jobs()}
        with_2025 = Accountant(market_config({**MARKET, "residual_mix_g_per_kwh": 300}))
        assert ledger.write([with_2025.account(job) for job in jobs()]).written == 3
        after = {r["job_id"]: r["co2e_market_g"] for r in ledger.jobs()}
        assert [k for k in before if before[k] != after[k]] == ["3"]
        (job_3,) = (r for r in ledger.jobs() if r["job_id"] == "3")
        assert (job_3["co2e_market_g"], job_3["market_source"]) == (
            pytest.approx(0.45 * 300),
            "residual-mix",
        )


def test_rows_from_before_v11_get_the_location_based_figure(ledger_location: str | Path) -> None:
    config = market_config(None)  # no market config, as every ledger before v11 had
    with Ledger(ledger_location) as ledger:
        write_jobs(ledger, config)
        before = ledger.totals()
        back_to_v10(ledger)
    with Ledger(ledger_location) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        for row in ledger.jobs():
            assert (row["co2e_market_g"], row["co2e_market_g_low"], row["co2e_market_g_high"]) == (
                row["co2e_g"],
                row["co2e_g_low"],
                row["co2e_g_high"],
            )
            assert row["market_source"] == MarketSource.LOCATION_BASED
        assert ledger.totals() == before
        # what a fresh accounting without market config writes: the migrated rows stand
        again = Accountant(config)
        assert ledger.write([again.account(job) for job in jobs()]).written == 0


def test_copy_keeps_both_figures(tmp_path: Path, postgres: Any) -> None:
    with Ledger(tmp_path / "l.db") as source, Ledger(str(postgres.new_database())) as target:
        write_jobs(source, market_config())
        result = copy_ledger(source, target)
        assert result.identical and result.target.co2e_market_kg == pytest.approx(0.63)
        assert list(target.jobs()) == list(source.jobs())


def ledger_and_config(tmp_path: Path) -> Path:
    """The config file of a ledger holding ``jobs()``, as an admin's."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(market_data(ledger={"url": "sqlite:///l.db"})))
    with Ledger(tmp_path / "l.db") as ledger:
        write_jobs(ledger, market_config())
    return path


def cells(output: str, columns: int) -> dict[str, list[str]]:
    """A rich table's body rows by their first cell."""
    return {
        found[0]: found[1:]
        for line in output.splitlines()
        if len(found := [c.strip() for c in line.strip("│┃ ").split("│")]) == columns
    }


def test_summary_names_both_and_counts_the_stand_ins(tmp_path: Path) -> None:
    config = str(ledger_and_config(tmp_path))
    runner = CliRunner()
    wide = runner.invoke(
        main, ["--config", config, "summary", "--by", "user"], env={"COLUMNS": "130"}
    )
    assert wide.exit_code == 0, wide.output
    assert "location-based" in wide.output and "market-based" in wide.output
    rows = cells(wide.output, 8)
    # alice: 180 + 180 g location-based, 90 + 180 g market-based (low 13.5 + 27 g,
    # high 99 + 198 g); bob 720 g and 360 g (54-396 g)
    assert rows["alice"][3:] == ["360 g", "54.0–396 g", "270 g", "40.5–297 g"]
    assert rows["bob"][3:] == ["720 g", "108–792 g", "360 g", "54.0–396 g"]
    assert rows["total"][3] == "1.08 kg" and rows["total"][5] == "630 g"
    text = " ".join(wide.output.split())
    assert (
        "market-based for 1 job(s) the location-based figure (no contracts or residual mix "
        "configured for the year)"
    ) in text
    # a terminal of 80 columns: the figures without their ranges, and why
    narrow = runner.invoke(main, ["--config", config, "summary"], env={"COLUMNS": "80"})
    assert cells(narrow.output, 6)["total"][3:] == ["1.08 kg", "630 g"]
    assert "likely ranges in a terminal of 110 columns or more" in " ".join(narrow.output.split())


def test_export_carries_both_figures_and_the_source(tmp_path: Path) -> None:
    config = str(ledger_and_config(tmp_path))
    runner = CliRunner()
    exported = runner.invoke(main, ["--config", config, "export"])
    assert exported.exit_code == 0, exported.output
    rows = {r["job_id"]: r for r in csv.DictReader(io.StringIO(exported.stdout))}
    assert {k: (float(r["co2e_g"]), float(r["co2e_market_g"])) for k, r in rows.items()} == {
        "1": pytest.approx((180.0, 90.0)),
        "2": pytest.approx((720.0, 360.0)),
        "3": pytest.approx((180.0, 180.0)),
    }
    assert rows["3"]["market_source"] == "location-based"
    as_json = runner.invoke(main, ["--config", config, "export", "--format", "json"])
    (job_2,) = (j for j in json.loads(as_json.stdout) if j["job_id"] == "2")
    assert (job_2["co2e_market_g_low"], job_2["market_source"]) == (
        pytest.approx(54.0),
        "contracts",
    )
    assert "co2e_market_g" in runner.invoke(main, ["export", "--help"]).output


def test_the_monthly_email_names_both(tmp_path: Path) -> None:
    config = market_config()
    with Ledger(tmp_path / "l.db") as ledger:
        write_jobs(ledger, config)
        # December 2025: alice's job 3 only, without contracts; October 2026: jobs 1 and 2
        (december,) = monthly_reports(ledger, config, "2025-12", "user")
        october = {r.name: r for r in monthly_reports(ledger, config, "2026-10", "user")}
    composer = Composer(config)
    text = composer.render(october["alice"]).text
    assert (
        "Counted both ways (GHG Protocol Scope 2): location-based, from the local grid's "
        "average intensity, 180 g CO2e as above; market-based, from what the sites buy "
        "(electricity contracts, certificates), 90.0 g CO2e (likely 13.5–99.0 g)."
    ) in text
    html = composer.render(october["alice"]).html
    assert "location-based, from the local grid&#39;s average intensity, 180 g CO2e" in html
    assert (
        "market-based, from what the sites buy (electricity contracts, certificates), the "
        "same 180 g CO2e: no contracts or residual mix are configured."
    ) in composer.render(december).text


def test_a_month_with_some_jobs_on_a_stand_in_says_how_many(tmp_path: Path) -> None:
    # alice ran at two sites in October 2026: s1's contracts (job 1: 90 g market-based),
    # and s2, a constant 400 g/kWh without market settings (job 2, on cluster c2: the
    # same 0.45 kWh, 180 g both ways): 270 g market-based (low 13.5 + 27, high 99 + 198)
    data = market_data()
    data["sites"]["s2"] = {"pue": 1.5, "pue_uncertainty": 0, "grid": {"intensity_g_per_kwh": 400}}
    data["clusters"]["c2"] = {"site": "s2", "hardware": [{"gpu_tdp_w": 300}]}
    config = parse_config(data)
    accountant = Accountant(config)
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.write(
            [
                accountant.account(hours_job("1", "alice", 1, 1, utc(2026, 10, 5, 12))),
                accountant.account(
                    hours_job("2", "alice", 1, 1, utc(2026, 10, 6, 12), cluster="c2")
                ),
            ]
        )
        assert ledger.market_sources("site") == {
            "s1": {"contracts": 1},
            "s2": {"location-based": 1},
        }
        (report,) = monthly_reports(ledger, config, "2026-10", "user")
    assert math.isclose(report.totals.co2e_market_kg, 0.27)
    assert (
        "(electricity contracts, certificates), 270 g CO2e (likely 40.5–297 g). For 1 job the "
        "market-based figure is the location-based figure (no contracts or residual mix "
        "configured for the year)."
    ) in Composer(config).render(report).text
