"""Who a monthly e-mail goes to: a user's address from the site's CSV map, its command
or its template (in that order), the opt-out list, and the leads of a project.
"""

from __future__ import annotations

import csv
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..report import MonthlyReport

ADDRESS = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")
COMMAND_TIMEOUT_S = 10.0


class AddressBook:
    """Resolves user names (and project leads) to e-mail addresses."""

    def __init__(
        self,
        config: Config,
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    ) -> None:
        self.mail = config.mail
        self._run = run
        self._map = _read_address_map(config.path(m)) if (m := self.mail.address_map) else {}
        self._opted_out = _read_opt_out(config.path(o)) if (o := self.mail.opt_out_file) else set()

    def opted_out(self, user: str) -> bool:
        return user in self._opted_out

    def address(self, user: str) -> str | None:
        """The user's address, or None when nothing configured knows it."""
        if user in self._map:
            return self._map[user]
        if self.mail.address_command:
            found = self._from_command(user)
            if found:
                return found
        if self.mail.address_template:
            candidate = self.mail.address_template.replace("{user}", user)
            return candidate if ADDRESS.match(candidate) else None
        return None

    def _from_command(self, user: str) -> str | None:
        argv = [*(self.mail.address_command or []), user]
        try:
            done = self._run(
                argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ConfigError([f"mail.address_command: cannot run {argv[0]!r}: {err}"]) from err
        line = done.stdout.strip().splitlines()[0].strip() if done.stdout.strip() else ""
        return line if done.returncode == 0 and ADDRESS.match(line) else None

    def recipients(self, report: MonthlyReport) -> tuple[list[str], str]:
        """The addresses a report goes to, or none and the reason."""
        if report.audience == "user":
            if self.opted_out(report.name):
                return [], "opted out"
            address = self.address(report.name)
            if address is None:
                return [], "no address (not in address_map, address_command or template)"
            return [address], ""
        leads = self.mail.project_leads.get(report.name)
        if not leads:
            return [], f"no lead for project {report.name!r} in mail.project_leads"
        addresses: list[str] = []
        unknown: list[str] = []
        for lead in leads:
            if ADDRESS.match(lead):
                addresses.append(lead)
            elif not self.opted_out(lead):
                found = self.address(lead)
                (addresses if found else unknown).append(found or lead)
        if not addresses:
            why = f"no address for lead(s) {', '.join(unknown)}" if unknown else "leads opted out"
            return [], why
        return addresses, ""


def _read_address_map(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"mail.address_map: cannot read {path}: {err.strerror}"]) from err
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows, [])]
    if header != ["user", "address"]:
        raise ConfigError([f"mail.address_map: {path}: header must be 'user,address'"])
    found: dict[str, str] = {}
    problems: list[str] = []
    for line_no, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not ADDRESS.match(row[1].strip()):
            problems.append(f"mail.address_map: {path} line {line_no}: not 'user,address': {row}")
            continue
        found[row[0].strip()] = row[1].strip()
    if problems:
        raise ConfigError(problems)
    return found


def _read_opt_out(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError([f"mail.opt_out_file: cannot read {path}: {err.strerror}"]) from err
    return {s for line in lines if (s := line.split("#", 1)[0].strip())}
