"""Benchmark: instant writeback latency, from the ingest answer to the PMS commit, under sustained load.

Target (set by the issue): at a sustained 200 transactions/s, p50 under 100 ms and p99 under 1 s.

    .venv/bin/python -m bench.bench_instant [--seconds S] [--rate TX_PER_S] [--practices N] [--workers N]

Set-up (not timed): a fresh PostgreSQL store; `--practices` practices, each with a staff token, a sandbox
PMS connection (Open Dental's schema in a SQLite file of its own) and patients with PMS accounts;
`ledgerlink serve` and `--workers` `ledgerlink worker` processes; the load generator in a process of its
own sending `--rate` transactions a second (open loop: each request leaves on schedule whatever the
answers before it) as requests of `--batch` transactions, the practices in turn.

Latency of a transaction: the time its writeback was recorded posted (written by the worker right after
the PMS committed the payment, so an upper bound of the commit time) minus the time the load generator
received the ingest answer. Both clocks are this machine's.

Baseline, measured in the same run before the load: the database's own wake-up latency, a commit with
`NOTIFY` until a listening connection receives it (the floor of any design that wakes a worker from the
database), 200 samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, select

from bench.common import fresh_postgres_database
from bench.service import run_load, serving, working
from ledgerlink import runtime
from ledgerlink.connectors.sandbox import open_sandbox_office
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.store.db import Database
from ledgerlink.store.models import Patient, PatientAccount, Transaction, Writeback
from ledgerlink.tokens import issue_token
from ledgerlink.worker.wakeups import listen_conninfo

PATIENTS = 20
TARGET_P50_MS = 100.0
TARGET_P99_MS = 1000.0


async def set_up(url: str, work: Path, practices: int) -> list[str]:
    """Practices with a sandbox connection and patients with accounts; returns their staff tokens."""
    db = await Database.open(url)
    tokens = []
    try:
        for n in range(practices):
            office = open_sandbox_office(f"sqlite:///{work / f'pms-{n}.db'}")
            try:
                pat_nums = [office.add_patient(f"Bench{i}", "Pat") for i in range(PATIENTS)]
            finally:
                office.close()
            async with db.sessions.begin() as session:
                practice = await create_practice(
                    session, slug=f"p{n}", name=f"Practice {n}", timezone="America/Chicago"
                )
                connection = await add_connection(
                    session,
                    practice,
                    name="pms",
                    kind="sandbox",
                    settings={"path": str(work / f"pms-{n}.db")},
                )
                tokens.append((await issue_token(session, practice, "bench", actor="bench")).plain)
                ids = (
                    await session.scalars(
                        insert(Patient).returning(Patient.id),
                        [{"practice_id": practice.id, "patient_ref": f"p{i}"} for i in range(PATIENTS)],
                    )
                ).all()
                await session.execute(
                    insert(PatientAccount),
                    [
                        {"patient_id": pid, "connection_id": connection.id, "account_number": str(num)}
                        for pid, num in zip(ids, pat_nums, strict=True)
                    ],
                )
    finally:
        await db.close()
    return tokens


async def notify_baseline(url: str, samples: int = 200) -> dict[str, float]:
    """Commit-with-NOTIFY to listener wake-up, in milliseconds."""
    conninfo = listen_conninfo(url)
    latencies: list[float] = []
    async with (
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(conninfo) as sender,
    ):
        await listener.execute("LISTEN ll_bench_baseline")
        notices = listener.notifies()
        try:
            for _ in range(samples):
                start = time.perf_counter()
                await sender.execute("SELECT pg_notify('ll_bench_baseline', 'x')")
                await sender.commit()
                await anext(notices)
                latencies.append((time.perf_counter() - start) * 1000)
        finally:
            await notices.aclose()  # a suspended notifies() generator keeps the connection from closing
    return _percentiles(latencies)


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 1), "count": len(ordered)}


async def posted_times(url: str, expected: int, limit_s: float = 120) -> dict[str, datetime]:
    """Each transaction's time of being recorded posted, once all `expected` are (or `limit_s` passed)."""
    db = await Database.open(url, migrate_schema=False)
    try:
        deadline = time.monotonic() + limit_s
        while True:
            async with db.sessions() as session:
                rows = (
                    await session.execute(
                        select(Transaction.processor_ref, Writeback.updated_at)
                        .join(Writeback, Writeback.transaction_id == Transaction.id)
                        .where(Writeback.status == "posted")
                    )
                ).all()
            if len(rows) >= expected or time.monotonic() > deadline:
                return {ref: at for ref, at in rows}
            await asyncio.sleep(0.5)
    finally:
        await db.close()


def bench(args: argparse.Namespace) -> dict[str, Any]:
    requests_per_s = args.rate / args.batch
    requests = int(args.seconds * requests_per_s)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ll-bench-instant-")))
        url = stack.enter_context(fresh_postgres_database("ll_bench_instant"))
        tokens = runtime.run(set_up(url, work, args.practices))
        baseline = runtime.run(notify_baseline(url))
        base = stack.enter_context(serving(url, work))
        stack.enter_context(working(url, work, args.workers))
        time.sleep(2)  # the workers' first scan
        load = run_load(
            base,
            ",".join(tokens),
            path="/v1/transactions",
            requests=requests,
            batch=args.batch,
            concurrency=64,
            rate=requests_per_s,
            patients=PATIENTS,
            record=True,
        )
        answered: dict[str, float] = load.pop("answered")
        posted = runtime.run(posted_times(url, len(answered)))
    latencies = [(posted[ref].timestamp() - at) * 1000 for ref, at in answered.items() if ref in posted]
    return {
        "rate_tx_per_s": args.rate,
        "achieved_tx_per_s": load["transactions_per_s"],
        "seconds": args.seconds,
        "batch": args.batch,
        "practices": args.practices,
        "workers": args.workers,
        "sent": len(answered),
        "posted": len(latencies),
        "ingest": {k: load[k] for k in ("p50_ms", "p99_ms", "statuses")},
        "latency": _percentiles(latencies) if latencies else {},
        "baseline_notify": baseline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_instant", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="transactions per second")
    parser.add_argument("--batch", type=int, default=10, help="transactions per request")
    parser.add_argument("--practices", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return 0
    lat, base = result["latency"], result["baseline_notify"]
    print(
        f"{result['sent']} transactions at {result['rate_tx_per_s']:.0f}/s asked, "
        f"{result['achieved_tx_per_s']:.0f}/s sent ({result['batch']} per request, {result['practices']} "
        f"practices, {result['workers']} worker(s)); posted {result['posted']}"
    )
    print(f"ingest answer: p50 {result['ingest']['p50_ms']} ms, p99 {result['ingest']['p99_ms']} ms")
    print(
        f"answer -> PMS commit: p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms"
    )
    print(f"baseline NOTIFY wake-up: p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms")
    met = (
        result["posted"] == result["sent"]
        and lat.get("p50_ms", 1e9) < TARGET_P50_MS
        and lat.get("p99_ms", 1e9) < TARGET_P99_MS
    )
    print(
        f"target p50 < {TARGET_P50_MS:.0f} ms and p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'MISSED'}"
    )
    return 0 if result["posted"] == result["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
