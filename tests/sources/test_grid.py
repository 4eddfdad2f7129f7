"""The grid-intensity clients against fake providers on loopback (tests/support/grid_fakes.py).

Hour values are worked by hand from the fakes' generators: ``g_per_kwh(t)`` is
100 + 24 × (UTC hour of day) + (5-minute step within the hour), and the fuel mixes are
gas 600, nuclear 400 and a varying wind, with the bundled factors (IPCC AR5 medians)
gas 490, nuclear 12, wind 11 g/kWh.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobcarbon.errors import PermanentError, TemporaryError
from jobcarbon.site import HOUR_S
from jobcarbon.sources.grid import FetchResult, Http, ProviderSettings, Unauthorized, client
from tests.support.grid_fakes import FakeProvider, serving


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def epoch_hour(when: datetime) -> int:
    return int(when.timestamp()) // HOUR_S


@pytest.fixture
def sleeps() -> list[float]:
    return []


def fetch(
    fake: FakeProvider,
    since: datetime,
    until: datetime,
    sleeps: list[float],
    token_env: str | None = "GRID_TOKEN",
    zone: str = "Z",
    signal: str | None = None,
) -> FetchResult:
    settings = ProviderSettings(fake.kind, zone, fake.url, token_env=token_env, signal=signal)
    http = Http(fake.kind, sleep=sleeps.append, clock=lambda: 1_800_000_000.0, rng=random.Random(1))
    return client(settings, http).fetch(since, until)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_TOKEN", "s3cret")


@pytest.fixture
def uk() -> Iterator[FakeProvider]:
    with serving(FakeProvider("uk-carbon-intensity")) as fake:
        yield fake


def by_hour(result: FetchResult) -> dict[datetime, tuple[float, bool]]:
    return {p.hour_start: (p.intensity_g_per_kwh, p.measured) for p in result.points}


def assert_consecutive_hours(result: FetchResult, since: datetime, until: datetime) -> None:
    hours = [p.hour for p in result.points]
    assert hours == list(range(epoch_hour(since), epoch_hour(until)))


# --- NESO Carbon Intensity ----------------------------------------------------------


def test_uk_half_hours_become_hours_across_the_london_clock_change(
    uk: FakeProvider, sleeps: list[float]
) -> None:
    # 2026-03-28 to 2026-04-17: 20 days, so two requests (14 days, then 6). London's
    # clocks go forward on 2026-03-29 at 01:00 UTC: every UTC hour is still there once.
    since, until = utc(2026, 3, 28), utc(2026, 4, 17)
    result = fetch(uk, since, until, sleeps, token_env=None, zone="national")
    assert result.error is None
    assert_consecutive_hours(result, since, until)
    assert [r.path for r in uk.requests] == [
        "/intensity/2026-03-28T00:00Z/2026-04-11T00:00Z",
        "/intensity/2026-04-11T00:00Z/2026-04-17T00:00Z",
    ]
    got = by_hour(result)
    # 10:00–10:30 actual 100 + 240 = 340; 10:30–11:00 not metered: forecast 340 + 6 + 7.
    assert got[utc(2026, 3, 28, 10)] == (pytest.approx((340 + 353) / 2), False)
    # 01:00–02:00 UTC on the day the clocks change: actuals 124 and 130.
    assert got[utc(2026, 3, 29, 1)] == (pytest.approx(127.0), True)
    assert {p.provider for p in result.points} == {"uk-carbon-intensity"}


def test_uk_autumn_clock_change_and_a_gap_of_several_hours(
    uk: FakeProvider, sleeps: list[float]
) -> None:
    # London's clocks go back on 2026-10-25 at 01:00 UTC (25 local hours that day).
    gap = {epoch_hour(utc(2026, 10, 25, h)) for h in range(3, 8)}
    uk.gap_hours = gap
    since, until = utc(2026, 10, 24), utc(2026, 10, 27)
    result = fetch(uk, since, until, sleeps, token_env=None, zone="national")
    hours = {p.hour for p in result.points}
    assert hours == set(range(epoch_hour(since), epoch_hour(until))) - gap
    assert len(result.points) == 72 - 5


def test_uk_region_has_forecasts_only(uk: FakeProvider, sleeps: list[float]) -> None:
    result = fetch(uk, utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), sleeps, token_env=None, zone="13")
    assert (
        uk.requests[0].path == "/regional/intensity/2026-05-01T10:00Z/2026-05-01T12:00Z/regionid/13"
    )
    # Forecasts 340 + 7 and 346 + 7 for 10:00; 364 + 7 and 370 + 7 for 11:00.
    assert [(p.intensity_g_per_kwh, p.measured) for p in result.points] == [
        (pytest.approx(350.0), False),
        (pytest.approx(374.0), False),
    ]


def test_uk_region_in_the_docs_list_form(uk: FakeProvider, sleeps: list[float]) -> None:
    # The CI-docs example wraps the region object in a list; the live API does not.
    slot = {"from": "2026-05-01T10:00Z", "to": "2026-05-01T10:30Z", "intensity": {"forecast": 163}}
    body = json.dumps({"data": [{"regionid": 13, "shortname": "London", "data": [slot]}]})
    uk.fail_next = [(200, {"Content-Type": "application/json"}, body.encode())]
    result = fetch(uk, utc(2026, 5, 1, 10), utc(2026, 5, 1, 11), sleeps, token_env=None, zone="13")
    assert [(p.intensity_g_per_kwh, p.measured) for p in result.points] == [(163.0, False)]


def test_429_waits_retry_after_and_5xx_backs_off(uk: FakeProvider, sleeps: list[float]) -> None:
    uk.fail_next = [
        (429, {"Retry-After": "7"}, b'{"error": "slow down"}'),
        (503, {}, b"busy"),
        (429, {"Retry-After": "Wed, 15 Jan 2027 08:00:30 GMT"}, b"{}"),
    ]
    result = fetch(uk, utc(2026, 5, 1), utc(2026, 5, 2), sleeps, token_env=None, zone="national")
    assert result.error is None and len(result.points) == 24
    # 7 s as asked; attempt 2's backoff is 1 s × 2 less up to half the jitter; the date is
    # 30 s after the test clock's 1,800,000,000 s (2027-01-15 08:00:00 UTC).
    assert sleeps[0] == 7.0 and 1.0 <= sleeps[1] <= 2.0 and sleeps[2] == pytest.approx(30.0)
    assert len(uk.requests) == 4


def test_retries_used_up_return_the_earlier_windows(uk: FakeProvider, sleeps: list[float]) -> None:
    # The first 14-day window comes back; every try at the second gets 500.
    result_first = 14 * 24
    original = uk.answer

    def failing_second(
        path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if "2026-01-15" in path.split("/")[2]:
            return 500, {}, b"down"
        return original(path, query, headers)

    uk.answer = failing_second  # type: ignore[method-assign]
    result = fetch(uk, utc(2026, 1, 1), utc(2026, 1, 20), sleeps, token_env=None, zone="national")
    assert isinstance(result.error, TemporaryError)
    assert "HTTP 500" in str(result.error)
    assert len(result.points) == result_first
    assert len(sleeps) == 4  # five attempts


# --- Electricity Maps ---------------------------------------------------------------


@pytest.fixture
def em() -> Iterator[FakeProvider]:
    with serving(FakeProvider("electricitymaps")) as fake:
        yield fake


def test_electricitymaps_splits_at_240_hours_and_flags_estimates(
    em: FakeProvider, sleeps: list[float]
) -> None:
    since, until = utc(2026, 3, 1), utc(2026, 3, 26)  # 600 h: 240 + 240 + 120
    result = fetch(em, since, until, sleeps, zone="DE")
    assert result.error is None
    assert_consecutive_hours(result, since, until)
    assert [r.query["start"][0] for r in em.requests] == [
        "2026-03-01T00:00:00.000Z",
        "2026-03-11T00:00:00.000Z",
        "2026-03-21T00:00:00.000Z",
    ]
    assert all(r.headers["auth-token"] == "s3cret" for r in em.requests)
    assert em.requests[0].query["emissionFactorType"] == ["lifecycle"]
    # 2026-03-28 10:00 is epoch hour 492970, a multiple of 5: the fake marks it estimated.
    got = by_hour(fetch(em, utc(2026, 3, 28, 10), utc(2026, 3, 28, 12), sleeps, zone="DE"))
    assert got == {utc(2026, 3, 28, 10): (340.0, False), utc(2026, 3, 28, 11): (364.0, True)}


def test_electricitymaps_null_hours_are_left_out(em: FakeProvider, sleeps: list[float]) -> None:
    em.gap_hours = {epoch_hour(utc(2026, 3, 2, h)) for h in range(4, 10)}
    result = fetch(em, utc(2026, 3, 2), utc(2026, 3, 3), sleeps, zone="DE", signal="direct")
    assert len(result.points) == 24 - 6
    assert em.requests[0].query["emissionFactorType"] == ["direct"]
    assert {p.signal for p in result.points} == {"direct"}


def test_electricitymaps_401_names_the_setting_and_keeps_what_came(
    em: FakeProvider, sleeps: list[float]
) -> None:
    original = em.answer
    calls: list[int] = []

    def revoke_after_first(
        path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        calls.append(1)
        if len(calls) > 1:
            em.credential = "revoked"
        return original(path, query, headers)

    em.answer = revoke_after_first  # type: ignore[method-assign]
    result = fetch(em, utc(2026, 3, 1), utc(2026, 3, 26), sleeps, zone="DE")
    assert isinstance(result.error, Unauthorized)
    assert "electricitymaps" in str(result.error) and "token_env" in str(result.error)
    assert len(result.points) == 240 and not sleeps  # no retry on 401


def test_missing_credential_is_named(em: FakeProvider, sleeps: list[float], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="NO_SUCH_VARIABLE"):
        fetch(em, utc(2026, 3, 1), utc(2026, 3, 2), sleeps, token_env="NO_SUCH_VARIABLE")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    settings = ProviderSettings("electricitymaps", "DE", em.url, token_file=str(token_file))
    result = client(settings, Http("electricitymaps", sleep=sleeps.append)).fetch(
        utc(2026, 3, 1), utc(2026, 3, 1, 3)
    )
    assert len(result.points) == 3


# --- WattTime -----------------------------------------------------------------------


@pytest.fixture
def wt(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("GRID_TOKEN", "ada:s3cret")
    with serving(FakeProvider("watttime", credential="ada:s3cret")) as fake:
        yield fake


def test_watttime_five_minutes_average_to_hours(wt: FakeProvider, sleeps: list[float]) -> None:
    since, until = utc(2026, 3, 1), utc(2026, 4, 10)  # 40 days: 30 + 10
    result = fetch(wt, since, until, sleeps, zone="CAISO_NORTH")
    assert result.error is None
    assert_consecutive_hours(result, since, until)
    data_calls = [r for r in wt.requests if r.path == "/v3/historical"]
    assert [(r.query["start"][0], r.query["end"][0]) for r in data_calls] == [
        ("2026-03-01T00:00:00+00:00", "2026-03-30T23:59:59+00:00"),
        ("2026-03-31T00:00:00+00:00", "2026-04-09T23:59:59+00:00"),
    ]
    assert data_calls[0].query["signal_type"] == ["co2_aoer"]
    assert wt.tokens_issued == 1
    # 10:00–11:00: twelve 5-minute values 340 … 351 (sent in lbs/MWh), mean 345.5; epoch
    # hour 492970 is not a multiple of 7, so none imputed.
    got = by_hour(fetch(wt, utc(2026, 3, 28, 10), utc(2026, 3, 28, 11), sleeps, zone="X"))
    value, measured = got[utc(2026, 3, 28, 10)]
    assert value == pytest.approx(345.5, abs=1e-5) and measured


def test_watttime_logs_in_again_when_the_token_expires(
    wt: FakeProvider, sleeps: list[float]
) -> None:
    settings = ProviderSettings("watttime", "CAISO_NORTH", wt.url, token_env="GRID_TOKEN")
    grid = client(settings, Http("watttime", sleep=sleeps.append))
    assert len(grid.fetch(utc(2026, 3, 1), utc(2026, 3, 1, 2)).points) == 2
    wt.expire_token()
    again = grid.fetch(utc(2026, 3, 1, 2), utc(2026, 3, 1, 4))
    assert again.error is None and len(again.points) == 2
    assert wt.tokens_issued == 2


def test_watttime_bad_password_stops(
    wt: FakeProvider, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRID_TOKEN", "ada:wrong")
    result = fetch(wt, utc(2026, 3, 1), utc(2026, 3, 2), sleeps, zone="CAISO_NORTH")
    assert isinstance(result.error, Unauthorized) and result.error.status == 403
    assert "watttime" in str(result.error) and "token_file" in str(result.error)
    assert result.points == []


# --- ENTSO-E ------------------------------------------------------------------------


@pytest.fixture
def entsoe() -> Iterator[FakeProvider]:
    with serving(FakeProvider("entsoe")) as fake:
        yield fake


def test_entsoe_generation_by_fuel_across_the_brussels_clock_changes(
    entsoe: FakeProvider, sleeps: list[float]
) -> None:
    # Each hour: gas 600 MWh × 490 + nuclear 400 × 12 + wind (0, 0, 200, 200 by quarter:
    # 100 MWh) × 11 = 299,900 g per 1,100 MWh = 272.6363… g/kWh. The 250 MW pumping series
    # is consumption and must not count (it would give 226.6).
    for since, until in (
        (utc(2026, 3, 28), utc(2026, 3, 31)),
        (utc(2026, 10, 24), utc(2026, 10, 27)),
    ):
        result = fetch(entsoe, since, until, sleeps, zone="10YBE----------2")
        assert result.error is None
        assert_consecutive_hours(result, since, until)
        assert {round(p.intensity_g_per_kwh, 9) for p in result.points} == {
            round(299_900 / 1100, 9)
        }
    query = entsoe.requests[0].query
    assert query["periodStart"] == ["202603280000"] and query["documentType"] == ["A75"]


def test_entsoe_direct_factors_gap_and_no_data(entsoe: FakeProvider, sleeps: list[float]) -> None:
    entsoe.gap_hours = {epoch_hour(utc(2026, 6, 1, h)) for h in range(2, 6)}
    result = fetch(entsoe, utc(2026, 6, 1), utc(2026, 6, 2), sleeps, zone="BE", signal="direct")
    # Direct: gas 600 × 370 / 1,100 MWh = 201.8181…; nuclear and wind 0.
    assert len(result.points) == 20
    assert result.points[0].intensity_g_per_kwh == pytest.approx(600 * 370 / 1100)
    entsoe.gap_hours = set(range(epoch_hour(utc(2026, 7, 1)), epoch_hour(utc(2026, 7, 2))))
    empty = fetch(entsoe, utc(2026, 7, 1), utc(2026, 7, 2), sleeps, zone="BE")
    assert empty.error is None and empty.points == []  # Acknowledgement 999: no data


def test_entsoe_bad_token(
    entsoe: FakeProvider, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRID_TOKEN", "wrong")
    result = fetch(entsoe, utc(2026, 6, 1), utc(2026, 6, 2), sleeps, zone="BE")
    assert isinstance(result.error, Unauthorized) and "entsoe" in str(result.error)


# --- EIA ----------------------------------------------------------------------------


@pytest.fixture
def eia() -> Iterator[FakeProvider]:
    with serving(FakeProvider("eia")) as fake:
        yield fake


def test_eia_pages_hour_ending_periods_across_us_clock_changes(
    eia: FakeProvider, sleeps: list[float]
) -> None:
    eia.page_rows = 1000
    # US clocks change on 2026-03-08 and 2026-11-01; EIA's hourly periods are UTC.
    for since, until in (
        (utc(2026, 3, 7), utc(2026, 3, 10)),
        (utc(2026, 10, 31), utc(2026, 11, 3)),
    ):
        eia.requests.clear()
        result = fetch(eia, since, until, sleeps, zone="CISO")
        assert result.error is None
        assert_consecutive_hours(result, since, until)
        # 72 hours × 5 rows = 360 rows: one page; the first period is the first hour's end.
        assert eia.requests[0].query["start"] == [
            (since + timedelta(hours=1)).strftime("%Y-%m-%dT%H")
        ]
    got = by_hour(fetch(eia, utc(2026, 3, 8, 7), utc(2026, 3, 8, 9), sleeps, zone="CISO"))
    # 07:00–08:00 ends at epoch hour 492488 (≡ 0 mod 4): no wind; gas 600 × 490 +
    # nuclear 400 × 12 over 1,000 MWh = 298.8. 08:00–09:00: wind 100 × 11 too → 272.63….
    assert got == {
        utc(2026, 3, 8, 7): (pytest.approx(298.8), True),
        utc(2026, 3, 8, 8): (pytest.approx(299_900 / 1100), True),
    }
    eia.requests.clear()
    long = fetch(eia, utc(2026, 1, 1), utc(2026, 1, 21), sleeps, zone="CISO")
    # 480 hours × 5 rows = 2,400 rows in pages of 1,000: three requests.
    assert len(long.points) == 480
    assert [r.query["offset"][0] for r in eia.requests] == ["0", "1000", "2000"]
    assert all(r.query["api_key"] == ["s3cret"] for r in eia.requests)


def test_eia_invalid_key(
    eia: FakeProvider, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRID_TOKEN", "wrong")
    result = fetch(eia, utc(2026, 6, 1), utc(2026, 6, 2), sleeps, zone="CISO")
    assert isinstance(result.error, Unauthorized) and "API_KEY_INVALID" in str(result.error)
    assert "s3cret" not in str(result.error) and "wrong" not in str(result.error)


def test_points_feed_an_hourly_series(uk: FakeProvider, sleeps: list[float]) -> None:
    result = fetch(
        uk, utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), sleeps, token_env=None, zone="national"
    )
    series = result.series(200.0, "london")
    # 10:00–11:00 actuals 340 and 346 (no slot unmetered: epoch half-hours 985,940 and
    # 985,941 are not multiples of 11) → 343; 11:00–12:00 → 367; 12:00 on: fallback 200.
    assert series.at(utc(2026, 5, 1, 10, 30)) == pytest.approx(343.0)
    assert series.integral(utc(2026, 5, 1, 11), utc(2026, 5, 1, 13)) == pytest.approx(
        3600 * 367.0 + 3600 * 200.0
    )
