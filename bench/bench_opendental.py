"""Benchmark: many Open Dental offices behind rate-limited API keys, all written back from one process.

Target (set by the issue): 500 offices, each behind the Open Dental peer with a 1 request/s limit and
50 ms latency, 20 payments each: all 10,000 posted, zero rate-limit violations, requests per payment
reported (aim: 1 once definitions and patients are cached), and total time within 10 % of the floor that
the rate limit sets for the requests made (requests per office divided by the rate). One process, one
machine.

    .venv/bin/python -m bench.bench_opendental [--offices N] [--payments N] [--rate R] [--latency-ms MS]
                                               [--office-db mariadb|sqlite]

Set-up (not timed): an Open Dental office database (MariaDB `ll_bench_od`, recreated; or SQLite) with
five patients per office; the peer in its own process (uvicorn, the throttle counting any request that
arrives sooner than 1/rate after the previous one of its key, with no tolerance); a ledgerlink store
(SQLite) with one practice and one `opendental` connection per office, each with its own customer key,
and the payments imported. The timed part runs every office's `run_sync` at once in one event loop.

The baseline, measured in the same run against the same peer, is the network limit: a bare httpx client
per key sending the same number of requests at exactly the same pacing rule (each request sent one
interval after the previous one ended), with no ledgerlink. Both are compared with the floor, requests
per office divided by the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import fresh_postgres_database
from ledgerlink import runtime
from ledgerlink.connectors.opendental.client import shared_tls_context
from ledgerlink.connectors.registry import open_connector, settings_to_store
from ledgerlink.engine.sync import run_sync
from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.opendental.peer.config import Faults, PeerConfig
from ledgerlink.opendental.peer.server import running_peer_process
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Patient, PatientAccount, Transaction, Writeback

MARIADB_ADMIN = os.environ.get("LEDGERLINK_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
PATIENTS_PER_OFFICE = 5
TARGET_OVER_FLOOR = 0.10
OCCURRED = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)


def office_database(kind: str, work: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{work / 'od.db'}"
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(MARIADB_ADMIN + "/ll_bench_od")
    connect = {"host": url.host, "port": url.port or 3306, "user": url.username or "root"}
    with pymysql.connect(**connect) as conn, conn.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS ll_bench_od")
        cursor.execute("CREATE DATABASE ll_bench_od CHARACTER SET utf8mb4")
    return url.render_as_string(hide_password=False)


async def set_up_store(
    db: Database,
    work: Path,
    peer_url: str,
    offices: int,
    payments: int,
    rate: float,
    pat_nums: list[list[int]],
) -> list[int]:
    """One practice and connection per office, its patients with PatNum account numbers, its sales."""
    connection_ids = []
    for n in range(offices):
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug=f"office-{n}", name=f"Office {n}", timezone="UTC")
            raw = {
                "base_url": f"{peer_url}/api/v1",
                "developer_key": "bench-dev",
                "customer_key": f"office-{n}",
                "requests_per_second": rate,
                "task_list_num": 1,
                "task_user_num": 1,
            }
            connection = await add_connection(
                session,
                practice,
                name="od",
                kind="opendental",
                settings=settings_to_store("opendental", raw, work),
            )
            connection_ids.append(connection.id)
            patients = []
            for pat_num in pat_nums[n]:
                patient = Patient(
                    practice_id=practice.id, patient_ref=f"p{pat_num}", first_name="Pat", last_name="Bench"
                )
                session.add(patient)
                patients.append((patient, pat_num))
            await session.flush()
            for patient, pat_num in patients:
                session.add(
                    PatientAccount(
                        patient_id=patient.id, connection_id=connection.id, account_number=str(pat_num)
                    )
                )
            for k in range(payments):
                patient = patients[k % len(patients)][0]
                gross = 5000 + 37 * k
                session.add(
                    Transaction(
                        practice_id=practice.id,
                        processor_ref=f"ch_{n}_{k}",
                        kind="sale",
                        payment_type="terminal",
                        gross_cents=gross,
                        fee_cents=gross * 3 // 100,
                        net_cents=gross - gross * 3 // 100,
                        occurred_at=OCCURRED,
                        local_date=OCCURRED.date(),
                        patient_id=patient.id,
                    )
                )
    return connection_ids


async def sync_all(db: Database, work: Path, connection_ids: list[int]) -> tuple[float, Counter[str]]:
    async with db.sessions() as session:
        settings = {c: (await session.get(Connection, c)).settings for c in connection_ids}  # type: ignore[union-attr]

    async def one(connection_id: int) -> None:
        connector = open_connector("opendental", settings[connection_id], work)
        try:
            await run_sync(db, connection_id, connector, since=OCCURRED.date())
        finally:
            await connector.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in connection_ids))
    elapsed = time.perf_counter() - started
    async with db.sessions() as session:
        from sqlalchemy import func, select

        rows = await session.execute(select(Writeback.status, func.count()).group_by(Writeback.status))
        statuses: Counter[str] = Counter({status: int(count) for status, count in rows})
    return elapsed, statuses


async def raw_baseline(
    peer_url: str, offices: int, requests: int, rate: float, concurrency: int | None = None
) -> float:
    """The same request pattern with no ledgerlink: per key, `requests` GETs, each sent one interval after
    the previous one ended (the pacing rule that keeps a key under its limit whatever the network does).
    `concurrency` caps the offices served at once, as the worker's `--concurrency` does (default: all)."""
    interval = 1.0 / rate
    slots = asyncio.Semaphore(concurrency or offices)

    async def one(n: int) -> None:
        async with slots:
            await paced(n)

    async def paced(n: int) -> None:
        headers = {"Authorization": f"ODFHIR bench-dev/baseline-{n}"}
        async with httpx.AsyncClient(
            base_url=f"{peer_url}/api/v1", headers=headers, verify=shared_tls_context()
        ) as client:
            ended = 0.0
            for _ in range(requests):
                wait = ended + interval - time.monotonic()
                if ended and wait > 0:
                    await asyncio.sleep(wait)
                (await client.get("/definitions", params={"Category": 10})).raise_for_status()
                ended = time.monotonic()

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(offices)))
    return time.perf_counter() - started


