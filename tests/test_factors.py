"""The bundled factor tables: provenance on every row, forgiving look-ups, rebuildable."""

from __future__ import annotations

import csv
import filecmp
import json
from importlib import resources
from pathlib import Path

import pytest

from jobcarbon import factors
from jobcarbon.errors import FactorError
from tests.conftest import ROOT, load_tool

DATA = ROOT / "plugin" / "jobcarbon" / "data"
SOURCES = ROOT / "data" / "sources"


TABLES = ("hardware.csv", "cpus.csv", "regions.csv", "pue.csv", "equivalents.csv", "embodied.csv")


@pytest.mark.parametrize("table", TABLES)
def test_every_row_has_source_year_and_licence(table: str) -> None:
    text = resources.files("jobcarbon").joinpath("data", table).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert rows
    for row in rows:
        assert row["source"].strip(), row
        assert row["licence"].strip(), row
        assert 1990 < int(row["year"]) <= 2026, row


@pytest.mark.parametrize(
    "name",
    [
        "A100 SXM4 80 GB",
        "H100 SXM",
        "H200 SXM",
        "B200",
        "GH200",
        "L4",
        "L40S",
        "MI250X",
        "MI300X",
        "Gaudi2",
        "Gaudi3",
        "TPU v4",
    ],
)
def test_current_data_centre_parts_are_present(name: str) -> None:
    assert factors.find_hardware(name).tdp_w > 0


def test_every_device_of_the_seed_calculator_is_present() -> None:
    seed = list(csv.DictReader((SOURCES / "mlco2-impact" / "gpus.csv").open()))
    assert len(seed) == 48
    for row in seed:
        found = factors.find_hardware(row["name"])
        assert found.tdp_w == float(row["tdp_watts"])
        assert found.in_seed_calculator


def test_seed_vintage_reproduces_the_seed_region_table() -> None:
    seed = list(csv.DictReader((SOURCES / "mlco2-impact" / "impact.csv").open()))
    assert len(seed) == 82
    withheld = 0
    for row in seed:
        key = f"{row['provider']}:{row['region'] or row['providerName'].lower()}"
        if not row["impact"]:
            withheld += 1
            with pytest.raises(FactorError, match="unknown region"):
                factors.find_region(key, factors.SEED_VINTAGE)
            continue
        assert factors.find_region(key, factors.SEED_VINTAGE).intensity_g_per_kwh == float(
            row["impact"]
        )
    assert withheld == 14


def test_only_figures_that_may_be_shipped_are_in_the_sources() -> None:
    # data/sources/README.md: carbonfootprint.com's factors have no open licence, so
    # their figures are withheld (an empty cell) and every other figure is there.
    checked = 0
    for path, units_lines, figure in [
        (SOURCES / "mlco2-impact" / "impact.csv", 0, "impact"),
        (SOURCES / "green-algorithms" / "referenceValues.csv", 1, "value"),
    ]:
        lines = path.read_text(encoding="utf-8-sig").splitlines()[units_lines:]
        for row in csv.DictReader(lines):
            assert (not row[figure]) == ("carbonfootprint.com" in row["source"]), (path, row)
            checked += 1
    assert checked > 82


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("FR", "FR"),
        ("fra", "FR"),
        ("France", "FR"),
        ("us-ca", "US-CA"),
        ("US CA", "US-CA"),
        ("aws:us-east-1", "aws:us-east-1"),
        ("AWS us east 1", "aws:us-east-1"),
        ("gcp:europe-west1", "gcp:europe-west1"),
        ("gcp europe west1", "gcp:europe-west1"),
    ],
)
def test_region_keys_match_forgivingly(query: str, key: str) -> None:
    assert factors.find_region(query).key == key


def test_country_intensity_is_owid() -> None:
    # France 2023, Our World in Data carbon_intensity_elec (via CodeCarbon v3.3): 56.039
    region = factors.find_region("FR")
    assert region.intensity_g_per_kwh == pytest.approx(56.039)
    assert "Our World in Data" in region.source and "CC BY 4.0" in region.licence


