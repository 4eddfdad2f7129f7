"""The command line, driven through click's runner: output, errors and exit codes."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from jobcarbon.cli import main
from jobcarbon.cli.common import parse_duration
from jobcarbon.ledger import Filters, Ledger
from tests.support.config import make_config
from tests.support.sacct_dumps import demo_month, demo_with_odd_names


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(main, ["demo", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert "accounted 2,02" in result.output and "0 problem(s)" in result.output
    return directory


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "estimate", "summary", "export", "config", "factors", "ledger"):
        assert command in result.output


def test_estimate_json(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [
            "estimate",
            "--hardware",
            "tesla v100-pcie-16gb",
            "--hours",
            "100",
            "--region",
            "gcp:us-central1",
            "--dataset",
            "mlco2-impact-2019",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # 300 W × 100 h = 30 kWh × 566.3 g/kWh = 16.989 kg
    assert data["energy_kwh"] == pytest.approx(30.0)
    assert data["co2e_kg"] == pytest.approx(16.989)
    for key in ("co2e_kg_low", "co2e_kg_high", "intensity_g_per_kwh", "pue", "method"):
        assert key in data


def test_estimate_unknown_region_exits_2_with_suggestions(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["estimate", "--tdp-w", "300", "--hours", "1", "--region", "frnace"]
    )
    assert result.exit_code == 2
    assert "Error: unknown region 'frnace'" in result.output
    assert "Closest:" in result.output


def test_estimate_takes_a_model_cards_device_hours(runner: CliRunner) -> None:
    # The command: Llama 2 7B's model card, 400 W × 184,320 GPU-hours × PUE 1.1
    # × 385 g/kWh = 31,223,808 g; once refused as "job estimate/estimate: run of 7680 days".
    args = ["--tdp-w", "400", "--pue", "1.1", "--intensity-g-per-kwh", "385", "--json"]
    for hours in (["--hours", "184320"], ["--device-hours", "184320"]):
        result = runner.invoke(main, ["estimate", *hours, *args])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["co2e_kg"] == pytest.approx(31_223.808)


def test_estimate_negative_hours_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(main, ["estimate", "--tdp-w", "300", "--hours", "-3", "--region", "FR"])
    assert result.exit_code == 2
    assert "--hours must be > 0" in result.output


def test_config_check_reports_all_problems(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "sites:\n  s: {pue: 0.5, grid: {region: FR}}\nclusters:\n  c: {site: t}\nledgr: {}\n"
    )
    result = runner.invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "sites.s.pue: Input should be greater than or equal to 1 (got 0.5)" in result.output
    assert "ledgr: unknown key" in result.output


def test_config_example_round_trips(runner: CliRunner, tmp_path: Path) -> None:
    example = runner.invoke(main, ["config", "example"])
    path = tmp_path / "config.yaml"
    path.write_text(example.output)
    result = runner.invoke(main, ["--config", str(path), "config", "check"])
    assert result.exit_code == 0, result.output
    assert "ok (1 site(s), 1 cluster(s))" in result.output


def test_factors_listing_with_search(runner: CliRunner) -> None:
    result = runner.invoke(main, ["factors", "hardware", "--search", "h100"])
    assert result.exit_code == 0 and "H100 SXM" in result.output and "A100" not in result.output
    regions = runner.invoke(
        main, ["factors", "regions", "--search", "france", "--dataset", "current"]
    )
    assert "FR" in regions.output and "56.039" in regions.output
    pue = runner.invoke(main, ["factors", "pue"])
    assert pue.exit_code == 0 and "Unknown" in pue.output and "1.56" in pue.output


def test_summary_and_export_read_the_demo_ledger(runner: CliRunner, demo_dir: Path) -> None:
    config = str(demo_dir / "config.yaml")
    summary = runner.invoke(
        main, ["--config", config, "summary", "--by", "project", "--month", "2026-10"]
    )
    assert summary.exit_code == 0, summary.output
    assert "llm-pretrain" in summary.output and "total" in summary.output

    with Ledger(demo_dir / "ledger.db") as ledger:
        expected = ledger.totals(Filters(project="llm-pretrain"))
    exported = runner.invoke(
        main, ["--config", config, "export", "--format", "csv", "--project", "llm-pretrain"]
    )
    assert exported.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == expected.jobs
    assert sum(float(r["co2e_g"]) for r in rows) / 1000 == pytest.approx(expected.co2e_kg)
    assert rows[0]["end_time"].endswith("+00:00") and rows[0]["factors_version"]

    as_json = runner.invoke(
        main,
        [
            "--config",
            config,
            "export",
            "--format",
            "json",
            "--since",
            "2026-10-30",
            "--user",
            "user03",
        ],
    )
    assert as_json.exit_code == 0
    jobs = json.loads(as_json.stdout)
    assert jobs and all(j["user"] == "user03" and j["end_time"] >= "2026-10-30" for j in jobs)


def test_demo_shows_measured_and_estimated_and_failed_share(demo_dir: Path) -> None:
    with Ledger(demo_dir / "ledger.db") as ledger:
        methods = {r["method"] for r in ledger.jobs()}
        states = {r.key for r in ledger.summary("state")}
    assert methods == {"measured", "estimated"}
    assert {"failed", "timeout", "cancelled", "completed"} <= states


def test_summary_bad_month(runner: CliRunner, demo_dir: Path) -> None:
    result = runner.invoke(
        main, ["--config", str(demo_dir / "config.yaml"), "summary", "--month", "October"]
    )
    assert result.exit_code == 2
    assert "'October' is not a month like 2026-10" in result.output


def test_summary_without_a_ledger(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(make_config(ledger={"url": "sqlite:///none.db"})))
    result = runner.invoke(main, ["--config", str(path), "summary"])
    assert result.exit_code == 4
    assert "Error: no ledger at" in result.output


def test_console_script_starts_fast_without_heavy_imports() -> None:
    code = (
        "import sys, jobcarbon.cli; "
        "print(sorted(m for m in ('pydantic', 'yaml', 'rich', 'sqlite3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_summary_offers_every_ledger_dimension() -> None:
    from jobcarbon.cli import summary
    from jobcarbon.ledger import DIMENSIONS

    (by,) = (p for p in summary.params if p.name == "by")
    assert isinstance(by.type, click.Choice)
    assert tuple(by.type.choices) == DIMENSIONS


def test_slurm_import_from_a_file_and_from_a_pipe_gives_the_demo_ledger(
    demo_dir: Path, tmp_path: Path
) -> None:
    """`jobcarbon slurm import FILE` and `sacct ... | jobcarbon slurm import -` as an admin
    runs them (a real process, a real pipe): the demo month, the demo's totals."""
    from importlib import resources

    dump = resources.files("jobcarbon").joinpath("data", "demo", "sacct-2026-10.txt")
    config = tmp_path / "config.yaml"
    config.write_text(
        (demo_dir / "config.yaml")
        .read_text()
        .replace("sqlite:///ledger.db", f"sqlite:///{tmp_path / 'l.db'}")
    )
    command = [sys.executable, "-m", "jobcarbon", "--config", str(config), "slurm", "import"]
    with Ledger(demo_dir / "ledger.db") as demo:
        expected = demo.totals()
    from_file = subprocess.run([*command, str(dump)], capture_output=True, text=True)
    assert from_file.returncode == 0, from_file.stderr
    assert (
        f"imported {expected.jobs} job(s), 0 unchanged, 0 line(s) repaired, 0 problem(s)"
        in from_file.stdout
    )
    (tmp_path / "l.db").unlink()
    from_pipe = subprocess.run(
        [*command, "-"], input=dump.read_text(), capture_output=True, text=True
    )
    assert from_pipe.returncode == 0, from_pipe.stderr
    assert f"imported {expected.jobs} job(s)" in from_pipe.stdout
    with Ledger(tmp_path / "l.db") as imported:
        assert imported.totals() == expected


