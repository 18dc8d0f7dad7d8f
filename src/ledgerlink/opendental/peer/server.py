"""Running the peer under uvicorn: in the foreground (`serve`), on a background thread (`running_peer`),
or in a child process (`running_peer_process`).

Tests and benchmarks need a real HTTP server, not an in-process transport: the throttle measures real
arrival times, and a dropped connection is only a dropped connection on a real socket. `running_app`
starts uvicorn on 127.0.0.1 with an ephemeral port in a thread with its own event loop, waits until it
listens, and stops it on exit. A peer on a thread shares the interpreter lock with the client under test,
which is fine for tests; a benchmark that wants the client's and the peer's costs apart runs the peer in
its own process instead (`running_peer_process`, which is `python -m ledgerlink.opendental.peer.server`).

uvicorn runs with the settings that matter for throughput on a small machine: no access log (a log line
per request costs more than the request), and keep-alive long enough that a client sending one request a
second per key reuses its connections.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.opendental.peer.app import create_app
from ledgerlink.opendental.peer.config import PeerConfig

LOOPBACK = "127.0.0.1"
READY = "od-peer listening on port"
KEEP_ALIVE_S = 30
STARTUP_TIMEOUT_S = 30.0


def _uvicorn_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
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


def serve(config: PeerConfig, *, host: str = LOOPBACK, port: int = 30222, log_level: str = "info") -> None:
    """Serve the peer until interrupted (Ctrl-C). Port 30222 is Open Dental's Local API port."""
    uvicorn.Server(_uvicorn_config(create_app(config), host, port, log_level)).run()


@contextmanager
def running_app(app: FastAPI, *, log_level: str = "warning") -> Iterator[str]:
    """Serve `app` on 127.0.0.1 on a free port in a background thread; yields the base URL
    (`http://127.0.0.1:PORT`, Open Dental's API being under `/api/v1`)."""
    server = uvicorn.Server(_uvicorn_config(app, LOOPBACK, 0, log_level))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the waiting thread, which raises it
            failure.append(exc)

    thread = threading.Thread(target=run, name="od-peer", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if failure or not thread.is_alive():
            raise RuntimeError("the Open Dental peer did not start") from (failure[0] if failure else None)
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the Open Dental peer did not start within {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)


@contextmanager
def running_peer(config: PeerConfig, *, office: OpenDentalOffice | None = None) -> Iterator[str]:
    """The peer for `config` served in the background (see `running_app`); yields its base URL.

    With `office`, the peer serves that already-open office (and leaves it open), so the caller can set
    it up and inspect it; otherwise the peer opens `config.database_url` and closes it on exit.
    """
    with running_app(create_app(config, office=office)) as base_url:
        yield base_url


class _AnnouncingServer(uvicorn.Server):
    """uvicorn that prints its port once it listens, for the parent of `running_peer_process`."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"{READY} {self.servers[0].sockets[0].getsockname()[1]}", flush=True)


@contextmanager
def running_peer_process(config: PeerConfig) -> Iterator[str]:
    """The peer for `config` in a child process on 127.0.0.1 and a free port; yields its base URL.

    The child opens `config.database_url` itself: set the office up before (or through another
    `OpenDentalOffice` on the same database) and read `/_peer/stats` over HTTP.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "ledgerlink.opendental.peer.server", "--port", "0", "--config-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(config.model_dump_json())
        child.stdin.close()
        line = child.stdout.readline()  # the child prints nothing before READY; EOF if it failed
        if not line.startswith(READY):
            raise RuntimeError(f"the Open Dental peer process did not start (exit code {child.wait(10)})")
        yield f"http://{LOOPBACK}:{int(line.split()[-1])}"
    finally:
        child.terminate()  # SIGTERM: uvicorn shuts down cleanly
        try:
            child.wait(STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> None:
    """`python -m ledgerlink.opendental.peer.server`: serve a peer, configured by flags or by a PeerConfig
    JSON document on stdin."""
    parser = argparse.ArgumentParser(description="Serve the Open Dental API peer.")
    parser.add_argument("--database-url", help="sqlite:///PATH or mysql+pymysql://...")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=30222)
    parser.add_argument(
        "--config-stdin", action="store_true", help="read a PeerConfig JSON document on stdin"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.config_stdin:
        config = PeerConfig.model_validate_json(sys.stdin.read())
    elif args.database_url:
        config = PeerConfig(database_url=args.database_url)
    else:
        parser.error("give --database-url or --config-stdin")
    _AnnouncingServer(_uvicorn_config(create_app(config), args.host, args.port, args.log_level)).run()


if __name__ == "__main__":
    main()
