"""The site configuration: one YAML file, validated at load.

Every problem is reported at once, each with its dotted key path, the bad value
and what is allowed (``ConfigError.problems``). Unknown keys are errors, on
purpose: a typo such as ``pue_uncertainity`` would otherwise silently fall back to
a default and skew every footprint. Secrets never live in the YAML: the SMTP and
database passwords are read from an environment variable or a file named here.

Where the file is: ``--config``, else ``$JOBCARBON_CONFIG``, else
``/etc/jobcarbon/config.yaml``. Run ``jobcarbon config example`` for a documented file.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import access, factors
from .embodiedconfig import EmbodiedConfig
from .errors import ConfigError, FactorError
from .footprint import PowerProfile, Uncertainty
from .gridconfig import ProviderConfig
from .hardware import HardwareRule, PowerProfiles
from .mailconfig import MailConfig
from .marketconfig import MarketConfig
from .records import Component, JobRecord
from .series import read_series
from .site import NO_MARKET, Constant, HourlySeries, MonthlyPue, Schedule, SiteFactors

DEFAULT_PATH = Path("/etc/jobcarbon/config.yaml")
ENV_VAR = "JOBCARBON_CONFIG"
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Pue = Annotated[float, Field(ge=1.0, le=5.0)]


class SeriesConfig(_Strict):
    path: Path = Field(
        description="CSV with columns timestamp (UTC hour start, ISO 8601) and intensity_g_per_kwh"
    )
    fallback_g_per_kwh: float | None = Field(
        None, ge=0, le=2000, description="used for hours the file lacks"
    )


class GridConfig(_Strict):
    """Exactly one of ``intensity_g_per_kwh``, ``region``, ``series`` or ``provider``."""

    intensity_g_per_kwh: float | None = Field(None, ge=0, le=2000)
    region: str | None = Field(None, description="key from `jobcarbon factors regions`")
    dataset: str = Field(factors.CURRENT_VINTAGE, description="region table vintage")
    series: SeriesConfig | None = None
    provider: ProviderConfig | None = Field(None, description="hours synced from a live API")

    @model_validator(mode="after")
    def _exactly_one(self) -> GridConfig:
        keys = ("intensity_g_per_kwh", "region", "series", "provider")
        given = [k for k in keys if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of intensity_g_per_kwh, region, series, provider "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.region is not None:
            try:
                factors.find_region(self.region, self.dataset)
            except FactorError as err:
                raise ValueError(str(err)) from err
        return self


class SiteConfig(_Strict):
    pue: Pue = Field(description="facility energy / IT energy; for months not in pue_monthly")
    pue_monthly: dict[str, Pue] = Field(
        default_factory=dict, description='measured PUE per calendar month, "YYYY-MM": value'
    )
    pue_uncertainty: float = Field(0.05, ge=0, lt=1, description="relative, for the range")
    grid: GridConfig
    market: MarketConfig | None = Field(None, description="contracts by year: market-based")

    @field_validator("pue_monthly")
    @classmethod
    def _months(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k in value if not MONTH.match(k)]
        if bad:
            raise ValueError(f"month keys must look like 2026-01, got {bad}")
        return value


class AttributionConfig(_Strict):
    project_from: Literal["account", "wckey", "partition"] = Field(
        "account", description="Slurm field that names the project"
    )
    user_label: str | None = Field(
        None, description="Kubernetes pod label (or annotation) naming the user"
    )
    project_label: str | None = Field(
        None, description="Kubernetes pod label (or annotation) naming the project"
    )
    namespace_projects: dict[str, str] = Field(
        default_factory=dict, description="namespace → project fallback"
    )


#: What each ``slurm_energy_covers`` names, after slurm.conf(5)'s AcctGatherEnergyType:
#: ``ipmi``, ``pm_counters`` (HPE Cray) and ``xcc`` (Lenovo XClarity) read the node's
#: BMC, the whole node; ``rapl`` the CPU packages and their DRAM; ``gpu`` the GPUs.
SLURM_ENERGY_COVERS = {
    "node": frozenset(Component),
    "cpu_memory": frozenset({Component.CPU, Component.MEMORY}),
    "gpu": frozenset({Component.GPU}),
}


class ClusterConfig(_Strict):
    site: str = Field(description="a key of `sites`")
    hardware: list[HardwareRule] = Field(default_factory=list, description="first match wins")
    gpu_idle_fraction: float = Field(
        0.15, ge=0, lt=1, description="GPU idle power as a share of TDP (assumption)"
    )
    cpu_power_w_per_core: float = Field(factors.DEFAULT_CPU_POWER_W_PER_CORE, gt=0, le=200)
    cpu_idle_fraction: float = Field(
        0.3, ge=0, lt=1, description="CPU idle power as a share of TDP (low bound)"
    )
    memory_power_w_per_gb: float = Field(factors.MEMORY_POWER_W_PER_GB, ge=0, le=10)
    cpu_energy_from: Literal["allocation", "usage"] = Field("allocation", description="or CPU time")
    slurm_energy_covers: Literal["node", "cpu_memory", "gpu"] = Field(
        "node", description="what Slurm's AcctGatherEnergyType measures"
    )
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    embodied: EmbodiedConfig | None = Field(None, description="Scope 3: the nodes' embodied CO2e")

    @field_validator("slurm_energy_covers", mode="before")
    @classmethod
    def _energy_plugin(cls, value: object) -> object:
        if not isinstance(value, str) or value not in SLURM_ENERGY_COVERS:  # "rapl", say
            raise ValueError(
                "must be node (for AcctGatherEnergyType=acct_gather_energy/ipmi, pm_counters "
                "or xcc), cpu_memory (for rapl) or gpu (for gpu)"
            )
        return value

    @cached_property
    def profiles(self) -> PowerProfiles:
        """This cluster's hardware rules, with its defaults for what a rule leaves out."""
        return PowerProfiles(self.hardware, self)

    def power_profile(self, job: JobRecord) -> PowerProfile:
        """The power figures for ``job``: the first matching hardware rule, then defaults."""
        return self.profiles.for_job(job)

    @property
    def slurm_energy_components(self) -> frozenset[Component]:
        """The components Slurm's energy counter (``ConsumedEnergyRaw``) covers here."""
        return SLURM_ENERGY_COVERS[self.slurm_energy_covers]


