"""The config against the running Slurm cluster, for ``jobcarbon config check``.

A config can be valid and still not fit its cluster: a ClusterName spelt another way
(every job then fails as an unknown cluster), a GPU partition no hardware rule names
(its jobs are reported, not accounted), or accounting that records no GPUs at all
(``AccountingStorageTRES`` without ``gres/gpu``). Where ``scontrol`` reaches a
controller these are asked of it; where it does not, nothing is said.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime

from ...config import Config
from ...errors import FactorError
from ...records import JobRecord, JobState

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _output(run: Runner, *command: str) -> str | None:
    try:
        result = run(list(command), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return str(result.stdout) if result.returncode == 0 else None


def slurm_settings(run: Runner = subprocess.run) -> dict[str, str] | None:
    """``scontrol show config`` as key → value; None where no controller answers."""
    printed = _output(run, "scontrol", "show", "config")
    if printed is None:
        return None
    settings = {}
    for line in printed.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.strip()] = value.strip()
    return settings


def gpu_partitions(run: Runner = subprocess.run) -> list[tuple[str, str, str | None]]:
    """(partition, node list, GPU type or None) for each kind of GPU in a partition."""
    printed = _output(run, "sinfo", "-h", "-o", "%R|%N|%G") or ""
    found = []
    for line in printed.splitlines():
        partition, _, rest = line.partition("|")
        nodes, _, gres = rest.partition("|")
        for item in gres.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == "gpu":
                kind = parts[1] if len(parts) == 3 else None
                found.append((partition, nodes, kind))
    return sorted(set(found), key=lambda f: (f[0], f[1], f[2] or ""))


def compare(
    config: Config,
    settings: dict[str, str],
    partitions: list[tuple[str, str, str | None]],
) -> list[str]:
    """What in ``config`` does not fit the cluster that ``settings`` and ``partitions``
    describe; one sentence each, saying what to change."""
    warnings = []
    name = settings.get("ClusterName", "")
    if name and name not in config.clusters:
        warnings.append(
            f"Slurm's ClusterName is {name!r}, but the config's clusters are "
            f"{', '.join(config.clusters)}: every job of it would fail as an unknown "
            f"cluster; name the clusters entry {name!r}"
        )
    tres = settings.get("AccountingStorageTRES", "").split(",")
    if partitions and "gres/gpu" not in tres:
        warnings.append(
            f"AccountingStorageTRES ({','.join(tres)}) has no gres/gpu: accounting records "
            "no GPUs, so GPU jobs count as CPU jobs; add gres/gpu and the typed names "
            "(slurm/install.sh prints the line)"
        )
    cluster = config.clusters.get(name)
    if cluster is None:
        return warnings
    moment = datetime.now(UTC)
    for partition, nodes, kind in partitions:
        typed = kind if kind and f"gres/gpu:{kind}" in tres else None
        job = JobRecord(
            name,
            "check",
            "",
            "",
            partition,
            JobState.COMPLETED,
            moment,
            moment,
            moment,
            gpu_count=1,
            gpu_model=typed,
            nodes=nodes,
        )
        try:
            known = cluster.power_profile(job).gpu_tdp_w > 0
        except FactorError:
            known = False
        if not known:
            warnings.append(
                f"partition {partition!r} has GPUs ({kind or 'untyped'}, nodes {nodes}) "
                f"that no hardware rule of clusters.{name} names: its GPU jobs would be "
                f"reported, not accounted; add a rule (match: {{partition: {partition}}}, "
                "gpu_model: ...)"
            )
    return warnings