def test_us_state_converted_from_lb_per_mwh() -> None:
    # eGRID 2016 state rates are in lb/MWh; 1 lb/MWh = 0.45359237 g/kWh
    usa = json.loads((SOURCES / "codecarbon" / "private_infra_2016_usa_emissions.json").read_text())
    expected = usa["california"]["emissions"] * 0.45359237
    assert factors.find_region("US-CA").intensity_g_per_kwh == pytest.approx(expected, abs=0.05)


def test_hardware_names_match_forgivingly() -> None:
    assert factors.find_hardware("tesla-v100-pcie-16gb").name == "Tesla V100-PCIE-16GB"
    assert factors.find_hardware("NVIDIA H200").name == "H200 SXM"
    assert factors.find_hardware("mi300x").tdp_w == 750


def test_ambiguous_and_unknown_names_list_candidates() -> None:
    with pytest.raises(FactorError, match=r"ambiguous.*A100 SXM4 80 GB"):
        factors.find_hardware("A100")
    with pytest.raises(FactorError, match=r"unknown region 'atlantis'.*Closest"):
        factors.find_region("atlantis")
    with pytest.raises(FactorError, match="unknown dataset 'nope'"):
        factors.find_region("FR", "nope")


def test_version_is_stable_digest() -> None:
    assert factors.version() == factors.version()
    assert factors.version().startswith("tables-")


def test_shipped_tables_are_what_the_build_script_makes(tmp_path: Path) -> None:
    module = load_tool("build_factors")
    module.build(SOURCES, tmp_path)
    for table in TABLES:
        assert filecmp.cmp(tmp_path / table, DATA / table, shallow=False), table


def test_embodied_table_is_ccfs_hosts_and_blooms_figures() -> None:
    # Every CCF instance type is a node (AWS 621 rows; Azure and GCP one row per CPU
    # microarchitecture, folded into one per type), each with its whole host's total.
    ccf = SOURCES / "ccf-coefficients"
    aws = list(csv.DictReader((ccf / "coefficients-aws-embodied.csv").open()))
    assert len(aws) == 621
    for row in aws:
        entry = factors.find_embodied(f"aws {row['type']}")
        assert entry.embodied_kg == float(row["total"]), row
        # CCF's additional_gpus is 150 kg per card (constants.py)
        assert (entry.gpus or 0) * 150 == float(row["additional_gpus"]), row
    p4d = factors.find_embodied("p4d.24xlarge")
    assert (p4d.embodied_kg, p4d.gpus, p4d.lifetime_years) == (4676.79, 8, 4.0)
    assert p4d.covers == "manufacturing only" and p4d.kind == "node"
    for provider in ("azure", "gcp"):
        types = {
            r["type"]
            for r in csv.DictReader(ccf.joinpath(f"coefficients-{provider}-embodied.csv").open())
        }
        assert all(factors.find_embodied(f"{provider} {t}") for t in types)
    # BLOOM (Luccioni et al. 2023): 150 kg per A100, the server 2500 kg without its
    # 8 GPUs: 2500 + 8 × 150 = 3700 kg, both over 6 years.
    bloom = factors.find_embodied("Jean Zay A100 node")
    assert (bloom.embodied_kg, bloom.gpus, bloom.lifetime_years) == (3700.0, 8, 6.0)
    assert factors.find_embodied("A100 (BLOOM)").kind == "accelerator"


def test_embodied_table_ships_only_open_or_cited_figures() -> None:
    # data/sources/README.md: CCF's files (Apache-2.0) and figures cited from the BLOOM
    # paper; Boavizta (AGPL-3.0, ODbL), LLMCarbon (no licence) and Morand et al.
    # (CC BY-NC-SA) are not shipped.
    licences = {e.licence for e in factors.embodied_table()}
    assert licences == {
        "Apache-2.0 (cloud-carbon-footprint/ccf-coefficients)",
        "a published figure, cited",
    }
    assert (
        (SOURCES / "ccf-coefficients" / "LICENSE").read_text().lstrip().startswith("Apache License")
    )