def test_summary_of_a_small_month_shows_significant_figures_in_fitting_units(
    runner: CliRunner, tmp_path: Path
) -> None:
    from tests.test_report import site_config, small_ledger

    config = site_config()
    small_ledger(tmp_path / "ledger.db", config).close()
    path = tmp_path / "config.yaml"
    dumped = config.model_dump(mode="json", exclude={"base_dir"}, exclude_defaults=True)
    path.write_text(json.dumps({**dumped, "ledger": {"url": "sqlite:///ledger.db"}}))
    result = runner.invoke(
        main,
        ["--config", str(path), "summary", "--by", "user", "--month", "2026-10"],
        env={"COLUMNS": "120"},  # wide enough for the ranges
    )
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1:]
        for line in result.output.splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 8
    }
    # erin: 60 s + 12 s on one 300 W GPU at PUE 1.5 and 400 g/kWh (tests/test_report.py);
    # no market settings, so market-based is the location-based figure
    assert rows["erin"][:4] == ["3", "0.0200", "9.00 Wh", "3.60 g"]
    assert rows["total"][:4] == rows["erin"][:4]
    low, high = (float(n) for n in rows["erin"][4].removesuffix(" g").split("–"))
    assert low < 3.6 < high
    assert rows["erin"][5:] == rows["erin"][3:5]
    # no embodied settings anywhere: no embodied column, the caption says not configured
    assert "embodied (Scope 3, the manufacture of the hardware): not configured" in " ".join(
        result.output.split()
    )
    assert re.search(r"(?<![\d.,])0\.0+(?!\d)", result.output) is None  # no figure shown as 0.0


