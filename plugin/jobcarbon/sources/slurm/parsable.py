"""Lines of ``sacct --parsable2`` output as cells, mending what a plain dump breaks.

jobcarbon asks sacct for ``--delimiter='^|^'``, but most sites' history is plain
``--parsable2`` output with ``|`` between the fields, and sacct escapes neither a ``|``
nor a line break in text a user chose (a job name, a comment, a working directory).
Such a name splits its line into too many cells, or over two lines. Both are mended:

- the extra cells are rejoined into the one free-text column (``FREE_TEXT_FIELDS``)
  where the line then reads right: every column of a known shape (times, states,
  counts, TRES lists) has that shape. Where more than one column could take them, the
  line is a problem, named as ambiguous: it is never guessed;
- a line is completed by the lines after it that are the rest of a name: they have
  fewer cells than a row and do not start like one (job id, state, times), and every
  line break then falls in a free-text column. Where they are not, the first line is
  read alone and the rest is a problem.

A line with the header's number of cells costs nothing more: it is passed on as split.
``open_dump`` reads what editors write: UTF-8 with or without a byte-order mark,
UTF-16 with one, and CRLF line ends.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO, TextIO

from ...records import RecordProblem, RecordRepair

#: Columns whose text a user chooses, which sacct prints as it is: a "|" or a line
#: break in them splits a line. The others hold names Slurm checks, numbers and times.
FREE_TEXT_FIELDS = frozenset(
    {
        "JobName",
        "Comment",
        "AdminComment",
        "SystemComment",
        "WorkDir",
        "SubmitLine",
        "Constraints",
        "Extra",
        "Container",
        "StdIn",
        "StdOut",
        "StdErr",
    }
)
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|Unknown|None|")
_COUNT = re.compile(r"\d*")
_TRES = re.compile(r"(?:[\w/:.-]+=[\w.:-]*(?:,[\w/:.-]+=[\w.:-]*)*)?")
#: What a cell of these columns looks like; a line mended wrongly breaks one of them.
_SHAPES = {
    "JobIDRaw": re.compile(r"\d+(?:\.\w+)?"),
    "State": re.compile(r"[A-Z_]+(?: by \d+)?"),
    "Submit": _TIME,
    "Eligible": _TIME,
    "Start": _TIME,
    "End": _TIME,
    "ElapsedRaw": _COUNT,
    "NNodes": _COUNT,
    "NCPUS": _COUNT,
    "AllocCPUS": _COUNT,
    "CPUTimeRAW": _COUNT,
    "ConsumedEnergyRaw": _COUNT,
    "AllocTRES": _TRES,
    "ReqTRES": _TRES,
    "TRESUsageInTot": _TRES,
    "TRESUsageOutTot": _TRES,
}

#: A line as cells (its line number first), or what reading it reported.
Line = tuple[int, list[str]]
Item = Line | RecordProblem | RecordRepair
Numbered = Iterator[tuple[int, str]]


def open_dump(binary: BinaryIO) -> TextIO:
    """A dump's text as UTF-8 or, after a UTF-16 byte-order mark, UTF-16; CRLF read as LF.

    (A UTF-8 byte-order mark is kept here and dropped with the header by the reader.)
    The binary stream stays its owner's: open, with its offset to follow, when the text
    is done with.
    """
    head = _peek(binary, 2)
    utf16 = head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    return _Text(binary, encoding="utf-16" if utf16 else "utf-8", newline=None)


class _Text(io.TextIOWrapper):
    """Text over a binary stream that closing it, or its collection, leaves open."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # detached already
            self.detach()


def _peek(binary: BinaryIO, size: int) -> bytes:
    """The first ``size`` bytes, left to be read again (from a file, a pipe, memory)."""
    if isinstance(binary, io.BufferedReader):
        return binary.peek(size)[:size]
    if binary.seekable():
        start = binary.tell()
        head = binary.read(size)
        binary.seek(start)
        return head
    return b""


def split_lines(
    numbered: Numbered, header: Sequence[str], delimiter: str, source: str
) -> Iterator[Item]:
    """Each line's cells, as many as the header's; mended lines after a ``RecordRepair``,
    lines that cannot be mended as a ``RecordProblem``; blank lines skipped.

    A line is passed on once the next one shows that it is whole: the line break in a
    name can leave the line before with the header's count of cells.
    """
    width = len(header)
    mender = _Mender(header, delimiter, source)
    held: list[Line] = []  # the row being read, line by line
    plain = False  # it is one line of the header's width
    for line_no, line in numbered:
        cells = line.rstrip("\n").split(delimiter)
        if len(cells) == width and plain:  # the rest of a name has fewer cells
            yield held[0]
            held[0] = line_no, cells
            continue
        if held and mender.continues(held, cells):
            held.append((line_no, cells))
            plain = False
            continue
        if not line.strip():
            continue
        if plain:
            yield held[0]
        elif held:
            yield from mender.finish(held)
        held = [(line_no, cells)]
        plain = len(cells) == width
    if held:
        yield from mender.finish(held)


