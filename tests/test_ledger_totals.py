"""The ledger's totals per label set (schema v13): the net equals the jobs rows' sum
after every batch, and what was added and what was removed never decrease, whatever
the batches do (new jobs, re-accounting up and down, a job moving label sets, a
placeholder row replaced by its job's own, a recompute). On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcarbon.ledger import SCHEMA_VERSION, Aggregate, Ledger
from jobcarbon.ledger.dialect import COUNTED
from jobcarbon.records import JobState
from tests.test_ledger import accounted, back_to_v12, placeholder


def jobs_sums(ledger: Ledger) -> dict[tuple[str, ...], tuple[float, ...]]:
    """Each label set's sums over the jobs rows, straight from the jobs table."""
    sql = (
        "SELECT cluster, \"user\", project, partition, COALESCE(gpu_model, ''), state, method, "
        + ", ".join(COUNTED.values())
        + " FROM jobs GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    return {tuple(row[:7]): tuple(row[7:]) for row in ledger._query(sql, [])}


def by_labels(ledger: Ledger) -> dict[tuple[str, ...], Aggregate]:
    return {a.labels: a for a in ledger.aggregates()}


def check(
    ledger: Ledger, before: dict[tuple[str, ...], Aggregate]
) -> dict[tuple[str, ...], Aggregate]:
    """The totals now agree with the jobs rows and grew from ``before``; returns them."""
    now = by_labels(ledger)
    sums = jobs_sums(ledger)
    for labels, total in now.items():
        expected = sums.get(labels, (0,) * len(COUNTED))
        for column, value in zip(COUNTED, expected, strict=True):
            assert getattr(total, column) == pytest.approx(value, abs=1e-9), (labels, column)
            added, removed = getattr(total, f"{column}_added"), getattr(total, f"{column}_removed")
            assert added - removed == pytest.approx(value, abs=1e-9), (labels, column)
            if labels in before:
                assert added >= getattr(before[labels], f"{column}_added"), (labels, column)
                assert removed >= getattr(before[labels], f"{column}_removed"), (labels, column)
    assert set(before) <= set(now)  # a label set, once served, stays
    assert set(sums) <= set(now)
    return now


def test_mixed_batches_keep_net_equal_to_the_jobs_and_the_rest_growing(
    ledger_location: str | Path,
) -> None:
    batches = [
        [accounted("1", 100.0), accounted("2", 40.0), placeholder("50")],
        [accounted("1", 160.0), accounted("3", 10.0)],  # 1 re-accounted up
        [accounted("1", 60.0), accounted("2", 40.0, state=JobState.FAILED)],  # down; 2 moves
        # the array task's own row replaces its placeholder (keyed by its JobIDRaw)
        [accounted("49_1", 30.0, job_id_raw="50")],
        [accounted("2", 40.0), accounted("3", 5.0, user="bob")],  # 2 moves back; 3 to bob
        [accounted("1", 60.0)],  # unchanged: no change at all
    ]
    with Ledger(ledger_location) as ledger:
        seen: dict[tuple[str, ...], Aggregate] = {}
        for batch in batches:
            ledger.write(batch)
            seen = check(ledger, seen)
        completed = seen[("c1", "alice", "proj", "gpu", "X", "completed", "estimated")]
        # co2e_g of alice's completed jobs, batch by batch (net, its rise, its fall):
        # 1: 100 + 40 = 140 (+140); 2: 160 + 40 + 10 = 210 (+70); 3: 60 + 10 = 70 (-140);
        # 4: + 30 (the task) = 100 (+30); 5: + 40 (job 2 back) - 10 (job 3 to bob) = 130 (+30)
        assert completed.co2e_g == pytest.approx(130.0)
        assert completed.co2e_g_added == pytest.approx(140 + 70 + 30 + 30)
        assert completed.co2e_g_removed == pytest.approx(140.0)
        # jobs: 1: 2; 2: 3 (+1); 3: 2 (-1); 4: 3 (+1); 5: 3 (+1 -1 nets to 0 in the batch)
        assert (completed.jobs, completed.jobs_added, completed.jobs_removed) == (3, 4, 1)
        # the placeholder's label set (no partition) lost its one job: served at 1 - 1
        gone = seen[("c1", "alice", "proj", "", "X", "completed", "estimated")]
        assert (gone.jobs, gone.jobs_added, gone.jobs_removed) == (0, 1, 1)
        assert gone.co2e_g_removed == pytest.approx(100.0)


def test_a_recompute_batch_lowers_the_net_and_counts_the_fall_removed(
    ledger_location: str | Path,
) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted("1", 100.0), accounted("2", 100.0)])
        before = by_labels(ledger)
        rows = list(ledger.job_rows())
        # what `ledger recompute` writes: job rows with new footprints, usage kept
        with ledger.writing("recompute "):
            changed = ledger.replace_footprints([_with_co2e(r, 25.0) for r in rows])
        assert changed == 2
        (after,) = check(ledger, before).values()
        # 200 g net before; each job to 25: 50 net, 150 removed, 200 added as before
        assert (after.co2e_g, after.co2e_g_added, after.co2e_g_removed) == pytest.approx(
            (50.0, 200.0, 150.0)
        )
        assert (after.jobs, after.jobs_added, after.jobs_removed) == (2, 2, 0)


def _with_co2e(row: tuple[object, ...], co2e_g: float) -> tuple[object, ...]:
    """A job row of ``job_rows`` (JOB_COLUMNS, recorded_at, then usage) with its
    location-based CO2e set, as ``replace_footprints`` takes it."""
    from jobcarbon.ledger.rows import JOB_COLUMNS

    job = list(row[: len(JOB_COLUMNS) + 1])
    job[JOB_COLUMNS.index("co2e_g")] = co2e_g
    return tuple(job)


def test_v12_totals_migrate_to_added_at_the_net_and_nothing_removed(
    ledger_location: str | Path,
) -> None:
    with Ledger(ledger_location) as ledger:
        ledger.write([accounted("1", 100.0), accounted("2", 40.0, state=JobState.FAILED)])
        back_to_v12(ledger)
    with Ledger(ledger_location) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION >= 13  # the totals came with v13
        totals = check(ledger, {})
        assert len(totals) == 2
        for total in totals.values():
            for column in COUNTED:
                assert getattr(total, f"{column}_added") == getattr(total, column)
                assert getattr(total, f"{column}_removed") == 0
        failed = totals[("c1", "alice", "proj", "gpu", "X", "failed", "estimated")]
        # accounted(): 1.5 kWh facility, 1.0 of it GPU energy: 0.5 kWh overhead
        assert (failed.co2e_market_g, failed.energy_overhead_kwh) == pytest.approx((40.0, 0.5))
        ledger.write([accounted("1", 20.0)])  # after the migration, a fall is counted
        (row,) = [t for t in by_labels(ledger).values() if t.state == "completed"]
        assert (row.co2e_g, row.co2e_g_removed) == pytest.approx((20.0, 80.0))