def import_command(demo_dir: Path, ledger: Path) -> list[str]:
    """`jobcarbon slurm import` with the demo's config, writing to ``ledger``."""
    config = ledger.with_suffix(".yaml")
    config.write_text(
        (demo_dir / "config.yaml").read_text().replace("sqlite:///ledger.db", f"sqlite:///{ledger}")
    )
    return [sys.executable, "-m", "jobcarbon", "--config", str(config), "slurm", "import"]


def test_slurm_import_mends_a_plain_dump_from_a_file_and_a_utf16_one_from_a_pipe(
    demo_dir: Path, tmp_path: Path
) -> None:
    """The demo month's jobs with names holding '|' and line breaks, in a plain `sacct -P`
    dump saved with CRLF: the demo's totals and every name, whichever way it comes in."""
    dump = demo_with_odd_names("|", "\r\n")
    with Ledger(demo_dir / "ledger.db") as demo:
        expected = demo.totals()
    (tmp_path / "dump.txt").write_bytes(dump.text.encode())
    for how in ("file", "pipe"):
        ledger = tmp_path / f"{how}.db"
        command = import_command(demo_dir, ledger)
        if how == "file":
            done = subprocess.run([*command, str(tmp_path / "dump.txt")], capture_output=True)
        else:
            done = subprocess.run(
                [*command, "-"], input=dump.text.encode("utf-16"), capture_output=True
            )
        assert done.returncode == 0, done.stderr
        assert (
            f"imported {expected.jobs} job(s), 0 unchanged, 1335 line(s) repaired, 0 problem(s)"
            in done.stdout.decode()
        )
        with Ledger(ledger) as imported:
            assert imported.totals() == expected
            assert {row["job_id"]: row["name"] for row in imported.jobs()} == dump.names


