"""Typed errors. Library code raises these (chaining the cause); only the CLI
turns them into a message on stderr and an exit code."""

from __future__ import annotations


class JobcarbonError(Exception):
    """Base of every error jobcarbon reports to a person."""

    exit_code = 1


class ConfigError(JobcarbonError):
    """The site configuration is missing or invalid. Carries every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")


class FactorError(JobcarbonError):
    """A hardware name, region key or intensity series cannot be resolved."""

    exit_code = 2


class InputError(JobcarbonError):
    """A record or an argument is impossible (negative duration, end before start, ...)."""

    exit_code = 2


class SourceError(JobcarbonError):
    """A scheduler or accounting source failed or returned something unreadable."""

    exit_code = 3


class LedgerError(JobcarbonError):
    """The ledger cannot be opened, migrated, read or written."""

    exit_code = 4


class MailError(JobcarbonError):
    """E-mail cannot be sent at all (no server, login or sender refused) or written."""

    exit_code = 5
