"""Spacing of PMS requests so that a connection never exceeds the rate its connector declares."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Allows at most `rate` calls per second, evenly spaced (Open Dental throttles per key, not per burst)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = self._next
            self._next = now + self.interval
