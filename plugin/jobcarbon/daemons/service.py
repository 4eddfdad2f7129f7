"""What every long-running command sets up the same way: logging to stderr, SIGTERM and
SIGINT as a request to stop, SIGHUP as a request to read the config again."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from ..config import Config
from .reload import Reloader

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def start_logging() -> None:
    """Log at INFO to stderr, with the time (systemd's journal and kubectl logs keep it)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


class Service:
    """Installs the signal handlers: SIGTERM and SIGINT set ``should_stop``; SIGHUP asks
    ``reloader`` to load the config again with ``load``."""

    def __init__(self, load: Callable[[], Config]) -> None:
        self.stopping: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.reloader = Reloader(load).install()

    def _stop(self, number: int, _frame: Any) -> None:
        self.stopping.append(number)

    def should_stop(self) -> bool:
        return bool(self.stopping)
