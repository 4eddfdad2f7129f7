"""``sites.<name>.grid.provider``: a live grid-intensity provider's settings, checked at load.

The fields are ``sources.grid.ProviderSettings``' own (the sync builds one from
``settings()``); what this adds is the check, with the config's key paths: a provider
the package has a client for, a zone, at most one credential (and never the credential
itself), and one fallback for the hours the provider lacks — a constant or a region of
the bundled tables, resolved here to its g/kWh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import factors
from .errors import FactorError

#: the clients in ``sources.grid`` (its ``PROVIDERS``; a test keeps the two the same)
ProviderName = Literal["electricitymaps", "watttime", "uk-carbon-intensity", "entsoe", "eia"]


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ProviderName = Field(description="which provider's API the hours come from")
    zone: str = Field(
        min_length=1, description="the provider's zone, region or balancing authority"
    )
    url: str | None = Field(
        None, pattern=r"^https?://", description="the API's base URL (default: the provider's)"
    )
    token_env: str | None = Field(
        None, min_length=1, description="environment variable holding the credential"
    )
    token_file: Path | None = Field(None, description="file holding the credential")
    signal: str | None = Field(
        None, min_length=1, description="where a provider has several (default: its first)"
    )
    fallback_g_per_kwh: float | None = Field(
        None, ge=0, le=2000, description="for hours the provider lacks"
    )
    fallback_region: str | None = Field(
        None, description="for hours the provider lacks: a key from `jobcarbon factors regions`"
    )
    fallback_dataset: str = Field(
        factors.CURRENT_VINTAGE, description="the fallback region's table vintage"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise ValueError("secrets never go in the YAML: use token_env or token_file")
        return data

    @model_validator(mode="after")
    def _one_of_each(self) -> ProviderConfig:
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        if self.fallback_g_per_kwh is not None and self.fallback_region is not None:
            raise ValueError("give fallback_g_per_kwh or fallback_region, not both")
        if self.fallback_region is not None:
            try:
                factors.find_region(self.fallback_region, self.fallback_dataset)
            except FactorError as err:
                raise ValueError(f"fallback_region: {err}") from err
        return self

    def fallback(self) -> float | None:
        """g/kWh for the hours the provider lacks; ``None``: such hours cannot be accounted."""
        if self.fallback_region is None:
            return self.fallback_g_per_kwh
        return factors.find_region(self.fallback_region, self.fallback_dataset).intensity_g_per_kwh

    def settings(self, base_dir: Path) -> dict[str, Any]:
        """``ProviderSettings``' keyword arguments, ``token_file`` relative to ``base_dir``."""
        token_file = self.token_file
        if token_file is not None and not token_file.is_absolute():
            token_file = base_dir / token_file
        return {
            "name": self.name,
            "zone": self.zone,
            "url": self.url,
            "token_env": self.token_env,
            "token_file": str(token_file) if token_file is not None else None,
            "signal": self.signal,
            "fallback_g_per_kwh": self.fallback(),
        }
