"""The pod watcher's health: what its probes (``/healthz``, ``/readyz``) and, through the
ledger, the exporter are told."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..config import KubernetesConfig


@dataclass(slots=True)
class Health:
    """What the probes and the exporter are told (monotonic clock, but ``last_contact``)."""

    listed: bool = False
    last_contact: float = 0.0  # wall clock: when the API server was last heard
    last_contact_monotonic: float = 0.0
    heartbeat: float = 0.0  # the loop last went round
    ledger_error: str | None = None  # why the last write to the ledger failed, if it did
    restarts: Counter[str] = field(default_factory=Counter)

    def alive(self, settings: KubernetesConfig, now: float) -> tuple[bool, str]:
        """The loop went round recently (it does at least every second); ``now`` on the
        monotonic clock."""
        limit = 2 * max(settings.read_timeout_s, settings.retry_max_s, 60.0)
        age = now - self.heartbeat
        return age < limit, f"loop last ran {age:.0f} s ago (limit {limit:.0f} s)"

    def ready(self, settings: KubernetesConfig, now: float, waiting: int) -> tuple[bool, str]:
        """Listed, heard from the API server within ``stale_after_s``, and the last
        write to the ledger went in (``waiting`` pods that ended wait in memory until
        one does)."""
        if not self.listed:
            return False, "not listed yet"
        if self.ledger_error is not None:
            return False, f"cannot write the ledger ({waiting} pod(s) waiting): {self.ledger_error}"
        age = now - self.last_contact_monotonic
        limit = settings.stale_after_s
        return age < limit, f"API server last heard {age:.0f} s ago (limit {limit:.0f} s)"
