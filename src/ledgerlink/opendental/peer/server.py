"""Running the peer under uvicorn: in the foreground (`serve`), on a background thread (`running_peer`),
or in a child process (`running_peer_process`).

Tests and benchmarks need a real HTTP server, not an in-process transport (see ledgerlink/serving.py).
A peer on a thread shares the interpreter lock with the client under test,
which is fine for tests; a benchmark that wants the client's and the peer's costs apart runs the peer in
its own process instead (`running_peer_process`, which is `python -m ledgerlink.opendental.peer.server`).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.opendental.peer.app import create_app
from ledgerlink.opendental.peer.config import PeerConfig
from ledgerlink.serving import LOOPBACK, STARTUP_TIMEOUT_S, running_app, uvicorn_config

READY = "od-peer listening on port"


def serve(config: PeerConfig, *, host: str = LOOPBACK, port: int = 30222, log_level: str = "info") -> None:
    """Serve the peer until interrupted (Ctrl-C). Port 30222 is Open Dental's Local API port."""
    uvicorn.Server(uvicorn_config(create_app(config), host, port, log_level)).run()


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
    _AnnouncingServer(uvicorn_config(create_app(config), args.host, args.port, args.log_level)).run()


if __name__ == "__main__":
    main()
