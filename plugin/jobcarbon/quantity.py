"""Figures as people read them: three significant figures, in a unit that fits.

A month of a new cluster is grams and watt-hours, a year of a large one tonnes and
megawatt-hours. Fixed decimals in one unit print the first as ``0.0`` in every cell
and the second as a row of digits nobody reads, so every figure meant for a person
(``summary``, the monthly e-mails, the demo, reports to come) is formatted here:
the same figure reads the same everywhere. Machine output (CSV, JSON, metrics)
keeps the ledger's full precision and base units.

A non-zero figure never shows as zero: below a thousandth of the smallest unit it
shows as ``< 0.001`` of it. Whole numbers are never rounded to fewer digits
(12,345 t stays 12,345 t), and a figure that rounds up into the next unit moves to
it (999.7 g is 1.00 kg, not 1,000 g).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIGNIFICANT = 3
#: The smallest figure shown as a number, in the smallest unit of its scale.
SMALLEST = 0.001
#: The smallest figure that rounds to 1.00 at three significant figures.
ROUNDS_TO_ONE = 1 - 0.5 * 10**-SIGNIFICANT


@dataclass(frozen=True, slots=True)
class Quantity:
    """A formatted figure and its unit, apart for tables whose heading holds the unit."""

    number: str
    unit: str

    def __str__(self) -> str:
        return f"{self.number} {self.unit}"


@dataclass(frozen=True, slots=True)
class Scale:
    """The units of one kind of figure, smallest first, each as a multiple of the base."""

    units: tuple[tuple[str, float], ...]
    zero_unit: str  # the unit of a figure that is exactly zero

    def fitting(self, value: float) -> tuple[str, float]:
        """The largest unit in which ``value``, rounded, is at least one."""
        magnitude = abs(value)
        for unit, size in reversed(self.units):
            if magnitude >= size * ROUNDS_TO_ONE:
                return unit, size
        return self.units[0]


#: CO2e in kilograms, the ledger's unit of emissions in its sums.
MASS_KG = Scale((("g", 0.001), ("kg", 1.0), ("t", 1000.0)), zero_unit="kg")
#: Energy in kilowatt-hours.
ENERGY_KWH = Scale((("Wh", 0.001), ("kWh", 1.0), ("MWh", 1000.0)), zero_unit="kWh")


def significant(value: float, digits: int = SIGNIFICANT) -> str:
    """``value`` to ``digits`` significant figures, with thousands separators.

    The integer part is never rounded away (12,345 → "12,345"); zero is "0".
    """
    if value == 0:
        return "0"
    if not math.isfinite(value):
        raise ValueError(f"cannot format {value!r} as a figure")
    exponent = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - exponent)
    if decimals and abs(round(value, decimals)) >= 10.0 ** (exponent + 1):
        decimals -= 1  # rounding carried into a new digit: 9.996 is 10.0, not 10.00
    return f"{value:,.{decimals}f}"


def in_units(value: float, scale: Scale) -> Quantity:
    """``value`` (in the scale's base unit) in the unit that fits it."""
    if value == 0:
        return Quantity("0", scale.zero_unit)
    unit, size = scale.fitting(value)
    scaled = value / size
    if abs(scaled) < SMALLEST:
        return Quantity(f"{'> -' if scaled < 0 else '< '}{SMALLEST:g}", unit)
    return Quantity(significant(scaled), unit)


def co2e(kg: float) -> Quantity:
    """Emissions given in kilograms: "50.0 g", "1.23 kg", "1.23 t"."""
    return in_units(kg, MASS_KG)


def energy(kwh: float) -> Quantity:
    """Energy given in kilowatt-hours: "12.0 Wh", "738 kWh", "1.50 MWh"."""
    return in_units(kwh, ENERGY_KWH)


def span(low: str, high: str) -> str:
    """A range of two formatted figures, or one figure when they read the same."""
    return low if low == high else f"{low}–{high}"


def in_units_range(low: float, high: float, scale: Scale) -> str:
    """A low–high range in the unit that fits its larger end: "282–310 g"."""
    largest = high if abs(high) >= abs(low) else low
    if largest == 0:
        return str(Quantity("0", scale.zero_unit))
    unit, size = scale.fitting(largest)
    return f"{span(significant(low / size), significant(high / size))} {unit}"


def co2e_range(low_kg: float, high_kg: float) -> str:
    """A range of emissions given in kilograms: "282–310 g"."""
    return in_units_range(low_kg, high_kg, MASS_KG)


def percent(value: float) -> str:
    """A share in percent, whole: "33"; "< 1" and "> 99" where rounding would say 0 or 100."""
    if 0 < value < 1:
        return "< 1"
    if 99 < value < 100:
        return "> 99"
    return f"{value:.0f}"
