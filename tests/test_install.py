"""slurm/install.sh and the guide's services, run as written on a real Slurm cluster.

The cluster (tests/support/slurm_cluster.py) starts with a site epilog of its own. install.sh
installs into a scratch root (``--root``: every path it writes names that root), with
the venv made from the system Python. The test applies the slurm.conf lines it prints,
then starts the collector and the exporter as the units have them: their ExecStartPre
and ExecStart, as their User, with ProtectSystem=strict's intent (the whole file system
read-only but the unit's ReadWritePaths, in a mount namespace of their own). systemd
is not PID 1 here, so they run as plain processes (runuser); PrivateTmp is left out,
because the test cluster's slurm.conf lives under /tmp.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from jobcarbon.ledger import Ledger
from tests.conftest import ROOT
from tests.support.net import free_port, wait_for
from tests.support.slurm_cluster import CLUSTER, SlurmCluster, missing_components

INSTALL = ROOT / "slurm" / "install.sh"
SERVICE_USER = "slurm"  # the units' User=, Debian's SlurmUser


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
        check=False,
    )


def conf_lines(output: str) -> dict[str, str]:
    """The slurm.conf lines install.sh prints for the admin: key → whole line."""
    return {
        m.group(1): m.group(0).strip()
        for m in re.finditer(r"^  (EpilogSlurmctld|AccountingStorageTRES)=\S*$", output, re.M)
    }


def test_dry_run_merges_with_the_site_settings_and_changes_nothing(tmp_path: Path) -> None:
    slurm_conf = tmp_path / "slurm" / "slurm.conf"
    slurm_conf.parent.mkdir()
    slurm_conf.write_text(
        "ClusterName=ci\nEpilogSlurmctld=/etc/slurm/site-epilog\n"
        "AccountingStorageTRES=cpu,mem,gres/gpu:a100\n"
    )
    (slurm_conf.parent / "gres.conf").write_text(
        "NodeName=g[1-4] Name=gpu Type=a100 File=/dev/nvidia[0-3]\n"
        "NodeName=h[1-2] Name=gpu Type=h100 File=/dev/nvidia[0-7]\n"
        "NodeName=h[1-2] Name=mps Count=100\n"
    )
    root = tmp_path / "root"
    root.mkdir()
    result = install("--dry-run", "--root", str(root), "--slurm-conf", str(slurm_conf))
    assert result.returncode == 0, result.stderr
    libexec = root / "usr/local/libexec/jobcarbon"
    # the site's list kept in its order, gres/gpu and the missing type added once
    assert conf_lines(result.stdout) == {
        "EpilogSlurmctld": f"EpilogSlurmctld={libexec / 'epilog-slurmctld'}",
        "AccountingStorageTRES": (
            "AccountingStorageTRES=cpu,mem,gres/gpu:a100,gres/gpu,gres/gpu:h100"
        ),
    }
    assert "in place of EpilogSlurmctld=/etc/slurm/site-epilog, which it runs first" in (
        result.stdout
    )
    assert f"+ write {libexec / 'epilog-slurmctld'}" in result.stdout
    assert list(root.iterdir()) == []  # a dry run writes nothing
    assert slurm_conf.read_text().count("EpilogSlurmctld") == 1


@dataclass
class Installed:
    cluster: SlurmCluster
    root: Path  # install.sh's --root
    output: str
    site_log: Path  # where the site's own epilog notes each job

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    missing = missing_components()
    if missing:
        pytest.skip(f"no Slurm test cluster: missing {', '.join(missing)}")
    top = Path(tempfile.mkdtemp(prefix="jobcarbon-install-"))
    top.chmod(0o755)  # the service user and the job users must reach their files
    site_log = top / "site-epilog.log"
    site_epilog = top / "site-epilog"
    # the site's own EpilogSlurmctld: it notes the job, and fails (exit 3)
    site_epilog.write_text(f'#!/bin/sh\necho "$SLURM_JOB_ID" >> {site_log}\nexit 3\n')
    site_epilog.chmod(0o755)
    cluster = SlurmCluster(top / "cluster", epilog=site_epilog)
    try:
        cluster.start()
        root = top / "root"
        root.mkdir()
        result = install("--root", str(root), "--slurm-conf", str(cluster.root / "slurm.conf"))
        assert result.returncode == 0, result.stdout + result.stderr
        yield Installed(cluster, root, result.stdout, site_log)
    except Exception:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.integration
def test_install_chains_the_site_epilog_and_keeps_the_tres(installed: Installed) -> None:
    wrapper = installed.path("/usr/local/libexec/jobcarbon/epilog-slurmctld")
    assert conf_lines(installed.output) == {
        "EpilogSlurmctld": f"EpilogSlurmctld={wrapper}",
        # the test cluster's own line has both already: nothing to add
        "AccountingStorageTRES": "AccountingStorageTRES=gres/gpu,gres/gpu:a100",
    }
    assert "    (already set)" in installed.output
    text = wrapper.read_text()
    assert f"JOBCARBON_PREVIOUS_EPILOG='{installed.site_log.parent / 'site-epilog'}'" in text
    assert f"JOBCARBON_SPOOL='{installed.path('/var/spool/jobcarbon')}'" in text
    # the state directory and the spool belong to the service user, closed to others
    for directory in ("/var/lib/jobcarbon", "/var/spool/jobcarbon", "/var/spool/jobcarbon/new"):
        info = installed.path(directory).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (_uid(SERVICE_USER), 0o750), directory
    config = yaml.safe_load(installed.path("/etc/jobcarbon/config.yaml").read_text())
    ledger_dir = installed.path("/var/lib/jobcarbon")
    assert config["ledger"]["url"] == f"sqlite:///{ledger_dir}/ledger.db"


@pytest.mark.integration
def test_install_again_changes_nothing(installed: Installed) -> None:
    config = installed.path("/etc/jobcarbon/config.yaml")
    kept = config.read_text() + "# edited by the admin\n"
    config.write_text(kept)
    result = install(
        "--dry-run",
        "--root",
        str(installed.root),
        "--slurm-conf",
        str(installed.cluster.root / "slurm.conf"),
    )
    assert result.returncode == 0, result.stderr
    assert "+ write" not in result.stdout  # config, wrapper and units as they are
    assert "python3 -m venv" not in result.stdout  # the venv is there
    assert conf_lines(result.stdout) == conf_lines(installed.output)
    assert config.read_text() == kept


@pytest.mark.integration
def test_typed_gpus_from_sinfo_without_gres_conf(installed: Installed, tmp_path: Path) -> None:
    """A slurm.conf with no gres.conf beside it: the GPU types come from the live sinfo."""
    tmp_path.chmod(0o755)
    copy = tmp_path / "slurm.conf"
    copy.write_text(
        (installed.cluster.root / "slurm.conf")
        .read_text()
        .replace("AccountingStorageTRES=gres/gpu,gres/gpu:a100", "AccountingStorageTRES=cpu,mem")
    )
    result = install(
        "--dry-run",
        "--root",
        str(installed.root),
        "--slurm-conf",
        str(copy),
        env=installed.cluster.env,
    )
    assert result.returncode == 0, result.stderr
    assert conf_lines(result.stdout)["AccountingStorageTRES"] == (
        "AccountingStorageTRES=cpu,mem,gres/gpu,gres/gpu:a100"
    )


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _unit(path: Path) -> dict[str, list[str]]:
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    values: dict[str, list[str]] = {}
    text = path.read_text()
    parser.read_string(text)
    for line in text.splitlines():  # repeated keys (ExecStart=, Environment=) in order
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def sandboxed(unit: dict[str, list[str]], command: str, extra_env: dict[str, str]) -> list[str]:
    """``command`` as the unit runs it: as its User, with only its Environment (and
    ``extra_env``), on a file system read-only but for its ReadWritePaths
    (ProtectSystem=strict) in a mount namespace of its own."""
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    writable = " ".join(unit.get("ReadWritePaths", [])).split()
    env = [*unit.get("Environment", []), *(f"{k}={v}" for k, v in extra_env.items())]
    script = "".join(f"mount --bind {p} {p} && " for p in writable)
    script += "mount -o remount,bind,ro / && exec setpriv --no-new-privs "
    script += f"runuser -u {unit['User'][0]} -- env -i PATH=/usr/bin:/bin "
    script += " ".join(env) + " " + command
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


@pytest.mark.integration
def test_the_guide_on_a_real_cluster(installed: Installed) -> None:
    cluster = installed.cluster
    # apply the lines install.sh printed, in place of the site's, as the guide says
    slurm_conf = cluster.root / "slurm.conf"
    lines = conf_lines(installed.output)
    text = slurm_conf.read_text()
    for key, line in lines.items():
        text = re.sub(rf"^{key}=.*$", line, text, flags=re.M)
    slurm_conf.write_text(text)
    cluster.run("scontrol", "reconfigure")
    # the admin's edit: the cluster by its ClusterName, its GPUs, the exporter's port
    config_file = installed.path("/etc/jobcarbon/config.yaml")
    config = yaml.safe_load(config_file.read_text())
    site = next(iter(config["sites"]))
    config["clusters"] = {
        CLUSTER: {
            "site": site,
            "hardware": [{"match": {"gpu_type": "a100"}, "gpu_model": "A100 SXM4 80 GB"}],
        }
    }
    port = free_port()
    config["exporter"]["listen"] = f"127.0.0.1:{port}"
    config["slurm"].update(poll_interval_s=1, sweep_interval_s=2, sweep_first_lookback_s=3600)
    config_file.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [
            str(installed.path("/usr/local/bin/jobcarbon")),
            "--config",
            str(config_file),
            "config",
            "check",
        ],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    units = installed.path("/etc/systemd/system")
    collector = _unit(units / "jobcarbon-collector.service")
    exporter = _unit(units / "jobcarbon-exporter.service")
    assert collector["User"] == exporter["User"] == [SERVICE_USER]
    slurm_env = {"SLURM_CONF": str(slurm_conf), "TZ": "UTC"}
    (pre,) = collector["ExecStartPre"]
    migrated = subprocess.run(
        sandboxed(collector, pre, slurm_env), capture_output=True, text=True, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    log_dir = cluster.root.parent
    processes = []
    for name, unit in (("collector", collector), ("exporter", exporter)):
        (start,) = unit["ExecStart"]
        log = (log_dir / f"{name}.log").open("w")
        processes.append(
            subprocess.Popen(
                sandboxed(unit, start, slurm_env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        ids = [
            cluster.sbatch("alice", "--gres=gpu:a100:1", "-c", "1", "--mem=50", "--wrap", "sleep 1")
        ]
        ids += [
            cluster.sbatch(user, "-c", "1", "--mem=10", "--wrap", "true")
            for user in ["alice", "bob"] * 10
        ]
        cluster.wait_idle()
        ledger_file = installed.path("/var/lib/jobcarbon/ledger.db")

        def all_in() -> bool:
            with Ledger(ledger_file, migrate=False) as ledger:
                return {str(r["job_id"]) for r in ledger.jobs()} >= set(ids)

        wait_for("every job in the ledger", all_in, 120, 1.0)
        with Ledger(ledger_file, migrate=False) as ledger:
            rows = {str(r["job_id"]): r for r in ledger.jobs()}
        assert rows[ids[0]]["gpu_model"] == "A100 SXM4 80 GB"
        assert rows[ids[0]]["gpu_seconds"] > 0
        # the ledger and its WAL files: the service user's, nobody else's
        for suffix in ("", "-wal", "-shm"):
            info = Path(f"{ledger_file}{suffix}").stat()
            assert info.st_uid == _uid(SERVICE_USER), suffix
            assert stat.S_IMODE(info.st_mode) & 0o007 == 0, (suffix, oct(info.st_mode))
        # the site's own epilog ran for every job, first, and its failure was kept
        noted = installed.site_log.read_text().split()
        assert set(ids) <= set(noted)
        ctld_log = cluster.root / "log" / "slurmctld.log"

        def failures_logged() -> bool:  # slurmscriptd logs each once the script has ended
            logged = re.findall(
                r"JobId=(\d+) EpilogSlurmctld exit status 3:0", ctld_log.read_text()
            )
            return set(ids) <= set(logged)

        wait_for("slurmctld to log the site epilog's status", failures_logged, 30, 0.5)

        # the exporter, as the service user, serves the jobs
        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        wait_for("the exporter", lambda: _serves(scraped), 60, 0.5)
        metrics = scraped()
        assert f'jobcarbon_jobs_total{{cluster="{CLUSTER}"' in metrics
        assert 'jobcarbon_sweep_found_jobs_total{started="true"} 0.0' in metrics

        # a user can read neither the config nor the ledger; the messages say why and
        # what to change
        def as_alice(config: Path) -> subprocess.CompletedProcess[str]:
            command = installed.path("/usr/local/bin/jobcarbon")
            return subprocess.run(
                ["runuser", "-u", "alice", "--", str(command), "--config", str(config), "summary"],
                capture_output=True,
                text=True,
                check=False,
            )

        denied = as_alice(config_file)
        assert denied.returncode == 2, denied.stderr
        assert (
            f"cannot read the config {config_file}: Permission denied (running as alice; "
            f"{config_file} is root:slurm 0640): run it as root" in denied.stderr
        )
        readable = cluster.root.parent / "alice.yaml"
        shutil.copy(config_file, readable)
        readable.chmod(0o644)
        denied = as_alice(readable)
        assert denied.returncode == 4, denied.stderr
        assert (
            f"cannot open the ledger {ledger_file}: Permission denied (running as alice; "
            f"{ledger_file.parent} is slurm:slurm 0750): run it as slurm" in denied.stderr
        )
        assert "Traceback" not in denied.stderr

        # reload: a broken config is refused and the old one kept; the collector goes on
        good = config_file.read_text()
        config_file.write_text(good.replace(f"  {CLUSTER}:", "  cii:", 1) + "typo_key: 1\n")
        # as `systemctl reload` would, to the service's main process (not runuser's)
        main = subprocess.run(
            ["pgrep", "-s", str(processes[0].pid), "-u", SERVICE_USER, "-f", "slurm collect"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(main) == 1, main
        os.kill(int(main[0]), signal.SIGHUP)
        collector_log = log_dir / "collector.log"
        wait_for(
            "the refused reload",
            lambda: "config not reloaded" in collector_log.read_text(),
            30,
            0.5,
        )
        assert "typo_key: unknown key" in collector_log.read_text()
        config_file.write_text(good)
        later = cluster.sbatch("bob", "-c", "1", "--mem=10", "--wrap", "true")
        cluster.wait_idle()
        wait_for("the job after the refused reload", lambda: _in_ledger(ledger_file, later), 60)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        print((log_dir / "collector.log").read_text()[-3000:])


def _serves(scrape: object) -> bool:
    try:
        return bool(scrape())  # type: ignore[operator]
    except OSError:
        return False


def _in_ledger(ledger_file: Path, job: str) -> bool:
    with Ledger(ledger_file, migrate=False) as ledger:
        return job in {str(r["job_id"]) for r in ledger.jobs()}


def _jobcarbon_as(
    installed: Installed, user: str, config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    command = installed.path("/usr/local/bin/jobcarbon")
    return subprocess.run(
        ["runuser", "-u", user, "--", str(command), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=installed.cluster.env,
        timeout=120,
        check=False,
    )


def _config_copy(installed: Installed, where: Path, **changes: object) -> Path:
    config = yaml.safe_load(installed.path("/etc/jobcarbon/config.yaml").read_text())
    config.update(changes)
    path = where / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


@pytest.mark.integration
def test_config_check_compares_with_the_live_cluster(installed: Installed, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    config = yaml.safe_load(installed.path("/etc/jobcarbon/config.yaml").read_text())
    site = next(iter(config["sites"]))
    cases = [
        (
            {"cii": {"site": site}},
            "Slurm's ClusterName is 'testcl', but the config's clusters are cii: every job "
            "of it would fail as an unknown cluster; name the clusters entry 'testcl'",
        ),
        (
            # "a100" alone is ambiguous in the tables (A100 PCIe or SXM4): a rule must say
            {CLUSTER: {"site": site}},
            "partition 'gpu' has GPUs (a100, nodes localhost) that no hardware rule of "
            "clusters.testcl names",
        ),
    ]
    for clusters, expected in cases:
        config_file = _config_copy(installed, tmp_path, clusters=clusters)
        result = _jobcarbon_as(installed, "root", config_file, "config", "check")
        assert result.returncode == 1, result.stdout + result.stderr
        assert expected in " ".join(result.stderr.split())


@pytest.mark.integration
def test_collect_without_spool_access_says_so(installed: Installed) -> None:
    home = installed.root.parent / "alice"  # not under pytest's tmp_path: 0700 above it
    state = home / "state"
    state.mkdir(parents=True)
    shutil.chown(state, "alice")
    config = _config_copy(
        installed,
        home,
        ledger={"url": f"sqlite:///{state / 'ledger.db'}"},
        slurm={"spool_dir": str(installed.path("/var/spool/jobcarbon"))},
    )
    result = _jobcarbon_as(installed, "alice", config, "slurm", "collect", "--once")
    assert result.returncode == 3, result.stderr
    spool = installed.path("/var/spool/jobcarbon")
    assert (
        f"cannot create the spool directory {spool / 'new'}: Permission denied (running as "
        f"alice; {spool} is slurm:slurm 0750): run it as slurm"
    ) in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    # the ledger alice could create is readable by her and her group only
    assert stat.S_IMODE((state / "ledger.db").stat().st_mode) == 0o640
