"""One config for the tests: the smallest valid one, changed only where a test says.

``make_config()`` is one site ``s1`` (PUE 1.2, a constant 100 g CO2e/kWh) and one
cluster ``c1`` on it; ``site=``/``cluster=`` rename them. Every other keyword is a
top-level key merged deeply into that: a dict merges key by key into the dict it
meets, anything else (a list, a number) replaces. A site's ``grid`` is one source
(a constant, a region or a series), so an override's ``grid`` replaces the base's
whole. The result is the config's data (a dict), for ``parse_config`` or a YAML file.
"""

from __future__ import annotations

from typing import Any

#: keys whose dict value is one choice among alternatives: an override replaces them whole
REPLACED_WHOLE = frozenset({"grid"})


def make_config(*, site: str = "s1", cluster: str = "c1", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sites": {site: {"pue": 1.2, "grid": {"intensity_g_per_kwh": 100}}},
        "clusters": {cluster: {"site": site}},
    }
    return merged(base, overrides)


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in deeply; neither is changed."""
    result = dict(base)
    for key, value in overrides.items():
        if (
            key not in REPLACED_WHOLE
            and isinstance(value, dict)
            and isinstance(result.get(key), dict)
        ):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result