class LedgerConfig(_Strict):
    """Where the ledger is: a SQLite file, or a PostgreSQL database shared by collectors."""

    url: str = Field(
        "sqlite:////var/lib/jobcarbon/ledger.db",
        description="sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host/db",
    )
    password_env: str = Field(
        "JOBCARBON_LEDGER_PASSWORD",
        description="environment variable with the PostgreSQL password (if set)",
    )
    password_file: Path | None = Field(None, description="file with the PostgreSQL password")
    migrate_on_start: bool = Field(
        True, description="writers bring the schema up to date when they start"
    )

    @field_validator("url")
    @classmethod
    def _known_url(cls, value: str) -> str:
        ledger_location(value, Path("."))
        return value


def ledger_location(url: str, base_dir: Path) -> Path | str:
    """What ``Ledger`` opens for a ledger URL: the SQLite file (relative to ``base_dir``)
    or the PostgreSQL URL. ``ValueError`` says what is wrong with any other."""
    if re.match(r"^\w+://[^/@:]+:[^/@]+@", url):
        raise ValueError(
            "put no password in the URL; set JOBCARBON_LEDGER_PASSWORD or "
            "ledger.password_file instead"
        )
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return path if path.is_absolute() else base_dir / path
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise ValueError("give sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE")


class SlurmConfig(_Strict):
    spool_dir: Path = Field(
        Path("/var/spool/jobcarbon"), description="where the epilog writes (new/, tmp/, failed/)"
    )
    sacct: str = Field("sacct", description="the sacct command (a path, or a name on PATH)")
    backend: Literal["auto", "sacct", "pyslurm"] = Field(
        "auto", description="how accounting is read; auto: pyslurm when it matches Slurm"
    )
    batch_size: int = Field(500, ge=1, le=10_000, description="job ids per sacct call")
    poll_interval_s: float = Field(5.0, gt=0, le=3600, description="spool check interval")
    retry_first_s: float = Field(
        0.5, gt=0, le=3600, description="first wait before asking sacct again for a job"
    )
    retry_max_s: float = Field(
        60.0, gt=0, le=3600, description="longest wait between two tries (doubling up to it)"
    )
    give_up_after_s: float = Field(
        3600.0, gt=0, description="drop a spool entry whose job never completes in sacct"
    )
    sweep_interval_s: float = Field(300.0, gt=0, description="accounting sweep interval")
    sweep_overlap_s: float = Field(
        3600.0, ge=0, description="each sweep re-reads this much before the watermark"
    )
    sweep_first_lookback_s: float = Field(
        86400.0, ge=0, description="how far back the very first sweep reads"
    )
    sacct_timeout_s: float = Field(120.0, gt=0, description="one sacct call at most")
    grid_sync_interval_s: float = Field(
        3600.0, ge=0, description="how often the provider sites' grid hours are synced (0: never)"
    )
    prometheus_url: str | None = Field(None, description="Prometheus with a GPU exporter's series")
    prometheus_timeout_s: float = Field(10.0, gt=0, le=300, description="one query at most")
    gpu_exporter: Literal["dcgm", "jobstats"] = Field("dcgm", description="which GPU exporter")
    gpu_energy_metric: str | None = Field(None, description="null: the exporter's own")
    gpu_utilization_metric: str | None = Field(None, description="null: the exporter's own")
    gpu_uuid_label: str | None = Field(None, description="null: the exporter's own")
    gpu_job_label: str | None = Field(None, description="null: the exporter's own")
    gpu_min_coverage: float = Field(0.8, gt=0, le=1, description="share of the run to span")
    gpu_scrape_lag_s: float = Field(
        60.0, gt=0, le=3600, description="a job's last GPU sample may be this long before its end"
    )
    gpu_wait_s: float = Field(
        600.0, ge=0, description="how long after a job's end to wait for its GPU samples"
    )

    @model_validator(mode="after")
    def _wait_within_give_up(self) -> SlurmConfig:
        if self.prometheus_url and self.gpu_wait_s >= self.give_up_after_s:
            raise ValueError(
                f"gpu_wait_s ({self.gpu_wait_s:g}) must be less than give_up_after_s "
                f"({self.give_up_after_s:g}), or the spool gives a job up while it waits for its "
                "GPU samples: lower gpu_wait_s or raise give_up_after_s"
            )
        return self


