"""Create the project's virtual environment with pip in it, on a bare Debian python3.

Usage: python3 tools/make_venv.py DIR

Debian's python3 lacks ensurepip unless python3-venv is installed. Then this makes
the environment without pip and bootstraps pip from its wheel on the package index
($PIP_INDEX_URL, else PyPI): a wheel runs as a zip file (``python pip.whl/pip``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import venv
from pathlib import Path


def bootstrap_pip(python: Path) -> None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    with urllib.request.urlopen(f"{index}/pip/", timeout=60) as response:
        page = response.read().decode()
    wheels = re.findall(r'href="([^"]*/(pip-(\d+)\.(\d+)(?:\.\d+)?-py3-none-any\.whl)[^"]*)"', page)
    if not wheels:
        sys.exit(f"no pip wheel found at {index}/pip/; install python3-venv instead")
    url, name, *_ = max(wheels, key=lambda w: (int(w[2]), int(w[3])))
    if url.startswith("/") or not url.startswith("http"):
        url = urllib.parse.urljoin(f"{index}/pip/", url)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(tmp) / name
        with urllib.request.urlopen(url, timeout=120) as response:
            wheel.write_bytes(response.read())
        subprocess.run([str(python), f"{wheel}/pip", "install", "--quiet", str(wheel)], check=True)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    target = Path(sys.argv[1])
    python = target / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode
        == 0
    ):
        return  # an environment with pip is already there: reuse it
    try:
        import ensurepip  # noqa: F401

        venv.create(target, with_pip=True)
    except (ImportError, subprocess.CalledProcessError):
        print(
            "ensurepip is missing (Debian without python3-venv): bootstrapping pip from the "
            "package index",
            file=sys.stderr,
        )
        venv.create(target, with_pip=False)
        bootstrap_pip(python)


if __name__ == "__main__":
    main()
