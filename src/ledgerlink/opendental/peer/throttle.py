"""Open Dental's per-key throttle, and the per-key counters the peer reports at `/_peer/stats`.

Open Dental throttles each customer key to its plan's rate (one request every 5 s, 1 s or 500 ms), and a
connector that writes for hundreds of offices must keep every key under its rate on its own. The peer
therefore does not just refuse fast requests: it *counts* them, so a test can assert that a connector had
zero violations, separately from the 429s it was sent on purpose (an injected storm is `throttled` but
never a violation).

Exactness under concurrency: the verdict for a request is `Throttle.admit`, a plain (non-async) method
that reads and writes the key's last arrival with no `await` in between. All requests are handled on the
server's one event loop, so two requests of the same key can never interleave inside it; that is the
guarantee a per-key `asyncio.Lock` would give, without the lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(slots=True)
class KeyCounters:
    requests: int = 0  # authenticated Open Dental API requests
    rate_limit_violations: int = 0  # arrived faster than the key's rate (and were answered 429)
    throttled: int = 0  # every 429: violations and injected ones
    errors: int = 0  # injected 503s
    dropped: int = 0  # connections dropped after the write committed

    def add(self, other: KeyCounters) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class PeerStats:
    """Counters per customer key. Only touched on the event loop, like `Throttle`."""

    def __init__(self) -> None:
        self.by_key: dict[str, KeyCounters] = {}
        self.unauthorized = 0

    def key(self, customer_key: str) -> KeyCounters:
        counters = self.by_key.get(customer_key)
        if counters is None:
            counters = self.by_key[customer_key] = KeyCounters()
        return counters

    def snapshot(self) -> dict[str, object]:
        """The `/_peer/stats` document: totals, then the same counters per key."""
        totals = KeyCounters()
        for counters in self.by_key.values():
            totals.add(counters)
        return {
            **asdict(totals),
            "unauthorized": self.unauthorized,
            "by_key": {key: asdict(counters) for key, counters in self.by_key.items()},
        }

    def reset(self) -> None:
        self.by_key.clear()
        self.unauthorized = 0


class Throttle:
    """Decides, on arrival, whether a request came too soon after the previous request of its key.

    "Previous request" means any request of the key, refused or not: a client that keeps sending too fast
    keeps being refused, as it would be by a server that measures the spacing of what it receives.
    `tolerance_s` forgives arrival jitter (the event loop and the network delay requests unevenly).
    Arrival times survive `/_peer/reset-stats`, as a real server's memory of a key would.
    """

    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_s = tolerance_s
        self._last_arrival: dict[str, float] = {}

    def admit(self, customer_key: str, requests_per_second: float | None, arrival: float) -> bool:
        """Record the arrival (a `time.monotonic()` reading); False when it is a rate-limit violation."""
        if requests_per_second is None:
            return True
        previous = self._last_arrival.get(customer_key)
        self._last_arrival[customer_key] = arrival
        if previous is None:
            return True
        return arrival - previous >= 1.0 / requests_per_second - self.tolerance_s
