"""The event loop ledgerlink runs on: uvloop where it is installed (Linux, macOS), asyncio's own elsewhere.

A sync of hundreds of Open Dental offices is bound by how fast one process can send and answer small HTTP
requests; uvloop does the loop's part of that (timers, sockets, callbacks) in C, for about a tenth less CPU
per request measured in bench/bench_opendental.py. Nothing in ledgerlink depends on which loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # Windows: uvloop does not exist there
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop above."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
