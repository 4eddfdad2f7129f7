"""Slurm: the epilog's spool, sacct (its format, runner and parser), pyslurm, the live cluster."""

from __future__ import annotations

from ...errors import SourceError, TemporaryError


class AccountingUnavailable(SourceError, TemporaryError):
    """Slurm accounting cannot be read now (sacct failed or timed out, slurmdbd is down):
    the collector asks again after its own backoff."""
