"""What the command modules share: the config and ledger of the invocation, the date and
month options, tables, problem lists and listen addresses.

Package-internal (hence the underscores). Heavy modules are imported inside the
functions, so that ``jobcarbon --help`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from ..accounting import IngestReport
    from ..config import Config
    from ..ledger import Ledger

F = TypeVar("F", bound=Callable[..., object])


def _config(ctx: click.Context) -> Config:
    from ..config import load_config

    return load_config(ctx.obj["config_path"])


def _open_ledger(ctx: click.Context) -> Ledger:
    """The config's ledger, to read: it must exist and be migrated already."""
    from ..ledger import open_ledger

    return open_ledger(_config(ctx), migrate=False)


def _month(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        datetime.strptime(value, "%Y-%m")
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a month like 2026-10") from None
    return value


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-10-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_UNITS = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})|(\d+)-(\d+):(\d{2})")


def parse_duration(value: str) -> timedelta | None:
    """``8h``, ``1h30m``, ``2d``, ``90m``, ``45s``, or Slurm's ``[D-]HH:MM:SS`` and
    ``D-HH:MM`` (as in ``--time``); None when ``value`` is none of these."""
    text = value.strip().lower()
    units = _UNITS.fullmatch(text)
    if text and units:
        days, hours, minutes, seconds = (int(g or 0) for g in units.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    slurm = _SLURM_TIME.fullmatch(text)
    if slurm:
        if slurm.group(2) is not None:
            days, hours, minutes, seconds = (int(g or 0) for g in slurm.groups()[:4])
        else:
            days, hours, minutes, seconds = (*(int(g) for g in slurm.groups()[4:]), 0)
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    return None


def _positive_duration(value: str, option: str) -> timedelta:
    found = parse_duration(value)
    if found is None or found <= timedelta(0):
        raise click.BadParameter(
            f"{value!r} is not a duration like 8h, 1h30m, 2d or 08:00:00", param_hint=option
        )
    return found


def duration_option(
    name: str, help: str, required: bool = False, default: str | None = None
) -> Callable[[F], F]:
    """A positive duration (``8h``, ``1h30m``, ``2d``, ``08:00:00``), checked."""
    return click.option(
        name,
        required=required,
        default=default,
        show_default=default is not None,
        callback=lambda c, p, v: None if v is None else _positive_duration(v, name),
        help=help,
    )


def month_option(help: str = "YYYY-MM (UTC, by job end).") -> Callable[[F], F]:
    """``--month YYYY-MM``, checked."""
    return click.option("--month", callback=lambda c, p, v: _month(v), help=help)


def date_option(name: str, help: str, required: bool = False) -> Callable[[F], F]:
    """A ``--since``/``--until`` date (UTC unless it names a zone), checked."""
    return click.option(name, required=required, callback=lambda c, p, v: _date(v), help=help)


def _table(headers: list[str], rows: Sequence[Sequence[str]], caption: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, caption=caption)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _report_problems(report: IngestReport, limit: int = 20, total: int | None = None) -> None:
    """The first ``limit`` problems, and how many more (of ``total``, if not all kept)."""
    for problem in report.problems[:limit]:
        click.secho(f"  {problem}", fg="yellow", err=True)
    failed = report.failed if total is None else total
    if failed > limit:
        click.secho(f"  ... and {failed - limit} more", fg="yellow", err=True)


def _listen_address(address: str, option: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter(f"{address!r} is not host:port", param_hint=option)
    return host or "0.0.0.0", int(port)
