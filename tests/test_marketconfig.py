"""``sites.<name>.market``: checked at load with key paths, and each job's market-based
Scope 2 figure beside its location-based one, worked by hand.

Every job below (unless a test says otherwise) is ``make_job``'s: one GPU, one hour,
on a hardware rule of 400 W, utilisation unknown, no CPU or memory, at a site of PUE
1.25 (uncertainty 5 %) and a constant 300 gCO2e/kWh. So:
  IT energy 0.4 kWh (low: idle, 0.15 × 400 W = 0.06 kWh; high: +10 %, 0.44 kWh);
  facility energy 0.4 × 1.25 = 0.5 kWh (low 0.06 × 1.1875 = 0.07125, high 0.44 × 1.3125
  = 0.5775); location-based CO2e 0.5 × 300 = 150 g (low 21.375 g, high 173.25 g).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from jobcarbon.accounting import Accountant
from jobcarbon.config import Config, parse_config
from jobcarbon.errors import ConfigError
from jobcarbon.footprint import Footprint
from jobcarbon.site import HOUR_S, HourlySeries, MarketSource
from tests.conftest import make_job, utc
from tests.support.config import make_config

FACILITY_KWH, FACILITY_LOW, FACILITY_HIGH = 0.5, 0.07125, 0.5775
LOCATION_G, LOCATION_LOW, LOCATION_HIGH = 150.0, 21.375, 173.25


def _config(market: dict[str, Any] | None) -> Config:
    site: dict[str, Any] = {"pue": 1.25, "grid": {"intensity_g_per_kwh": 300}}
    if market is not None:
        site["market"] = market
    rule = {"match": {"partition": "gpu"}, "gpu_model": "A100 SXM4 80 GB", "gpu_tdp_w": 400}
    return parse_config(make_config(sites={"s1": site}, clusters={"c1": {"hardware": [rule]}}))


def _footprint(market: dict[str, Any] | None, **job: Any) -> Footprint:
    return Accountant(_config(market)).account(make_job(**job)).footprint


def _problems(market: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _config(market)
    return info.value.problems


def _market(fp: Footprint) -> tuple[float, float, float]:
    return fp.co2e_market_g, fp.co2e_market_g_low, fp.co2e_market_g_high


def test_the_job_behind_every_figure_here() -> None:
    fp = _footprint(None)
    assert fp.energy_facility_kwh == pytest.approx(FACILITY_KWH)
    assert (fp.co2e_g, fp.co2e_g_low, fp.co2e_g_high) == pytest.approx(
        (LOCATION_G, LOCATION_LOW, LOCATION_HIGH)
    )


def test_a_60_percent_ppa_and_a_residual_mix() -> None:
    # 60 % of 2026's consumption from a PPA at 0 g/kWh, the other 40 % at the residual
    # mix, 400 g/kWh: 0.6 × 0 + 0.4 × 400 = 160 g per kWh, × 0.5 kWh = 80 g (the job ends
    # in 2026). Its range is the energy's: 0.07125 × 160 = 11.4 g, 0.5775 × 160 = 92.4 g.
    market = {
        "years": {
            2026: {"instruments": [{"kind": "ppa", "share": 0.6}], "residual_mix_g_per_kwh": 400}
        }
    }
    fp = _footprint(market)
    assert _market(fp) == pytest.approx((0.4 * 400 * 0.5, 11.4, 92.4))
    assert fp.market_source is MarketSource.CONTRACTS
    # the same relative range as the energy's (and so as the location-based figure's)
    assert fp.co2e_market_g_low / fp.co2e_market_g == pytest.approx(fp.co2e_g_low / fp.co2e_g)
    assert fp.co2e_g == pytest.approx(LOCATION_G)  # the location-based figure is untouched


def test_a_supplier_rate_covers_what_the_instruments_do_not() -> None:
    # RECs for 20 % at 0 g/kWh, the supplier's rate 250 g/kWh for the other 80 %:
    # 0.8 × 250 = 200 g per kWh, × 0.5 kWh = 100 g; the section's residual mix (500) is
    # not used for a year with a supplier rate
    market = {
        "residual_mix_g_per_kwh": 500,
        "years": {
            2026: {"instruments": [{"kind": "rec", "share": 0.2}], "supplier_g_per_kwh": 250}
        },
    }
    fp = _footprint(market)
    assert _market(fp) == pytest.approx((100.0, FACILITY_LOW * 200, FACILITY_HIGH * 200))
    assert fp.market_source is MarketSource.CONTRACTS


def test_instruments_in_mwh_are_shared_pro_rata_over_the_year() -> None:
    # 2,000 MWh consumed in 2026; GOs for 500 MWh at 0 g/kWh cover 500 / 2000 = 25 %, a
    # PPA for 25 % at 20 g/kWh (its generation's own factor), the other 50 % the residual
    # mix at 400: 0.25 × 0 + 0.25 × 20 + 0.5 × 400 = 205 g per kWh, × 0.5 kWh = 102.5 g
    market = {
        "years": {
            2026: {
                "annual_mwh": 2000,
                "instruments": [
                    {"kind": "go", "mwh": 500},
                    {"kind": "ppa", "share": 0.25, "g_per_kwh": 20},
                ],
                "residual_mix_g_per_kwh": 400,
            }
        }
    }
    fp = _footprint(market)
    assert _market(fp) == pytest.approx((102.5, FACILITY_LOW * 205, FACILITY_HIGH * 205))
    # every job of the year gets the same share, whatever order they are accounted in
    accountant = Accountant(_config(market))
    first, second = make_job(job_id="1"), make_job(job_id="2", end_time=utc(2026, 10, 1, 13))
    one_way = [accountant.account(j).footprint for j in (first, second)]
    other_way = [accountant.account(j).footprint for j in (second, first)][::-1]
    assert one_way == other_way
    # the 3-hour job: 0.4 kW × 3 h × 1.25 = 1.5 kWh, × 205 = 307.5 g
    assert one_way[1].co2e_market_g == pytest.approx(307.5)


def test_a_year_without_contracts_gets_the_residual_mix_else_the_location_based_figure() -> None:
    contracts_2025 = {2025: {"instruments": [{"kind": "ppa", "share": 1.0}]}}
    # the job ends in 2026, which has no contracts: the section's residual mix, 450 g/kWh,
    # × 0.5 kWh = 225 g
    fp = _footprint({"years": contracts_2025, "residual_mix_g_per_kwh": 450})
    assert _market(fp) == pytest.approx((225.0, FACILITY_LOW * 450, FACILITY_HIGH * 450))
    assert fp.market_source is MarketSource.RESIDUAL_MIX
    # without a residual mix the grid average stands in (GHG Protocol Scope 2 Guidance):
    # the location-based figure, range and all, exactly; the same with no market at all
    for market in ({"years": contracts_2025}, None):
        fp = _footprint(market)
        assert _market(fp) == (fp.co2e_g, fp.co2e_g_low, fp.co2e_g_high)
        assert fp.market_source is MarketSource.LOCATION_BASED
    # a job ended in 2025 gets that year's PPA: 100 % at 0 g/kWh
    fp = _footprint(
        {"years": contracts_2025}, start_time=utc(2025, 6, 1, 10), end_time=utc(2025, 6, 1, 11)
    )
    assert _market(fp) == (0.0, 0.0, 0.0) and fp.market_source is MarketSource.CONTRACTS


def test_a_listed_year_without_a_factor_for_its_rest_keeps_the_location_based_rest() -> None:
    # a 60 % PPA at 0 g/kWh and nothing for the other 40 %: 0.4 × the location-based
    # figure, 0.4 × 150 = 60 g (low 0.4 × 21.375, high 0.4 × 173.25)
    fp = _footprint({"years": {2026: {"instruments": [{"kind": "ppa", "share": 0.6}]}}})
    assert _market(fp) == pytest.approx((60.0, 0.4 * LOCATION_LOW, 0.4 * LOCATION_HIGH))
    assert fp.market_source is MarketSource.CONTRACTS_AND_LOCATION


def test_contracts_do_not_follow_the_hours_the_location_based_figure_does() -> None:
    # the same GPU for two hours, 10:00-12:00, under an hourly series of 100 then 500
    # g/kWh: facility energy 0.8 × 1.25 = 1.0 kWh, location-based 0.5 × 100 + 0.5 × 500 =
    # 300 g; market-based, 60 % PPA at 0 and residual mix 400: 1.0 × 160 = 160 g
    market = {
        "years": {
            2026: {"instruments": [{"kind": "ppa", "share": 0.6}], "residual_mix_g_per_kwh": 400}
        }
    }
    config = _config(market)
    first_hour = int(utc(2026, 10, 1, 10).timestamp()) // HOUR_S
    series = HourlySeries({first_hour: 100.0, first_hour + 1: 500.0})
    sites = {"s1": replace(config.site_factors["s1"], intensity_g_per_kwh=series)}
    fp = Accountant(config, sites).account(make_job(end_time=utc(2026, 10, 1, 12))).footprint
    assert (fp.co2e_g, fp.co2e_market_g) == pytest.approx((300.0, 160.0))


def test_the_year_is_the_one_the_job_ended_in() -> None:
    # 23:30 on New Year's Eve to 00:30: the whole job is 2027's, as its month is
    market = {
        "years": {2027: {"instruments": [{"kind": "go", "share": 1.0}]}},
        "residual_mix_g_per_kwh": 450,
    }
    fp = _footprint(market, start_time=utc(2026, 12, 31, 23, 30), end_time=utc(2027, 1, 1, 0, 30))
    assert fp.co2e_g == pytest.approx(LOCATION_G)
    assert fp.co2e_market_g == 0.0 and fp.market_source is MarketSource.CONTRACTS
    # a job that never ran costs nothing either way; its source is its year's all the same
    never = _footprint(market, start_time=None, end_time=utc(2026, 5, 1))
    assert (never.co2e_g, never.co2e_market_g) == (0.0, 0.0)
    assert never.market_source is MarketSource.RESIDUAL_MIX


def test_every_problem_names_its_key_path() -> None:
    found = _problems(
        {
            "years": {
                1850: {},
                2026: {
                    "instruments": [
                        {"kind": "i-rec", "share": 0.5},
                        {"kind": "ppa", "share": 1.5, "g_per_kwh": -1},
                    ],
                    "residual_mix": 300,
                },
            },
            "residual_mix_g_per_kwh": 2500,
        }
    )
    assert found == [
        "sites.s1.market.years.1850.[key]: Input should be greater than or equal to 1990 "
        "(got 1850)",
        "sites.s1.market.years.2026.instruments.0.kind: Input should be 'ppa', 'rec' or 'go' "
        "(got 'i-rec')",
        "sites.s1.market.years.2026.instruments.1.share: Input should be less than or equal "
        "to 1 (got 1.5)",
        "sites.s1.market.years.2026.instruments.1.g_per_kwh: Input should be greater than or "
        "equal to 0 (got -1)",
        "sites.s1.market.years.2026.residual_mix: unknown key (check the spelling; "
        "`jobcarbon config example` lists keys)",
        "sites.s1.market.residual_mix_g_per_kwh: Input should be less than or equal to 2000 "
        "(got 2500)",
    ]


def test_what_cannot_be_worked_out_is_refused_with_its_year() -> None:
    def year(**keys: Any) -> dict[str, Any]:
        return {"years": {2026: keys}}

    assert _problems(year(instruments=[{"kind": "go", "share": 0.5, "mwh": 10}])) == [
        "sites.s1.market.years.2026.instruments.0: give share (a fraction) or mwh, exactly one"
    ]
    assert _problems(year(instruments=[{"kind": "go"}])) == [
        "sites.s1.market.years.2026.instruments.0: give share (a fraction) or mwh, exactly one"
    ]
    # MWh without the year's consumption cannot be shared out
    assert _problems(
        year(instruments=[{"kind": "ppa", "share": 0.5}, {"kind": "go", "mwh": 100}])
    ) == [
        "sites.s1.market.years.2026: instruments.1.mwh needs annual_mwh, the site's "
        "consumption that year in MWh, to share the MWh pro rata"
    ]
    # 0.7 + 400 / 1000 = 1.1: more than the year's consumption
    over = year(
        instruments=[{"kind": "ppa", "share": 0.7}, {"kind": "go", "mwh": 400}], annual_mwh=1000
    )
    assert _problems(over) == [
        "sites.s1.market.years.2026: the instruments cover 1.1 of the year's consumption, "
        "more than all of it (1): lower their share or mwh, or raise annual_mwh"
    ]
    assert _problems(year(supplier_g_per_kwh=250, residual_mix_g_per_kwh=400)) == [
        "sites.s1.market.years.2026: give supplier_g_per_kwh or residual_mix_g_per_kwh, not "
        "both: the supplier's rate covers what the instruments do not, and the residual mix "
        "is for a supply without one"
    ]