def peer_stats(peer_url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{peer_url}/_peer/stats", timeout=30).json()
    return answer


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ll-bench-od-") as tmp:
        work = Path(tmp)
        office_url = office_database(args.office_db, work)
        office = OpenDentalOffice.open(office_url, create=True)
        pat_nums = [
            [office.add_patient(f"Office{n}", f"Pat{k}") for k in range(PATIENTS_PER_OFFICE)]
            for n in range(args.offices)
        ]
        with contextlib.ExitStack() as stack:
            store_url = (
                f"sqlite+aiosqlite:///{work / 'ledgerlink.db'}"
                if args.store == "sqlite"
                else stack.enter_context(fresh_postgres_database("ll_bench_od"))
            )
            return await _measure(args, work, office, office_url, pat_nums, store_url)


async def _measure(
    args: argparse.Namespace,
    work: Path,
    office: OpenDentalOffice,
    office_url: str,
    pat_nums: list[list[int]],
    store_url: str,
) -> dict[str, Any]:
    config = PeerConfig(
        database_url=office_url,
        default_requests_per_second=args.rate,
        faults=Faults(latency_ms=args.latency_ms),
        rate_tolerance_ms=0,
    )
    db = await Database.open(store_url)
    try:
        with running_peer_process(config) as peer_url:
            setup_started = time.perf_counter()
            connection_ids = await set_up_store(
                db, work, peer_url, args.offices, args.payments, args.rate, pat_nums
            )
            setup = time.perf_counter() - setup_started
            print(f"set-up: {args.offices} offices, {args.offices * args.payments} payments ({setup:.1f} s)")
            elapsed, statuses = await sync_all(db, work, connection_ids)
            stats = peer_stats(peer_url)
            by_key = {k: v for k, v in stats["by_key"].items() if k.startswith("office-")}
            most = max(v["requests"] for v in by_key.values())
            total_requests = sum(v["requests"] for v in by_key.values())
            violations = sum(v["rate_limit_violations"] for v in by_key.values())
            throttled = sum(v["throttled"] for v in by_key.values())
            baseline = await raw_baseline(peer_url, args.offices, most, args.rate)
            base_stats = peer_stats(peer_url)
            base_violations = base_stats["rate_limit_violations"] - stats["rate_limit_violations"]
    finally:
        await db.close()
    posted = sum(1 for p in office.payments() if "[ll-wb-" in p.pay_note)
    problems = office.integrity_problems()
    office.close()
    floor = most / args.rate
    return {
        "offices": args.offices,
        "payments": args.offices * args.payments,
        "posted_in_office": posted,
        "statuses": dict(statuses),
        "integrity_problems": len(problems),
        "requests": total_requests,
        "requests_per_payment": total_requests / (args.offices * args.payments),
        "most_requests_per_office": most,
        "rate_limit_violations": violations,
        "throttled": throttled,
        "seconds": elapsed,
        "floor_seconds": floor,
        "over_floor": elapsed / floor - 1,
        "baseline_seconds": baseline,
        "baseline_over_floor": baseline / floor - 1,
        "baseline_violations": base_violations,
        "writebacks_per_s": posted / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offices", type=int, default=500)
    parser.add_argument("--payments", type=int, default=20, help="payments per office")
    parser.add_argument("--rate", type=float, default=1.0, help="requests/s per key")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--office-db", choices=("mariadb", "sqlite"), default="mariadb")
    parser.add_argument(
        "--store", choices=("sqlite", "postgres"), default="sqlite", help="ledgerlink's store"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    figures = runtime.run(bench(args))
    if args.json:
        print(json.dumps(figures))
    else:
        f = figures
        print(
            f"posted {f['posted_in_office']:,} of {f['payments']:,} ({f['statuses']}), "
            f"integrity problems {f['integrity_problems']}\n"
            f"requests {f['requests']:,}: {f['requests_per_payment']:.3f} per payment, "
            f"at most {f['most_requests_per_office']} per office; "
            f"rate-limit violations {f['rate_limit_violations']}, 429s {f['throttled']}\n"
            f"time {f['seconds']:.2f} s; floor {f['floor_seconds']:.2f} s "
            f"(+{100 * f['over_floor']:.1f} %); {f['writebacks_per_s']:.0f} writebacks/s\n"
            f"baseline (bare httpx, same pacing) {f['baseline_seconds']:.2f} s "
            f"(+{100 * f['baseline_over_floor']:.1f} % over the floor, {f['baseline_violations']} violations)"
        )
    met = (
        figures["posted_in_office"] == figures["payments"]
        and figures["rate_limit_violations"] == 0
        and figures["over_floor"] <= TARGET_OVER_FLOOR
        and figures["integrity_problems"] == 0
    )
    print("target met" if met else "TARGET MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
