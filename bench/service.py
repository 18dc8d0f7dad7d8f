"""The service as the service benchmarks run it: `ledgerlink serve` and `ledgerlink worker` in processes of
their own over one store, a practice set up through the library, and a load generator in a separate process.

The load generator is this module run as a script:

    .venv/bin/python -m bench.service load --url URL --token T --path /v1/transactions --requests N ...

It sends the requests with `--concurrency` in flight over keep-alive connections and prints one JSON line:
seconds, requests/s, transactions/s, status counts, latency percentiles, and (with `--record`) the wall
clock time each transaction's answer arrived, for the latency benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGERLINK_DATABASE_URL": database_url,
        "LEDGERLINK_DATA_DIR": str(data_dir),
        "LEDGERLINK_LOG_LEVEL": "WARNING",
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ledgerlink.cli import main; main()", *args]


@contextmanager
def serving(database_url: str, data_dir: Path) -> Iterator[str]:
    """`ledgerlink serve` on a free loopback port; yields its base URL once /v1/health answers."""
    port = free_port()
    child = subprocess.Popen(
        _cli("serve", "--host", LOOPBACK, "--port", str(port)),
        env=service_env(database_url, data_dir),
        stderr=subprocess.DEVNULL,
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ledgerlink serve did not start")
            time.sleep(0.1)
        yield base
    finally:
        _stop(child)


@contextmanager
def working(database_url: str, data_dir: Path, workers: int = 1, *args: str) -> Iterator[list[int]]:
    """`workers` processes of `ledgerlink worker`; yields their pids; SIGTERM at the end."""
    children = [
        subprocess.Popen(
            _cli("worker", *args),
            env=service_env(database_url, data_dir),
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        yield [c.pid for c in children]
    finally:
        for child in children:
            _stop(child)


def _stop(child: subprocess.Popen[Any]) -> None:
    child.terminate()
    try:
        child.wait(60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run_load(
    url: str,
    token: str,
    *,
    path: str,
    requests: int,
    batch: int,
    concurrency: int,
    rate: float | None = None,
    prefix: str = "bench",
    patients: int = 100,
    record: bool = False,
) -> dict[str, Any]:
    """Run the load generator in its own process and return its figures."""
    args = [
        sys.executable,
        "-m",
        "bench.service",
        "load",
        "--url",
        url,
        "--token",
        token,
        "--path",
        path,
        "--requests",
        str(requests),
        "--batch",
        str(batch),
        "--concurrency",
        str(concurrency),
        "--prefix",
        prefix,
        "--patients",
        str(patients),
    ]
    if rate:
        args += ["--rate", str(rate)]
    if record:
        args.append("--record")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the load generator (child process) ----------------------------------------------------------------


def _sale(ref: str, patient: int, cents: int) -> dict[str, Any]:
    return {
        "reference": ref,
        "time": datetime.now(UTC).isoformat(),
        "kind": "sale",
        "payment_type": "terminal",
        "gross": f"{cents // 100}.{cents % 100:02d}",
        "fee": "1.25",
        "patient_id": f"p{patient}",
    }


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    tokens = args.token.split(",")  # several practices: requests take their tokens in turn
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    answered: dict[str, float] = {}  # reference -> wall clock time the answer arrived (epoch seconds)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.requests):
        queue.put_nowait(n)
    interval = 1.0 / args.rate if args.rate else 0.0
    start = time.perf_counter()

    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=60) as client:

        async def one(n: int) -> None:
            auth = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            if args.path == "/v1/health":
                sent = time.perf_counter()
                response = await client.get("/v1/health", headers=auth)
                refs: list[str] = []
            else:
                refs = [f"{args.prefix}_{n}_{k}" for k in range(args.batch)]
                objects = [_sale(ref, (n + k) % args.patients, 1000 + n % 9000) for k, ref in enumerate(refs)]
                body: Any = objects[0] if args.batch == 1 else {"transactions": objects}
                sent = time.perf_counter()
                response = await client.post(
                    args.path, json=body, headers={**auth, "Idempotency-Key": f"{args.prefix}-{n}"}
                )
            latencies.append(time.perf_counter() - sent)
            statuses[response.status_code] += 1
            if args.record and response.status_code < 300:
                now = time.time()
                for ref in refs:
                    answered[ref] = now

        async def sender() -> None:
            while True:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if interval:  # open loop: request n leaves at start + n * interval, whatever came back
                    delay = start + n * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await one(n)

        await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    seconds = time.perf_counter() - start
    transactions = 0 if args.path == "/v1/health" else args.requests * args.batch
    return {
        "seconds": round(seconds, 3),
        "requests_per_s": round(args.requests / seconds, 1),
        "transactions_per_s": round(transactions / seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "answered": answered,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.service")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="the load generator (runs in its own process)")
    load.add_argument("--url", required=True)
    load.add_argument("--token", required=True, help="a staff token, or several separated by commas")
    load.add_argument("--path", default="/v1/transactions")
    load.add_argument("--requests", type=int, required=True)
    load.add_argument("--batch", type=int, default=1)
    load.add_argument("--concurrency", type=int, default=32)
    load.add_argument("--rate", type=float, default=None, help="requests/s, open loop (default: closed loop)")
    load.add_argument("--prefix", default="bench")
    load.add_argument("--patients", type=int, default=100)
    load.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    from ledgerlink import runtime

    print(json.dumps(runtime.run(_load(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