class KubernetesConfig(_Strict):
    """The pod watcher: what it watches, how it reconnects, where measured energy is."""

    cluster: str | None = Field(
        None, description="the `clusters` entry the pods belong to (default: the first)"
    )
    namespaces: list[str] = Field(
        default_factory=list, description="watch only these namespaces (default: all)"
    )
    cpu_pods: bool = Field(False, description="also account pods that requested no GPU")
    gpu_resources: list[str] = Field(
        ["nvidia.com/gpu", "amd.com/gpu"],
        description="extended resources counted as whole GPUs (nvidia.com/mig-* as slices)",
    )
    gpu_model_labels: list[str] = Field(
        ["nvidia.com/gpu.product", "amd.com/gpu.product-name"],
        description="node labels naming the GPU model, first present wins",
    )
    list_page_size: int = Field(500, ge=1, le=10_000, description="pods per list request")
    watch_timeout_s: int = Field(
        300, ge=10, le=3600, description="the API server ends each watch after this"
    )
    read_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="a watch silent this long (no event, no bookmark) is cut"
    )
    retry_first_s: float = Field(1.0, gt=0, le=3600, description="first wait after an API error")
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="longest wait between tries")
    running_interval_s: float = Field(
        60.0, gt=0, le=3600, description="how often running pods' usage so far is written"
    )
    grid_sync_interval_s: float = Field(
        3600.0, ge=0, description="how often the provider sites' grid hours are synced (0: never)"
    )
    health_listen: str | None = Field(
        "0.0.0.0:9878",
        pattern=r"^[^:\s]*:\d{1,5}$",
        description="/healthz and /readyz for the kubelet's probes (null: none)",
    )
    stale_after_s: float = Field(
        600.0, gt=0, description="/readyz fails when the API server was not heard this long"
    )
    prometheus_url: str | None = Field(
        None, description="Prometheus with dcgm-exporter's metrics, for measured GPU energy"
    )
    prometheus_timeout_s: float = Field(10.0, gt=0, le=300, description="one query at most")
    dcgm_energy_metric: str = Field(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", description="the per-GPU millijoule counter"
    )
    dcgm_utilization_metric: str | None = Field(
        "DCGM_FI_DEV_GPU_UTIL", description="per-GPU busy percent, for the e-mails' advice"
    )
    dcgm_pod_labels: tuple[str, str] = Field(
        ("namespace", "pod"),
        description="the counter's labels naming a pod's namespace and name "
        "(exported_namespace, exported_pod when Prometheus renamed them)",
    )
    dcgm_min_coverage: float = Field(
        0.8, gt=0, le=1, description="share of the run the counter's samples must span"
    )


class ExporterConfig(_Strict):
    listen: str = Field("127.0.0.1:9877", pattern=r"^[^:\s]*:\d{1,5}$")
    drop_user_label: bool = Field(False, description="omit `user` from series (large sites)")


