"""Serving an ASGI app with uvicorn on a real socket: for `ledgerlink serve`, the Open Dental peer, and tests.

Tests and benchmarks need a real HTTP server, not an in-process transport: a throttle measures real
arrival times, and a dropped connection is only a dropped connection on a real socket. `running_app`
starts uvicorn on 127.0.0.1 with an ephemeral port in a thread with its own event loop, waits until it
listens, and stops it on exit.

uvicorn runs with the settings that matter for throughput on a small machine: no access log (a log line
per request costs more than the request), and keep-alive long enough that a client sending one request a
second per key reuses its connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

LOOPBACK = "127.0.0.1"
KEEP_ALIVE_S = 30
STARTUP_TIMEOUT_S = 30.0


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=4096,
        lifespan="on",
    )


@contextmanager
def running_app(app: FastAPI, *, log_level: str = "warning") -> Iterator[str]:
    """Serve `app` on 127.0.0.1 on a free port in a background thread; yields the base URL
    (`http://127.0.0.1:PORT`)."""
    server = uvicorn.Server(uvicorn_config(app, LOOPBACK, 0, log_level))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the waiting thread, which raises it
            failure.append(exc)

    thread = threading.Thread(target=run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if failure or not thread.is_alive():
            raise RuntimeError("the server did not start") from (failure[0] if failure else None)
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)
