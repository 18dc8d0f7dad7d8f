"""Shared pieces of the sync benchmarks: a realistic data set loaded with bulk inserts, the sync run in a
fresh process (so its peak RSS is its own), raw-insert baselines, and fresh databases per run.

Nothing here is timed except what the callers time: the store's setup uses plain `sqlite3` executemany on
SQLite and COPY on PostgreSQL, bypassing the ORM, because it only has to put rows where the sync will find
them; the sandbox PMS's patients go in through its Open Dental office.

The sync worker is this module run as a script:

    .venv/bin/python -m bench.common sync --url URL --sandbox PATH --connection ID --since DATE ...

It prints one JSON line with the seconds `run_sync` took, the process's peak RSS and the run's report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

POSTGRES_URL = os.environ.get(
    "LEDGERLINK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TIMEZONE = "America/Chicago"
DAYS = 365  # the transactions spread over a year of office days

# The mix of a busy card-present office (shares of all transactions).
DECLINE_SHARE = 0.05
REFUND_SHARE = 0.04
VOID_SHARE = 0.02
CHARGEBACK_SHARE = 0.002
NO_ACCOUNT_EVERY = 500  # one patient in 500 has no PMS account number
PAYMENT_TYPES = (
    ("terminal", 50),
    ("online", 15),
    ("payment_plan", 12),
    ("insurance", 10),
    ("membership", 8),
    ("collection", 5),
)


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    On Linux from VmHWM: ru_maxrss also keeps the high-water mark of the image a process replaced with
    exec, so a worker started by a parent that holds the generated data set would report the parent's size.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (aiosqlite runs SQLite on its own thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def fresh_postgres_database(prefix: str = "ll_bench") -> Iterator[str]:
    """A new, empty database on the test server (tests' URL convention), dropped afterwards."""
    import psycopg

    base, _, _ = POSTGRES_URL.rpartition("/")
    admin = _libpq(base) + "/postgres"
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"PostgreSQL is not reachable at {admin}: {str(exc).strip().splitlines()[0]}"
        ) from None
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the data set ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataSet:
    """What the setup loaded, so the callers can check the sync's report against it."""

    practice_id: int
    connection_id: int
    transactions: int
    patients: int
    kinds: dict[str, int]
    first_date: date
    last_date: date


def _weighted_types(rng: random.Random, count: int) -> list[str]:
    names = [name for name, _ in PAYMENT_TYPES]
    weights = [weight for _, weight in PAYMENT_TYPES]
    return rng.choices(names, weights, k=count)


