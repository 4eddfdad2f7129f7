"""`jobcarbon statement`: a paper's paragraph from a real SQLite ledger of hand-worked jobs.

Every GPU draws 300 W (a hardware rule for the A100 SXM4 80 GB, the site's own figure),
CPU cores 12 W (the default), at a site with PUE 1.5 and 400 gCO2e/kWh. One GPU for
one hour at full power is 0.3 kWh of IT energy, 0.45 kWh with PUE, 180 g CO2e.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.accounting import Accountant
from jobcarbon.cli import main
from jobcarbon.config import parse_config
from jobcarbon.ledger import Filters, Ledger
from jobcarbon.quantity import co2e, energy, significant
from jobcarbon.records import JobRecord, JobState
from tests.conftest import make_job, utc
from tests.support.config import make_config, merged

PROJECT = "ml_vision & co"  # LaTeX's specials in a name
CONFIG = make_config(
    sites={"s1": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 400}}},
    clusters={"c1": {"hardware": [{"gpu_model": "A100 SXM4 80 GB", "gpu_tdp_w": 300}]}},
)


def _job(job_id: str, user: str, project: str, gpus: int, hours: float, day: int, **more: object):
    end = utc(2026, 10, day, 12)
    start = end - timedelta(hours=hours)
    return make_job(
        job_id=job_id,
        user=user,
        project=project,
        gpu_count=gpus,
        start_time=start,
        end_time=end,
        submit_time=start,
        **more,
    )


def _jobs() -> list[JobRecord]:
    return [
        # 2 GPUs × 300 W × 1 h = 0.6 kWh, 4 cores × 12 W × 1 h = 0.048 kWh: 0.648 kWh IT,
        # × 1.5 = 0.972 kWh, × 400 g = 388.8 g
        _job("100", "alice", PROJECT, 2, 1, 5, cpu_count=4),
        # array 101, tasks 1 and 2: 1 GPU × 2 h = 0.6 kWh IT → 0.9 kWh → 360 g each
        _job("101_1", "alice", PROJECT, 1, 2, 6),
        _job("101_2", "alice", PROJECT, 1, 2, 20),
        # bob's requeued job 103: its first run and its last, 1 GPU × 1 h each → 180 g each
        _job("103+run@1790000000", "bob", "other", 1, 1, 7, state=JobState.REQUEUED),
        _job("103", "bob", "other", 1, 1, 8),
        # a job whose id only starts like 101's: not one of its tasks
        _job("1011", "bob", "other", 4, 1, 9),
    ]


def _write(location: Path | str) -> None:
    accountant = Accountant(parse_config(CONFIG))
    with Ledger(location) as ledger:
        ledger.write([accountant.account(job) for job in _jobs()])


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(merged(CONFIG, {"ledger": {"url": "sqlite:///ledger.db"}})))
    _write(tmp_path / "ledger.db")
    return path


def test_job_ids_filter_on_both_backends(ledger_location: Path | str) -> None:
    """An id's tasks (ID_N) and earlier runs (ID+run@T), nothing that only starts alike;
    LIKE's own wildcards in an id are taken as they are."""
    _write(ledger_location)
    with Ledger(ledger_location) as ledger:
        found = {row["job_id"] for row in ledger.jobs(Filters(job_ids=("101", "103")))}
        assert found == {"101_1", "101_2", "103", "103+run@1790000000"}
        assert ledger.count(Filters(job_ids=("10%",))) == 0
        assert ledger.count(Filters(job_ids=("101_1", "1011"))) == 2
        assert ledger.count(Filters(job_ids=())) == 0


