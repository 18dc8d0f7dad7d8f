"""`ledgerlink worker`: instant writeback within a second, daily writeback once a local day, graceful
SIGTERM, and several worker processes on one PostgreSQL posting 10,000 writebacks exactly once while one of
them is killed with SIGKILL.

The PMS is the sandbox (Open Dental's schema in a SQLite file per office); the store is SQLite and
PostgreSQL. Multi-process tests run the real `ledgerlink worker` command in child processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from ledgerlink.notify.targets import add_target
from ledgerlink.secrets import SecretBox
from ledgerlink.settings import Settings
from ledgerlink.sources.transaction_import import ingest_objects
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Practice, SyncRun, Writeback
from ledgerlink.worker import runner
from ledgerlink.worker.runner import Worker, WorkerOptions
from tests.test_crash_recovery import (
    Office,
    assert_exactly_once,
    change_settings,
    open_office,
    pms_payments,
)
from tests.test_notify import (
    Smtp,
    smtp,  # noqa: F401  (the fixture: a real SMTP server, aiosmtpd)
)

SALE_FEE = 300


def sale(ref: str, patient_ref: str, gross_cents: int) -> dict[str, object]:
    return {
        "reference": ref,
        "time": datetime.now(UTC).isoformat(),
        "kind": "sale",
        "payment_type": "terminal",
        "gross": f"{gross_cents // 100}.{gross_cents % 100:02d}",
        "fee": f"{SALE_FEE // 100}.{SALE_FEE % 100:02d}",
        "patient_id": patient_ref,
    }


async def ingest_sales(office: Office, count: int, *, start: int = 0, chunk: int = 1000) -> list[str]:
    """Store `count` sales through the API's ingest path (which announces them to the workers)."""
    refs = []
    for first in range(start, start + count, chunk):
        objects = []
        for i in range(first, min(first + chunk, start + count)):
            ref = f"ch_{office.practice.slug}_{i}"
            patient = office.patients[i % len(office.patients)]
            gross = 10_000 + 37 * i
            objects.append(sale(ref, patient.patient_ref, gross))
            office.sale_refs.append(ref)
            office.net_by_ref[ref] = gross - SALE_FEE
            office.patient_by_ref[ref] = patient
            refs.append(ref)
        async with office.db.engine.begin() as conn:
            result = await ingest_objects(conn, office.practice, objects)
            assert result.applied, result
    return refs


async def count_status(db: Database, status: str, connection_ids: list[int] | None = None) -> int:
    async with db.sessions() as session:
        query = select(func.count()).select_from(Writeback).where(Writeback.status == status)
        if connection_ids is not None:
            query = query.where(Writeback.connection_id.in_(connection_ids))
        return int(await session.scalar(query) or 0)


