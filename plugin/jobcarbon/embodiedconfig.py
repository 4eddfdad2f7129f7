"""``clusters.<name>.embodied`` and a hardware rule's ``embodied``: the node a job's share of
embodied (Scope 3) emissions is taken of (``embodied.py`` amortises it).

Either the site's own figure, ``node_kg`` (kgCO2e of one node, its GPUs included) with
its ``lifetime_years``, or ``node``, an entry of the bundled table (``data/embodied.csv``:
its figure, range, GPUs and lifetime, each of which the keys beside it may override).
``cores_per_node`` is always needed: a job without GPUs is charged its cores of the
node's, and any cluster may run one. A year is 8,766 h (365.25 days).

A hardware rule's ``embodied`` replaces the cluster's for the jobs the rule matches,
whole: a rule for other nodes describes other nodes. A cluster (or rule) without any is
"not configured": its jobs get no embodied figure (NULL in the ledger), never a guess.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import factors
from .embodied import EmbodiedNode, EmbodiedSettings, resolve
from .errors import FactorError


class EmbodiedConfig(BaseModel):
    """One node type's embodied emissions, as the config gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_kg: float | None = Field(
        None, gt=0, le=1_000_000, description="kgCO2e of one node, its GPUs included"
    )
    node: str | None = Field(
        None, description="or a node or accelerator of the bundled embodied table"
    )
    gpus_per_node: int | None = Field(
        None, gt=0, le=1024, description="GPUs in one node (default: the bundled entry's)"
    )
    cores_per_node: int = Field(
        gt=0, le=100_000, description="CPU cores in one node: jobs without GPUs are charged theirs"
    )
    lifetime_years: float | None = Field(
        None,
        gt=0,
        le=50,
        description="years the node is amortised over, of 8,766 h (default: the bundled entry's)",
    )

    @model_validator(mode="after")
    def _one_figure(self) -> EmbodiedConfig:
        if (self.node_kg is None) == (self.node is None):
            raise ValueError(
                "give node_kg (the site's own kgCO2e of one node) or node (a bundled entry), "
                "exactly one"
            )
        if self.node_kg is not None and self.lifetime_years is None:
            raise ValueError("lifetime_years is needed with node_kg (a year is 8,766 h)")
        if self.node is not None:
            try:
                factors.find_embodied(self.node)
            except FactorError as err:
                raise ValueError(f"node: {err}") from err
        return self

    @property
    def settings(self) -> EmbodiedSettings:
        return EmbodiedSettings(
            self.node_kg, self.node, self.gpus_per_node, self.cores_per_node, self.lifetime_years
        )

    @cached_property
    def resolved(self) -> EmbodiedNode:
        """The node, resolved against the bundled table (checked valid at load)."""
        return resolve(self.settings)
