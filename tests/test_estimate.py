"""The calculator against the seed calculator's method: TDP × hours × count × regional factor.

Region factors are the seed's own table (dataset ``mlco2-impact-2019``, from the ML CO2
Impact repository's ``data/impact.csv``); TDPs from its ``data/gpus.csv``.
"""

from __future__ import annotations

import json

import pytest

from jobcarbon.errors import FactorError, InputError
from jobcarbon.estimate import estimate, render_latex, render_markdown, render_text

SEED = "mlco2-impact-2019"


@pytest.mark.parametrize(
    ("hardware", "count", "hours", "region", "energy_kwh", "co2e_kg"),
    [
        # Tesla V100-PCIE-16GB 300 W × 100 h = 30 kWh; gcp:us-central1 566.3 g → 16.989 kg
        ("Tesla V100-PCIE-16GB", 1, 100, "gcp:us-central1", 30.0, 16.989),
        # T4 70 W × 24 h = 1.68 kWh; aws:eu-west-3 105 g → 0.1764 kg
        ("T4", 1, 24, "aws:eu-west-3", 1.68, 0.1764),
        # RTX 2080 Ti 250 W × 4 × 48 h = 48 kWh; azure:eastus 367.8 g → 17.6544 kg
        ("RTX 2080 Ti", 4, 48, "azure:eastus", 48.0, 17.6544),
        # A100 SXM4 80 GB 400 W × 8 × 72 h = 230.4 kWh; gcp:europe-north1 211 g → 48.6144 kg
        ("A100 SXM4 80 GB", 8, 72, "gcp:europe-north1", 230.4, 48.6144),
        # TPUv3 Chip 283 W × 10 h = 2.83 kWh; gcp:asia-east1 557 g → 1.57631 kg
        ("TPUv3 Chip", 1, 10, "gcp:asia-east1", 2.83, 1.57631),
        # GTX 1080 Ti 250 W × 2 × 12.5 h = 6.25 kWh; gcp:northamerica-northeast1 34.5 g
        # → 0.215625 kg
        ("GTX 1080 Ti", 2, 12.5, "gcp:northamerica-northeast1", 6.25, 0.215625),
    ],
)
def test_seed_calculator_cases(
    hardware: str, count: int, hours: float, region: str, energy_kwh: float, co2e_kg: float
) -> None:
    result = estimate(hardware=hardware, count=count, hours=hours, region=region, dataset=SEED)
    assert result.energy_kwh == pytest.approx(energy_kwh)
    assert result.co2e_kg == pytest.approx(co2e_kg)
    assert result.pue == 1.0 and result.utilization == 1.0
    assert result.co2e_kg_low < result.co2e_kg < result.co2e_kg_high


def test_offset_share_and_lowest_region_of_the_provider() -> None:
    # gcp rows of the seed table offset 100 %; its lowest-carbon gcp region is
    # northamerica-northeast1 at 34.5 g/kWh (europe-west6's 16 g is carbonfootprint.com's,
    # not shipped: data/sources/README.md): 30 kWh × 34.5 g = 1.035 kg.
    result = estimate(
        hardware="Tesla V100-PCIE-16GB", hours=100, region="gcp:us-central1", dataset=SEED
    )
    assert result.offset_pct == 100
    assert result.offset_co2e_kg == pytest.approx(16.989)
    assert result.lowest_region is not None
    assert result.lowest_region.region_key == "gcp:northamerica-northeast1"
    assert result.lowest_region.co2e_kg == pytest.approx(1.035)


def test_equivalents_cite_their_source() -> None:
    # 16.989 kg / 175 g per km (EU car, Green Algorithms referenceValues) = 97.08 km
    result = estimate(
        hardware="Tesla V100-PCIE-16GB", hours=100, region="gcp:us-central1", dataset=SEED
    )
    car = next(e for e in result.equivalents if e.key == "car_km_eu")
    assert car.amount == pytest.approx(16989 / 175)
    assert "sciencedirect" in car.source


