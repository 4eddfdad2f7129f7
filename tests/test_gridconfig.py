"""``sites.<name>.grid.provider``: checked at load with key paths, turned into the
settings ``sources.grid`` clients take."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from jobcarbon import factors
from jobcarbon.config import parse_config
from jobcarbon.errors import ConfigError, FactorError
from jobcarbon.gridconfig import ProviderName
from jobcarbon.sources.grid import PROVIDERS, ProviderSettings, client
from jobcarbon.sources.grid.uk import UkCarbonIntensity
from tests.conftest import utc
from tests.support.config import make_config


def _config(provider: dict[str, Any], base_dir: Path = Path(".")) -> Any:
    return parse_config(
        make_config(sites={"s1": {"pue": 1.2, "grid": {"provider": provider}}}), base_dir
    )


def _problems(provider: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _config(provider)
    return info.value.problems


def test_the_config_knows_the_providers_the_clients_do() -> None:
    assert typing.get_args(ProviderName) == PROVIDERS


def test_a_provider_becomes_the_settings_its_client_takes(tmp_path: Path) -> None:
    provider = (
        _config(
            {
                "name": "uk-carbon-intensity",
                "zone": "national",
                "url": "http://127.0.0.1:1",
                "token_file": "secrets/token",
                "signal": None,
                "fallback_g_per_kwh": 200,
            },
            tmp_path,
        )
        .sites["s1"]
        .grid.provider
    )
    settings = ProviderSettings(**provider.settings(tmp_path))
    assert settings == ProviderSettings(
        "uk-carbon-intensity",
        "national",
        "http://127.0.0.1:1",
        None,
        str(tmp_path / "secrets" / "token"),  # relative to the config file's directory
        None,
        200.0,
    )
    assert isinstance(client(settings), UkCarbonIntensity)


def test_a_region_as_fallback_is_its_table_figure() -> None:
    config = _config(
        {"name": "entsoe", "zone": "10Y1001A1001A83F", "token_env": "T", "fallback_region": "DE"}
    )
    expected = factors.find_region("DE").intensity_g_per_kwh
    assert config.sites["s1"].grid.provider.fallback() == expected
    # until hours are synced, the site's hours are the fallback's
    intensity = config.site_factors["s1"].intensity_g_per_kwh
    assert intensity.at(utc(2026, 3, 1, 5)) == expected


def test_without_a_fallback_an_hour_not_synced_cannot_be_accounted() -> None:
    config = _config({"name": "uk-carbon-intensity", "zone": "national"})
    with pytest.raises(FactorError, match=r"sites\.s1\.grid\.provider has no value for the hour"):
        config.site_factors["s1"].intensity_g_per_kwh.integral(
            utc(2026, 3, 1, 5), utc(2026, 3, 1, 6)
        )


def test_every_problem_names_its_key_path() -> None:
    found = "\n".join(
        _problems(
            {
                "name": "electricity-maps",
                "zone": "",
                "url": "ftp://example.org",
                "token_env": "A",
                "token_file": "b",
            }
        )
    )
    assert "sites.s1.grid.provider.name: Input should be 'electricitymaps'" in found
    assert "sites.s1.grid.provider.zone: String should have at least 1 character" in found
    assert "sites.s1.grid.provider.url: String should match pattern" in found


def test_one_credential_one_fallback_and_never_the_secret() -> None:
    assert _problems({"name": "eia", "zone": "CISO", "token_env": "A", "token_file": "b"}) == [
        "sites.s1.grid.provider: give token_env or token_file, not both"
    ]
    both = {"name": "eia", "zone": "CISO", "fallback_g_per_kwh": 1, "fallback_region": "US"}
    assert _problems(both) == [
        "sites.s1.grid.provider: give fallback_g_per_kwh or fallback_region, not both"
    ]
    assert _problems({"name": "eia", "zone": "CISO", "token": "abc"}) == [
        "sites.s1.grid.provider: secrets never go in the YAML: use token_env or token_file"
    ]
    (problem,) = _problems({"name": "eia", "zone": "CISO", "fallback_region": "atlantis"})
    assert problem.startswith("sites.s1.grid.provider: fallback_region: unknown region 'atlantis'")


def test_a_provider_is_one_grid_source_among_the_others() -> None:
    data = make_config(
        sites={
            "s1": {"pue": 1.2, "grid": {"region": "DE", "provider": {"name": "eia", "zone": "X"}}}
        }
    )
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.problems == [
        "sites.s1.grid: give exactly one of intensity_g_per_kwh, region, series, provider "
        "(got region, provider)"
    ]