def _statement(config_path: Path, *args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["--config", str(config_path), "statement", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_project_statement_is_worked_by_hand(config_path: Path) -> None:
    data = _statement(config_path, "--project", PROJECT)
    totals = data["totals"]
    assert isinstance(totals, dict)
    # 2 + 2 + 2 GPU-hours; 0.972 + 0.9 + 0.9 kWh; 388.8 + 360 + 360 g
    assert totals["jobs"] == 3
    assert totals["gpu_hours"] == pytest.approx(6.0)
    assert totals["energy_kwh"] == pytest.approx(2.772)
    assert totals["co2e_kg"] == pytest.approx(1.1088)
    assert data["cpu_hours"] == pytest.approx(4.0)
    (device,) = data["devices"]  # type: ignore[misc]
    assert device["model"] == "A100 SXM4 80 GB" and device["tdp_w"] == 300
    assert device["tdp_source"] == "the site's own figure"
    (site,) = data["sites"]  # type: ignore[misc]
    assert site["pue_min"] == pytest.approx(1.5) and site["intensity_g_per_kwh"] == pytest.approx(
        400
    )
    text = data["text"]
    assert isinstance(text, str)
    for words in (
        "The 3 jobs of project ml_vision & co used 6 GPU-hours of A100 SXM4 80 GB (TDP 300 W)",
        "and 4 CPU core-hours",
        "They consumed 2.77 kWh of electricity",
        "emitted 1.11 kg CO2e (location-based; range",
        "PUE 1.50 (the site's own figure) and 400 gCO2e/kWh (the site's own figure)",
        "[Lacoste et al. (2019)](https://arxiv.org/abs/1910.09700)",
    ):
        assert words in text
    assert data["bibtex"] and "lacoste2019quantifying" in str(data["bibtex"])


def test_jobs_take_their_array_tasks_and_earlier_runs(config_path: Path) -> None:
    data = _statement(config_path, "--jobs", "101,103")
    totals = data["totals"]
    assert isinstance(totals, dict)
    # 101_1, 101_2 (360 g each), 103 and its first run (180 g each); not job 1011
    assert totals["jobs"] == 4
    assert totals["co2e_kg"] == pytest.approx(1.08)
    assert str(data["text"]).startswith("The 4 jobs under job IDs 101 and 103 used 6 GPU-hours")


def test_period_bounds_by_end_time(config_path: Path) -> None:
    # alice's jobs ending in [2026-10-06, 2026-10-20): only 101_1 (2026-10-06 12:00)
    data = _statement(
        config_path, "--user", "alice", "--since", "2026-10-06", "--until", "2026-10-20"
    )
    assert data["totals"] == {  # type: ignore[comparison-overlap]
        "key": "all",
        "jobs": 1,
        "gpu_hours": pytest.approx(2.0),
        "energy_kwh": pytest.approx(0.9),
        "co2e_kg": pytest.approx(0.36),
        "co2e_kg_low": pytest.approx(data["totals"]["co2e_kg_low"]),  # type: ignore[index]
        "co2e_kg_high": pytest.approx(data["totals"]["co2e_kg_high"]),  # type: ignore[index]
        # the site has no market settings: market-based is the location-based figure
        "co2e_market_kg": pytest.approx(0.36),
        "co2e_market_kg_low": pytest.approx(data["totals"]["co2e_kg_low"]),  # type: ignore[index]
        "co2e_market_kg_high": pytest.approx(data["totals"]["co2e_kg_high"]),  # type: ignore[index]
        # the cluster has no embodied settings: not configured, no job counted
        "co2e_embodied_kg": 0.0,
        "co2e_embodied_kg_low": 0.0,
        "co2e_embodied_kg_high": 0.0,
        "embodied_jobs": 0,
    }
    assert "embodied emissions of the hardware (Scope 3, its manufacture) are not included" in (
        str(data["text"])
    )
    assert "that ended between 2026-10-06 and 2026-10-20" in str(data["text"])


def _summary_rows(config_path: Path, *args: str) -> dict[str, list[str]]:
    """`jobcarbon summary`'s table as printed, row key → cells (a wide terminal)."""
    result = CliRunner().invoke(
        main, ["--config", str(config_path), "summary", *args], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 8:  # no embodied settings: both Scope 2 figures with their ranges
            rows[cells[0]] = cells
    return rows


def test_figures_equal_summary_for_the_same_filter(config_path: Path) -> None:
    for option, value in (("--project", PROJECT), ("--user", "bob")):
        data = _statement(config_path, option, value)
        totals = data["totals"]
        assert isinstance(totals, dict)
        printed = _summary_rows(config_path, "--by", "cluster", option, value)["total"]
        # summary prints three significant figures in a fitting unit (jobcarbon.quantity)
        assert printed[1:5] == [
            f"{totals['jobs']:,}",
            significant(float(totals["gpu_hours"])),
            str(energy(float(totals["energy_kwh"]))),
            str(co2e(float(totals["co2e_kg"]))),
        ]
        with Ledger(config_path.parent / "ledger.db") as ledger:
            same = ledger.totals(Filters(**{option.removeprefix("--"): value}))
        assert (totals["jobs"], totals["co2e_kg"], totals["co2e_kg_low"]) == (
            same.jobs,
            same.co2e_kg,
            same.co2e_kg_low,
        )


def test_figures_equal_the_exported_rows(config_path: Path) -> None:
    """An independent path: the sum of `jobcarbon export`'s rows for the same jobs."""
    data = _statement(config_path, "--user", "bob", "--since", "2026-10-08")
    result = CliRunner().invoke(
        main, ["--config", str(config_path), "export", "--user", "bob", "--since", "2026-10-08"]
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    totals = data["totals"]
    assert isinstance(totals, dict)
    assert totals["jobs"] == len(rows) == 2  # 103 and 1011
    assert totals["co2e_kg"] == pytest.approx(sum(float(r["co2e_g"]) for r in rows) / 1000)
    assert totals["energy_kwh"] == pytest.approx(sum(float(r["energy_facility_kwh"]) for r in rows))


def test_no_jobs_and_bad_choices_are_clear(config_path: Path) -> None:
    runner = CliRunner()
    base = ["--config", str(config_path), "statement"]
    none = runner.invoke(main, [*base, "--project", "nope", "--markdown"])
    assert none.exit_code == 2 and "the ledger holds no jobs of project nope" in none.output
    both = runner.invoke(main, [*base, "--project", "p", "--user", "u", "--latex"])
    assert both.exit_code == 2 and "exactly one of --project, --user or --jobs" in both.output
    neither = runner.invoke(main, [*base, "--project", PROJECT])
    assert neither.exit_code == 2 and "one of --latex, --markdown or --json" in neither.output


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (texlive-latex-base)")
def test_latex_compiles_with_pdflatex(config_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--config", str(config_path), "statement", "--project", PROJECT, "--latex"]
    )
    assert result.exit_code == 0, result.output
    assert r"ml\_vision \& co" in result.output and "CO$_2$e" in result.output
    document = tmp_path / "paper.tex"
    document.write_text(
        "\\documentclass{article}\n\\begin{document}\n"
        + result.output
        + "\n\\begin{thebibliography}{1}\n\\bibitem{lacoste2019quantifying} A. Lacoste, "
        "A. Luccioni, V. Schmidt, T. Dandres. Quantifying the Carbon Emissions of Machine "
        "Learning. arXiv:1910.09700, 2019.\n\\end{thebibliography}\n\\end{document}\n"
    )
    for _ in range(2):  # the second run resolves the citation
        run = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout[-2000:]
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert "undefined" not in log and "Missing character" not in log
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