def test_slurm_import_reports_an_ambiguous_line_and_an_empty_dump(
    demo_dir: Path, tmp_path: Path
) -> None:
    header, *rows = demo_month()[:7]  # jobs 412001-412003 and their batch steps
    at = header.index("JobName") + 1
    lines = [[*header[:at], "Comment", *header[at:]], *([*c[:at], "", *c[at:]] for c in rows)]
    lines[3][at - 1] = "a|b"  # job 412002: a|b + "" or a + b|""?
    (tmp_path / "two.txt").write_text("".join("|".join(c) + "\n" for c in lines))
    command = import_command(demo_dir, tmp_path / "l.db")
    done = subprocess.run([*command, str(tmp_path / "two.txt")], capture_output=True, text=True)
    assert done.returncode == 1
    assert "imported 2 job(s), 0 unchanged, 0 line(s) repaired, 1 problem(s)" in done.stdout
    assert (
        f"{tmp_path / 'two.txt'} line 4: 20 fields where the header has 19, ambiguous: a '|' in "
        "JobName or a '|' in Comment could explain them (not imported)"
    ) in done.stderr
    (tmp_path / "empty.txt").write_bytes(b"")
    done = subprocess.run([*command, str(tmp_path / "empty.txt")], capture_output=True, text=True)
    assert done.returncode == 1
    assert "imported 0 job(s), 0 unchanged, 0 line(s) repaired, 1 problem(s)" in done.stdout
    assert f"{tmp_path / 'empty.txt'} line 1: no header line: the dump is empty" in done.stderr


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_into_a_pipe_closed_early_ends_quietly(demo_dir: Path, fmt: str) -> None:
    # `jobcarbon export | head`: head exits after two lines, long before the 2,026 jobs'
    # rows (over 700 kB, more than a pipe holds) are written
    export = [sys.executable, "-m", "jobcarbon", "--config", str(demo_dir / "config.yaml")]
    result = subprocess.run(
        [
            "bash",
            "-c",
            'set -o pipefail; "$@" export --format ' + fmt + " | head -n 2",
            "-",
            *export,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""  # no "Exception ignored", no BrokenPipeError
    assert result.returncode == 141  # as a command killed by SIGPIPE


def test_ledger_migrate_says_how_many_doubled_rows_it_merged(
    runner: CliRunner, demo_dir: Path, tmp_path: Path
) -> None:
    from tests.test_ledger import accounted, back_to_v6, placeholder

    config = tmp_path / "config.yaml"
    config.write_text((demo_dir / "config.yaml").read_text())  # ledger: ledger.db beside it
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.write([placeholder("153"), accounted("1_32")])  # same times
        back_to_v6(ledger)
    result = runner.invoke(main, ["--config", str(config), "ledger", "migrate"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == (
        "merged 1 array task row(s) doubled by slurmdbd's placeholder record into the "
        "task's own row"
    )
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert [r["job_id"] for r in ledger.jobs()] == ["1_32"]


def test_estimate_embodied(runner: CliRunner) -> None:
    args = ["estimate", "--hardware", "H100 SXM", "--count", "8", "--hours", "10"]
    args += ["--intensity-g-per-kwh", "50", "--embodied", "Jean Zay A100 node"]
    result = runner.invoke(main, [*args, "--lifetime-years", "4", "--json"])
    assert result.exit_code == 0, result.output
    # the BLOOM node, 3700 kg for 8 GPUs, all 8 for 10 h over 4 years:
    # 3700 × 10 / 35,064 = 1.055213 kg
    assert json.loads(result.output)["embodied"]["co2e_kg"] == pytest.approx(1.055213)
    lonely = runner.invoke(
        main,
        ["estimate", "--tdp-w", "300", "--hours", "1", "--region", "FR", "--lifetime-years", "4"],
    )
    assert lonely.exit_code == 2
    assert "--lifetime-years goes with --embodied" in lonely.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", timedelta(hours=8)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h", timedelta(days=1, hours=2)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("08:00:00", timedelta(hours=8)),  # sbatch --time's hours:minutes:seconds
        ("1-00:00:00", timedelta(days=1)),  # days-hours:minutes:seconds
        ("2-12:30", timedelta(days=2, hours=12, minutes=30)),  # days-hours:minutes
        ("8:00", None),  # --time reads minutes:seconds, a person may mean hours: refused
        ("90", None),  # --time's minutes, without a unit: refused
        ("1h30", None),
        ("", None),
        ("2026-10-01", None),  # a date, for the options that take either
    ],
)
def test_durations_as_people_and_sbatch_write_them(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected
