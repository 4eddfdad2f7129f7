"""How long to wait before trying again: the collector's accounting and the mailer's SMTP."""

from __future__ import annotations

import random


def backoff_s(attempt: int, first_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1, 2, ...): ``first_s`` doubling up to ``max_s``,
    less a random jitter of up to half, so that retries of many processes spread out."""
    delay = min(max_s, first_s * 2.0 ** min(attempt - 1, 60))
    return delay * rng.uniform(0.5, 1.0)
