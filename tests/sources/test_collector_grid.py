"""The collector syncing its site's grid provider on a schedule: the fake Electricity
Maps over real HTTP (tests/support/grid_fakes.py), a real SQLite ledger, sacct scripted
as in test_collector.py (the real chain runs on a real Slurm cluster elsewhere; nothing
here needs one).

Hand-worked figures. The fake's value for hour h of a day (UTC) is 100 + 24 h g/kWh
(``grid_fakes.g_per_kwh`` at the hour's start, which is Electricity Maps' hourly value).
Job 7 runs on 2026-03-29 from 07:30 to 10:30 UTC on one core with 1 GB: 12 W a core
(the default) + 0.3725 W a GB = 12.3725 W, for 3 h 0.0371175 kWh; PUE 1.0.

- The first sync, at 10:40, reads up to the last whole hour (10:00). The provider lacks
  08:00 (a gap), and 10:00 is past the watermark: both take the fallback, 200 g/kWh.
  Over the run: half of 07:00 (268), 08:00 (200), 09:00 (316), half of 10:00 (200):
  134 + 200 + 316 + 100 = 750 g/kWh·h in 3 h, 250 g/kWh; the job is pending.
- Once the provider has 08:00 (292) and a sync has 10:00 (340): 134 + 292 + 316 + 170 =
  912 g/kWh·h, 304 g/kWh; the job is accounted again and no longer pending.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.cli import main
from jobcarbon.config import parse_config
from jobcarbon.daemons.collector import Collector
from jobcarbon.ledger import Ledger
from jobcarbon.sources.slurm.runner import Sacct
from jobcarbon.sources.slurm.spool import Spool
from tests.sources.test_collector import ScriptedSacct
from tests.support.config import make_config
from tests.support.grid_fakes import FakeProvider, serving

HOUR_S = 3600
# 2026-03-29 00:00 UTC: 20 541 days after the epoch, so epoch hour 492 984.
H0 = 20_541 * 24
AT_10_40 = (H0 + 10) * HOUR_S + 40 * 60
IT_KWH = (12 + 0.3725) * 3 / 1000
#: the job's sacct cells: 07:30 to 10:30 UTC on 2026-03-29
JOB_7 = {
    "Submit": "2026-03-29T07:00:00",
    "Start": "2026-03-29T07:30:00",
    "End": "2026-03-29T10:30:00",
    "ElapsedRaw": "10800",
}


@dataclass
class Rig:
    collector: Collector
    ledger: Ledger
    now: list[float]
    config_path: Path


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("EM_TOKEN", "s3cret")
    return "EM_TOKEN"


def _config(fake: FakeProvider, tmp_path: Path, **slurm: Any) -> dict[str, Any]:
    provider = {
        "name": "electricitymaps",
        "zone": "DE",
        "url": fake.url,
        "token_env": "EM_TOKEN",
        "fallback_g_per_kwh": 200,
    }
    return make_config(
        sites={"s1": {"pue": 1.0, "grid": {"provider": provider}}},
        ledger={"url": f"sqlite:///{tmp_path}/ledger.db"},
        slurm={"spool_dir": str(tmp_path / "spool"), "poll_interval_s": 60, **slurm},
    )


@pytest.fixture
def rig_for(tmp_path: Path, token: str) -> Iterator[Any]:
    """A collector of job 7 (ended, its spool entry written at 10:35) whose clock is
    ``now[0]``, starting at 10:40."""
    opened: list[Ledger] = []

    def build(fake: FakeProvider, **slurm: Any) -> Rig:
        data = _config(fake, tmp_path, **slurm)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        spool = Spool(tmp_path / "spool")
        spool.create()
        entry = spool.new / "7"
        entry.write_text("JOB_ID=7\n")
        os.utime(entry, (AT_10_40 - 300, AT_10_40 - 300))
        sacct = ScriptedSacct(**JOB_7)
        sacct.state = "COMPLETED"
        now = [float(AT_10_40)]
        ledger = Ledger(tmp_path / "ledger.db")
        opened.append(ledger)
        collector = Collector(
            parse_config(data, tmp_path), ledger, Sacct(run=sacct), spool, clock=lambda: now[0]
        )
        collector.rng = random.Random(3)
        return Rig(collector, ledger, now, path)

    yield build
    for ledger in opened:
        ledger.close()


def _job(ledger: Ledger) -> dict[str, Any]:
    (row,) = ledger.jobs()
    return row


def test_a_job_waits_for_its_grid_hours_and_is_accounted_again_when_they_come(
    rig_for: Any,
) -> None:
    with serving(FakeProvider("electricitymaps", gap_hours={H0 + 8})) as fake:
        rig = rig_for(fake)
        collector, ledger = rig.collector, rig.ledger
        # 10:40: the first sync reads 30 days up to 10:00 (720 hours, the gap not served)
        first = collector.grid.tick(block=True)
        assert first is not None and first.errors == []
        assert [s.hours_written for s in first.synced] == [719]
        assert collector.collect_once(sweep=False).accounted.written == 1
        job = _job(ledger)
        assert job["intensity_pending"] == 1
        assert job["energy_facility_kwh"] == pytest.approx(IT_KWH)
        assert job["intensity_g_per_kwh"] == pytest.approx(250)
        assert job["co2e_g"] == pytest.approx(IT_KWH * 250)

        runner = CliRunner()
        summary = runner.invoke(main, ["--config", str(rig.config_path), "summary"])
        assert summary.exit_code == 0, summary.output
        assert "1 job(s) pending grid data" in summary.output
        export = runner.invoke(main, ["--config", str(rig.config_path), "export"])
        (exported,) = csv.DictReader(io.StringIO(export.stdout))
        assert exported["intensity_pending"] == "1"

        # 11:10: not due (the next sync is an hour after 10:40); the provider is not asked
        asked = len(fake.requests)
        rig.now[0] += 1800
        assert collector.grid.tick(block=True) is None
        assert len(fake.requests) == asked

        # the provider fills its gap; the sync at 11:40 asks again from 07:00, the hour
        # the waiting job started, and brings 08:00 and 10:00
        fake.gap_hours.clear()
        rig.now[0] += 1800
        second = collector.grid.tick(block=True)
        assert second is not None and second.errors == [] and second.recomputed == 1
        (request,) = fake.requests[asked:]
        assert request.query["start"] == ["2026-03-29T07:00:00.000Z"]
        job = _job(ledger)
        assert job["intensity_pending"] == 0
        assert job["intensity_g_per_kwh"] == pytest.approx(304)
        assert job["co2e_g"] == pytest.approx(IT_KWH * 304)
        # the range, by hand: low is idle cores (0.3 × 12 W) and memory less 10 %
        # (0.33525 W) at PUE max(1, 1.0 × 0.95) = 1; high is 10 % more power at PUE 1.05
        assert job["co2e_g_low"] == pytest.approx((3.6 + 0.33525) * 3 / 1000 * 304)
        assert job["co2e_g_high"] == pytest.approx(12.3725 * 1.1 * 3 / 1000 * 1.05 * 304)
        # the running totals followed the job's new figures
        (total,) = ledger.aggregates()
        assert total.co2e_g == pytest.approx(IT_KWH * 304)
        # and the sweep, accounting the job again with the synced hours, agrees
        collector.collect_once(sweep=True)
        again = _job(ledger)
        assert again["intensity_pending"] == 0
        assert again["co2e_g"] == pytest.approx(job["co2e_g"], rel=1e-12)
        assert again["co2e_g_low"] == pytest.approx(job["co2e_g_low"], rel=1e-12)
        summary = runner.invoke(main, ["--config", str(rig.config_path), "summary"])
        assert "pending grid data" not in summary.output


def test_a_refused_credential_names_the_setting_is_counted_and_accounting_goes_on(
    rig_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(FakeProvider("electricitymaps", credential="another")) as fake:
        rig = rig_for(fake)
        with caplog.at_level(logging.WARNING, "jobcarbon.grid"):
            synced = rig.collector.grid.tick(block=True)
        assert synced is not None
        (error,) = synced.errors
        assert error.startswith(
            "grid sync of site s1 (electricitymaps) stopped after 0 hour(s): electricitymaps "
            "refused the credential (HTTP 401"
        )
        assert error.endswith(
            "its credential is read from sites.s1.grid.provider.token_env ($EM_TOKEN)"
        )
        assert error in caplog.text
        assert rig.ledger.ingest_errors()["grid"] == 1
        # no hour synced: the whole run at the fallback, and pending
        assert rig.collector.collect_once(sweep=False).accounted.written == 1
        job = _job(rig.ledger)
        assert job["intensity_pending"] == 1
        assert job["intensity_g_per_kwh"] == pytest.approx(200)


class HeldProvider(FakeProvider):
    """The fake Electricity Maps answering only once ``release`` is set: a slow provider."""

    release: threading.Event

    def answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        self.release.wait(30)
        return super().answer(path, query, headers)


def test_a_slow_provider_does_not_hold_up_the_accounting(rig_for: Any) -> None:
    held = HeldProvider("electricitymaps")
    held.release = threading.Event()
    with serving(held) as fake:
        rig = rig_for(fake)
        rig.now[0] += HOUR_S  # 11:40: a sync now reads up to 11:00, the whole run
        began = time.monotonic()
        assert rig.collector.grid.tick() is None  # the sync runs in its thread
        assert rig.collector.collect_once(sweep=False).accounted.written == 1
        assert time.monotonic() - began < 5
        # accounted while the provider has not answered: every hour at the fallback
        assert _job(rig.ledger)["intensity_g_per_kwh"] == pytest.approx(200)
        assert rig.collector.grid.tick() is None  # still syncing
        held.release.set()
        rig.collector.grid.wait(30)
        synced = rig.collector.grid.tick()
        assert synced is not None and synced.errors == [] and synced.recomputed == 1
        # the provider's hours, no gap: 0.5 × 268 + 292 + 316 + 0.5 × 340 = 912 g/kWh·h
        job = _job(rig.ledger)
        assert (job["intensity_pending"], job["intensity_g_per_kwh"]) == (0, pytest.approx(304))


def test_an_interval_of_zero_never_syncs(rig_for: Any) -> None:
    with serving(FakeProvider("electricitymaps")) as fake:
        rig = rig_for(fake, grid_sync_interval_s=0)
        assert rig.collector.grid.tick(block=True) is None
        rig.now[0] += 10 * HOUR_S
        assert rig.collector.grid.tick(block=True) is None
        assert fake.requests == []


def test_the_run_loop_syncs_and_a_reload_keeps_the_schedule(rig_for: Any) -> None:
    with serving(FakeProvider("electricitymaps")) as fake:
        rig = rig_for(fake)
        rounds = iter([False, True])
        rig.collector.run_forever(lambda: next(rounds, True))
        rig.collector.grid.wait(30)
        assert len(fake.requests) == 3  # 720 hours in Electricity Maps' 240-hour windows
        # a reload (SIGHUP) with the config again: the sync an hour later is not due yet
        rig.collector.reload(parse_config(yaml.safe_load(rig.config_path.read_text())))
        rig.now[0] += 1800
        assert rig.collector.grid.tick() is not None  # the loop's sync taken
        assert rig.collector.grid.tick() is None and len(fake.requests) == 3
