"""`jobcarbon grid forecast` against the fake providers over real HTTP (grid_fakes.py).

The fakes serve each provider's forecast in its own slots from the one holding now:
NESO half hours, Electricity Maps hours, WattTime 5 minutes. Each test scripts the
values slot by slot so that the run from now lies in equal slots whatever the minute the
test runs at; so every mean and saving below is worked by hand, and only the best start's
clock time follows from where the fake's forecast began (``forecast_first_s``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from jobcarbon.cli import main
from jobcarbon.errors import ExitCode
from tests.support.config import make_config
from tests.support.grid_fakes import FakeProvider, serving

HALF = 1800
HOUR = 3600


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_TOKEN", "s3cret")
    monkeypatch.setenv("WT_LOGIN", "ann:pw")


@pytest.fixture
def uk() -> Iterator[FakeProvider]:
    with serving(FakeProvider("uk-carbon-intensity")) as fake:
        yield fake


def run(
    fake: FakeProvider, tmp_path: Path, *args: str, zone: str = "national", **provider: Any
) -> Result:
    settings = {"name": fake.kind, "zone": zone, "url": fake.url, **provider}
    config = make_config(
        sites={"s1": {"pue": 1.2, "grid": {"provider": settings}}},
        clusters={"c1": {"hardware": [{"gpu_tdp_w": 300}]}},
        ledger={"url": f"sqlite:///{tmp_path}/l.db"},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return CliRunner().invoke(
        main, ["--config", str(path), "grid", "forecast", "--site", "s1", *args]
    )


def utc_plus(epoch_s: int, hours: float) -> str:
    """The wall time ``hours`` ahead of UTC at ``epoch_s``, as sbatch --begin takes it."""
    return (datetime.fromtimestamp(epoch_s, UTC) + timedelta(hours=hours)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )


#: NESO half hours: 5 of 300, then 60, 40, 50, then 12 of 300 (10 h). Now lies in the
#: first half hour served or the second (the API starts with the one ending at ``from``
#: when ``from`` is on a boundary), so a 1.5 h run from now lies in the first five: 300.
#: The cleanest 1.5 h is the three half hours from the sixth: (60 + 40 + 50) / 3 = 50;
#: next to it (300 + 60 + 40) / 3 = 133 and (40 + 50 + 300) / 3 = 130. Saving:
#: (300 - 50) / 300 = 83.3 %.
UK_VALUES = [300.0] * 5 + [60.0, 40.0, 50.0] + [300.0] * 12


def test_uk_half_hours_best_start_and_sbatch_begin_in_a_named_zone(
    uk: FakeProvider, tmp_path: Path
) -> None:
    uk.forecast_g_per_kwh = UK_VALUES
    shown = run(uk, tmp_path, "--duration", "1h30m", "--within", "6h", "--timezone", "Asia/Kolkata")
    assert shown.exit_code == 0, shown.output
    (request,) = uk.requests
    assert request.path.startswith("/intensity/") and request.path.endswith("/fw48h")
    assert uk.forecast_first_s is not None
    best = uk.forecast_first_s + 5 * HALF
    assert "uk-carbon-intensity forecast, 20 slots of 30 min" in shown.output
    assert f"{datetime.fromtimestamp(best, UTC):%Y-%m-%d %H:%M} UTC" in shown.output
    assert "mean over the run:  50 g CO2e/kWh" in shown.output
    assert "starting now:       300 g CO2e/kWh" in shown.output
    assert "saving:             83 % less CO2e" in shown.output
    # India keeps UTC+05:30 all year: the begin is the UTC start plus 5 h 30 min
    assert f"sbatch --begin={utc_plus(best, 5.5)} ..." in shown.output
    assert "local time in Asia/Kolkata (IST, UTC+05:30)" in shown.output
    assert "takes no UTC or offset form" in shown.output


def test_uk_region_as_json(uk: FakeProvider, tmp_path: Path) -> None:
    uk.forecast_g_per_kwh = UK_VALUES
    shown = run(
        uk, tmp_path, "--duration", "01:30:00", "--within", "6h", "--json",
        "--timezone", "UTC", zone="13",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    (request,) = uk.requests
    assert request.path.endswith("/fw48h/regionid/13")
    facts = json.loads(shown.output)
    assert uk.forecast_first_s is not None
    best = uk.forecast_first_s + 5 * HALF
    assert facts["best_start"] == f"{datetime.fromtimestamp(best, UTC):%Y-%m-%dT%H:%M:%SZ}"
    assert facts["best_mean_g_per_kwh"] == pytest.approx(50.0)
    assert facts["now_mean_g_per_kwh"] == pytest.approx(300.0)
    assert facts["saving_percent"] == pytest.approx(250 / 3)
    assert facts["sbatch_begin"] == utc_plus(best, 0)
    assert (facts["duration_h"], facts["slot_minutes"], facts["forecast_slots"]) == (1.5, 30, 20)
    assert facts["forecast_until"] == (
        f"{datetime.fromtimestamp(uk.forecast_first_s + 20 * HALF, UTC):%Y-%m-%dT%H:%M:%SZ}"
    )


def test_electricitymaps_hours(tmp_path: Path) -> None:
    # Hours: 4 of 400, then 120 and 90, then 14 of 400. A 2 h run from now lies in the
    # first three (now is in the first): 400. From the fifth hour: (120 + 90) / 2 = 105;
    # from the fourth (400 + 120) / 2 = 260, the sixth (90 + 400) / 2 = 245. Saving:
    # (400 - 105) / 400 = 73.75 %.
    fake = FakeProvider(
        "electricitymaps", forecast_g_per_kwh=[400.0] * 4 + [120.0, 90.0] + [400.0] * 14
    )
    with serving(fake):
        shown = run(
            fake, tmp_path, "--duration", "2h", "--within", "12h", zone="DE", token_env="GRID_TOKEN"
        )
    assert shown.exit_code == 0, shown.output
    (request,) = fake.requests
    assert request.path == "/v3/carbon-intensity/forecast"
    assert request.headers["auth-token"] == "s3cret"
    # 12 h + 2 h ahead: the shortest horizon that covers it is 24 h
    assert (request.query["zone"], request.query["horizonHours"]) == (["DE"], ["24"])
    assert request.query["emissionFactorType"] == ["lifecycle"]
    assert fake.forecast_first_s is not None
    best = fake.forecast_first_s + 4 * HOUR
    assert "electricitymaps forecast (lifecycle), 20 slots of 60 min" in shown.output
    assert f"{datetime.fromtimestamp(best, UTC):%Y-%m-%d %H:%M} UTC" in shown.output
    assert "mean over the run:  105 g CO2e/kWh" in shown.output
    assert "starting now:       400 g CO2e/kWh" in shown.output
    assert "saving:             74 % less CO2e" in shown.output


def test_watttime_five_minutes_of_its_marginal_signal(tmp_path: Path) -> None:
    # 5-minute points: 24 of 500 (2 h), 6 of 200, 6 of 100, 36 of 500. A 30 min run from
    # now lies in the first seven: 500; the cleanest 30 min are the six of 100 (from
    # 2 h 30 min): 100. Saving (500 - 100) / 500 = 80 %.
    fake = FakeProvider(
        "watttime",
        credential="ann:pw",
        forecast_g_per_kwh=[500.0] * 24 + [200.0] * 6 + [100.0] * 6 + [500.0] * 36,
    )
    with serving(fake):
        shown = run(
            fake, tmp_path, "--duration", "30m", "--within", "3h", zone="CAISO_NORTH",
            token_env="WT_LOGIN",
        )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    login, forecast = fake.requests
    assert login.path == "/login" and forecast.path == "/v3/forecast"
    assert forecast.headers["authorization"] == "Bearer jwt-1"
    # the site accounts with co2_aoer, which WattTime does not forecast
    assert (forecast.query["region"], forecast.query["signal_type"]) == (
        ["CAISO_NORTH"],
        ["co2_moer"],
    )
    assert forecast.query["horizon_hours"] == ["24"]
    assert "watttime forecast (co2_moer, as watttime forecasts no co2_aoer)" in shown.output
    assert "72 slots of 5 min" in shown.output
    assert fake.forecast_first_s is not None
    best = fake.forecast_first_s + 30 * 300
    assert f"{datetime.fromtimestamp(best, UTC):%Y-%m-%d %H:%M} UTC" in shown.output
    assert "mean over the run:  100 g CO2e/kWh" in shown.output  # lbs/MWh back to g/kWh
    assert "starting now:       500 g CO2e/kWh" in shown.output
    assert "saving:             80 % less CO2e" in shown.output


def test_now_is_the_best_start(uk: FakeProvider, tmp_path: Path) -> None:
    uk.forecast_g_per_kwh = [100.0] * 6 + [300.0] * 20  # a 1 h run from now: 100
    shown = run(uk, tmp_path, "--duration", "1h", "--within", "4h")
    assert shown.exit_code == 0, shown.output
    assert "now; no later start is cleaner" in shown.output
    assert "mean over the run:  100 g CO2e/kWh" in shown.output
    assert "sbatch needs no --begin" in shown.output


@pytest.mark.parametrize(("kind", "history"), [("entsoe", "A75"), ("eia", "EIA-930")])
def test_a_provider_without_forecasts_is_named_with_the_site(
    kind: str, history: str, tmp_path: Path
) -> None:
    with serving(FakeProvider(kind)) as fake:
        shown = run(fake, tmp_path, "--duration", "8h", token_env="GRID_TOKEN")
        assert fake.requests == []  # nothing asked of it
    assert shown.exit_code == ExitCode.CONFIG
    assert (
        f"Error: site s1: {kind} publishes no forecast, only past generation; "
        "`grid forecast` needs a provider that publishes one "
        "(electricitymaps, watttime, uk-carbon-intensity)"
    ) in shown.output


def test_a_site_without_a_provider(tmp_path: Path) -> None:
    config = make_config(sites={"s1": {"pue": 1.2, "grid": {"intensity_g_per_kwh": 300}}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    shown = CliRunner().invoke(
        main, ["--config", str(path), "grid", "forecast", "--site", "s1", "--duration", "8h"]
    )
    assert shown.exit_code == ExitCode.CONFIG
    assert "sites.s1.grid.provider: not set, so there is nothing to read a forecast from" in (
        shown.output
    )


def test_a_refused_token_stops_with_the_source_exit_code(tmp_path: Path) -> None:
    with serving(FakeProvider("electricitymaps", credential="another")) as fake:
        shown = run(fake, tmp_path, "--duration", "8h", token_env="GRID_TOKEN")
    assert shown.exit_code == ExitCode.SOURCE
    assert (
        "Error: site s1: the electricitymaps forecast failed: electricitymaps refused the "
        "credential (HTTP 401"
    ) in shown.output
    assert "check grid.provider.token_env or grid.provider.token_file" in shown.output


def test_429_is_retried_after_retry_after(uk: FakeProvider, tmp_path: Path) -> None:
    uk.forecast_g_per_kwh = UK_VALUES
    uk.fail_next = [(429, {"Retry-After": "1"}, b'{"error": "slow down"}')]
    shown = run(uk, tmp_path, "--duration", "1h30m", "--within", "6h")
    assert shown.exit_code == 0, shown.output
    assert len(uk.requests) == 2  # the 429, then the forecast
    assert "mean over the run:  50 g CO2e/kWh" in shown.output


def test_a_run_that_does_not_fit_and_a_bad_duration(uk: FakeProvider, tmp_path: Path) -> None:
    uk.forecast_g_per_kwh = [200.0] * 4  # two hours from the half hour holding now at most
    shown = run(uk, tmp_path, "--duration", "3h")
    assert shown.exit_code == ExitCode.CONFIG
    assert "Error: site s1: a run of 3 h does not fit in the forecast, which reaches" in (
        shown.output
    )
    bad = run(uk, tmp_path, "--duration", "8:00")  # Slurm's MM:SS, or 8 hours? Refused.
    assert bad.exit_code == 2
    assert "'8:00' is not a duration like 8h, 1h30m, 2d or 08:00:00" in bad.output


def test_help_says_what_the_command_does() -> None:
    shown = CliRunner().invoke(main, ["grid", "forecast", "--help"])
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    assert "lowest mean forecast intensity" in text
    assert "sbatch reads --begin in the local time of the machine it runs on" in text
    assert "ENTSO-E and EIA publish none" in text
