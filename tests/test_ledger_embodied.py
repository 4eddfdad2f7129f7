"""Embodied (Scope 3) emissions per job through config, accounting, the ledger (schema
v14) and what reads it: rows on SQLite and PostgreSQL, the migration of older rows,
``ledger recompute``, ``summary``, ``export``, the monthly e-mail, each figure worked by
hand. A year is 8,766 h: 4 years are 35,064 h, 5 years 43,830 h, 6 years 52,596 h.

Cluster ``gpu``: nodes of X = 4,677 kgCO2e, 8 GPUs and 96 cores, over 4 years (the
site's own figure: no spread of its own, so the range is the sources' lifetimes, low
over 6 years, high over 4); partition ``big`` has other nodes (a rule's override):
6,000 kg, 8 GPUs, 112 cores, 5 years. Cluster ``old``: nodes of 800 kg, 8 GPUs, 32
cores, over half a year (4,383 h). Cluster ``plain`` has no embodied settings.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.accounting import Accountant, config_digest
from jobcarbon.cli import main
from jobcarbon.config import Config, parse_config
from jobcarbon.errors import ConfigError
from jobcarbon.ledger import SCHEMA_VERSION, Ledger, UsageScope, copy_ledger
from jobcarbon.mail import Composer
from jobcarbon.recompute import recompute
from jobcarbon.report import monthly_reports
from tests.conftest import make_job, utc
from tests.support.config import make_config
from tests.test_ledger import back_to_v13
from tests.test_ledger_market import cells

NODE = {"node_kg": 4677, "gpus_per_node": 8, "cores_per_node": 96, "lifetime_years": 4}
BIG = {"node_kg": 6000, "gpus_per_node": 8, "cores_per_node": 112, "lifetime_years": 5}
OLD = {"node_kg": 800, "gpus_per_node": 8, "cores_per_node": 32, "lifetime_years": 0.5}
A100 = {"gpu_model": "A100 SXM4 80 GB", "gpu_tdp_w": 300}
END = utc(2026, 10, 5, 12)


def embodied_data(node: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    site = {"pue": 1.5, "pue_uncertainty": 0, "grid": {"intensity_g_per_kwh": 400}}
    return make_config(
        sites={"s1": site},
        clusters={
            "gpu": {
                "site": "s1",
                "embodied": node or NODE,
                "hardware": [{"match": {"partition": "big"}, **A100, "embodied": BIG}, A100],
            },
            "old": {"site": "s1", "embodied": OLD, "hardware": [A100]},
            "plain": {"site": "s1", "hardware": [A100]},
        },
        **overrides,
    )


def hours(job_id: str, cluster: str, h: float, gpus: float, cores: int = 0, **fields: Any) -> Any:
    end = fields.pop("end", END)
    return make_job(
        job_id=job_id,
        cluster=cluster,
        gpu_count=gpus,
        cpu_count=cores,
        start_time=end - _hours(h),
        end_time=end,
        submit_time=end - _hours(h + 1),
        **fields,
    )


def _hours(h: float) -> Any:
    from datetime import timedelta

    return timedelta(hours=h)


def jobs() -> list[Any]:
    return [
        # 2 GPUs of 8 for 10 h: 4,677 × 2/8 × 10/(4 × 8,766) kg = 11,692.5 / 35,064
        # = 0.333461670 kg; low over 6 years: 11,692.5 / 52,596 = 0.222307780 kg
        hours("1", "gpu", 10, 2),
        # no GPU: 24 cores of 96 for 48 h: 4,677 × 24/96 × 48/35,064 = 56,124 / 35,064
        # = 1.600616016 kg; low 56,124 / 52,596 = 1.067077344 kg
        hours("2", "gpu", 48, 0, cores=24, user="bob"),
        # partition big (the rule's nodes): 1 GPU of 8 for 240 h: 6,000 × 1/8 ×
        # 240/43,830 = 180,000 / 43,830 = 4.106776181 kg; low over 6 years 180,000 /
        # 52,596 = 3.422313484 kg, high over 4: 180,000 / 35,064 = 5.133470226 kg
        hours("3", "gpu", 240, 1, partition="big", user="bob"),
        # a cluster without embodied settings: no figure, never a guess
        hours("4", "plain", 1, 1),
        # longer than the nodes' whole lifetime: 1 GPU of 8 for 365 days, 8,760 h, on
        # nodes amortised over 4,383 h: 800 × 1/8 × 8,760/4,383 = 199.863107 kg, about
        # twice the GPU's 100 kg share: amortisation does not stop at end of life. Low
        # over 6 years: 100 × 8,760/52,596 = 16.655259 kg; high over the half year.
        hours("5", "old", 8760, 1, user="carol"),
    ]


EXPECTED = {  # grams: central, low, high, source
    "1": (333.461670, 222.307780, 333.461670, "site config"),
    "2": (1600.616016, 1067.077344, 1600.616016, "site config"),
    "3": (4106.776181, 3422.313484, 5133.470226, "site config"),
    "4": (None, None, None, None),
    "5": (199_863.107461, 16_655.258955, 199_863.107461, "site config"),
}


def write_jobs(ledger: Ledger, config: Config) -> None:
    accountant = Accountant(config)
    ledger.write([accountant.account(job) for job in jobs()])


def embodied_rows(ledger: Ledger) -> dict[str, tuple[Any, ...]]:
    return {
        r["job_id"]: (
            r["co2e_embodied_g"],
            r["co2e_embodied_g_low"],
            r["co2e_embodied_g_high"],
            r["embodied_source"],
        )
        for r in ledger.jobs()
    }


def test_each_job_gets_its_share_of_its_node_on_either_backend(
    ledger_location: str | Path,
) -> None:
    config = parse_config(embodied_data())
    with Ledger(ledger_location) as ledger:
        write_jobs(ledger, config)
        rows = embodied_rows(ledger)
        for job_id, expected in EXPECTED.items():
            assert rows[job_id] == pytest.approx(expected), job_id
        total = ledger.totals()
        # 333.461670 + 1,600.616016 + 4,106.776181 + 199,863.107461 g = 205.903961 kg
        # of 4 jobs; job 4 not configured
        assert total.co2e_embodied_kg == pytest.approx(205.903961)
        assert (total.embodied_jobs, total.not_configured_jobs) == (4, 1)
        assert total.co2e_total_kg == pytest.approx(total.co2e_kg + 205.903961)
        assert ledger.embodied_sources("cluster") == {
            "gpu": {"site config": 3},
            "old": {"site config": 1},
        }
        by_cluster = {r.key: r for r in ledger.summary("cluster")}
        assert not by_cluster["plain"].embodied_configured
        # the same config again: nothing changed
        again = Accountant(config)
        assert ledger.write([again.account(job) for job in jobs()]).written == 0


def test_a_bundled_node_takes_its_figure_lifetime_and_source() -> None:
    # the BLOOM study's node: 3,700 kg, 8 A100s, 6 years; 2 GPUs for 10 h:
    # 3,700 × 2/8 × 10/(6 × 8,766) = 9,250 / 52,596 = 0.175868887 kg
    name = "HPE Apollo 6500 Gen10 Plus, 8 x A100 (BLOOM)"
    config = parse_config(embodied_data({"node": name, "cores_per_node": 64}))
    footprint = Accountant(config).account(hours("1", "gpu", 10, 2)).footprint
    assert footprint.co2e_embodied_g == pytest.approx(175.868887)
    assert footprint.embodied_source == name


def test_a_gpu_job_on_nodes_without_gpus_is_reported_not_guessed() -> None:
    config = parse_config(
        embodied_data({"node_kg": 1500, "cores_per_node": 64, "lifetime_years": 5})
    )
    with pytest.raises(Exception, match="a node without GPUs"):
        Accountant(config).account(hours("1", "gpu", 10, 2))


def test_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    data = embodied_data({"node_kg": 4677, "cores_per_node": 96})
    data["clusters"]["gpu"]["hardware"][0]["embodied"] = {
        "node": "no such node",
        "cores_per_node": 96,
    }
    data["clusters"]["plain"]["embodied"] = {"node_kg": 100, "lifetime_years": 4}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    from jobcarbon.config import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert str(path) in text
    problems = caught.value.problems
    assert any(
        p.startswith("clusters.gpu.embodied: lifetime_years is needed with node_kg")
        for p in problems
    ), problems
    assert any(p.startswith("clusters.gpu.hardware.0.embodied: node: ") for p in problems)
    assert any(p.startswith("clusters.plain.embodied.cores_per_node") for p in problems)


def test_embodied_settings_are_in_the_config_digest() -> None:
    with_node = parse_config(embodied_data())
    longer = parse_config(embodied_data({**NODE, "lifetime_years": 8}))
    assert config_digest(with_node, "gpu") != config_digest(longer, "gpu")
    # a cluster without any keeps one digest whatever the other clusters say
    assert config_digest(with_node, "plain") == config_digest(longer, "plain")


def config_file(tmp_path: Path, node: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(embodied_data(node, ledger={"url": "sqlite:///l.db"})))
    return path


def test_summary_shows_embodied_and_the_total_and_not_configured(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    with Ledger(tmp_path / "l.db") as ledger:
        write_jobs(ledger, parse_config(embodied_data()))
        location_kg = {r.key: r.co2e_kg for r in ledger.summary("cluster")}
    result = CliRunner().invoke(
        main, ["--config", str(config), "summary", "--by", "cluster"], env={"COLUMNS": "170"}
    )
    assert result.exit_code == 0, result.output
    rows = cells(result.output, 11)
    # gpu: 0.333461670 + 1.600616016 + 4.106776181 = 6.040853867 kg embodied (low
    # 0.222307780 + 1.067077344 + 3.422313484 = 4.711698608 kg, high 0.333461670 +
    # 1.600616016 + 5.133470226 = 7.067547912 kg); old: 200 kg (16.7-200 kg)
    assert rows["gpu"][7:9] == ["6.04 kg", "4.71–7.07 kg"]
    assert rows["old"][7:9] == ["200 kg", "16.7–200 kg"]
    assert rows["plain"][7:9] == ["not configured", ""]
    # job 4: 1 GPU × 300 W × 1 h × 1.5 = 0.45 kWh × 400 g/kWh = 180 g, its total
    assert location_kg["plain"] == pytest.approx(0.18) and rows["plain"][9] == "180 g"
    assert rows["total"][7] == "206 kg"  # 205.903961 kg
    text = " ".join(result.output.split())
    assert "1 job(s) on clusters without embodied settings: not configured, not counted" in text
    narrow = CliRunner().invoke(main, ["--config", str(config), "summary"], env={"COLUMNS": "80"})
    assert "the total and likely ranges in a terminal of 150 columns or more" in " ".join(
        narrow.output.split()
    )


def test_export_carries_the_figures_and_says_not_configured(tmp_path: Path) -> None:
    config = str(config_file(tmp_path))
    with Ledger(tmp_path / "l.db") as ledger:
        write_jobs(ledger, parse_config(embodied_data()))
    runner = CliRunner()
    exported = runner.invoke(main, ["--config", config, "export"])
    assert exported.exit_code == 0, exported.output
    rows = {r["job_id"]: r for r in csv.DictReader(io.StringIO(exported.stdout))}
    assert float(rows["1"]["co2e_embodied_g"]) == pytest.approx(333.461670)
    assert float(rows["1"]["co2e_embodied_g_low"]) == pytest.approx(222.307780)
    assert float(rows["3"]["co2e_embodied_g_high"]) == pytest.approx(5133.470226)
    assert rows["1"]["embodied_source"] == "site config"
    assert (rows["4"]["co2e_embodied_g"], rows["4"]["embodied_source"]) == ("", "not configured")
    as_json = runner.invoke(main, ["--config", config, "export", "--format", "json"])
    (job_4,) = (j for j in json.loads(as_json.stdout) if j["job_id"] == "4")
    assert (job_4["co2e_embodied_g"], job_4["embodied_source"]) == (None, "not configured")


def test_the_monthly_email_has_one_line_with_the_source(tmp_path: Path) -> None:
    config = parse_config(embodied_data())
    with Ledger(tmp_path / "l.db") as ledger:
        write_jobs(ledger, config)
        october = {r.name: r for r in monthly_reports(ledger, config, "2026-10", "user")}
    composer = Composer(config)
    # alice: job 1 (333 g embodied, 222–333 g) and job 4 (not configured)
    text = " ".join(composer.render(october["alice"]).text.split())
    assert (
        "(embodied emissions, Scope 3, shared out over the hardware's lifetime by the time "
        "and share of a node each job used): 333 g CO2e (likely 222–333 g), from the site's "
        "own figure for its nodes. For 1 job it is not configured, so not counted."
    ) in text
    assert "333 g CO2e" in composer.render(october["alice"]).html
    only_plain = parse_config(embodied_data())
    with Ledger(tmp_path / "p.db") as ledger:
        ledger.write([Accountant(only_plain).account(hours("4", "plain", 1, 1))])
        (report,) = monthly_reports(ledger, only_plain, "2026-10", "user")
    assert "not configured for these clusters, so not counted above or here." in " ".join(
        composer.render(report).text.split()
    )


def test_recompute_applies_a_changed_lifetime_by_the_worked_ratio(
    ledger_location: str | Path,
) -> None:
    with Ledger(ledger_location) as ledger:
        write_jobs(ledger, parse_config(embodied_data()))
        before = embodied_rows(ledger)
        # 4 → 8 years: jobs 1 and 2 on the cluster's nodes get 4/8 of their figure
        # (333.461670 → 166.730835 g); their low takes the longer of 8 and the sources'
        # 6 years, now 8 (11,692.5 / (8 × 8,766) = 0.166730835 kg), the high the
        # shorter of 8 and 4, still 4; job 3 (the rule's nodes), 4 and 5 do not move
        report = recompute(
            ledger, parse_config(embodied_data({**NODE, "lifetime_years": 8})), UsageScope()
        )
        after = embodied_rows(ledger)
    assert report.run.jobs_changed == 3  # cluster gpu's rows name its new config digest
    for job_id in ("1", "2"):
        assert after[job_id][0] == pytest.approx(before[job_id][0] * 4 / 8)
        assert after[job_id][1] == pytest.approx(before[job_id][0] * 4 / 8)
        assert after[job_id][2] == pytest.approx(before[job_id][2])
    assert after["1"][0] == pytest.approx(166.730835)
    assert after["3"] == pytest.approx(before["3"])
    assert after["4"] == before["4"] and after["5"] == pytest.approx(before["5"])


def test_rows_from_before_v14_are_not_configured_until_recomputed(
    ledger_location: str | Path,
) -> None:
    config = parse_config(embodied_data())
    with Ledger(ledger_location) as ledger:
        write_jobs(ledger, config)
        location = ledger.totals().co2e_kg
        back_to_v13(ledger)
    with Ledger(ledger_location) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert set(embodied_rows(ledger).values()) == {(None, None, None, None)}
        total = ledger.totals()
        assert (total.embodied_jobs, total.co2e_embodied_kg, total.co2e_kg) == (
            0,
            0.0,
            pytest.approx(location),
        )
        recompute(ledger, config, UsageScope())  # the job_usage rows hold what it needs
        rows = embodied_rows(ledger)
    for job_id, expected in EXPECTED.items():
        assert rows[job_id] == pytest.approx(expected), job_id


def test_copy_keeps_the_embodied_figures(tmp_path: Path, postgres: Any) -> None:
    with Ledger(tmp_path / "l.db") as source, Ledger(str(postgres.new_database())) as target:
        write_jobs(source, parse_config(embodied_data()))
        result = copy_ledger(source, target)
        assert result.identical
        assert result.target.co2e_embodied_kg == pytest.approx(205.903961)
        assert list(target.jobs()) == list(source.jobs())


def test_the_statement_states_embodied_apart_with_its_source(tmp_path: Path) -> None:
    from jobcarbon.ledger import Filters
    from jobcarbon.statement import build_statement, plain_text

    config = parse_config(embodied_data())
    with Ledger(tmp_path / "l.db") as ledger:
        write_jobs(ledger, config)
        statement = build_statement(ledger, config, Filters(user="alice"), "of user alice")
    assert statement is not None
    text = " ".join(plain_text(statement).split())
    # alice: job 1 (0.333461670 kg, 0.222–0.333 kg) and job 4 (not configured)
    assert (
        "The manufacture of the hardware adds 0.333 kg CO2e (embodied, Scope 3; range 0.222 "
        "to 0.333 kg) (1 of the jobs ran where they are not configured and are not counted)"
    ) in text
    assert "from the site's own figure for its nodes." in text
