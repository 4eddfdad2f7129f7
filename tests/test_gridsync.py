"""`jobcarbon grid sync` and `grid show` against the fake providers over real HTTP, into
real SQLite and PostgreSQL ledgers: hours as the fake serves them (worked by hand from
``grid_fakes.g_per_kwh``), the watermark resumed from, a 401 part-way keeping what came
before it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.accounting import Accountant
from jobcarbon.cli import main
from jobcarbon.config import parse_config
from jobcarbon.daemons.gridsync import site_client, sync_site
from jobcarbon.errors import ConfigError, ExitCode
from jobcarbon.ledger import Ledger
from jobcarbon.ledger.grid import watermark_name
from tests.conftest import make_job
from tests.support.config import make_config
from tests.support.grid_fakes import FakeProvider, _json, serving

HOUR_S = 3600
# 2026-03-29 00:00 UTC: 20 541 days after the epoch, so epoch hour 492 984.
SINCE = datetime(2026, 3, 29, tzinfo=UTC)
H0 = 20_541 * 24


class FailingFrom(FakeProvider):
    """Electricity Maps refusing the credential for windows starting at ``from_s`` or later."""

    from_s: int = 0

    def answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        start = datetime.fromisoformat(query["start"][0]).timestamp()
        if start >= self.from_s:
            return _json(401, {"error": "Invalid auth-token"})
        return super().answer(path, query, headers)


#: the jobs' GPU: a V100 (its TDP from the bundled table)
CLUSTERS = {
    "c1": {"hardware": [{"match": {"partition": "gpu"}, "gpu_model": "Tesla V100-PCIE-16GB"}]}
}


def _site_config(fake: FakeProvider, tmp_path: Path, **provider: Any) -> dict[str, Any]:
    grid = {"provider": {"name": fake.kind, "zone": "DE", "url": fake.url, **provider}}
    return make_config(
        sites={"s1": {"pue": 1.2, "grid": grid}},
        clusters=CLUSTERS,
        ledger={"url": f"sqlite:///{tmp_path}/l.db"},
    )


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("EM_TOKEN", "s3cret")
    yield "EM_TOKEN"


def test_sync_stores_the_hours_served_and_resumes_from_the_watermark(
    ledger_location: str | Path, tmp_path: Path, token: str
) -> None:
    with serving(FakeProvider("electricitymaps", gap_hours={H0 + 3})) as fake:
        config = parse_config(_site_config(fake, tmp_path, token_env=token))
        client = site_client(config, "s1")
        with Ledger(ledger_location) as ledger:
            # up to 2026-04-02 05:00: 4 days and 5 hours = 101 hours, one 240-hour window
            first = sync_site(ledger, "s1", client, SINCE, SINCE + timedelta(days=4, hours=5.5))
            assert (first.hours_written, first.error) == (100, None)  # the gap hour lacks
            hours = {h.hour: h for h in ledger.grid_hours("s1", H0, H0 + 200)}
            assert len(hours) == 100 and H0 + 3 not in hours
            # the fake's hour values: 100 + 24 per hour of the day; 10:00 is 100 + 240
            assert hours[H0 + 10].intensity_g_per_kwh == 340.0
            assert hours[H0 + 24 + 23].intensity_g_per_kwh == 100 + 23 * 24
            # Electricity Maps estimates each epoch hour divisible by 5: 492 985 is one
            assert not hours[H0 + 1].measured and hours[H0 + 2].measured
            assert {h.provider for h in hours.values()} == {"electricitymaps"}
            assert {h.signal for h in hours.values()} == {"lifecycle"}
            until_s = (H0 + 101) * HOUR_S
            assert ledger.watermark(watermark_name("s1")) == until_s

            # the next sync asks from the watermark on
            asked = len(fake.requests)
            second = sync_site(ledger, "s1", client, None, SINCE + timedelta(days=4, hours=8))
            assert (second.since.timestamp(), second.hours_written) == (until_s, 3)
            (request,) = fake.requests[asked:]
            assert request.query["start"] == ["2026-04-02T05:00:00.000Z"]


def test_a_401_part_way_keeps_the_windows_before_it(
    ledger_location: str | Path, tmp_path: Path, token: str
) -> None:
    # 15 days are two windows (240 hours, then 120); the second is refused
    fake_kind = FailingFrom("electricitymaps")
    fake_kind.from_s = int(SINCE.timestamp()) + 240 * HOUR_S
    with serving(fake_kind) as fake:
        client = site_client(parse_config(_site_config(fake, tmp_path, token_env=token)), "s1")
        with Ledger(ledger_location) as ledger:
            result = sync_site(ledger, "s1", client, SINCE, SINCE + timedelta(days=15))
            assert result.hours_written == 240
            assert "electricitymaps refused the credential (HTTP 401" in str(result.error)
            assert len(ledger.grid_hours("s1", H0, H0 + 400)) == 240
            assert ledger.watermark(watermark_name("s1")) == (H0 + 240) * HOUR_S


def test_a_signal_the_provider_lacks_is_a_config_error_at_its_key(tmp_path: Path) -> None:
    fake = FakeProvider("electricitymaps")
    config = parse_config(_site_config(fake, tmp_path, signal="marginal", token_env="X"))
    with pytest.raises(
        ConfigError,
        match=r"sites\.s1\.grid\.provider: electricitymaps: grid\."
        r"provider\.signal must be one of lifecycle, direct, got 'marginal'",
    ):
        site_client(config, "s1")


def test_the_commands_sync_show_and_fail_with_the_source_exit_code(
    tmp_path: Path, token: str
) -> None:
    since = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    with serving(FakeProvider("electricitymaps")) as fake:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(_site_config(fake, tmp_path, token_env=token)))
        runner = CliRunner()
        synced = runner.invoke(
            main, ["--config", str(path), "grid", "sync", "--since", since.isoformat()]
        )
        assert synced.exit_code == 0, synced.output
        assert "s1: 30 hour(s) written" in synced.output

        day = f"{since:%Y-%m-%d}"
        shown = runner.invoke(
            main, ["--config", str(path), "grid", "show", "--site", "s1", "--since", day]
        )
        assert shown.exit_code == 0, shown.output
        # the first day's hours from ``since`` on: the fake's 100 + 24 × hour of the day
        first_hour = since.hour
        assert f"{100 + 24 * first_hour}" in shown.output and "30 hour(s)" in shown.output

        fake.credential = "another"  # the token no longer accepted
        refused = runner.invoke(
            main,
            ["--config", str(path), "grid", "sync", "--site", "s1", "--since", since.isoformat()],
        )
        assert refused.exit_code == ExitCode.SOURCE
        assert "s1: stopped after 0 hour(s): electricitymaps refused the credential" in (
            refused.output
        )


def test_a_job_is_accounted_with_the_synced_hours_and_the_fallback_for_a_gap(
    ledger_location: str | Path, tmp_path: Path, token: str
) -> None:
    with serving(FakeProvider("electricitymaps", gap_hours={H0 + 12})) as fake:
        data = _site_config(fake, tmp_path, token_env=token, fallback_g_per_kwh=200)
        config = parse_config(data)
        with Ledger(ledger_location) as ledger:
            sync_site(ledger, "s1", site_client(config, "s1"), SINCE, SINCE + timedelta(days=1))
            accountant = Accountant(config, ledger.synced_site_factors(config))
    constant = Accountant(
        parse_config(make_config(clusters=CLUSTERS))
    )  # the same site at 100 g/kWh
    # 2026-03-29 10:30 to 13:30 UTC: half of 10:00 (340 g/kWh), 11:00 (364), 12:00 (not
    # served: the fallback 200), half of 13:00 (412): 170 + 364 + 200 + 206 = 940 g/kWh·h,
    # against 300 g/kWh·h at a constant 100
    job = make_job(
        start_time=datetime(2026, 3, 29, 10, 30, tzinfo=UTC),
        end_time=datetime(2026, 3, 29, 13, 30, tzinfo=UTC),
    )
    synced = accountant.account(job).footprint
    at_100 = constant.account(job).footprint
    assert synced.energy_facility_kwh == pytest.approx(at_100.energy_facility_kwh)
    assert synced.co2e_g == pytest.approx(at_100.co2e_g * 940 / 300, rel=1e-9)


def test_slurm_import_accounts_a_provider_site_with_its_synced_hours(
    tmp_path: Path, token: str
) -> None:
    """The same job as above, imported from a sacct dump by `slurm import` after `grid sync`."""
    header = (
        "JobIDRaw|JobID|Cluster|User|Account|WCKey|Partition|State|Submit|Start|End|ElapsedRaw|"
        "AllocTRES|NNodes|NodeList|JobName|ConsumedEnergyRaw|TRESUsageInTot"
    )
    line = (
        "7|7|c1|ada|proj||gpu|COMPLETED|2026-03-29T10:00:00|2026-03-29T10:30:00|"
        "2026-03-29T13:30:00|10800|cpu=1,gres/gpu=1,mem=1G,node=1|1|n1|train|0|"
    )
    dump = tmp_path / "sacct.txt"
    dump.write_text(f"{header}\n{line}\n")
    runner = CliRunner()
    co2e_kg: dict[str, float] = {}
    with serving(FakeProvider("electricitymaps", gap_hours={H0 + 12})) as fake:
        synced = _site_config(fake, tmp_path, token_env=token, fallback_g_per_kwh=200)
        constant = make_config(clusters=CLUSTERS, ledger={"url": f"sqlite:///{tmp_path}/c.db"})
        for name, data in (("synced", synced), ("constant", constant)):
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data))
            if name == "synced":
                since = ["--since", SINCE.isoformat()]
                ran = runner.invoke(main, ["--config", str(path), "grid", "sync", *since])
                assert ran.exit_code == 0, ran.output
            imported = runner.invoke(main, ["--config", str(path), "slurm", "import", str(dump)])
            assert imported.exit_code == 0, imported.output
            with Ledger(tmp_path / ("l.db" if name == "synced" else "c.db")) as ledger:
                co2e_kg[name] = ledger.totals().co2e_kg
    # 940 g/kWh·h over the run against 300 at a constant 100 (worked out above)
    assert co2e_kg["synced"] == pytest.approx(co2e_kg["constant"] * 940 / 300, rel=1e-9)


def test_sync_from_half_hours_without_a_credential(tmp_path: Path) -> None:
    """NESO: half-hourly, no credential; an hour is the mean of its two half hours."""
    with serving(FakeProvider("uk-carbon-intensity")) as fake:
        data = _site_config(fake, tmp_path)
        data["sites"]["s1"]["grid"]["provider"]["zone"] = "national"
        config = parse_config(data)
        with Ledger(tmp_path / "l.db") as ledger:
            result = sync_site(
                ledger, "s1", site_client(config, "s1"), SINCE, SINCE + timedelta(days=1)
            )
            assert (result.hours_written, result.error) == (24, None)
            hours = {h.hour: h for h in ledger.grid_hours("s1", H0, H0 + 24)}
    # 10:00 and 10:30 (half hours 985 988 and 985 989, both metered): 100 + 240 + 0 and
    # 100 + 240 + 6, so 343
    assert hours[H0 + 10].intensity_g_per_kwh == 343.0
    assert hours[H0 + 10].provider == "uk-carbon-intensity"


def test_grid_sync_accounts_again_the_jobs_whose_hours_it_brought(
    tmp_path: Path, token: str
) -> None:
    """The imported job above waits for 12:00, the provider's gap; the job ended months
    ago (more than the 7 days a sync asks again for on its own), so the gap is filled by
    `grid sync --since`, which then accounts the job again."""
    header = (
        "JobIDRaw|JobID|Cluster|User|Account|WCKey|Partition|State|Submit|Start|End|ElapsedRaw|"
        "AllocTRES|NNodes|NodeList|JobName|ConsumedEnergyRaw|TRESUsageInTot"
    )
    line = (
        "7|7|c1|ada|proj||gpu|COMPLETED|2026-03-29T10:00:00|2026-03-29T10:30:00|"
        "2026-03-29T13:30:00|10800|cpu=1,gres/gpu=1,mem=1G,node=1|1|n1|train|0|"
    )
    dump = tmp_path / "sacct.txt"
    dump.write_text(f"{header}\n{line}\n")
    runner = CliRunner()
    with serving(FakeProvider("electricitymaps", gap_hours={H0 + 12})) as fake:
        path = tmp_path / "config.yaml"
        data = _site_config(fake, tmp_path, token_env=token, fallback_g_per_kwh=200)
        path.write_text(yaml.safe_dump(data))
        since = ["--since", SINCE.isoformat()]
        assert runner.invoke(main, ["--config", str(path), "grid", "sync", *since]).exit_code == 0
        imported = runner.invoke(main, ["--config", str(path), "slurm", "import", str(dump)])
        assert imported.exit_code == 0, imported.output
        summary = runner.invoke(main, ["--config", str(path), "summary"])
        assert "1 job(s) pending grid data" in summary.output
        with Ledger(tmp_path / "l.db") as ledger:
            (before,) = ledger.jobs()
        fake.gap_hours.clear()
        synced = runner.invoke(main, ["--config", str(path), "grid", "sync", *since])
        assert synced.exit_code == 0, synced.output
        assert "1 job(s) pending grid data accounted again" in synced.output
        with Ledger(tmp_path / "l.db") as ledger:
            (after,) = ledger.jobs()
    # 170 + 364 + 200 + 206 = 940 g/kWh·h with the fallback for 12:00 (worked out above),
    # 170 + 364 + 388 + 206 = 1128 with its value
    assert (before["intensity_pending"], after["intensity_pending"]) == (1, 0)
    assert before["intensity_g_per_kwh"] == pytest.approx(940 / 3)
    assert after["intensity_g_per_kwh"] == pytest.approx(1128 / 3)
    assert after["co2e_g"] == pytest.approx(before["co2e_g"] * 1128 / 940)