class Config(_Strict):
    sites: dict[str, SiteConfig] = Field(min_length=1)
    clusters: dict[str, ClusterConfig] = Field(min_length=1)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    uncertainty_tdp: float = Field(0.10, ge=0, lt=1, description="relative error of table TDPs")
    uncertainty_measured: float = Field(
        0.05, ge=0, lt=1, description="relative error of measured energy"
    )
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig)
    mail: MailConfig = Field(default_factory=MailConfig)
    #: where the file was read from, to resolve relative paths (not a YAML key)
    base_dir: Path = Field(Path("."), exclude=True)

    @property
    def uncertainty(self) -> Uncertainty:
        return Uncertainty(tdp=self.uncertainty_tdp, measured=self.uncertainty_measured)

    def cluster(self, name: str) -> ClusterConfig:
        try:
            return self.clusters[name]
        except KeyError:
            raise FactorError(
                f"cluster {name!r} is not in the config (known: {', '.join(self.clusters)})"
            ) from None

    @cached_property
    def site_factors(self) -> dict[str, SiteFactors]:
        """Each site's PUE and intensity schedules; series files are read here, once."""
        return {name: _site_factors(name, site, self.base_dir) for name, site in self.sites.items()}

    def path(self, value: Path) -> Path:
        """A path from the file, relative to the file's directory."""
        return value if value.is_absolute() else self.base_dir / value

    def ledger_location(self) -> Path | str:
        """The SQLite file (relative to this file's directory), or the PostgreSQL URL."""
        return ledger_location(self.ledger.url, self.base_dir)

    def ledger_password(self) -> str | None:
        """The PostgreSQL password from ``ledger.password_file`` or its variable, if any."""
        ledger = self.ledger
        return self._secret("ledger", ledger.password_file, ledger.password_env, required=False)

    def smtp_password(self) -> str | None:
        """The SMTP password from ``mail.password_file`` or ``mail.password_env``, if named."""
        mail = self.mail
        return self._secret("mail", mail.password_file, mail.password_env, required=True)

    def _secret(
        self, section: str, file: Path | None, env: str | None, required: bool
    ) -> str | None:
        """A password from its file, else its environment variable (an error if that is
        ``required`` and unset), else None. Secrets never live in the YAML itself."""
        if file is not None:
            path = self.path(file)
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ConfigError(
                    [f"{section}.password_file: cannot read {path}: {err.strerror}"]
                ) from err
        value = os.environ.get(env) if env else None
        if env and required and not value:
            raise ConfigError([f"{section}.password_env: ${env} is not set"])
        return value or None


def _site_factors(name: str, site: SiteConfig, base_dir: Path) -> SiteFactors:
    pue: Schedule = (
        MonthlyPue(site.pue, dict(site.pue_monthly)) if site.pue_monthly else Constant(site.pue)
    )
    grid = site.grid
    intensity: Schedule
    region_key = ""
    if grid.intensity_g_per_kwh is not None:
        intensity = Constant(grid.intensity_g_per_kwh, "constant")
        source, version = "constant", f"{grid.intensity_g_per_kwh:g} g/kWh"
    elif grid.region is not None:
        region = factors.find_region(grid.region, grid.dataset)
        region_key = region.key
        intensity = Constant(region.intensity_g_per_kwh, f"{grid.dataset}:{region.key}")
        source, version = "region", f"{grid.dataset}:{region.key} {factors.version()}"
    elif grid.provider is not None:  # no hours synced yet: the fallback, if there is one
        intensity = HourlySeries({}, grid.provider.fallback(), f"sites.{name}.grid.provider")
        source, version = f"provider {grid.provider.name}", "no hours synced"
    else:
        assert grid.series is not None
        path = grid.series.path if grid.series.path.is_absolute() else base_dir / grid.series.path
        intensity = read_series(path, grid.series.fallback_g_per_kwh, f"sites.{name}.grid.series")
        source, version = "series", intensity.version
    market = site.market.factors() if site.market is not None else NO_MARKET
    return SiteFactors(
        name, pue, intensity, site.pue_uncertainty, region_key, source, version, market
    )


def _format_error(error: Any) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (check the spelling; `jobcarbon config example` lists keys)"
    value = error.get("input")
    shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
    return f"{path}: {message}{shown}"


def parse_config(data: Any, base_dir: Path = Path("."), source: str | None = None) -> Config:
    """Validate already-parsed YAML data; every problem in one ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the file must be a mapping of keys"], source)
    try:
        config = Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError([_format_error(e) for e in err.errors()], source) from err
    problems = [
        f"clusters.{name}.site: unknown site {c.site!r} (sites: {', '.join(config.sites)})"
        for name, c in config.clusters.items()
        if c.site not in config.sites
    ]
    watched = config.kubernetes.cluster
    if watched is not None and watched not in config.clusters:
        problems.append(
            f"kubernetes.cluster: unknown cluster {watched!r} "
            f"(clusters: {', '.join(config.clusters)})"
        )
    if problems:
        raise ConfigError(problems, source)
    try:
        _ = config.site_factors  # read series files now, so their errors surface at load
    except ConfigError as err:
        raise ConfigError(err.problems, source) from err
    return config


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = config_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(
            [
                f"no config file at {path}: create one from `jobcarbon config example`"
                f" or point --config / ${ENV_VAR} at it"
            ]
        ) from err
    except OSError as err:
        raise ConfigError([access.describe(path, "read the config", err, write=False)]) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            [f"not valid YAML{where}: {getattr(err, 'problem', err)}"], str(path)
        ) from err
    return parse_config(data, path.parent, str(path))
