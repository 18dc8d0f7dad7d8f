"""Misbehaviour on demand: latency, 503s, 429 storms and responses lost after the write committed.

The last one is what exactly-once writeback is about: Open Dental has no idempotency key, so a client that
loses the answer to `POST /payments` cannot tell whether the payment exists. To make that real for the
client, the peer lets the write commit, sends the response's status line and headers, and then raises
`DroppedConnection` out of the ASGI app: uvicorn closes the socket mid-response, and an HTTP client sees a
transport error (httpx: `RemoteProtocolError`), never a status code it could trust.

Every decision is drawn from one `random.Random` seeded by `Faults.seed`, in arrival order, so a run with a
seed and the same request sequence injects the same faults.
"""

from __future__ import annotations

import logging
import random

from ledgerlink.opendental.peer.config import Faults


class DroppedConnection(Exception):
    """Raised after a committed write's response has started, so that the server drops the connection."""


class FaultInjector:
    """The current fault knobs and the seeded draws made from them."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)

    def replace(self, faults: Faults) -> None:
        """New knobs at run time (`PUT /_peer/faults`); the draws restart from the new seed."""
        self.faults = faults
        self._random = random.Random(faults.seed)

    @property
    def latency_s(self) -> float:
        return self.faults.latency_ms / 1000.0

    def error(self) -> bool:
        return self._draw(self.faults.error_rate)

    def throttle(self) -> bool:
        return self._draw(self.faults.throttle_rate)

    def drop_after_commit(self) -> bool:
        return self._draw(self.faults.drop_after_commit_rate)

    def _draw(self, rate: float) -> bool:
        # No draw for a knob that is off, so turning one knob on does not shift the others' sequences.
        return rate > 0 and self._random.random() < rate


class _HideDeliberateDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection the peer drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def hide_deliberate_drops_from_logs() -> None:
    """Install the filter on uvicorn's error logger once per process."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _HideDeliberateDrops) for existing in logger.filters):
        logger.addFilter(_HideDeliberateDrops())
