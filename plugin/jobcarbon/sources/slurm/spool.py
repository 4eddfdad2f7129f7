"""The epilog's spool: one file per ended job, written atomically by ``slurm/epilog``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ... import access
from ...errors import SourceError

#: The epilog's line for an array task (empty for other jobs)
_ARRAY_TASK = re.compile(rb"^array_task_id=\d", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    job_id: str
    written_at: float
    array_task: bool = False  # the epilog saw SLURM_ARRAY_TASK_ID


class Spool:
    """The epilog's spool: ``new/`` holds one file per ended job, named by its job id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.new, self.tmp, self.failed = root / "new", root / "tmp", root / "failed"

    def create(self) -> None:
        for directory in (self.new, self.tmp, self.failed):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SourceError(
                    access.describe(directory, "create the spool directory", err)
                ) from err

    def entries(self) -> list[SpoolEntry]:
        try:
            paths = sorted(self.new.iterdir())
        except FileNotFoundError:
            raise SourceError(
                f"spool {self.new} does not exist: create it with "
                "`jobcarbon slurm collect` run once as SlurmUser, or mkdir "
                "-p new tmp failed"
            ) from None
        except OSError as err:
            raise SourceError(access.describe(self.new, "read the spool", err)) from err
        entries = []
        for path in paths:
            try:
                written_at = path.stat().st_mtime
                array_task = _ARRAY_TASK.search(path.read_bytes()) is not None
            except FileNotFoundError:
                continue  # taken by another collector meanwhile
            entries.append(SpoolEntry(path, path.name, written_at, array_task))
        return entries

    def done(self, entry: SpoolEntry) -> None:
        try:
            entry.path.unlink(missing_ok=True)
        except OSError as err:
            raise SourceError(access.describe(entry.path, "remove the spool entry", err)) from err

    def give_up(self, entry: SpoolEntry, reason: str) -> None:
        target = self.failed / entry.job_id
        try:
            entry.path.replace(target)
            target.with_suffix(".reason").write_text(reason + "\n")
        except OSError as err:
            raise SourceError(access.describe(target, "move the spool entry to", err)) from err
