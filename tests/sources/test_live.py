"""The config against a Slurm cluster's own settings (``config check``).

Against the real test cluster in tests/test_install.py; here the cluster's answers are
given as scontrol and sinfo print them (Slurm 22.05), to cover what that cluster is not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from jobcarbon.cli import main
from jobcarbon.config import parse_config
from jobcarbon.ledger import Ledger
from jobcarbon.sources.slurm import live
from tests.support.config import make_config

CONFIG = make_config(
    cluster="ci",
    clusters={
        "ci": {"hardware": [{"match": {"partition": "gpu-a*"}, "gpu_model": "A100 SXM4 80 GB"}]}
    },
)


def printing(outputs: dict[str, str]) -> Any:
    """A runner whose commands print what ``outputs`` gives for their first word."""

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 0, outputs[command[0]], "")

    return run


def test_untyped_gpus_with_no_rule_and_tres_without_gpus_are_named() -> None:
    run = printing(
        {
            "scontrol": "ClusterName             = ci\nAccountingStorageTRES   = cpu,mem,energy\n",
            "sinfo": "gpu-a100|a[1-4]|gpu:4\ngpu-mi|m[1-2]|gpu:mi250:8(S:0-1)\ncpu|c[1-9]|(null)\n",
        }
    )
    settings = live.slurm_settings(run)
    assert settings is not None
    warnings = live.compare(parse_config(CONFIG), settings, live.gpu_partitions(run))
    assert len(warnings) == 2
    assert warnings[0].startswith("AccountingStorageTRES (cpu,mem,energy) has no gres/gpu")
    # gpu-a100 is named by its rule; gpu-mi's type is not accounted (no gres/gpu:mi250)
    assert warnings[1].startswith(
        "partition 'gpu-mi' has GPUs (mi250, nodes m[1-2]) that no hardware rule of "
        "clusters.ci names"
    )


def test_no_controller_no_comparison() -> None:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "slurm_load_ctl_conf error")

    assert live.slurm_settings(run) is None


def test_config_check_warns_about_a_ledger_everyone_can_read(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    ledger_file = tmp_path / "ledger.db"
    Ledger(ledger_file).close()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(make_config(cluster="ci", ledger={"url": "sqlite:///ledger.db"}))
    )
    runner = CliRunner()
    quiet = runner.invoke(main, ["--config", str(config), "config", "check"])
    assert quiet.exit_code == 0, quiet.output  # created 0640: no warning
    ledger_file.chmod(0o644)
    loud = runner.invoke(main, ["--config", str(config), "config", "check"])
    assert loud.exit_code == 1
    assert f"warning: {ledger_file} is readable by every user (root:root 0644" in loud.output
    assert f"chmod 0640 {ledger_file}" in loud.output
