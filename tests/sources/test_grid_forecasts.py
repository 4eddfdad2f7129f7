"""The grid clients' forecasts against the fake providers on loopback (grid_fakes.py).

The fakes' clock is fixed, so every slot is worked by hand from ``g_per_kwh(t)``:
100 + 24 × (UTC hour of day) + (5-minute step within the hour).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from jobcarbon.sources.grid import FORECASTERS, Http, NoForecast, ProviderSettings, client
from jobcarbon.sources.grid.base import WindowedClient
from tests.support.grid_fakes import FakeProvider, serving

#: 2026-03-01 10:07:30 UTC
NOW = datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC)
TEN = int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp())


def forecaster(
    fake: FakeProvider, sleeps: list[float], zone: str = "Z", signal: str | None = None
) -> WindowedClient:
    fake.clock = NOW.timestamp
    token = None if fake.kind == "uk-carbon-intensity" else "GRID_TOKEN"
    settings = ProviderSettings(fake.kind, zone, fake.url, token_env=token, signal=signal)
    return client(settings, Http(fake.kind, sleep=sleeps.append, rng=random.Random(1)))


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def uk() -> Iterator[FakeProvider]:
    with serving(FakeProvider("uk-carbon-intensity")) as fake:
        yield fake


def test_uk_48_hours_of_half_hours_from_the_one_holding_now(
    uk: FakeProvider, sleeps: list[float]
) -> None:
    slots = forecaster(uk, sleeps, "national").forecast(NOW, timedelta(hours=9))
    (request,) = uk.requests
    assert request.path == "/intensity/2026-03-01T10:07Z/fw48h"
    assert len(slots) == 96  # fw48h whatever the horizon asked
    assert [(s.start_s - TEN, s.period_s) for s in slots[:2]] == [(0, 1800), (1800, 1800)]
    # 10:00 is 100 + 240 + 0; 10:30 is in its seventh 5-minute step: 100 + 240 + 6
    assert [s.intensity_g_per_kwh for s in slots[:2]] == [340.0, 346.0]
    assert not any(s.measured for s in slots)
    assert slots[-1].start_s == TEN + 95 * 1800  # 2026-03-03 09:30


def test_uk_on_a_boundary_and_by_region(uk: FakeProvider, sleeps: list[float]) -> None:
    on_the_hour = datetime(2026, 3, 1, 10, tzinfo=UTC)
    grid = forecaster(uk, sleeps, "13")
    slots = grid.forecast(on_the_hour, timedelta(hours=9))
    assert uk.requests[-1].path == "/regional/intensity/2026-03-01T10:00Z/fw48h/regionid/13"
    # from on a boundary: the half hour ending at it comes first, 09:30 (100 + 216 + 6)
    assert (slots[0].start_s, slots[0].intensity_g_per_kwh) == (TEN - 1800, 322.0)


def test_uk_retries_429_and_5xx(uk: FakeProvider, sleeps: list[float]) -> None:
    uk.fail_next = [(429, {"Retry-After": "7"}, b"slow down"), (503, {}, b"down")]
    slots = forecaster(uk, sleeps, "national").forecast(NOW, timedelta(hours=9))
    assert len(slots) == 96 and len(uk.requests) == 3
    # as the 429 asked, then the backoff before a third attempt: 2 s less up to half
    assert sleeps[0] == 7.0 and 1.0 <= sleeps[1] <= 2.0


@pytest.fixture
def em(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("GRID_TOKEN", "s3cret")
    with serving(FakeProvider("electricitymaps")) as fake:
        yield fake


def test_electricitymaps_hours_and_the_horizons_it_takes(
    em: FakeProvider, sleeps: list[float]
) -> None:
    grid = forecaster(em, sleeps, "DE", signal="direct")
    slots = grid.forecast(NOW, timedelta(hours=5))
    request = em.requests[-1]
    assert request.path == "/v3/carbon-intensity/forecast"
    assert (request.query["horizonHours"], request.query["emissionFactorType"]) == (
        ["6"],
        ["direct"],
    )
    # six hours from 10:00, each its hour's first 5 minutes: 100 + 24 × hour
    assert [(s.start_s - TEN, s.intensity_g_per_kwh) for s in slots] == [
        (i * 3600, 100.0 + 24 * (10 + i)) for i in range(6)
    ]
    assert {s.period_s for s in slots} == {3600} and not any(s.measured for s in slots)
    grid.forecast(NOW, timedelta(hours=30))
    grid.forecast(NOW, timedelta(hours=100))  # more than it publishes: its longest
    assert [r.query["horizonHours"] for r in em.requests[1:]] == [["48"], ["72"]]


@pytest.fixture
def wt(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("GRID_TOKEN", "ada:s3cret")
    with serving(FakeProvider("watttime", credential="ada:s3cret")) as fake:
        yield fake


def test_watttime_five_minutes_of_co2_moer(wt: FakeProvider, sleeps: list[float]) -> None:
    grid = forecaster(wt, sleeps, "CAISO_NORTH")  # the default signal, co2_aoer
    assert (grid.signal, grid.forecast_signal) == ("co2_aoer", "co2_moer")
    slots = grid.forecast(NOW, timedelta(hours=10))
    request = wt.requests[-1]
    assert (request.query["signal_type"], request.query["horizon_hours"]) == (
        ["co2_moer"],
        ["24"],
    )
    assert len(slots) == 288  # 24 h of 5 minutes, from the current one (10:05)
    assert slots[0].start_s == TEN + 300 and slots[0].period_s == 300
    # 10:05 is 100 + 240 + 1 = 341 g/kWh, sent as lbs/MWh and read back
    assert slots[0].intensity_g_per_kwh == pytest.approx(341.0, abs=1e-5)
    wt.expire_token()
    longer = grid.forecast(NOW, timedelta(hours=30))
    assert len(longer) == 864 and wt.requests[-1].query["horizon_hours"] == ["72"]
    assert wt.tokens_issued == 2  # logged in again after the 401


@pytest.mark.parametrize("kind", ["entsoe", "eia"])
def test_generation_providers_publish_no_forecast(
    kind: str, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRID_TOKEN", "s3cret")
    with serving(FakeProvider(kind)) as fake:
        with pytest.raises(NoForecast, match=f"^{kind} publishes no forecast"):
            forecaster(fake, sleeps).forecast(NOW, timedelta(hours=8))
        assert fake.requests == []
    assert FORECASTERS == ("electricitymaps", "watttime", "uk-carbon-intensity")
