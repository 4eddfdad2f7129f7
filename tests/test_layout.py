"""The package's layout as docs/ARCHITECTURE.md describes it: modules small enough to
hold one responsibility, and every module of the package named there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugin" / "jobcarbon"
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_of_the_package_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_architecture_document_names_every_module() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", text))
    missing = [
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if str(path.relative_to(PACKAGE)) not in named and path.name != "__main__.py"
    ]
    assert missing == [], "modules docs/ARCHITECTURE.md does not describe"