def test_pue_utilisation_and_intensity_given_directly() -> None:
    # 100 W device at utilisation 0.5 (idle 0 in the calculator) = 50 W × 10 h = 0.5 kWh,
    # × PUE 1.5 = 0.75 kWh × 200 g/kWh = 0.15 kg
    result = estimate(tdp_w=100, hours=10, intensity_g_per_kwh=200, pue=1.5, utilization=0.5)
    assert result.energy_kwh == pytest.approx(0.75)
    assert result.co2e_kg == pytest.approx(0.15)
    assert result.lowest_region is None and result.offset_pct is None


def test_published_device_hours_as_published() -> None:
    # Llama 2 7B, its model card (Touvron et al. 2023, "Carbon Footprint" table):
    # 184,320 GPU-hours of A100 at 400 W, PUE 1.1 and 385 gCO2e/kWh, 31.22 tCO2eq.
    # By hand: 400 W × 184,320 h = 73,728 kWh; × 1.1 = 81,100.8 kWh; × 385 g/kWh
    # = 31,223,808 g = 31,223.808 kg. The run is 7,680 days: longer than any job may
    # be (records.MAX_RUN), which must not matter to an estimate.
    published = {"tdp_w": 400, "pue": 1.1, "intensity_g_per_kwh": 385}
    by_hours = estimate(hours=184_320, **published)
    by_device_hours = estimate(device_hours=184_320, **published)
    for result in (by_hours, by_device_hours):
        assert result.device_hours == 184_320
        assert result.energy_kwh == pytest.approx(81_100.8)
        assert result.co2e_kg == pytest.approx(31_223.808)
    assert (by_hours.count, by_hours.hours) == (1, 184_320)
    assert (by_device_hours.count, by_device_hours.hours) == (None, None)
    assert "184,320 device-hours of custom device" in render_markdown(by_device_hours)
    # the same device-hours on 64 GPUs: 2,880 h each, the same figure
    spread = estimate(count=64, device_hours=184_320, **published)
    assert spread.hours == 2_880 and spread.co2e_kg == pytest.approx(31_223.808)
    assert "2,880 hours on 64 × custom device" in render_markdown(spread)


def test_llama_3_scale_is_not_refused() -> None:
    # Llama 3 (its model card): 39.3M GPU-hours of H100-80GB at 700 W, more than the
    # 878,400 h the calculator refused before. 700 W × 39.3e6 h = 27,510,000 kWh; at
    # PUE 1.0 and 100 g/kWh = 2,751,000 kg.
    result = estimate(tdp_w=700, device_hours=39.3e6, intensity_g_per_kwh=100)
    assert result.energy_kwh == pytest.approx(27_510_000)
    assert result.co2e_kg == pytest.approx(2_751_000)
    assert "39,300,000 device-hours" in render_text(result)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hours": -5}, r"--hours must be > 0 .* got 1 × -5"),
        ({"hours": 1e11}, "--hours must be > 0"),
        ({"hours": 2e9, "count": 8}, r"--count × --hours at most 10,000,000,000"),
        ({"hours": None, "device_hours": 0}, "--device-hours must be > 0"),
        ({"device_hours": 5}, "exactly one of --hours or --device-hours"),
        ({"pue": 0.9}, "--pue must be between 1.0"),
        ({"utilization": 2}, "--utilization"),
        ({"count": 0}, "--count"),
    ],
)
def test_bad_arguments_name_the_option(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, object] = {"hardware": "T4", "hours": 1, "region": "FR", **kwargs}
    with pytest.raises(InputError, match=message):
        estimate(**args)  # type: ignore[arg-type]


def test_unknown_hardware_lists_closest() -> None:
    with pytest.raises(FactorError, match=r"Closest: .*V100"):
        estimate(hardware="Tesla V101", hours=1, region="FR")


