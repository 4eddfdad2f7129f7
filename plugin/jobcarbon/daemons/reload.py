"""Reading the config again on SIGHUP (``systemctl reload``), for the long-running services.

The signal only asks; the service takes the new config between two rounds of work,
through ``Reloader.take``. A config that does not load, or that the service cannot use,
is refused with the reason in the log, and the service goes on with the one it had.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import JobcarbonError

log = logging.getLogger("jobcarbon.reload")


class Reloader:
    """Loads the config again when asked (``request``, or SIGHUP once ``install``ed)."""

    def __init__(self, load: Callable[[], Config]) -> None:
        self.load = load
        self.requested = False

    def request(self, *_: Any) -> None:
        self.requested = True

    def install(self) -> Reloader:
        signal.signal(signal.SIGHUP, self.request)
        return self

    def take(self, apply: Callable[[Config], None]) -> bool:
        """If a reload was asked for: load the config and ``apply`` it. True if applied;
        a config that fails either step is logged with why, and the old one stays."""
        if not self.requested:
            return False
        self.requested = False
        try:
            apply(self.load())
        except JobcarbonError as err:
            log.error("config not reloaded, still using the one before: %s", err)
            return False
        log.info("config reloaded")
        return True
