"""Benchmark: importing a large patient export into SQLite.

Target (set by the issue): 1,000,000 rows in under 30 s with peak memory under 300 MB, on SQLite.

    .venv/bin/python -m bench.bench_patient_import [--rows N]

The CSV is generated in a temporary directory first (not timed): a generic-preset export as Excel saves
it (BOM, CRLF, quoting), in patient-id order with 20,000 last and 2,000 first names in random order, so
the name index sees what a real export does. The import runs on a fresh SQLite database in a temporary
data directory, with an account number per patient. For scale, the same run measures a baseline: plain
`sqlite3` executemany of the same number of patient rows into a bare table, with no CSV, no checks, no
indexes and no ORM. CPU time (all threads) is printed too, as wall time on a shared machine varies.
Exits 1 when the target is missed (the time target scales above a million rows).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from ledgerlink.patients.importer import import_patients
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.store.db import Database

TARGET_SECONDS = 30.0
TARGET_PEAK_MB = 300.0
_STATUS = ("active", "active", "active", "inactive")


def _names(count: int, seed: int) -> list[str]:
    """Distinct made-up names, some with accents, so the name index sees realistic variety."""
    rng = random.Random(seed)
    onsets = ("b", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z")
    vowels = ("a", "e", "i", "o", "u", "é", "ö", "ü", "y")
    names: set[str] = set()
    while len(names) < count:
        syllables = rng.randint(2, 4)
        names.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syllables)).title())
    return sorted(names)


HEADER = ["patient_id", "first_name", "last_name", "birth_date", "email", "phone", "account_number", "status"]


def export_rows(count: int) -> Iterator[list[str]]:
    """The rows of the generated export, in patient-id order, so names come in random order as in a real one."""
    rng = random.Random(3)
    first_names, last_names = _names(2_000, 1), _names(20_000, 2)
    for n in range(count):
        last = rng.choice(last_names)
        birth = (
            f"{n % 12 + 1}/{n % 28 + 1}/{1940 + n % 70}" if n % 2 else f"{1940 + n % 70}-01-{n % 28 + 1:02d}"
        )
        yield [
            f"pt_{n:07d}",
            rng.choice(first_names),
            f"{last}, Jr." if n % 97 == 0 else last,
            birth,
            f"patient{n}@example.com",
            f"555-{n % 10_000_000:07d}",
            str(100_000 + n),
            _STATUS[n % 4],
        ]


def write_export(path: Path, rows: int) -> None:
    """A generic-preset export the way Excel saves it: UTF-8 with BOM, CRLF, quotes where needed."""
    with path.open("w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(export_rows(rows))


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


async def run_import(data_dir: Path, export: Path) -> tuple[float, float, int]:
    db = await Database.open(f"sqlite+aiosqlite:///{data_dir / 'ledgerlink.db'}")
    try:
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug="bench", name="Bench")
            connection = await add_connection(session, practice, name="pms", kind="sandbox")
        started, cpu_started = time.perf_counter(), time.process_time()
        result = await import_patients(db, practice, connection, export, actor="bench")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await db.close()
    if result.created != result.rows or result.rejected_count:
        raise SystemExit(f"unexpected result: {result.created} created, {result.rejected_count} rejected")
    return elapsed, cpu, result.rows


def run_baseline(data_dir: Path, rows: int) -> float:
    """Plain sqlite3 executemany of `rows` patient rows into a bare table (the floor for this machine)."""
    conn = sqlite3.connect(data_dir / "baseline.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE patients (id INTEGER PRIMARY KEY, practice_id INTEGER, patient_ref TEXT, first_name TEXT, "
        "last_name TEXT, birth_date TEXT, email TEXT, phone TEXT, active INTEGER)"
    )

    sql = (
        "INSERT INTO patients (practice_id, patient_ref, first_name, last_name, birth_date, email, phone, active) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    source = export_rows(rows)
    elapsed = 0.0
    while batch := [(1, *row[:6], 1) for row in islice(source, 100_000)]:  # built outside the timing
        started = time.perf_counter()
        conn.executemany(sql, batch)
        elapsed += time.perf_counter() - started
    started = time.perf_counter()
    conn.commit()
    elapsed += time.perf_counter() - started
    conn.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ll-bench-patients-") as tmp:
        work = Path(tmp)
        export = work / "patients.csv"
        write_export(export, args.rows)
        size_mb = export.stat().st_size / 1_000_000
        data_dir = work / "data"
        data_dir.mkdir()
        load = os.getloadavg()[0]
        seconds, cpu, rows = asyncio.run(run_import(data_dir, export))
        peak = peak_rss_mb()  # before the baseline, which runs in this process too
        baseline = run_baseline(work, rows)
    print(f"patient import: {rows:,} rows ({size_mb:.0f} MB CSV) on SQLite")
    time_limit = TARGET_SECONDS * max(1.0, rows / 1_000_000)  # the time target scales above 1,000,000 rows
    print(f"  time         {seconds:8.2f} s   (target < {time_limit:.0f} s)")
    print(
        f"  CPU time     {cpu:8.2f} s   (all threads; load average {load:.1f} on {os.cpu_count()} cores at start)"
    )
    print(f"  throughput   {rows / seconds:10,.0f} rows/s")
    print(f"  peak RSS     {peak:8.0f} MB  (target < {TARGET_PEAK_MB:.0f} MB)")
    print(f"  baseline     {baseline:8.2f} s   plain sqlite3 executemany of {rows:,} rows into a bare table")
    print(f"  ratio        {seconds / baseline:8.1f} x baseline")
    missed = []
    if seconds > time_limit:
        missed.append("time")
    if peak > TARGET_PEAK_MB:
        missed.append("memory")
    if missed:
        print(f"TARGET MISSED: {', '.join(missed)}")
        return 1
    print("target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
