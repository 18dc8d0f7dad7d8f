"""Benchmark: transactions per second through `POST /v1/transactions` on this machine.

Target (set by the issue): at least 1,000 transactions/s through the API on 2 cores, measured with a load
generator in a separate process.

    .venv/bin/python -m bench.bench_ingest [--store postgres|sqlite] [--requests N] [--concurrency C]

Set-up (not timed): a fresh store with one practice, a staff token and 100 patients; `ledgerlink serve` in
its own process (one uvicorn process, as `serve` runs it). The load generator (bench/service.py) runs in
another process and sends each request with its own `Idempotency-Key`, as a payment platform would.

Measured, in one run, one after another against the same server:
- the baseline: `GET /v1/health` at the same concurrency, the limit of the HTTP server, the loopback
  network and the load generator together, with no database and no ledgerlink logic;
- one transaction per request (each its own database transaction, idempotency record and commit);
- batches of 100 transactions per request (the API's batch form, up to 1,000 per request).

Every transaction sent is then counted in the store, so a figure cannot come from failed requests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bench.common import fresh_postgres_database
from bench.service import run_load, serving
from ledgerlink import runtime
from ledgerlink.practices import create_practice
from ledgerlink.store.db import Database
from ledgerlink.store.models import Patient, Transaction
from ledgerlink.tokens import issue_token

PATIENTS = 100
TARGET_TPS = 1000.0


async def set_up(url: str) -> str:
    db = await Database.open(url)
    try:
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug="bench", name="Bench", timezone="America/Chicago")
            token = await issue_token(session, practice, "bench", actor="bench")
            await session.execute(
                insert(Patient),
                [{"practice_id": practice.id, "patient_ref": f"p{i}"} for i in range(PATIENTS)],
            )
        return token.plain
    finally:
        await db.close()


async def stored(url: str) -> int:
    db = await Database.open(url, migrate_schema=False)
    try:
        async with db.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Transaction)) or 0)
    finally:
        await db.close()


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ll-bench-ingest-")))
        if args.store == "postgres":
            url = stack.enter_context(fresh_postgres_database("ll_bench_ingest"))
        else:
            url = f"sqlite+aiosqlite:///{work / 'ledgerlink.db'}"
        token = runtime.run(set_up(url))
        base = stack.enter_context(serving(url, work))
        common = {"concurrency": args.concurrency, "patients": PATIENTS}
        # Warm-up: connections, caches, the first plans.
        run_load(base, token, path="/v1/transactions", requests=200, batch=1, prefix="warm", **common)
        health = run_load(base, token, path="/v1/health", requests=args.requests, batch=1, **common)
        single = run_load(
            base, token, path="/v1/transactions", requests=args.requests, batch=1, prefix="one", **common
        )
        batched = run_load(
            base,
            token,
            path="/v1/transactions",
            requests=max(1, args.requests // 50),
            batch=100,
            prefix="many",
            **common,
        )
        count = runtime.run(stored(url))
    expected = 200 + args.requests + max(1, args.requests // 50) * 100
    for figures in (health, single, batched):
        figures.pop("answered", None)
    return {
        "store": args.store,
        "cores": os.cpu_count(),
        "concurrency": args.concurrency,
        "baseline_health": health,
        "one_per_request": single,
        "batch_of_100": batched,
        "stored": count,
        "expected": expected,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return 0
    health, single, batched = result["baseline_health"], result["one_per_request"], result["batch_of_100"]
    print(f"store {result['store']}, {result['cores']} cores, {result['concurrency']} requests in flight")
    print(
        f"baseline GET /v1/health:      {health['requests_per_s']:>8.0f} requests/s   "
        f"p50 {health['p50_ms']} ms  p99 {health['p99_ms']} ms"
    )
    print(
        f"one transaction per request:  {single['transactions_per_s']:>8.0f} transactions/s "
        f"p50 {single['p50_ms']} ms  p99 {single['p99_ms']} ms  "
        f"({single['transactions_per_s'] / health['requests_per_s']:.0%} of the baseline's request rate)"
    )
    print(
        f"100 transactions per request: {batched['transactions_per_s']:>8.0f} transactions/s "
        f"p50 {batched['p50_ms']} ms  p99 {batched['p99_ms']} ms"
    )
    print(f"statuses: one {single['statuses']}, batch {batched['statuses']}")
    print(f"stored {result['stored']} of {result['expected']} sent")
    best = max(single["transactions_per_s"], batched["transactions_per_s"])
    print(f"target >= {TARGET_TPS:.0f} transactions/s: {'met' if best >= TARGET_TPS else 'MISSED'}")
    return 0 if result["stored"] == result["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
