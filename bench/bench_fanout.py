"""Benchmark: fan-out. Thousands of practices, each an Open Dental office behind a 1 request/s limit with
50 ms latency, written back by `ledgerlink worker` processes from one PostgreSQL store.

Target (set by the issue): 10,000 practices; report sustained writebacks/s and confirm zero rate-limit
violations.

    .venv/bin/python -m bench.bench_fanout [--offices N] [--payments N] [--workers N] [--office-db mariadb|sqlite]

Set-up (not timed): the Open Dental peer in its own process over an office database (MariaDB by default)
with two patients per office; a fresh PostgreSQL store with one practice and one `opendental` connection
per office (its own customer key, so the peer throttles each office on its own) and `--payments` sales per
office. Timed: from starting the workers until every writeback is posted. The peer counts, per key, any
request that arrives sooner than 1/rate after the previous one (no tolerance).

Baseline, in the same run against the same peer: the network limit, a bare httpx client per key sending the
same number of requests per office with the same pacing rule, no ledgerlink, as many offices at once as the
worker's `--concurrency` (default 1,000: on one small machine, 10,000 simultaneous new connections to the
one peer process time out, for the bare client as for the worker). Both are compared with the floor (the most requests any office needed, divided by the rate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.bench_opendental import office_database, peer_stats, raw_baseline, set_up_store
from bench.common import fresh_postgres_database
from bench.service import working
from ledgerlink import runtime
from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.opendental.peer.config import Faults, PeerConfig
from ledgerlink.opendental.peer.server import running_peer_process
from ledgerlink.store.db import Database
from ledgerlink.store.models import Writeback

PATIENTS_PER_OFFICE = 2


async def statuses(url: str) -> Counter[str]:
    db = await Database.open(url, migrate_schema=False)
    try:
        async with db.sessions() as session:
            rows = await session.execute(select(Writeback.status, func.count()).group_by(Writeback.status))
            return Counter({status: int(count) for status, count in rows})
    finally:
        await db.close()


async def set_up(
    url: str, work: Path, peer_url: str, args: argparse.Namespace, pat_nums: list[list[int]]
) -> None:
    db = await Database.open(url)
    try:
        await set_up_store(db, work, peer_url, args.offices, args.payments, args.rate, pat_nums)
    finally:
        await db.close()


def wait_all_posted(
    url: str, expected: int, limit_s: float
) -> tuple[float, Counter[str], list[tuple[float, int]]]:
    """Seconds until `expected` writebacks are posted, the final statuses, and (seconds, posted) samples."""
    started = time.perf_counter()
    samples = []
    while True:
        counts = runtime.run(statuses(url))
        elapsed = time.perf_counter() - started
        samples.append((round(elapsed, 1), counts.get("posted", 0)))
        if counts.get("posted", 0) + counts.get("failed", 0) >= expected or elapsed > limit_s:
            return elapsed, counts, samples
        time.sleep(1.0)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ll-bench-fanout-")))
        office_url = office_database(args.office_db, work)
        office = OpenDentalOffice.open(office_url, create=True)
        setup_started = time.perf_counter()
        pat_nums = [
            [office.add_patient(f"Office{n}", f"Pat{k}") for k in range(PATIENTS_PER_OFFICE)]
            for n in range(args.offices)
        ]
        store_url = stack.enter_context(fresh_postgres_database("ll_bench_fanout"))
        config = PeerConfig(
            database_url=office_url,
            default_requests_per_second=args.rate,
            faults=Faults(latency_ms=args.latency_ms),
            rate_tolerance_ms=0,
        )
        peer_url = stack.enter_context(running_peer_process(config))
        runtime.run(set_up(store_url, work, peer_url, args, pat_nums))
        setup = time.perf_counter() - setup_started
        payments = args.offices * args.payments
        print(f"set-up: {args.offices} offices, {payments} payments ({setup:.0f} s)", file=sys.stderr)
        with working(store_url, work, args.workers, "--concurrency", str(args.concurrency)):
            elapsed, counts, samples = wait_all_posted(store_url, payments, args.limit)
        stats = peer_stats(peer_url)
        by_key = {k: v for k, v in stats["by_key"].items() if k.startswith("office-")}
        most = max(v["requests"] for v in by_key.values())
        total_requests = sum(v["requests"] for v in by_key.values())
        violations = sum(v["rate_limit_violations"] for v in by_key.values())
        print(
            f"ledgerlink: {counts.get('posted', 0)} posted in {elapsed:.1f} s, {total_requests} requests, "
            f"{violations} rate-limit violations",
            file=sys.stderr,
        )
        try:
            baseline: float | None = runtime.run(
                raw_baseline(peer_url, args.offices, most, args.rate, args.concurrency)
            )
            baseline_error = ""
        except httpx.HTTPError as exc:  # the rig itself (one peer process) may not take that many clients
            baseline, baseline_error = None, f"{type(exc).__name__}: {exc}"
        base_violations = peer_stats(peer_url)["rate_limit_violations"] - stats["rate_limit_violations"]
        posted_in_office = sum(1 for p in office.payments() if "[ll-wb-" in p.pay_note)
        office.close()
    floor = most / args.rate
    return {
        "offices": args.offices,
        "payments": payments,
        "workers": args.workers,
        "posted_in_office": posted_in_office,
        "statuses": dict(counts),
        "requests": total_requests,
        "requests_per_payment": round(total_requests / payments, 3),
        "rate_limit_violations": violations,
        "seconds": round(elapsed, 1),
        "writebacks_per_s": round(counts.get("posted", 0) / elapsed, 1),
        "floor_seconds": floor,
        "baseline_seconds": round(baseline, 1) if baseline else None,
        "baseline_requests_per_s": round(args.offices * most / baseline, 1) if baseline else None,
        "baseline_error": baseline_error,
        "baseline_violations": base_violations,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--offices", type=int, default=10_000)
    parser.add_argument("--payments", type=int, default=3, help="payments per office")
    parser.add_argument("--rate", type=float, default=1.0, help="requests/s per key")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1_000,
        help="connections per worker at once (the baseline serves as many offices at once)",
    )
    parser.add_argument("--office-db", choices=("mariadb", "sqlite"), default="mariadb")
    parser.add_argument("--limit", type=float, default=1800, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['offices']} offices x {args.payments} payments, {result['workers']} worker(s): "
        f"{result['statuses'].get('posted', 0)} posted in {result['seconds']} s = "
        f"{result['writebacks_per_s']} writebacks/s sustained"
    )
    print(
        f"requests {result['requests']} ({result['requests_per_payment']} per payment), rate-limit violations "
        f"{result['rate_limit_violations']}, floor {result['floor_seconds']:.0f} s"
    )
    if result["baseline_seconds"] is None:
        print(f"baseline (bare httpx, same pacing, no ledgerlink) failed: {result['baseline_error']}")
    else:
        print(
            f"baseline (bare httpx, same pacing, no ledgerlink): {result['baseline_seconds']} s = "
            f"{result['baseline_requests_per_s']} requests/s, violations {result['baseline_violations']}"
        )
    ok = result["rate_limit_violations"] == 0 and result["posted_in_office"] == result["payments"]
    print(f"all posted, zero violations: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
