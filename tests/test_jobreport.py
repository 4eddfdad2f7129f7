"""`jobcarbon job`'s report from sacct output, without a cluster: the runner is given.

The rows are written in the shape sacct 22.05 prints them for the test cluster
(tests/support/slurm_cluster.py; the real-cluster tests are in tests/test_job_command.py).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest

from jobcarbon.config import parse_config
from jobcarbon.errors import InputError
from jobcarbon.jobreport import read_job, render_text, to_json
from jobcarbon.sources.slurm.fields import DELIMITER, SACCT_FIELDS
from jobcarbon.sources.slurm.runner import Sacct
from tests.support.config import make_config, merged

CONFIG_DATA = make_config(
    site="lab",
    cluster="testcl",
    sites={"lab": {"grid": {"region": "FR"}}},
    clusters={
        "testcl": {"hardware": [{"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}]}
    },
    ledger={"url": "sqlite:////nonexistent/ledger.db"},
)
CONFIG = parse_config(CONFIG_DATA)
ROW = {
    "JobIDRaw": "7",
    "JobID": "7",
    "Cluster": "testcl",
    "User": "alice",
    "Account": "physics",
    "WCKey": "",
    "Partition": "gpu",
    "State": "COMPLETED",
    "Submit": "2026-12-02T03:00:00",
    "Start": "2026-12-02T03:00:00",
    "End": "2026-12-02T04:00:00",
    "ElapsedRaw": "3600",
    "AllocTRES": "billing=2,cpu=2,gres/gpu:a100=2,gres/gpu=2,mem=200M,node=1",
    "NNodes": "1",
    "NodeList": "localhost",
    "JobName": "train",
    "ConsumedEnergyRaw": "0",
    "TRESUsageInTot": "",
}
NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def sacct_printing(*rows: dict[str, str]) -> tuple[Sacct, list[list[str]]]:
    calls: list[list[str]] = []
    text = "\n".join(
        [DELIMITER.join(SACCT_FIELDS), *(DELIMITER.join(r[f] for f in SACCT_FIELDS) for r in rows)]
    )

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, text + "\n", "")

    return Sacct(run=run), calls


def test_a_finished_job_worked_by_hand() -> None:
    sacct, calls = sacct_printing(ROW)
    report = read_job(sacct, CONFIG, "7", "testcl", NOW)
    assert "--jobs=7" in calls[0] and "--duplicates" in calls[0]
    (run,) = report.runs
    fp = run.accounted.footprint
    # GPU 2 × 400 W × 1 h = 0.8 kWh; CPU 2 × 12 W = 0.024 kWh; memory 200 MB = 0.1953 GB
    # × 0.3725 W/GB = 0.0000728 kWh; IT 0.8240728 × PUE 1.2 = 0.98888736 kWh; × 56.039 g
    # (FR, tests/test_cli.py's table check) = 55.416 g
    assert fp.energy_gpu_kwh == pytest.approx(0.8)
    assert fp.energy_cpu_kwh == pytest.approx(0.024)
    assert fp.energy_facility_kwh == pytest.approx(0.98888736)
    assert fp.co2e_g == pytest.approx(0.98888736 * 56.039)
    text = render_text(report, CONFIG)
    for words in (
        "Job 7 (train) on testcl: user alice, project physics, partition gpu, state COMPLETED",
        "hardware:  2 × A100 SXM4 80 GB (400 W), 2 CPU core(s), 0.2 GB memory",
        "energy:    GPU 0.8 kWh, CPU 0.024 kWh, memory 0.0000728 kWh; × PUE 1.20 = 0.989 kWh",
        "CO2e:      55.4 g",
        "estimated (no energy counter, GPU utilisation unknown so GPUs at their TDP)",
        "`jobcarbon statement --jobs 7 --latex`",
        "Ledger: not reachable (no ledger at /nonexistent/ledger.db)",
        "embodied:  not configured for cluster testcl",
    ):
        assert words in text
    assert json.loads(to_json(report))["runs"][0]["embodied_source"] == "not configured"


def test_a_job_gets_its_gpus_share_of_the_node_it_ran_on() -> None:
    node = {"node_kg": 4677, "gpus_per_node": 8, "cores_per_node": 96, "lifetime_years": 4}
    config = parse_config(merged(CONFIG_DATA, {"clusters": {"testcl": {"embodied": node}}}))
    sacct, _ = sacct_printing(ROW)
    report = read_job(sacct, config, "7", "testcl", NOW)
    # 2 GPUs of 8 for 1 h: 4,677 × 2/8 × 1/(4 × 8,766) kg = 1,169.25 / 35,064 = 33.3461670 g;
    # low over 6 years: 1,169.25 / 52,596 = 22.2307780 g
    assert report.runs[0].accounted.footprint.co2e_embodied_g == pytest.approx(33.346167)
    text = render_text(report, config)
    assert (
        "embodied:  33.3 g CO2e (range 22.2 g to 33.3 g), the making of the hardware: the "
        "share of a node's for 2 GPU(s) over the run, from the site's own figure for its nodes"
    ) in text
    as_json = json.loads(to_json(report))["runs"][0]
    assert as_json["co2e_embodied_g_low"] == pytest.approx(22.230778)
    assert as_json["embodied_source"] == "site config"


def test_slurms_energy_on_a_rapl_cluster_is_the_cpu_and_memorys() -> None:
    rapl = parse_config(
        merged(CONFIG_DATA, {"clusters": {"testcl": {"slurm_energy_covers": "cpu_memory"}}})
    )
    sacct, _ = sacct_printing({**ROW, "ConsumedEnergyRaw": "180000"})
    (run,) = read_job(sacct, rapl, "7", "testcl", NOW).runs
    fp = run.accounted.footprint
    # RAPL's 180 kJ = 0.05 kWh are CPU and memory; the GPUs keep their 0.8 kWh estimate
    assert fp.method.value == "mixed"
    assert fp.energy_gpu_kwh == pytest.approx(0.8)
    assert fp.energy_cpu_kwh + fp.energy_memory_kwh == pytest.approx(0.05)


def test_a_running_job_is_counted_to_now_and_a_pending_one_is_nothing() -> None:
    running = {**ROW, "State": "RUNNING", "End": "Unknown"}
    pending = {**ROW, "JobIDRaw": "8", "JobID": "8", "State": "PENDING", "Start": "Unknown"}
    pending["End"] = "Unknown"
    sacct, _ = sacct_printing(running, pending)
    first, second = read_job(sacct, CONFIG, "7", "testcl", NOW).runs
    # 03:00 to NOW (05:00): twice the finished job's hour
    assert first.so_far and first.accounted.footprint.co2e_g == pytest.approx(
        2 * 0.98888736 * 56.039
    )
    assert second.so_far and second.accounted.footprint.co2e_g == 0
    assert '"so_far": true' in to_json(read_job(sacct, CONFIG, "7", "testcl", NOW))


def test_nothing_visible_is_refused_with_the_reason() -> None:
    sacct, _ = sacct_printing()
    with pytest.raises(InputError, match=r"job 9 is not in Slurm's accounting .*PrivateData=jobs"):
        read_job(sacct, CONFIG, "9", "testcl", NOW)
