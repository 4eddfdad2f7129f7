"""Typed errors, the retry vocabulary and the exit codes.

Library code raises these (chaining the cause); only the CLI turns them into a message
on stderr and an exit code. Whatever talks to another service (the SMTP server, the
Kubernetes API server, sacct, a grid-intensity provider) says whether trying again can
help with ``TemporaryError`` (after ``delay_s``, when the other side said when) or
``PermanentError``; the loops that retry (the mailer, the watcher, the collector) read
only these two.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a ``jobcarbon`` command's exit status means; the one table of them."""

    OK = 0
    PROBLEMS = 1  # it ran, but some records, recipients or checks had problems
    CONFIG = 2  # the configuration, an argument or a factor is invalid
    SOURCE = 3  # the scheduler or accounting source failed
    LEDGER = 4  # the ledger cannot be opened, migrated, read or written
    MAIL = 5  # e-mail cannot be sent at all

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.PROBLEMS: "finished, with problems listed in its output",
    ExitCode.CONFIG: "invalid configuration, argument or factor",
    ExitCode.SOURCE: "the scheduler or accounting source failed",
    ExitCode.LEDGER: "the ledger cannot be opened, migrated, read or written",
    ExitCode.MAIL: "e-mail cannot be sent at all",
}


class TemporaryError(Exception):
    """A call failed in a way that trying again may mend (a 4xx from SMTP, a 429 or 5xx,
    a lost connection); ``delay_s`` is how long the other side asked us to wait, or 0
    for "use your own backoff"."""

    def __init__(self, message: str, delay_s: float = 0.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(Exception):
    """A call failed in a way that trying again cannot mend (a 5xx from SMTP for this
    recipient, a 401/403, a request the other side says is malformed)."""


class JobcarbonError(Exception):
    """Base of every error jobcarbon reports to a person."""

    exit_code = ExitCode.PROBLEMS


class ConfigError(JobcarbonError):
    """The site configuration is missing or invalid. Carries every problem found."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")


class FactorError(JobcarbonError):
    """A hardware name, region key or intensity series cannot be resolved."""

    exit_code = ExitCode.CONFIG


class InputError(JobcarbonError):
    """A record or an argument is impossible (negative duration, end before start, ...)."""

    exit_code = ExitCode.CONFIG


class SourceError(JobcarbonError):
    """A scheduler or accounting source failed or returned something unreadable."""

    exit_code = ExitCode.SOURCE


class LedgerError(JobcarbonError):
    """The ledger cannot be opened, migrated, read or written."""

    exit_code = ExitCode.LEDGER


class MailError(JobcarbonError):
    """E-mail cannot be sent at all (no server, login or sender refused) or written."""

    exit_code = ExitCode.MAIL
