"""Records → footprints → ledger: one bad record is reported and counted, the rest land."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcarbon.accounting import Accountant, ingest
from jobcarbon.config import parse_config
from jobcarbon.ledger import Ledger
from jobcarbon.records import JobRecord, JobState, RecordProblem
from tests.conftest import make_job, utc

CONFIG = {
    "sites": {"s1": {"pue": 1.5, "grid": {"intensity_g_per_kwh": 200}}},
    "clusters": {
        "c1": {
            "site": "s1",
            "hardware": [{"match": {"partition": "gpu"}, "gpu_model": "Tesla V100-PCIE-16GB"}],
        }
    },
}


def test_bad_records_are_counted_and_the_rest_written(tmp_path: Path) -> None:
    accountant = Accountant(parse_config(CONFIG))
    items: list[JobRecord | RecordProblem] = [
        make_job(job_id="1"),
        RecordProblem("dump line 3", "13 fields where the header has 12"),
        make_job(job_id="2", partition="mystery"),  # GPUs, but no rule and no model
        make_job(job_id="3", end_time=utc(2026, 10, 1, 9)),  # ends before it starts
        make_job(job_id="4", cluster="unknown-cluster"),
        make_job(job_id="5", partition="mystery", start_time=None, state=JobState.CANCELLED),
        make_job(job_id="6"),
    ]
    with Ledger(tmp_path / "l.db") as ledger:
        report = ingest(items, accountant, ledger, batch_size=2)
        assert (report.seen, report.written, report.failed) == (7, 3, 4)
        messages = [str(p) for p in report.problems]
        assert messages[0] == "dump line 3: 13 fields where the header has 12"
        assert messages[1].startswith("job c1/2:") and "partition 'mystery'" in messages[1]
        assert messages[2].startswith("job c1/3:") and "before start_time" in messages[2]
        assert "cluster 'unknown-cluster' is not in the config" in messages[3]
        rows = {r["job_id"]: r for r in ledger.jobs()}
        assert set(rows) == {"1", "5", "6"}
        # V100 PCIe 300 W × 1 h = 0.3 kWh × PUE 1.5 × 200 g/kWh = 90 g
        assert rows["1"]["co2e_g"] == pytest.approx(90.0)
        assert rows["1"]["gpu_model"] == "Tesla V100-PCIE-16GB"
        assert rows["5"]["co2e_g"] == 0.0
        assert rows["1"]["factors_version"] == accountant.factors_version
        again = ingest(items, accountant, ledger)
        assert (again.written, again.unchanged) == (0, 3)