class _Mender:
    """Rejoins the cells of lines that a delimiter or a line break in a free-text
    column split (see the module's docstring)."""

    def __init__(self, header: Sequence[str], delimiter: str, source: str) -> None:
        self.header = list(header)
        self.delimiter = delimiter
        self.source = source
        self.free = [i for i, name in enumerate(header) if name in FREE_TEXT_FIELDS]
        self.fixed = [i for i, name in enumerate(header) if name not in FREE_TEXT_FIELDS]
        self.shaped = [(i, _SHAPES[name]) for i, name in enumerate(header) if name in _SHAPES]
        # the cells a row's first line has before its first free-text column
        head_width = self.free[0] if self.free else 0
        self.head_shaped = [(i, pattern) for i, pattern in self.shaped if i < head_width]

    def continues(self, held: list[Line], cells: list[str]) -> bool:
        """Whether a line is the rest of the row held (a line break in a name): a blank
        line where that row is short; a line with fewer cells than a row that does not
        start like one (two or more of a row's first cells with their shapes)."""
        if not self.free or len(cells) >= len(self.header):
            return False
        if not "".join(cells).strip():
            return sum(len(c) - 1 for _, c in held) + 1 < len(self.header)
        present = [(i, pattern) for i, pattern in self.head_shaped if i < len(cells)]
        return len(present) < 2 or not all(pattern.fullmatch(cells[i]) for i, pattern in present)

    def finish(self, held: list[Line]) -> Iterator[Item]:
        """The row of these lines, mended, or the problem it is."""
        width = len(self.header)
        first_no, first_cells = held[0]
        if len(held) == 1 and len(first_cells) == width:
            yield held[0]
            return
        cells = first_cells
        if len(held) > 1:
            cells = list(first_cells)
            for _, more in held[1:]:
                cells[-1] += "\n" + more[0]
                cells.extend(more[1:])
        where = self._where(held)
        aligned = self._aligned(cells) if len(cells) >= width else []
        if len(aligned) == 1:
            (mended,) = aligned
            yield RecordRepair(where, f"rejoined {self._split(mended)}")
            yield first_no, mended
            return
        if len(held) > 1 and not aligned:  # not the rest of it: the first line alone
            yield from self.finish(held[:1])
            rest = sum(len(c) - 1 for _, c in held[1:]) + 1
            yield RecordProblem(
                self._where(held[1:]),
                f"{rest} fields where the header has {width}, "
                f"and they are not the rest of line {first_no}",
            )
            return
        cause = " and a ".join(
            (["line break"] if len(held) > 1 else [])
            + ([f"'{self.delimiter}'"] if len(cells) > width else [])
        )
        if len(cells) < width:
            reason = "and no line after it completes the row"
        elif aligned:
            columns = " or ".join(self._split(mended) for mended in aligned)
            reason = f"ambiguous: {columns} could explain them (not imported)"
        elif self.free:
            columns = " or ".join(self.header[i] for i in self.free)
            reason = f"which a {cause} in {columns} does not explain"
        else:
            reason = f"and no column of the header is free text a {cause} could be in"
        yield RecordProblem(where, f"{len(cells)} fields where the header has {width}, {reason}")

    def _aligned(self, cells: list[str]) -> list[list[str]]:
        """The line's cells as each free-text column would have them, rejoining the extra
        cells, where the line then reads right (the line itself if it has no extras)."""
        extra = len(cells) - len(self.header)
        if extra == 0:
            return [cells] if self._reads(cells) else []
        found = []
        for i in self.free:
            mended = [
                *cells[:i],
                self.delimiter.join(cells[i : i + extra + 1]),
                *cells[i + extra + 1 :],
            ]
            if self._reads(mended):
                found.append(mended)
        return found

    def _reads(self, cells: list[str]) -> bool:
        """Every cell of a known shape has it; line breaks are in free text only."""
        for i, pattern in self.shaped:
            if not pattern.fullmatch(cells[i]):
                return False
        return not any("\n" in cells[i] for i in self.fixed)

    def _split(self, mended: list[str]) -> str:
        """What split the free-text cells of a mended line: "a '|' in JobName"."""
        parts = []
        for i in self.free:
            causes = [
                cause
                for cause, mark in (
                    (f"a '{self.delimiter}'", self.delimiter),
                    ("a line break", "\n"),
                )
                if mark in mended[i]
            ]
            if causes:
                parts.append(f"{' and '.join(causes)} in {self.header[i]}")
        return ", ".join(parts)

    def _where(self, held: list[Line]) -> str:
        first_no, last_no = held[0][0], held[-1][0]
        if last_no == first_no:
            return f"{self.source} line {first_no}"
        return f"{self.source} lines {first_no}-{last_no}"
