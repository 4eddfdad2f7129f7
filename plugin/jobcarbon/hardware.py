"""Hardware rules (``clusters.*.hardware``): which rule a job matches, and the power
profile that gives it (the rule's figures, then the factor tables, then the cluster's
defaults), and the node its embodied emissions are shared out of (the rule's
``embodied``, else the cluster's, else none). The config loader validates the rules;
the accounting step asks for profiles and nodes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import factors
from .embodied import EmbodiedNode
from .embodiedconfig import EmbodiedConfig
from .errors import FactorError
from .footprint import PowerProfile
from .records import JobRecord


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HardwareMatch(_Rule):
    """All given conditions must hold. Patterns are shell globs (``gpu-*``)."""

    partition: str | None = None
    nodes: str | None = Field(None, description="glob matched against the job's node list")
    gpu_type: str | None = Field(None, description="typed GRES/TRES name, e.g. a100")
    node_label: dict[str, str] | None = Field(None, description="Kubernetes node labels")

    def matches(self, job: JobRecord) -> bool:
        if self.partition and not fnmatch.fnmatchcase(job.partition, self.partition):
            return False
        if self.nodes and not fnmatch.fnmatchcase(job.nodes, self.nodes):
            return False
        if self.gpu_type and (job.gpu_model or "").lower() != self.gpu_type.lower():
            return False
        if self.node_label:
            return all(job.labels.get(k) == v for k, v in self.node_label.items())
        return True


class HardwareRule(_Rule):
    match: HardwareMatch = Field(default_factory=HardwareMatch)
    gpu_model: str | None = Field(None, description="name from `jobcarbon factors hardware`")
    gpu_tdp_w: float | None = Field(None, gt=0, le=5000, description="overrides the table")
    cpu_power_w_per_core: float | None = Field(None, gt=0, le=200)
    memory_power_w_per_gb: float | None = Field(None, ge=0, le=10)
    embodied: EmbodiedConfig | None = Field(
        None, description="the matched nodes' embodied emissions, instead of the cluster's"
    )

    @field_validator("gpu_model")
    @classmethod
    def _known_gpu(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return factors.find_hardware(value).name
            except FactorError as err:
                raise ValueError(str(err)) from err
        return value


NO_RULE = HardwareRule()


class PowerDefaults(Protocol):
    """A cluster's power figures for what its hardware rules leave out."""

    @property
    def gpu_idle_fraction(self) -> float: ...
    @property
    def cpu_power_w_per_core(self) -> float: ...
    @property
    def cpu_idle_fraction(self) -> float: ...
    @property
    def memory_power_w_per_gb(self) -> float: ...
    @property
    def cpu_energy_from(self) -> str: ...
    @property
    def embodied(self) -> EmbodiedConfig | None: ...


#: How many jobs' shapes ``PowerProfiles`` keeps the profile of before starting again.
_SHAPES_KEPT = 4096


class PowerProfiles:
    """One cluster's profiles, resolved once each by (rule position, GPU model, whether
    the job has GPUs): a profile depends on nothing else, and an import asks millions of
    times. Without node-label rules a job's rule follows from its partition, GPU model
    and (if a rule matches them) nodes, so the profile of such a shape is kept too."""

    def __init__(self, rules: Sequence[HardwareRule], defaults: PowerDefaults) -> None:
        self.rules = rules
        self.defaults = defaults
        self.cache: dict[tuple[int, str | None, bool], PowerProfile] = {}
        self._by_nodes = any(rule.match.nodes for rule in rules)
        self._by_labels = any(rule.match.node_label for rule in rules)
        self._shapes: dict[tuple[str, str, str | None, bool], int] = {}
        #: the embodied node by rule position (the last: no rule matched), resolved once
        self.nodes: list[EmbodiedNode | None] = [
            None if settings is None else settings.resolved
            for settings in (rule.embodied or defaults.embodied for rule in (*rules, NO_RULE))
        ]

    def position(self, job: JobRecord) -> int:
        """The first hardware rule ``job`` matches, or ``len(rules)`` for none: kept per
        job shape (partition, nodes where a rule matches on them, GPU model, whether it
        has GPUs), unless a rule matches on node labels."""
        if self._by_labels:
            return self._first_match(job)
        shape = (
            job.partition,
            job.nodes if self._by_nodes else "",
            job.gpu_model,
            job.gpu_count > 0,
        )
        position = self._shapes.get(shape)
        if position is None:
            if len(self._shapes) >= _SHAPES_KEPT:
                self._shapes.clear()
            position = self._shapes[shape] = self._first_match(job)
        return position

    def _first_match(self, job: JobRecord) -> int:
        return next((i for i, r in enumerate(self.rules) if r.match.matches(job)), len(self.rules))

    def for_job(self, job: JobRecord, position: int | None = None) -> PowerProfile:
        """The power figures for ``job`` (its rule's ``position``, if known): the first
        matching hardware rule, then defaults."""
        if position is None:
            position = self.position(job)
        key = (position, job.gpu_model, job.gpu_count > 0)
        profile = self.cache.get(key)
        if profile is None:
            rule = self.rules[position] if position < len(self.rules) else NO_RULE
            profile = self._rule_profile(rule, job.gpu_model, job.gpu_count > 0)
            self.cache[key] = profile
        return profile

    def embodied_for(self, job: JobRecord, position: int | None = None) -> EmbodiedNode | None:
        """The node ``job``'s embodied share is of (its rule's ``position``, if known): the
        matching rule's ``embodied``, else the cluster's; None where neither is set."""
        return self.nodes[self.position(job) if position is None else position]

    def _rule_profile(
        self, rule: HardwareRule, gpu_model: str | None, has_gpus: bool
    ) -> PowerProfile:
        defaults = self.defaults
        gpu_model = rule.gpu_model or gpu_model
        tdp_w = rule.gpu_tdp_w or 0.0
        if has_gpus and not tdp_w and gpu_model:
            tdp_w = factors.find_hardware(gpu_model).tdp_w
        cpu_w = rule.cpu_power_w_per_core or defaults.cpu_power_w_per_core
        return PowerProfile(
            gpu_model=gpu_model,
            gpu_tdp_w=tdp_w,
            gpu_idle_w=tdp_w * defaults.gpu_idle_fraction,
            cpu_power_w_per_core=cpu_w,
            cpu_idle_w_per_core=cpu_w * defaults.cpu_idle_fraction,
            cpu_from_usage=defaults.cpu_energy_from == "usage",
            memory_power_w_per_gb=(
                rule.memory_power_w_per_gb
                if rule.memory_power_w_per_gb is not None
                else defaults.memory_power_w_per_gb
            ),
        )
