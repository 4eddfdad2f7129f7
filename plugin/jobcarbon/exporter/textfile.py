"""The metrics as a file for node_exporter's textfile collector (``jobcarbon metrics
--textfile``), for hosts where nothing scrapes jobcarbon itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .exposition import Exporter


def write_textfile(exporter: Exporter, path: Path) -> None:
    """Write the exposition for node_exporter's textfile collector, atomically."""
    body = exporter.render()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
