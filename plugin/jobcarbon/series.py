"""The hourly grid-intensity series a site names (``sites.*.grid.series``): one CSV file,
read and checked at config load; every bad line is reported at once, with its number."""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime
from pathlib import Path

from .errors import ConfigError
from .site import HourlySeries


def read_series(path: Path, fallback: float | None, where: str) -> HourlySeries:
    """Read an hourly intensity CSV; every bad line is reported with its line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{where}.path: cannot read {path}: {err.strerror}"]) from err
    rows = csv.reader(text.splitlines())
    header = next(rows, [])
    if [h.strip() for h in header] != ["timestamp", "intensity_g_per_kwh"]:
        raise ConfigError(
            [
                f"{where}.path: {path}: header must be "
                f"'timestamp,intensity_g_per_kwh', got {','.join(header)!r}"
            ]
        )
    by_hour: dict[int, float] = {}
    problems: list[str] = []
    for line_no, row in enumerate(rows, start=2):
        try:
            stamp = datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            value = float(row[1])
            if not 0 <= value <= 2000:
                raise ValueError(f"intensity {value} outside 0..2000 gCO2e/kWh")
            if stamp.minute or stamp.second:
                raise ValueError("timestamp must be the start of an hour")
        except (ValueError, IndexError) as err:
            problems.append(f"{where}.path: {path} line {line_no}: {err} ({','.join(row)!r})")
            continue
        by_hour[int(stamp.timestamp()) // 3600] = value
    if problems:
        raise ConfigError(problems)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return HourlySeries(by_hour, fallback, str(path), f"sha256:{digest}")
