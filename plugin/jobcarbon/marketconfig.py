"""``sites.<name>.market``: what a site buys, year by year, for market-based Scope 2.

The GHG Protocol's Scope 2 Guidance (2015, Table 6.3) ranks the factors of the
market-based method: energy attribute certificates and contracts first (RECs, GOs,
PPAs, each with its generation's factor, 0 g/kWh for wind, solar or hydro), then the
supplier's own emission rate, then the residual mix (the grid once the certificates
sold to others are taken out), and where none is available the grid average, the
location-based factor, stands in. So a year listed here gives:

- each instrument its share of the year's consumption: ``share`` as a fraction, or
  ``mwh`` pro rata, ``mwh / annual_mwh``, the year's consumption being a config key so
  that every job of the year gets the same coverage, whatever order the jobs are
  accounted or recomputed in;
- the rest ``supplier_g_per_kwh``, else the year's ``residual_mix_g_per_kwh``, else the
  market section's own ``residual_mix_g_per_kwh``, else the location-based figure.

A year not listed gets the section's ``residual_mix_g_per_kwh`` if given, else the
location-based figure; each job records which (``site.MarketSource``). A year is the
UTC calendar year the job ended in, as its month is.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .site import LOCATION_ONLY, MarketFactors, MarketSource, MarketYear

Factor = Annotated[float, Field(ge=0, le=2000)]
Year = Annotated[int, Field(ge=1990, le=2100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstrumentConfig(_Strict):
    """A PPA, REC or GO: the share of the year's consumption it covers, and its factor."""

    kind: Literal["ppa", "rec", "go"] = Field(
        description="power purchase agreement, renewable energy certificates (RECs, "
        "I-RECs) or guarantees of origin (GOs); the kind does not change the figure"
    )
    share: float | None = Field(
        None, gt=0, le=1, description="the fraction of the year's consumption it covers"
    )
    mwh: float | None = Field(
        None, gt=0, description="or the MWh it covers, shared pro rata over the year's annual_mwh"
    )
    g_per_kwh: Factor = Field(
        0.0, description="the emission factor of the generation it conveys (0: renewables)"
    )

    @model_validator(mode="after")
    def _share_or_mwh(self) -> InstrumentConfig:
        if (self.share is None) == (self.mwh is None):
            raise ValueError("give share (a fraction) or mwh, exactly one")
        return self


class MarketYearConfig(_Strict):
    """One calendar year's contracts."""

    instruments: list[InstrumentConfig] = Field(
        default_factory=list, description="PPAs, RECs, GOs: applied first"
    )
    annual_mwh: float | None = Field(
        None, gt=0, description="the site's consumption that year, for instruments given in mwh"
    )
    supplier_g_per_kwh: Factor | None = Field(
        None, description="the supplier's emission rate, for what the instruments do not cover"
    )
    residual_mix_g_per_kwh: Factor | None = Field(
        None, description="for what the instruments do not cover, without a supplier rate"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MarketYearConfig:
        if self.supplier_g_per_kwh is not None and self.residual_mix_g_per_kwh is not None:
            raise ValueError(
                "give supplier_g_per_kwh or residual_mix_g_per_kwh, not both: the supplier's "
                "rate covers what the instruments do not, and the residual mix is for a "
                "supply without one"
            )
        by_mwh = [i for i, x in enumerate(self.instruments) if x.mwh is not None]
        if by_mwh and self.annual_mwh is None:
            raise ValueError(
                f"instruments.{by_mwh[0]}.mwh needs annual_mwh, the site's consumption that "
                "year in MWh, to share the MWh pro rata"
            )
        covered = sum(self.shares())
        if covered > 1 + 1e-9:
            raise ValueError(
                f"the instruments cover {covered:.4g} of the year's consumption, more than "
                "all of it (1): lower their share or mwh, or raise annual_mwh"
            )
        return self

    def shares(self) -> list[float]:
        """Each instrument's fraction of the year's consumption."""
        return [
            x.share if x.share is not None else (x.mwh or 0.0) / (self.annual_mwh or 1.0)
            for x in self.instruments
        ]


class MarketConfig(_Strict):
    """A site's contracts by year, and the residual mix for the years without any."""

    years: dict[Year, MarketYearConfig] = Field(
        default_factory=dict, description="calendar year (UTC, by job end) → its contracts"
    )
    residual_mix_g_per_kwh: Factor | None = Field(
        None, description="for years not listed, and a listed year's rest without its own"
    )

    def factors(self) -> MarketFactors:
        """Each year's factor as the footprint model takes it."""
        other = LOCATION_ONLY
        if self.residual_mix_g_per_kwh is not None:
            other = MarketYear(self.residual_mix_g_per_kwh, 0.0, MarketSource.RESIDUAL_MIX)
        return MarketFactors({year: self._year(c) for year, c in self.years.items()}, other)

    def _year(self, year: MarketYearConfig) -> MarketYear:
        shares = year.shares()
        instruments_g_per_kwh = sum(
            share * x.g_per_kwh for share, x in zip(shares, year.instruments, strict=True)
        )
        rest = max(0.0, 1.0 - sum(shares))
        # the rest: the supplier's rate, else the year's residual mix, else the section's
        given = (year.supplier_g_per_kwh, year.residual_mix_g_per_kwh, self.residual_mix_g_per_kwh)
        rest_g_per_kwh = next((f for f in given if f is not None), None)
        if rest_g_per_kwh is None and rest > 0:
            return MarketYear(instruments_g_per_kwh, rest, MarketSource.CONTRACTS_AND_LOCATION)
        return MarketYear(
            instruments_g_per_kwh + rest * (rest_g_per_kwh or 0.0), 0.0, MarketSource.CONTRACTS
        )
