"""The bundled demo month as a plain `sacct --parsable2` dump breaks it.

sacct escapes neither a `|` nor a line break in a job name. These dumps give every
third line (jobs and steps alike) a name with one or more `|`, a line break, or both,
and print it with `|` or with jobcarbon's `^|^` between the fields: the same jobs, so
that what is read from the one can be compared with the other and with the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

#: Names a plain dump splits: `|` (one, two, leading, trailing, alone, doubled), line
#: breaks (one, two, a blank line, at the end, alone), and both in either order.
ODD_NAMES = (
    "prep|clean",
    "a|b|c",
    "|lead",
    "trail|",
    "|",
    "x||y",
    "eval\nrun",
    "two\nline\nbreaks",
    "a\n\nb",
    "tail\n",
    "\n",
    "sweep|lr=0.1\nseed=3",
    "p|q|r\ns",
    "first\nthen|pipe",
    "a|b\n|c|d",
)


@dataclass(frozen=True)
class Dump:
    text: str
    names: dict[str, str]  # the ledger's job id → the job's name
    split_lines: int  # lines (jobs and steps) the delimiter or a line break splits


def demo_month() -> list[list[str]]:
    """The demo month's lines as cells (its names hold no `|`: it splits cleanly)."""
    text = resources.files("jobcarbon").joinpath("data", "demo", "sacct-2026-10.txt")
    return [line.split("|") for line in text.read_text().splitlines()]


def demo_with_odd_names(delimiter: str = "|", newline: str = "\n") -> Dump:
    """The demo month with ``ODD_NAMES`` in every third line, fields separated by
    ``delimiter``, lines ended by ``newline`` (in the names too, as an editor saves)."""
    header, *rows = demo_month()
    name_at, id_at, raw_at = (header.index(c) for c in ("JobName", "JobID", "JobIDRaw"))
    names: dict[str, str] = {}
    split = 0
    lines = [delimiter.join(header)]
    for n, cells in enumerate(rows):
        if n % 3 == 0:
            cells = [*cells]
            cells[name_at] = ODD_NAMES[n // 3 % len(ODD_NAMES)]
            split += delimiter in cells[name_at] or "\n" in cells[name_at]
        if "." not in cells[id_at]:  # a job, not a step: the ledger's key as to_record makes it
            job_id = cells[id_at] if "_" in cells[id_at] else cells[raw_at]
            names[job_id] = cells[name_at]
        lines.append(delimiter.join(cells))
    text = "".join(line + "\n" for line in lines)
    return Dump(text.replace("\n", newline), names, split)
