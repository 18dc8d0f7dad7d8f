"""When to try again after the PMS could not be reached."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

MAX_ATTEMPTS = 10
"""After this many attempts a writeback that never got through fails with PMS_UNREACHABLE for a person."""

IN_RUN_DELAYS = (0.05, 0.25, 1.0)
"""Short pauses between tries within one sync run, before the writeback is scheduled for later."""


def next_attempt_at(now: datetime, attempts: int, *, retry_after: float | None = None) -> datetime:
    """Exponential backoff from 30 s to 1 h with 10% jitter, never sooner than the PMS asked."""
    delay = min(30 * 2 ** max(attempts - 1, 0), 3600) * random.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + timedelta(seconds=delay)
