"""Build jobcarbon's bundled factor tables from the public reference files.

Usage: python tools/build_factors.py [--sources data/sources] [--out plugin/jobcarbon/data]

Reads the public files in ``data/sources`` (see its README for their origin and
licences, and the few figures withheld from them) and writes the CSV tables the package ships. Every output
row carries its source, year and licence. The numbers are the sources' own; the
few rows added here by hand (current data-centre accelerators) cite the
manufacturer's datasheet. Needs ``pycountry`` (the ``dev`` extra) for ISO codes.
Run it again and commit the result when a reference file changes; the test
suite checks that the shipped tables match what this script builds.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path

import pycountry

MLCO2 = "mlco2-impact"
MLCO2_LICENCE = "MIT (mlco2/impact)"
MLCO2_SNAPSHOT = 2026
GA = "green-algorithms"
GA_LICENCE = "CC BY 4.0 (Lannelongue, Grealey, Inouye, Green Algorithms, Adv. Sci. 2021)"
GA_SNAPSHOT = 2025
OWID_LICENCE = "CC BY 4.0 (Our World in Data, built on Ember; via CodeCarbon v3.3)"
EGRID_LICENCE = "public domain (US EPA eGRID; via CodeCarbon v3.3)"
CODECARBON_LICENCE = "MIT (mlco2/codecarbon v3.3)"
LB_PER_MWH_TO_G_PER_KWH = 453.59237 / 1000.0

#: Current data-centre accelerators missing from the reference files: maximum board
#: power from the manufacturer's datasheet. (name, aliases, kind, tdp_w, year, source)
ADDED_ACCELERATORS = [
    (
        "H200 SXM",
        "H200;NVIDIA H200",
        "gpu",
        700,
        2024,
        "https://www.nvidia.com/en-us/data-center/h200/ (max TDP, SXM)",
    ),
    (
        "H200 NVL",
        "",
        "gpu",
        600,
        2024,
        "https://www.nvidia.com/en-us/data-center/h200/ (max TDP, NVL)",
    ),
    (
        "B200",
        "NVIDIA B200;HGX B200",
        "gpu",
        1000,
        2024,
        "https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200, per GPU)",
    ),
    (
        "GH200",
        "Grace Hopper;GH200 Superchip",
        "gpu",
        1000,
        2023,
        "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/ "
        "(configurable 450-1000 W for the superchip: Grace CPU, Hopper GPU and memory)",
    ),
    (
        "MI250X",
        "AMD Instinct MI250X",
        "gpu",
        560,
        2021,
        "https://www.amd.com/en/products/accelerators/instinct/mi200/mi250x.html (peak TBP, OAM)",
    ),
    (
        "MI300X",
        "AMD Instinct MI300X",
        "gpu",
        750,
        2023,
        "https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html (peak TBP, OAM)",
    ),
    (
        "Gaudi2",
        "Intel Gaudi 2;HL-225",
        "accelerator",
        600,
        2022,
        "https://www.intel.com/content/www/us/en/products/details/processors/ai-accelerators/gaudi2.html",
    ),
    (
        "Gaudi3",
        "Intel Gaudi 3;HL-325L",
        "accelerator",
        900,
        2024,
        "https://www.intel.com/content/www/us/en/products/details/processors/ai-accelerators/gaudi3.html "
        "(HL-325L OAM)",
    ),
]
VENDOR_LICENCE = "manufacturer datasheet (a fact, cited)"

CCF = "ccf-coefficients"
CCF_LICENCE = "Apache-2.0 (cloud-carbon-footprint/ccf-coefficients)"
#: The files' last change upstream (data/sources/README.md).
CCF_YEAR = {"aws": 2021, "azure": 2023, "gcp": 2021}
#: CCF's constants.py: kgCO2e per GPU card (GPU_MANUFACTURING_EMISSIONS) and the rack
#: server lifespan (RACK_SERVER_LIFESPAN); its hosts' ``additional_gpus`` is cards × this.
CCF_GPU_CARD_KG = 150.0
CCF_LIFETIME_YEARS = 4.0
CCF_COVERS = "manufacturing only"
#: Every CCF row is the whole physical host of its instance type (its family's largest).
CCF_SOURCE = "CCF coefficients-{provider}-embodied.csv, whole host"
BLOOM_SOURCE = (
    "Luccioni, Viguier, Ligozat, Estimating the Carbon Footprint of BLOOM, a 176B Parameter "
    "Language Model, JMLR 24(253) 2023 (arXiv 2211.02001)"
)
BLOOM_LICENCE = "a published figure, cited"
#: BLOOM's figures: 150 kg per A100, about 2,500 kg per HPE Apollo 6500 Gen10 Plus server
#: without its GPUs, both over 6 years (at 85 % utilisation, which jobcarbon does not apply).
BLOOM_GPU_KG = 150.0
BLOOM_SERVER_KG = 2500.0
BLOOM_GPUS_PER_SERVER = 8
BLOOM_LIFETIME_YEARS = 6.0

#: AWS regions whose rows in the seed table name only the country: the US state from
#: the region's public display name.
AWS_US_STATE = {"us-east-1": "VA", "us-east-2": "OH", "us-west-1": "CA", "us-west-2": "OR"}


def norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("nvidia", ""))


def read_csv(path: Path, skip: int = 0) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines()[skip:]
    return [
        {k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(lines)
    ]


def write_csv(path: Path, fields: list[str], rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def hardware_rows(sources: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for r in read_csv(sources / MLCO2 / "gpus.csv"):
        if not r["tdp_watts"]:
            continue
        source = r["source"] or "ML CO2 Impact calculator (no source given)"
        rows.append(
            {
                "name": r["name"],
                "aliases": "",
                "kind": r["type"],
                "tdp_w": float(r["tdp_watts"]),
                "year": MLCO2_SNAPSHOT,
                "source": f"{source} (via {MLCO2})",
                "licence": MLCO2_LICENCE,
                "in_seed_calculator": "yes",
            }
        )
        seen.add(norm(r["name"]))
    for r in read_csv(sources / GA / "TDP_gpu.csv", skip=1):
        if not r["TDP"] or norm(r["model"]) in seen:
            continue
        kind = "tpu" if r["model"].startswith("TPU") else "gpu"
        rows.append(
            {
                "name": r["model"],
                "aliases": "",
                "kind": kind,
                "tdp_w": float(r["TDP"]),
                "year": GA_SNAPSHOT,
                "source": f"{r['source']} (via {GA})",
                "licence": GA_LICENCE,
                "in_seed_calculator": "no",
            }
        )
        seen.add(norm(r["model"]))
    for name, aliases, kind, tdp_w, year, source in ADDED_ACCELERATORS:
        rows.append(
            {
                "name": name,
                "aliases": aliases,
                "kind": kind,
                "tdp_w": float(tdp_w),
                "year": year,
                "source": source,
                "licence": VENDOR_LICENCE,
                "in_seed_calculator": "no",
            }
        )
    return rows


def cpu_rows(sources: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for r in read_csv(sources / GA / "TDP_cpu.csv", skip=1):
        if not (r["TDP"] and r["n_cores"] and r["TDP_per_core"]) or r["model"] == "Any":
            continue
        rows.append(
            {
                "name": r["model"],
                "tdp_w": float(r["TDP"]),
                "cores": int(r["n_cores"]),
                "power_w_per_core": float(r["TDP_per_core"]),
                "year": GA_SNAPSHOT,
                "source": f"{r['source']} (via {GA})",
                "licence": GA_LICENCE,
            }
        )
    return rows


def country_alpha2(name: str) -> str:
    aliases = {
        "USA": "US",
        "South Korea": "KR",
        "Taiwan": "TW",
        "Hong Kong": "HK",
        "China": "CN",
        "United Kingdom": "GB",
    }
    if name in aliases:
        return aliases[name]
    return str(pycountry.countries.lookup(name).alpha_2)


def region_rows(sources: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    by_location: dict[str, dict[str, object]] = {}
    mix = json.loads((sources / "codecarbon" / "private_infra_global_energy_mix.json").read_text())
    for iso3, r in sorted(mix.items()):
        country = pycountry.countries.get(alpha_3=iso3)
        if country is None or r.get("carbon_intensity") is None:
            continue
        row = {
            "vintage": "current",
            "key": country.alpha_2,
            "aliases": f"{iso3};{r['country_name']}",
            "name": r["country_name"],
            "kind": "country",
            "provider": "",
            "intensity_g_per_kwh": r["carbon_intensity"],
            "offset_pct": "",
            "pue": "",
            "year": r["year"],
            "source": "Our World in Data energy dataset (Ember), carbon_intensity_elec",
            "licence": OWID_LICENCE,
        }
        rows.append(row)
        by_location[country.alpha_2] = row
    usa = json.loads((sources / "codecarbon" / "private_infra_2016_usa_emissions.json").read_text())
    for state, r in sorted(usa.items()):
        if state.startswith("_"):
            continue  # the file's own unit notes
        key = f"US-{r['regionCode']}"
        row = {
            "vintage": "current",
            "key": key,
            "aliases": state.title(),
            "name": f"{state.title()}, USA",
            "kind": "us_state",
            "provider": "",
            "intensity_g_per_kwh": round(r["emissions"] * LB_PER_MWH_TO_G_PER_KWH, 1),
            "offset_pct": "",
            "pue": "",
            "year": 2016,
            "source": "US EPA eGRID 2016 state output emission rate (lb/MWh, converted)",
            "licence": EGRID_LICENCE,
        }
        rows.append(row)
        by_location[key] = row
    nordic = json.loads(
        (sources / "codecarbon" / "private_infra_nordic_emissions.json").read_text()
    )
    for zone, r in nordic["data"].items():
        if zone == "FI":
            continue  # Finland as a whole is already a country row
        rows.append(
            {
                "vintage": "current",
                "key": f"{zone[:2]}-{zone}",
                "aliases": zone,
                "name": r["description"],
                "kind": "bidding_zone",
                "provider": "",
                "intensity_g_per_kwh": r["emission_factor"],
                "offset_pct": "",
                "pue": "",
                "year": r["year"],
                "source": nordic["metadata"]["source"],
                "licence": CODECARBON_LICENCE,
            }
        )
    provider_pue = {
        r["provider"].lower(): r for r in read_csv(sources / GA / "defaults_PUE.csv", 1)
    }
    google = {r["region"]: r for r in read_csv(sources / "codecarbon" / "cloud_impact.csv")}
    for r in read_csv(sources / MLCO2 / "impact.csv"):
        provider, region = r["provider"], r["region"] or r["providerName"].lower()
        key = f"{provider}:{region}"
        if r["impact"]:  # empty where the figure may not be shipped (data/sources/README.md)
            rows.append(
                {
                    "vintage": "mlco2-impact-2019",
                    "key": key,
                    "aliases": r["regionName"],
                    "name": f"{r['providerName']} {region}",
                    "kind": "cloud",
                    "provider": provider,
                    "intensity_g_per_kwh": float(r["impact"]),
                    "offset_pct": r["offsetRatio"],
                    "pue": r["PUE"],
                    "year": 2019,
                    "source": f"{r['source']} (via {MLCO2})",
                    "licence": MLCO2_LICENCE,
                }
            )
        pue = provider_pue.get(provider)
        pue_cells = {"pue": pue["PUE"] if pue else "", "pue_source": pue["source"] if pue else ""}
        if provider == "gcp" and region in google:
            g = google[region]
            rows.append(
                {
                    "vintage": "current",
                    "key": key,
                    "aliases": "",
                    "name": f"Google Cloud {region} ({g['city'] or g['country_name']})",
                    "kind": "cloud",
                    "provider": provider,
                    "intensity_g_per_kwh": float(g["impact"]),
                    "offset_pct": g["offsetRatio"],
                    "pue": pue_cells["pue"],
                    "year": 2023,
                    "source": f"{g['source']} (via CodeCarbon v3.3)",
                    "licence": CODECARBON_LICENCE,
                }
            )
            continue
        country = country_alpha2(r["country"])
        state = AWS_US_STATE.get(region) if provider == "aws" else None
        if country == "US" and not state and r["state"]:
            match = [
                k
                for k, v in by_location.items()
                if v["kind"] == "us_state" and str(v["aliases"]).lower() == r["state"].lower()
            ]
            state = match[0][3:] if match else None
        location = by_location.get(f"US-{state}") if state else by_location.get(country)
        if location is None:
            continue
        rows.append(
            {
                "vintage": "current",
                "key": key,
                "aliases": "",
                "name": f"{r['providerName']} {region} ({location['name']})",
                "kind": "cloud",
                "provider": provider,
                "intensity_g_per_kwh": location["intensity_g_per_kwh"],
                "offset_pct": r["offsetRatio"],
                "pue": pue_cells["pue"],
                "year": location["year"],
                "source": f"grid of {location['key']}: {location['source']}; "
                f"region location from {MLCO2}",
                "licence": location["licence"],
            }
        )
    return rows


def pue_rows(sources: Path) -> list[dict[str, object]]:
    return [
        {
            "provider": r["provider"],
            "pue": float(r["PUE"]),
            "year": GA_SNAPSHOT,
            "source": f"{r['source']} (via {GA})",
            "licence": GA_LICENCE,
        }
        for r in read_csv(sources / GA / "defaults_PUE.csv", skip=1)
    ]


def equivalent_rows(sources: Path) -> list[dict[str, object]]:
    wanted = {
        "passengerCar_EU_perkm": ("car_km_eu", "km driven in an average European passenger car"),
        "passengerCar_US_perkm": ("car_km_us", "km driven in an average US passenger car"),
        "train_perkm": ("train_km", "km by train"),
        "tree_month": ("tree_months", "months of CO2 uptake by one tree"),
    }
    reference = {r["variable"]: r for r in read_csv(sources / GA / "referenceValues.csv", skip=1)}
    # tree_month's row points at treeYear's row for its source
    reference["tree_month"]["source"] = reference["treeYear"]["source"] + " (treeYear / 12)"
    rows: list[dict[str, object]] = []
    for variable, (key, description) in wanted.items():
        r = reference[variable]
        rows.append(
            {
                "key": key,
                "description": description,
                "co2e_g_per_unit": float(r["value"]),
                "year": GA_SNAPSHOT,
                "source": f"{r['source']} (via {GA})",
                "licence": GA_LICENCE,
            }
        )
    return rows


EMBODIED_FIELDS = [
    "kind",
    "name",
    "aliases",
    "embodied_kg",
    "embodied_kg_low",
    "embodied_kg_high",
    "gpus",
    "lifetime_years",
    "covers",
    "year",
    "source",
    "licence",
]


def _embodied_row(
    kind: str,
    name: str,
    aliases: str,
    kg: list[float],
    central_kg: float,
    gpus: int | str,
    lifetime_years: float,
    covers: str,
    year: int,
    source: str,
    licence: str,
) -> dict[str, object]:
    return {
        "kind": kind,
        "name": name,
        "aliases": aliases,
        "embodied_kg": round(central_kg, 2),
        "embodied_kg_low": min(kg),
        "embodied_kg_high": max(kg),
        "gpus": gpus,
        "lifetime_years": lifetime_years,
        "covers": covers,
        "year": year,
        "source": source,
        "licence": licence,
    }


def embodied_rows(sources: Path) -> list[dict[str, object]]:
    """kgCO2e per accelerator card and per node, with lifetime, coverage and provenance.

    CCF publishes one host per instance type, except that Azure and GCP give one per
    CPU microarchitecture the type may run on: low and high are the least and most of
    those, the central figure GCP's own mean file or, for Azure, their mean.
    """
    rows = [
        _embodied_row(
            "accelerator",
            "GPU card (CCF, any model)",
            "",
            [CCF_GPU_CARD_KG],
            CCF_GPU_CARD_KG,
            1,
            CCF_LIFETIME_YEARS,
            CCF_COVERS,
            CCF_YEAR["aws"],
            "Cloud Carbon Footprint, ccfcoef/constants.py GPU_MANUFACTURING_EMISSIONS",
            CCF_LICENCE,
        ),
        _embodied_row(
            "accelerator",
            "A100 (BLOOM)",
            "",
            [BLOOM_GPU_KG],
            BLOOM_GPU_KG,
            1,
            BLOOM_LIFETIME_YEARS,
            "manufacturing only",
            2023,
            BLOOM_SOURCE,
            BLOOM_LICENCE,
        ),
        _embodied_row(
            "node",
            "HPE Apollo 6500 Gen10 Plus, 8 x A100 (BLOOM)",
            "Jean Zay A100 node",
            [BLOOM_SERVER_KG + BLOOM_GPUS_PER_SERVER * BLOOM_GPU_KG],
            BLOOM_SERVER_KG + BLOOM_GPUS_PER_SERVER * BLOOM_GPU_KG,
            BLOOM_GPUS_PER_SERVER,
            BLOOM_LIFETIME_YEARS,
            "manufacturing only",
            2023,
            f"{BLOOM_SOURCE}: the server without GPUs ({BLOOM_SERVER_KG:g} kg) plus "
            f"{BLOOM_GPUS_PER_SERVER} x {BLOOM_GPU_KG:g} kg per A100",
            BLOOM_LICENCE,
        ),
    ]
    gcp_mean = {
        r["type"]: float(r["total_mean"])
        for r in read_csv(sources / CCF / "coefficients-gcp-embodied-mean.csv")
    }
    for provider in ("aws", "azure", "gcp"):
        by_type: dict[str, list[dict[str, str]]] = {}
        for r in read_csv(sources / CCF / f"coefficients-{provider}-embodied.csv"):
            by_type.setdefault(r["type"], []).append(r)
        for instance_type, variants in by_type.items():
            kg = sorted({float(r["total"]) for r in variants})
            central = gcp_mean[instance_type] if provider == "gcp" else sum(kg) / len(kg)
            cards = {float(r["additional_gpus"]) / CCF_GPU_CARD_KG for r in variants}
            if len(cards) != 1 or not cards.issubset(range(64)):
                raise ValueError(f"{provider} {instance_type}: GPU cards {cards}")
            rows.append(
                _embodied_row(
                    "node",
                    f"{provider} {instance_type}",
                    instance_type,
                    kg,
                    central,
                    int(cards.pop()) or "",
                    CCF_LIFETIME_YEARS,
                    CCF_COVERS,
                    CCF_YEAR[provider],
                    CCF_SOURCE.format(provider=provider),
                    CCF_LICENCE,
                )
            )
    return rows


def build(sources: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(
        out / "hardware.csv",
        ["name", "aliases", "kind", "tdp_w", "year", "source", "licence", "in_seed_calculator"],
        hardware_rows(sources),
    )
    write_csv(
        out / "cpus.csv",
        ["name", "tdp_w", "cores", "power_w_per_core", "year", "source", "licence"],
        cpu_rows(sources),
    )
    write_csv(
        out / "regions.csv",
        [
            "vintage",
            "key",
            "aliases",
            "name",
            "kind",
            "provider",
            "intensity_g_per_kwh",
            "offset_pct",
            "pue",
            "year",
            "source",
            "licence",
        ],
        region_rows(sources),
    )
    write_csv(out / "pue.csv", ["provider", "pue", "year", "source", "licence"], pue_rows(sources))
    write_csv(
        out / "equivalents.csv",
        ["key", "description", "co2e_g_per_unit", "year", "source", "licence"],
        equivalent_rows(sources),
    )
    write_csv(out / "embodied.csv", EMBODIED_FIELDS, embodied_rows(sources))


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=root / "data" / "sources")
    parser.add_argument("--out", type=Path, default=root / "plugin" / "jobcarbon" / "data")
    args = parser.parse_args()
    build(args.sources, args.out)


if __name__ == "__main__":
    main()
