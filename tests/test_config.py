"""Config validation: every problem at once, each with its key path and value."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from jobcarbon import config as config_module
from jobcarbon.config import load_config, parse_config
from jobcarbon.errors import ConfigError
from jobcarbon.records import JobState
from tests.conftest import make_job, utc
from tests.support.config import make_config, merged

EXAMPLE = resources.files("jobcarbon").joinpath("data", "config.example.yaml").read_text()


def problems(data: Any, base_dir: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir)
    return info.value.problems


def test_example_config_is_valid() -> None:
    config = parse_config(yaml.safe_load(EXAMPLE))
    assert set(config.clusters) == {"aurora"}
    assert config.site_factors["lyon"].intensity_g_per_kwh.at(utc(2026, 1, 1)) > 0


def _model_fields(model: type[pydantic.BaseModel], seen: set[str]) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        names.add(name)
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            for inner in [arg, *getattr(arg, "__args__", ())]:
                if (
                    isinstance(inner, type)
                    and issubclass(inner, pydantic.BaseModel)
                    and inner.__name__ not in seen
                ):
                    seen.add(inner.__name__)
                    names |= _model_fields(inner, seen)
    return names


def test_example_documents_every_config_key() -> None:
    documented = set(re.findall(r"^\s*#?\s*([a-z_]+):", EXAMPLE, re.MULTILINE))
    documented |= set(re.findall(r"[{,]\s*([a-z_]+):", EXAMPLE))
    missing = _model_fields(config_module.Config, set()) - documented
    assert not missing, f"keys missing from config.example.yaml: {sorted(missing)}"


def test_every_problem_is_reported_at_once_with_key_paths() -> None:
    data = make_config(
        sites={"s1": {"pue": 0.9, "grid": {"region": "atlantis"}, "pue_uncertainity": 0.1}},
        clusters={"c1": {"hardware": [{"gpu_model": "Z9000"}], "cpu_power_w_per_core": -3}},
        ledger={"url": "postgresql://bob:secret@db/jobs"},
    )
    found = problems(data)
    text = "\n".join(found)
    assert "sites.s1.pue: Input should be greater than or equal to 1 (got 0.9)" in text
    assert "sites.s1.grid: unknown region 'atlantis'" in text
    assert "sites.s1.pue_uncertainity: unknown key" in text
    assert "clusters.c1.hardware.0.gpu_model: unknown hardware 'Z9000'" in text
    assert "clusters.c1.cpu_power_w_per_core: Input should be greater than 0 (got -3)" in text
    assert "ledger.url: put no password in the URL" in text
    assert len(found) >= 6


def test_grid_needs_exactly_one_source() -> None:
    data = make_config(
        sites={"s1": {"pue": 1.2, "grid": {"intensity_g_per_kwh": 1, "region": "FR"}}}
    )
    assert any("exactly one of" in p and "intensity_g_per_kwh, region" in p for p in problems(data))


def test_cluster_naming_an_unknown_site() -> None:
    assert problems(make_config(clusters={"c1": {"site": "nowhere"}})) == [
        "clusters.c1.site: unknown site 'nowhere' (sites: s1)"
    ]


def test_the_watched_cluster_must_be_configured() -> None:
    assert problems(make_config(kubernetes={"cluster": "gpu-platfrom"})) == [
        "kubernetes.cluster: unknown cluster 'gpu-platfrom' (clusters: c1)"
    ]
    (bad_listen,) = problems(make_config(kubernetes={"health_listen": "9878"}))
    assert bad_listen.startswith("kubernetes.health_listen: String should match pattern")


def test_what_slurms_energy_covers_is_one_of_three_named_by_its_key() -> None:
    # a plugin's name is not a value: the error says which value each plugin takes
    assert problems(make_config(clusters={"c1": {"slurm_energy_covers": "rapl"}})) == [
        "clusters.c1.slurm_energy_covers: must be node (for AcctGatherEnergyType="
        "acct_gather_energy/ipmi, pm_counters or xcc), cpu_memory (for rapl) or gpu "
        "(for gpu) (got 'rapl')"
    ]
    (unhashable,) = problems(make_config(clusters={"c1": {"slurm_energy_covers": ["node"]}}))
    assert unhashable.startswith("clusters.c1.slurm_energy_covers: must be node")
    assert parse_config(make_config()).clusters["c1"].slurm_energy_covers == "node"


def test_secrets_are_refused_in_the_yaml() -> None:
    found = problems(make_config(mail={"password": "hunter2"}))
    assert any("mail: secrets never go in the YAML" in p for p in found)


def test_monthly_pue_keys_are_checked() -> None:
    data = make_config(
        sites={
            "s1": {"pue": 1.3, "pue_monthly": {"July": 1.4}, "grid": {"intensity_g_per_kwh": 10}}
        }
    )
    assert any("month keys must look like 2026-01" in p for p in problems(data))


def test_series_file_is_read_and_bad_lines_reported(tmp_path: Path) -> None:
    (tmp_path / "grid.csv").write_text(
        "timestamp,intensity_g_per_kwh\n2026-10-01T10:00:00Z,120\n"
        "2026-10-01T11:00:00Z,lots\n2026-10-01T12:30:00Z,90\n"
    )
    data = make_config(sites={"s1": {"pue": 1.2, "grid": {"series": {"path": "grid.csv"}}}})
    found = problems(data, tmp_path)
    assert any("grid.csv line 3" in p and "lots" in p for p in found)
    assert any("grid.csv line 4" in p and "start of an hour" in p for p in found)

    (tmp_path / "grid.csv").write_text("timestamp,intensity_g_per_kwh\n2026-10-01T10:00:00Z,120\n")
    config = parse_config(data, tmp_path)
    assert config.site_factors["s1"].intensity_g_per_kwh.at(utc(2026, 10, 1, 10, 20)) == 120


def test_missing_series_file_names_the_key(tmp_path: Path) -> None:
    data = make_config(sites={"s1": {"pue": 1.2, "grid": {"series": {"path": "absent.csv"}}}})
    assert any(
        p.startswith("sites.s1.grid.series.path: cannot read") for p in problems(data, tmp_path)
    )


def test_load_reports_yaml_errors_with_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sites:\n  s1: {pue: 1.2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path)


def test_load_missing_file_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCARBON_CONFIG", str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="jobcarbon config example"):
        load_config()


def test_hardware_rules_first_match_wins_and_resolve_tdp() -> None:
    data = make_config(
        clusters={
            "c1": {
                "site": "s1",
                "hardware": [
                    {"match": {"partition": "gpu-a*"}, "gpu_model": "a100 sxm4 80 gb"},
                    {
                        "match": {"nodes": "h100n*"},
                        "gpu_model": "H100 SXM",
                        "cpu_power_w_per_core": 9,
                    },
                    {"match": {"gpu_type": "l4"}, "gpu_tdp_w": 75},
                ],
            }
        }
    )
    cluster = parse_config(data).clusters["c1"]
    a100 = cluster.power_profile(make_job(partition="gpu-a100"))
    assert (a100.gpu_model, a100.gpu_tdp_w, a100.gpu_idle_w) == ("A100 SXM4 80 GB", 400, 60)
    h100 = cluster.power_profile(make_job(partition="x", nodes="h100n001"))
    assert (h100.gpu_tdp_w, h100.cpu_power_w_per_core) == (700, 9)
    l4 = cluster.power_profile(make_job(partition="x", gpu_model="L4"))
    assert l4.gpu_tdp_w == 75
    # no rule: the typed TRES name is looked up in the table
    typed = cluster.power_profile(make_job(partition="x", gpu_model="mi300x"))
    assert typed.gpu_tdp_w == 750
    # CPU-only job: no GPU power needed, Green Algorithms defaults
    cpu = cluster.power_profile(make_job(partition="x", gpu_count=0, state=JobState.COMPLETED))
    assert (cpu.cpu_power_w_per_core, cpu.memory_power_w_per_gb) == (12.0, 0.3725)


def test_hardware_profiles_of_jobs_alike_are_kept_by_what_the_rules_match() -> None:
    # the profile of a (partition, GPU model, nodes where a rule matches them) is kept
    # for the jobs after: a job of another node list or GPU model still gets its own
    data = make_config(
        clusters={
            "c1": {
                "site": "s1",
                "hardware": [
                    {"match": {"nodes": "h100n*"}, "gpu_model": "H100 SXM"},
                    {"match": {"partition": "gpu"}, "gpu_tdp_w": 300},
                ],
            }
        }
    )
    cluster = parse_config(data).clusters["c1"]
    for _ in range(2):  # the second time from what was kept
        assert cluster.power_profile(make_job(nodes="h100n001")).gpu_tdp_w == 700
        assert cluster.power_profile(make_job(nodes="a100n001")).gpu_tdp_w == 300
        assert cluster.power_profile(make_job(partition="x", gpu_model="L4")).gpu_tdp_w == 72
        cpu_only = cluster.power_profile(make_job(partition="x", gpu_count=0))
        assert (cpu_only.gpu_tdp_w, cpu_only.cpu_power_w_per_core) == (0.0, 12.0)


def test_hardware_rules_on_node_labels_match_every_job() -> None:
    # node labels (Kubernetes) are matched job by job: two jobs alike but for their
    # labels get the profiles of their own rules
    rule = {"match": {"node_label": {"gpu": "l4"}}, "gpu_model": "L4"}
    data = make_config(clusters={"c1": {"site": "s1", "hardware": [rule]}})
    cluster = parse_config(data).clusters["c1"]
    for _ in range(2):
        l4 = cluster.power_profile(make_job(labels={"gpu": "l4"}, gpu_model="mi300x"))
        assert (l4.gpu_model, l4.gpu_tdp_w) == ("L4", 72)
        mi300x = cluster.power_profile(make_job(gpu_model="mi300x"))
        assert mi300x.gpu_tdp_w == 750


def test_the_tests_make_config_merges_overrides_deeply() -> None:
    data = make_config(sites={"s1": {"pue": 1.5}}, clusters={"c2": {"site": "s1"}})
    assert data["sites"]["s1"] == {"pue": 1.5, "grid": {"intensity_g_per_kwh": 100}}
    assert data["clusters"] == {"c1": {"site": "s1"}, "c2": {"site": "s1"}}
    # a grid is one source: an override's grid replaces the base's whole
    assert make_config(sites={"s1": {"grid": {"region": "FR"}}})["sites"]["s1"]["grid"] == {
        "region": "FR"
    }
    base = make_config()
    merged(base, {"sites": {"s1": {"pue": 2.0}}})
    assert base["sites"]["s1"]["pue"] == 1.2  # merging changes neither side
    assert parse_config(data).site_factors["s1"].pue.at(utc(2026, 1, 1)) == 1.5
