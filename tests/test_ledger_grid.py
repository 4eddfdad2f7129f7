"""The ledger's grid table (schema v8) on SQLite and PostgreSQL: a corrected hour
replaces the older one, the sync's watermark only moves forward, and the points a
grid client returns are stored as they came."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobcarbon.ledger import SCHEMA_VERSION, GridHour, Ledger, copy_ledger
from jobcarbon.ledger.grid import watermark_name
from jobcarbon.sources.grid import GridPoint

# 2026-03-29 00:00 UTC is 492 984 hours after the epoch (20 541 days × 24).
H0 = 20_541 * 24


@pytest.fixture
def ledger(ledger_location: str | Path) -> Iterator[Ledger]:
    with Ledger(ledger_location) as opened:
        yield opened


def test_hours_are_upserted_and_the_watermark_moves_forward_only(ledger: Ledger) -> None:
    assert ledger.schema_version == SCHEMA_VERSION >= 8  # the grid table came with v8
    first = [
        GridPoint(H0, 210.5, "uk-carbon-intensity", "", True),
        GridPoint(H0 + 1, 190.0, "uk-carbon-intensity", "", False),  # estimated at first
    ]
    ledger.write_grid_hours("london", first, fetched_at=1_000, through_s=(H0 + 2) * 3600)
    ledger.write_grid_hours(
        "lyon", [GridPoint(H0, 55.0, "entsoe", "lifecycle", True)], 1_000, (H0 + 1) * 3600
    )
    # the hour measured later replaces the estimate; a late re-sync cannot rewind the mark
    corrected = [GridPoint(H0 + 1, 185.25, "uk-carbon-intensity", "", True)]
    ledger.write_grid_hours("london", corrected, fetched_at=2_000, through_s=(H0 + 1) * 3600)

    assert ledger.grid_hours("london", H0, H0 + 24) == [
        GridHour(H0, 210.5, "uk-carbon-intensity", "", True, 1_000),
        GridHour(H0 + 1, 185.25, "uk-carbon-intensity", "", True, 2_000),
    ]
    assert ledger.grid_hours("london", H0 + 1, H0 + 2) == [
        GridHour(H0 + 1, 185.25, "uk-carbon-intensity", "", True, 2_000)
    ]
    assert ledger.grid_hours("lyon", H0, H0 + 1) == [
        GridHour(H0, 55.0, "entsoe", "lifecycle", True, 1_000)
    ]
    assert ledger.watermark(watermark_name("london")) == (H0 + 2) * 3600
    assert ledger.watermark(watermark_name("lyon")) == (H0 + 1) * 3600


def test_ledger_copy_carries_the_grid_hours_with_their_fetch_times(
    tmp_path: Path, ledger_location: str | Path
) -> None:
    hours = [
        GridPoint(H0, 210.5, "uk-carbon-intensity", "", True),
        GridPoint(H0 + 1, 190.0, "uk-carbon-intensity", "", False),
    ]
    with Ledger(tmp_path / "source.db") as source, Ledger(ledger_location) as target:
        source.write_grid_hours("london", hours[:1], fetched_at=1_000, through_s=(H0 + 1) * 3600)
        source.write_grid_hours("london", hours[1:], fetched_at=2_000, through_s=(H0 + 2) * 3600)
        copy_ledger(source, target)
        assert target.grid_hours("london", H0, H0 + 2) == source.grid_hours("london", H0, H0 + 2)
        assert [h.fetched_at for h in target.grid_hours("london", H0, H0 + 2)] == [1_000, 2_000]
        assert target.watermark(watermark_name("london")) == (H0 + 2) * 3600