def test_renderings_carry_the_numbers() -> None:
    result = estimate(hardware="T4", hours=24, region="aws:eu-west-3", dataset=SEED)
    text = render_text(result)
    assert "1.68 kWh" in text and "0.18 kg CO2e" in text
    assert json.loads(result.to_json())["co2e_kg"] == pytest.approx(0.1764)
    latex = render_latex(result)
    assert r"\cite{lacoste2019quantifying}" in latex and "CO$_2$e" in latex
    assert "% @article{lacoste2019quantifying," in latex
    assert "arxiv.org/abs/1910.09700" in render_markdown(result)


def test_embodied_share_of_a_bundled_node() -> None:
    # 2 GPUs for 10 h of CCF's p4d.24xlarge host (8 x A100, 4676.79 kg, 4 years):
    # 4676.79 × 2/8 × 10/(4 × 8,766) = 0.333447 kg; low over 6 years: × 4/6 = 0.222298.
    result = estimate(
        hardware="A100 SXM4 80 GB", count=2, hours=10, region="FR", embodied="p4d.24xlarge"
    )
    assert result.embodied is not None
    assert result.embodied.co2e_kg == pytest.approx(0.333447, abs=1e-6)
    assert result.embodied.co2e_kg_low == pytest.approx(0.222298, abs=1e-6)
    assert result.embodied.co2e_kg_high == pytest.approx(0.333447, abs=1e-6)
    # the site's lifetime instead of CCF's: over 5 years, × 4/5 = 0.266757 kg
    five = estimate(
        hardware="A100 SXM4 80 GB",
        count=2,
        hours=10,
        region="FR",
        embodied="p4d.24xlarge",
        lifetime_years=5,
    )
    assert five.embodied is not None and five.embodied.co2e_kg == pytest.approx(0.266757, abs=1e-6)
    assert five.co2e_kg == result.co2e_kg  # the operational figure does not change
    # published device-hours share the node's GPUs the same way: 20 GPU-hours
    hours = estimate(
        hardware="A100 SXM4 80 GB", device_hours=20, region="FR", embodied="p4d.24xlarge"
    )
    assert hours.embodied == result.embodied


def test_embodied_is_absent_unless_asked_and_in_every_rendering() -> None:
    plain = estimate(hardware="T4", hours=24, region="FR")
    assert plain.embodied is None and json.loads(plain.to_json())["embodied"] is None
    assert "embodied" not in render_text(plain) and "Manufacturing" not in render_markdown(plain)
    # 1 T4 for 24 h of CCF's g4dn host (8 cards: its 1200 kg of GPUs at 150 each; 3010.79
    # kg, 4 years): 3010.79 / 8 × 24 / 35,064 = 0.257597 kg
    result = estimate(hardware="T4", hours=24, region="FR", embodied="g4dn.xlarge")
    assert "embodied:  0.26 kg CO2e" in render_text(result)
    assert "aws g4dn.xlarge (3,010.79 kg CO2e for 8 GPU(s)" in render_text(result)
    assert json.loads(result.to_json())["embodied"]["co2e_kg"] == pytest.approx(0.257597, abs=1e-6)
    assert "adds an estimated 0.258 kg CO2e" in render_markdown(result)
    latex = render_latex(result)
    assert "adds an estimated 0.258 kg CO$_2$e" in latex and r"\cite{" in latex


@pytest.mark.parametrize(
    ("kwargs", "message", "error"),
    [
        ({"lifetime_years": 5}, "--lifetime-years goes with --embodied", InputError),
        ({"embodied": "c5.large"}, "aws c5.large has no GPUs", InputError),
        (
            {"embodied": "p4d", "lifetime_years": -1},
            "--embodied.lifetime_years must be",
            FactorError,
        ),
        ({"embodied": "p9z"}, "unknown embodied entry 'p9z'", FactorError),
    ],
)
def test_bad_embodied_arguments(kwargs: dict[str, object], message: str, error: type) -> None:
    with pytest.raises(error, match=message):
        estimate(hardware="T4", hours=1, region="FR", **kwargs)  # type: ignore[arg-type]