async def wait_for(db: Database, what: str, condition: object, limit: float) -> float:
    """Poll an async condition; return the seconds it took, fail after `limit` seconds."""
    start = time.monotonic()
    while True:
        if await condition():  # type: ignore[operator]
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            pytest.fail(f"gave up after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(0.005)


# --- in-process worker ------------------------------------------------------------------------------------


async def test_instant_writeback_posts_each_new_transaction_within_a_second(
    db: Database, tmp_path: Path
) -> None:
    """On PostgreSQL the poll is set to a minute, so only LISTEN/NOTIFY can wake the worker in time."""
    office = await open_office(db, tmp_path, patients=2)
    options = WorkerOptions(poll_interval=None if db.is_sqlite else 60.0, idle_backoff=60.0)
    worker = Worker(db, tmp_path, options)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # the worker's first full scan finds nothing
        latencies = []
        for i in range(5):
            (ref,) = await ingest_sales(office, 1, start=i)
            posted = i + 1

            async def all_posted(expected: int = posted) -> bool:
                return await count_status(db, "posted") == expected

            latencies.append(await wait_for(db, f"{ref} to be posted", all_posted, limit=1.0))
            await asyncio.sleep(0.05)
    finally:
        worker.request_stop()
        stats = await asyncio.wait_for(task, 30)
    assert max(latencies) < 1.0, latencies
    assert stats.runs >= 5 and stats.recorded == 5 and stats.failures == 0
    await assert_exactly_once(office)


async def test_daily_writeback_runs_once_a_local_day_at_its_time(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    office = await open_office(db, tmp_path, patients=2)  # practice in America/Chicago
    async with db.sessions.begin() as session:
        await session.execute(
            update(Connection)
            .where(Connection.id == office.connection_id)
            .values(timing="daily", daily_time=clock_time(18, 0))
        )
    await ingest_sales(office, 3)

    async def once_at(utc: datetime) -> int:
        monkeypatch.setattr(runner, "utcnow", lambda: utc)
        stats = await Worker(db, tmp_path, WorkerOptions(once=True)).run()
        return stats.by_trigger.get("daily", 0)

    # 17:59 in Chicago (CST, UTC-6): not yet; instant work of a daily connection waits too.
    assert await once_at(datetime(2026, 12, 3, 23, 59, tzinfo=UTC)) == 0
    assert await count_status(db, "posted") == 0
    # 18:00 local: the day's run.
    assert await once_at(datetime(2026, 12, 4, 0, 0, tzinfo=UTC)) == 1
    assert await count_status(db, "posted") == 3
    # Later the same local day, with new transactions: no second run.
    await ingest_sales(office, 2, start=3)
    assert await once_at(datetime(2026, 12, 4, 5, 59, tzinfo=UTC)) == 0
    # The next local day at 18:00 (just after local midnight is too early).
    assert await once_at(datetime(2026, 12, 4, 6, 30, tzinfo=UTC)) == 0
    assert await once_at(datetime(2026, 12, 5, 0, 1, tzinfo=UTC)) == 1
    assert await count_status(db, "posted") == 5
    async with db.sessions() as session:
        triggers = list(await session.scalars(select(SyncRun.trigger).order_by(SyncRun.id)))
    assert triggers == ["daily", "daily"]
    await assert_exactly_once(office)


async def test_a_connection_whose_settings_are_broken_backs_off_and_others_still_post(
    db: Database, tmp_path: Path
) -> None:
    broken = await open_office(db, tmp_path, patients=1, slug="broken")
    healthy = await open_office(db, tmp_path, patients=1, slug="healthy")
    await change_settings(db, broken.connection_id, batch_size=0)  # fails the sandbox's validation
    await ingest_sales(broken, 2)
    await ingest_sales(healthy, 2)
    worker = Worker(db, tmp_path, WorkerOptions(poll_interval=0.05))
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(
            db,
            "the healthy office's sales",
            lambda: _equals(count_status(db, "posted", [healthy.connection_id]), 2),
            limit=10,
        )
        await asyncio.sleep(1.0)
    finally:
        worker.request_stop()
        stats = await asyncio.wait_for(task, 30)
    # Backed off (1 s, then 2 s ...) instead of retried at every 50 ms poll.
    assert 1 <= stats.failures <= 3, stats
    assert await count_status(db, "posted", [broken.connection_id]) == 0
    async with db.sessions() as session:
        owner = await session.scalar(
            select(Connection.sync_owner).where(Connection.id == broken.connection_id)
        )
    assert owner is None  # the failed run gave its lease back


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


# --- worker processes -------------------------------------------------------------------------------------


def worker_env(db: Database, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGERLINK_DATABASE_URL": db.url,
        "LEDGERLINK_DATA_DIR": str(data_dir),
        "LEDGERLINK_LOG_LEVEL": "WARNING",
    }


async def start_worker_process(db: Database, data_dir: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from ledgerlink.cli import main; main()",
        "worker",
        *args,
        env=worker_env(db, data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_process(process: asyncio.subprocess.Process, grace: float = 60) -> tuple[int, str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = await asyncio.wait_for(process.communicate(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("a worker did not stop within its grace period")
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_sigterm_ends_the_run_after_its_batch_and_leaves_nothing_in_flight(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path, patients=3, latency_ms=20, batch_size=5)
    await ingest_sales(office, 400)
    process = await start_worker_process(db, tmp_path, "--poll-interval", "0.1")
    try:
        await wait_for(
            db, "the worker to post a few", lambda: _at_least(count_status(db, "posted"), 20), limit=60
        )
    finally:
        code, err = await stop_process(process)
    assert code == 0, err
    assert "worker stopped" in err
    assert await count_status(db, "in_flight") == 0
    pending = await count_status(db, "pending")
    assert pending > 0  # it stopped early rather than draining the queue first
    async with db.sessions() as session:
        owner = await session.scalar(
            select(Connection.sync_owner).where(Connection.id == office.connection_id)
        )
        statuses = list(await session.scalars(select(SyncRun.status)))
    assert owner is None
    assert statuses and set(statuses) == {"done"}
    # What was left is posted by the next worker, each sale once.
    await change_settings(db, office.connection_id, latency_ms=None, batch_size=None)
    await Worker(db, tmp_path, WorkerOptions(once=True)).run()
    await assert_exactly_once(office)


async def _at_least(value: object, expected: int) -> bool:
    return await value >= expected  # type: ignore[operator]


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    database = await Database.open(postgres_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [2, 4])
async def test_workers_post_10000_writebacks_exactly_once_with_one_killed_mid_run(
    pg: Database, tmp_path: Path, workers: int
) -> None:
    offices = [
        await open_office(pg, tmp_path, patients=20, slug=f"office{i}", latency_ms=2, batch_size=50)
        for i in range(10)
    ]
    ids = [o.connection_id for o in offices]
    processes = [await start_worker_process(pg, tmp_path, "--poll-interval", "0.2") for _ in range(workers)]
    try:
        for office in offices:  # arriving while the workers run: instant writeback
            await ingest_sales(office, 1000)
        await wait_for(
            pg, "2,000 posted", lambda: _at_least(count_status(pg, "posted", ids), 2000), limit=120
        )
        victim = await mid_run_worker(pg, ids, processes)
        victim.kill()  # SIGKILL: no chance to record what it wrote
        await victim.wait()
        assert victim.returncode == -signal.SIGKILL
        await wait_for(
            pg, "all 10,000 posted", lambda: _equals(count_status(pg, "posted", ids), 10_000), limit=240
        )
    finally:
        results = [await stop_process(p) for p in processes if p.returncode is None]
    for code, err in results:
        assert code == 0, err
    for office in offices:
        await assert_exactly_once(office)
    async with pg.sessions() as session:
        interrupted = await session.scalar(
            select(func.count()).where(SyncRun.error == "interrupted: the sync process died")
        )
    assert interrupted, "no run of the killed worker was left to take over"
    assert sum(len(pms_payments(o.pms_path)) for o in offices) == 10_000
    await assert_runs_never_overlapped(pg, ids)


async def mid_run_worker(
    db: Database, connection_ids: list[int], processes: list[asyncio.subprocess.Process]
) -> asyncio.subprocess.Process:
    """A worker process that holds a connection's lease right now (it is in the middle of a run)."""
    by_pid = {str(p.pid): p for p in processes}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with db.sessions() as session:
            owners = await session.scalars(
                select(Connection.sync_owner).where(Connection.id.in_(connection_ids))
            )
            for owner in owners:
                if owner and owner.split(":")[1] in by_pid:
                    return by_pid[owner.split(":")[1]]
        await asyncio.sleep(0.002)
    pytest.fail("no worker was in the middle of a run")


async def assert_runs_never_overlapped(db: Database, connection_ids: list[int]) -> None:
    """One writer per connection: the finished runs of a connection never ran at the same time."""
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(SyncRun.connection_id, SyncRun.started_at, SyncRun.finished_at)
                .where(SyncRun.connection_id.in_(connection_ids), SyncRun.status == "done")
                .order_by(SyncRun.connection_id, SyncRun.started_at)
            )
        ).all()
    previous: dict[int, datetime] = {}
    for cid, started, finished in rows:
        assert finished is not None
        if cid in previous:
            assert started >= previous[cid], f"two runs of connection {cid} overlapped"
        previous[cid] = finished


async def test_the_worker_mails_the_digest_of_a_failed_writeback(
    db: Database,
    tmp_path: Path,
    smtp: Smtp,  # noqa: F811  (the fixture imported above)
) -> None:
    """A sale whose patient has no account number fails; the worker's digest round mails it (aiosmtpd)."""
    office = await open_office(db, tmp_path, patients=1)
    async with db.sessions.begin() as session:
        practice = await session.get(Practice, office.practice.id)
        assert practice is not None
        await add_target(
            session, practice, "email", "desk@example.com", box=SecretBox.for_data_dir(tmp_path), actor="test"
        )
    async with office.db.engine.begin() as conn:
        result = await ingest_objects(conn, office.practice, [sale("ch_orphan", "nobody", 12_345)])
        assert result.applied
    settings = Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port).model_copy(
        update={"digest_interval_seconds": 0.2}  # below the setting's floor of 10 s, for the test only
    )
    worker = Worker(db, tmp_path, WorkerOptions(poll_interval=0.05), settings=settings)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 20
        while not smtp.mailbox.to("desk@example.com"):
            assert time.monotonic() < deadline, "no digest arrived"
            await asyncio.sleep(0.05)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    (mail,) = smtp.mailbox.to("desk@example.com")
    body = mail.get_body(("plain",))
    assert body is not None and "120.45" in body.get_content()  # net of the 3.00 fee
    assert await count_status(db, "failed") == 1


async def test_a_worker_with_fewer_slots_than_due_connections_serves_them_all(
    db: Database, tmp_path: Path
) -> None:
    """With every slot taken the loop must wait for a run to end, not spin (which would starve the runs)."""
    offices = [await open_office(db, tmp_path, patients=1, slug=f"o{i}", latency_ms=20) for i in range(4)]
    for office in offices:
        await ingest_sales(office, 3)
    worker = Worker(db, tmp_path, WorkerOptions(concurrency=1, poll_interval=0.05))
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(db, "every office's sales", lambda: _equals(count_status(db, "posted"), 12), limit=30)
    finally:
        worker.request_stop()
        stats = await asyncio.wait_for(task, 30)
    assert stats.runs >= 4
    for office in offices:
        await assert_exactly_once(office)