def transaction_rows(count: int, patients: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Transactions 1..count in time order: mostly sales across payment types, some declines, refunds,
    voids (usually within minutes of their sale, so often in the same sync batch) and a few chargebacks.

    Yields (id, processor_ref, kind, payment_type, gross, fee, net, occurred_at, local_date, patient_id,
    original_id, original_ref, card_last4). Each sale is reversed at most once.
    """
    rng = random.Random(seed)
    zone = ZoneInfo(TIMEZONE)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / max(count, 1)
    types = _weighted_types(rng, count)
    sales: list[tuple[int, str, str, int, int, int]] = []  # id, ref, type, gross, net, patient
    reversed_ids: set[int] = set()
    decline_to = DECLINE_SHARE
    refund_to = decline_to + REFUND_SHARE
    void_to = refund_to + VOID_SHARE
    chargeback_to = void_to + CHARGEBACK_SHARE
    local_day: tuple[int, date] = (-1, date.min)
    for n in range(1, count + 1):
        occurred = start + step * n
        hour_key = int(occurred.timestamp()) // 3600
        if local_day[0] != hour_key:  # the local date changes at most once an hour
            local_day = (hour_key, occurred.astimezone(zone).date())
        roll = rng.random()
        original = None
        if decline_to <= roll < chargeback_to and sales:
            # Voids come minutes after their sale; refunds and chargebacks days or weeks later.
            window = 1_000 if roll < void_to and roll >= refund_to else 20_000
            pick = sales[max(0, len(sales) - 1 - int(rng.random() * window))]
            if pick[0] not in reversed_ids:
                original = pick
        if original is not None:
            reversed_ids.add(original[0])
            oid, oref, otype, ogross, onet, patient = original
            if roll < refund_to:
                kind, gross = "refund", ogross if rng.random() < 0.6 else max(100, ogross // 2)
            elif roll < void_to:
                kind, gross = "void", ogross
            else:
                kind, gross = "chargeback", onet
            yield (
                n,
                f"{kind[:2]}_{n:09d}",
                kind,
                otype,
                gross,
                0,
                gross,
                occurred,
                local_day[1],
                patient,
                oid,
                oref,
                "",
            )
            continue
        patient = 1 + int(rng.random() * patients)
        gross = rng.randrange(1_000, 60_000)
        if roll < decline_to:
            yield (
                n,
                f"dc_{n:09d}",
                "decline",
                types[n - 1],
                gross,
                0,
                gross,
                occurred,
                local_day[1],
                patient,
                None,
                None,
                f"{n % 10_000:04d}",
            )
            continue
        fee = gross * 29 // 1000 + 30
        ref = f"ch_{n:09d}"
        sales.append((n, ref, types[n - 1], gross, gross - fee, patient))
        yield (
            n,
            ref,
            "sale",
            types[n - 1],
            gross,
            fee,
            gross - fee,
            occurred,
            local_day[1],
            patient,
            None,
            None,
            f"{n % 10_000:04d}",
        )


def has_account(patient_id: int) -> bool:
    return patient_id % NO_ACCOUNT_EVERY != 0


def patient_count(transactions: int) -> int:
    """About twenty transactions per patient over the year (at least 100 patients)."""
    return max(100, transactions // 20)


def seed_sandbox(path: Path, patients: int) -> None:
    """The PMS side: a fresh Open Dental office with patients 1..N, PatNum = the account number ledgerlink
    holds for them. Added through the office (one transaction each, as Open Dental's API would), not timed."""
    from ledgerlink.connectors.sandbox import open_sandbox_office

    office = open_sandbox_office(f"sqlite:///{path}")
    try:
        for n in range(1, patients + 1):
            pat_num = office.add_patient(
                f"Patient{n}", "Bench", birthdate=date(1940 + n % 70, n % 12 + 1, n % 28 + 1), pri_prov=1
            )
            if pat_num != n:
                raise SystemExit(
                    f"the sandbox office at {path} is not fresh: patient {n} got PatNum {pat_num}"
                )
    finally:
        office.close()


async def _practice_and_connection(url: str, sandbox: Path, batch_size: int) -> tuple[int, int]:
    from ledgerlink.practices import add_connection, create_practice
    from ledgerlink.store.db import Database

    db = await Database.open(url)
    try:
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug="bench", name="Bench Dental", timezone=TIMEZONE)
            connection = await add_connection(
                session,
                practice,
                name="pms",
                kind="sandbox",
                settings={"path": str(sandbox), "batch_size": batch_size},
            )
        return practice.id, connection.id
    finally:
        await db.close()


def load_store(url: str, sandbox: Path, transactions: int, *, batch_size: int) -> DataSet:
    """Migrate a fresh store, add a practice with a sandbox connection, then bulk-load patients, their
    account numbers and `transactions` transactions; seed the sandbox PMS with the same patients."""
    patients = patient_count(transactions)
    practice_id, connection_id = asyncio.run(_practice_and_connection(url, sandbox, batch_size))
    seed_sandbox(sandbox, patients)
    kinds: dict[str, int] = {}
    first = last = None

    def counted() -> Iterator[tuple[Any, ...]]:
        nonlocal first, last
        for row in transaction_rows(transactions, patients):
            kinds[row[2]] = kinds.get(row[2], 0) + 1
            if first is None:
                first = row[8]
            last = row[8]
            yield row

    now = datetime.now(UTC)
    if url.startswith("sqlite"):
        _load_sqlite(Path(url.split(":///", 1)[1]), practice_id, connection_id, patients, counted(), now)
    else:
        _load_postgres(_libpq(url), practice_id, connection_id, patients, counted(), now)
    assert first is not None and last is not None
    return DataSet(practice_id, connection_id, transactions, patients, kinds, first, last)


def _sqlite_time(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME storage format (UTC, as the UTCDateTime columns store it).
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _load_sqlite(
    path: Path,
    practice_id: int,
    connection_id: int,
    patients: int,
    rows: Iterator[tuple[Any, ...]],
    now: datetime,
) -> None:
    stamp = _sqlite_time(now)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    with conn:
        conn.executemany(
            "INSERT INTO patients (id, practice_id, patient_ref, first_name, last_name, birth_date, email, phone,"
            " active, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,1,?,?)",
            (
                (n, practice_id, f"pt_{n:07d}", "Bench", f"Patient{n}", None, "", "", stamp, stamp)
                for n in range(1, patients + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO patient_accounts (patient_id, connection_id, account_number, updated_at) VALUES (?,?,?,?)",
            ((n, connection_id, str(n), stamp) for n in range(1, patients + 1) if has_account(n)),
        )
        conn.executemany(
            "INSERT INTO transactions (id, practice_id, processor_ref, source, kind, payment_type, gross_cents,"
            " fee_cents, net_cents, currency, occurred_at, local_date, patient_id, original_id, original_ref,"
            " card_brand, card_last4, description, imported_at)"
            " VALUES (?,?,?,'csv',?,?,?,?,?,'USD',?,?,?,?,?,'visa',?,'',?)",
            (
                (
                    r[0],
                    practice_id,
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    _sqlite_time(r[7]),
                    r[8].isoformat(),
                    r[9],
                    r[10],
                    r[11],
                    r[12],
                    stamp,
                )
                for r in rows
            ),
        )
    conn.close()


def _load_postgres(
    conninfo: str,
    practice_id: int,
    connection_id: int,
    patients: int,
    rows: Iterator[tuple[Any, ...]],
    now: datetime,
) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY patients (id, practice_id, patient_ref, first_name, last_name, email, phone, active,"
            " created_at, updated_at) FROM STDIN"
        ) as copy:
            for n in range(1, patients + 1):
                copy.write_row(
                    (n, practice_id, f"pt_{n:07d}", "Bench", f"Patient{n}", "", "", True, now, now)
                )
        with cur.copy(
            "COPY patient_accounts (patient_id, connection_id, account_number, updated_at) FROM STDIN"
        ) as copy:
            for n in range(1, patients + 1):
                if has_account(n):
                    copy.write_row((n, connection_id, str(n), now))
        with cur.copy(
            "COPY transactions (id, practice_id, processor_ref, source, kind, payment_type, gross_cents,"
            " fee_cents, net_cents, currency, occurred_at, local_date, patient_id, original_id, original_ref,"
            " card_brand, card_last4, description, imported_at) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row(
                    (
                        r[0],
                        practice_id,
                        r[1],
                        "csv",
                        r[2],
                        r[3],
                        r[4],
                        r[5],
                        r[6],
                        "USD",
                        r[7],
                        r[8],
                        r[9],
                        r[10],
                        r[11],
                        "visa",
                        r[12],
                        "",
                        now,
                    )
                )
        for table in ("patients", "patient_accounts", "transactions"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        conn.commit()
        # Statistics as autovacuum would have them after a bulk import, so plans are the steady-state ones.
        conn.autocommit = True
        cur.execute("ANALYZE patients, patient_accounts, transactions")


# --- the sync, in its own process ----------------------------------------------------------------------------


def run_sync_subprocess(
    url: str, sandbox: Path, data: DataSet, *, batch_size: int, profile: Path | None = None
) -> dict[str, Any]:
    """Run one full sync in a fresh interpreter and return its JSON result (seconds, peak RSS, report)."""
    command = [
        sys.executable,
        "-m",
        "bench.common",
        "sync",
        "--url",
        url,
        "--sandbox",
        str(sandbox),
        "--connection",
        str(data.connection_id),
        "--since",
        data.first_date.isoformat(),
        "--batch-size",
        str(batch_size),
    ]
    if profile is not None:
        command += ["--profile", str(profile)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the sync worker failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _sync_worker(args: argparse.Namespace) -> dict[str, Any]:
    from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
    from ledgerlink.engine.sync import SyncProgress, run_sync
    from ledgerlink.store.db import Database

    db = await Database.open(args.url, migrate_schema=False)
    connector = SandboxConnector(SandboxSettings(path=Path(args.sandbox), batch_size=args.batch_size))
    updates = 0

    def on_progress(step: SyncProgress) -> None:  # what a progress bar costs: one call per batch
        nonlocal updates
        updates += 1

    try:
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        outcome = await run_sync(
            db, args.connection, connector, since=date.fromisoformat(args.since), progress=on_progress
        )
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
    finally:
        await connector.close()
        await db.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load": [load_before, os.getloadavg()[0]],
        "peak_rss_mb": peak_rss_mb(),
        "run_id": outcome.run_id,
        "progress_updates": updates,
        "report": {line.category.value: [line.count, line.total_cents] for line in outcome.report.lines},
    }


def run_reports_subprocess(url: str, run_id: int, data: DataSet, *, repeat: int) -> dict[str, Any]:
    """Time `run_report` and `range_report` over the whole range in a fresh interpreter."""
    command = [
        sys.executable,
        "-m",
        "bench.common",
        "report",
        "--url",
        url,
        "--run",
        str(run_id),
        "--connection",
        str(data.connection_id),
        "--since",
        data.first_date.isoformat(),
        "--until",
        data.last_date.isoformat(),
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the report worker failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _report_worker(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import text

    from ledgerlink.engine.reports import range_report, run_report
    from ledgerlink.store.db import Database

    db = await Database.open(args.url, migrate_schema=False)
    since, until = date.fromisoformat(args.since), date.fromisoformat(args.until)
    timings: dict[str, list[float]] = {"run_report": [], "range_report": []}
    counts: dict[str, int] = {}
    try:
        async with db.sessions() as session:
            await session.execute(text("SELECT 1"))  # connect before timing: a server keeps its connections
        for _ in range(args.repeat):
            async with db.sessions() as session:
                started = time.perf_counter()
                report = await run_report(session, args.run)
                timings["run_report"].append(time.perf_counter() - started)
                counts["run_report"] = report.transaction_count
            async with db.sessions() as session:
                started = time.perf_counter()
                report = await range_report(session, args.connection, since, until)
                timings["range_report"].append(time.perf_counter() - started)
                counts["range_report"] = report.transaction_count
    finally:
        await db.close()
    return {"timings": timings, "counts": counts}


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.common")
    parser.add_argument("command", choices=["sync", "report"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sandbox")
    parser.add_argument("--connection", type=int, required=True)
    parser.add_argument("--since", required=True)
    parser.add_argument("--until")
    parser.add_argument("--run", type=int)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--profile", help="write a cProfile of the sync here (slows it down)")
    args = parser.parse_args(argv)
    if args.command == "report":
        print(json.dumps(asyncio.run(_report_worker(args))))
        return 0
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, _sync_worker(args))
        profiler.dump_stats(args.profile)
    else:
        result = asyncio.run(_sync_worker(args))
    print(json.dumps(result))
    return 0


# --- baselines ------------------------------------------------------------------------------------------------


def _outcome_rows(count: int, now: datetime) -> Iterator[tuple[Any, ...]]:
    for n in range(1, count + 1):
        yield (n, "posted", "sales", 10_000 + n % 50_000, str(n), 1, now)


_OUTCOMES_DDL = (
    "CREATE TABLE bench_outcomes (id {pk} PRIMARY KEY, status VARCHAR(16), category VARCHAR(32),"
    " amount_cents BIGINT, pms_ref VARCHAR(100), last_run_id BIGINT, updated_at {ts})"
)


def sqlite_baseline(path: Path, rows: int) -> float:
    """Seconds for plain sqlite3 executemany of `rows` outcome rows into a bare table, one commit."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_OUTCOMES_DDL.format(pk="INTEGER", ts="TEXT"))
    stamp = _sqlite_time(datetime.now(UTC))
    started = time.perf_counter()
    with conn:
        conn.executemany(
            "INSERT INTO bench_outcomes (id, status, category, amount_cents, pms_ref, last_run_id, updated_at)"
            " VALUES (?,?,?,?,?,?,?)",
            _outcome_rows(rows, stamp),  # type: ignore[arg-type]
        )
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def postgres_baseline(url: str, rows: int) -> float:
    """Seconds for psycopg executemany of `rows` outcome rows into a bare table, one commit."""
    import psycopg

    with psycopg.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute(_OUTCOMES_DDL.format(pk="BIGINT", ts="TIMESTAMPTZ"))
        conn.commit()
        started = time.perf_counter()
        cur.executemany(
            "INSERT INTO bench_outcomes (id, status, category, amount_cents, pms_ref, last_run_id, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s)",
            _outcome_rows(rows, datetime.now(UTC)),
        )
        conn.commit()
        elapsed = time.perf_counter() - started
        cur.execute("DROP TABLE bench_outcomes")
        conn.commit()
    return elapsed


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
