"""Figures for people: significant figures and fitting units, cases worked by hand."""

from __future__ import annotations

import pytest

from jobcarbon.quantity import co2e, co2e_range, energy, percent, significant, span


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-0.0, "0"),
        (0.2952, "0.295"),
        (3.0, "3.00"),  # three figures: the trailing zeros are figures too
        (1.5, "1.50"),
        (9.996, "10.0"),  # rounding carries into a new digit: one decimal fewer
        (999.6, "1,000"),
        (12_345.6, "12,346"),  # whole numbers are not rounded to three figures
        (0.000123456, "0.000123"),
        (-0.0456, "-0.0456"),
    ],
)
def test_significant_figures(value: float, shown: str) -> None:
    assert significant(value) == shown


def test_significant_figures_refuse_what_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="nan"):
        significant(float("nan"))


@pytest.mark.parametrize(
    ("kg", "shown"),
    [
        (0, "0 kg"),
        (0.05, "50.0 g"),  # 0.05 kg = 50 g
        (0.999, "999 g"),
        (0.9996, "1.00 kg"),  # 999.6 g rounds to 1,000 g: shown in the next unit up
        (0.2952, "295 g"),
        (1.0, "1.00 kg"),
        (1_234.0, "1.23 t"),
        (999_999.0, "1,000 t"),  # no unit above tonnes: whole tonnes
        (12_345_678.0, "12,346 t"),
        (1e-6, "0.00100 g"),  # 1 mg
        (4e-7, "< 0.001 g"),  # 0.4 mg: not zero, but below what is shown
        (-0.0123, "-12.3 g"),  # an offset larger than the emissions
        (-4e-7, "> -0.001 g"),
    ],
)
def test_emissions_in_fitting_units(kg: float, shown: str) -> None:
    assert str(co2e(kg)) == shown


@pytest.mark.parametrize(
    ("kwh", "shown"),
    [
        (0, "0 kWh"),
        # one CPU core at 10 W for a minute: 10 × 60 J = 600 J = 0.1667 Wh
        (10 * 60 / 3.6e6, "0.167 Wh"),
        (0.738, "738 Wh"),
        (0.45, "450 Wh"),
        (2.5, "2.50 kWh"),
        (999.94, "1.00 MWh"),
        # 1,000 GPUs at 400 W for a 30-day month: 400 kW × 720 h = 288,000 kWh
        (1000 * 0.4 * 720, "288 MWh"),
    ],
)
def test_energy_in_fitting_units(kwh: float, shown: str) -> None:
    assert str(energy(kwh)) == shown


def test_a_quantity_keeps_its_number_and_unit_apart_for_tables() -> None:
    figure = co2e(0.05)
    assert (figure.number, figure.unit) == ("50.0", "g")


def test_ranges_share_the_unit_of_their_larger_end() -> None:
    # 295.2 g ± 5 %: 280.4 to 310.0 g
    assert co2e_range(0.28044, 0.30996) == "280–310 g"
    assert co2e_range(0.95, 1.05) == "0.950–1.05 kg"
    assert co2e_range(0, 0) == "0 kg"
    assert co2e_range(1.3, 1.3) == "1.30 kg"  # one value, not 1.30–1.30


def test_a_span_of_two_equal_figures_is_one_figure() -> None:
    # an effective PUE from energy ratios: 1.3 within floating-point error
    low, high = 1.2999999999999998, 1.3000000000000003
    assert low != high
    assert span(significant(low), significant(high)) == "1.30"
    assert span(significant(1.2), significant(1.3)) == "1.20–1.30"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (0.3, "< 1"), (0.99, "< 1"), (1, "1"), (33.333, "33"), (99.6, "> 99"), (100, "100")],
)
def test_percent_never_rounds_a_share_to_none_or_all(value: float, shown: str) -> None:
    assert percent(value) == shown
