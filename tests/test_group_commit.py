"""Group commit: many syncs in one process share their store transactions, and nothing else changes.

The coalescer is tested on its own with a handler that records its calls (no store involved: what is
checked is which requests share a call, and what each caller gets back). The engine is tested with many
connections synced at once against the sandbox PMS, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.domain.report import ReportCategory
from ledgerlink.engine.claims import CLAIMS_PER_STATEMENT, claim_many
from ledgerlink.engine.coalesce import Coalescer
from ledgerlink.engine.run_store import SyncStore, enroll_many
from ledgerlink.engine.sync import run_sync
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Practice, SyncRun, Transaction, Writeback
from tests.factories import add_patient, add_transaction, sandbox_patient

# --- the coalescer ---------------------------------------------------------------------------------------


class Recorder:
    """A batch handler that remembers each call's requests; a request "bad" fails its batch, "refused" is
    answered with an error of its own."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, requests: Sequence[str]) -> list[str | BaseException]:
        self.calls.append(list(requests))
        await self.release.wait()
        if "bad" in requests:
            raise RuntimeError("the batch failed")
        return [ValueError(r) if r == "refused" else r.upper() for r in requests]


async def test_requests_made_together_share_one_call() -> None:
    handler = Recorder()
    coalescer: Coalescer[str, str] = Coalescer(handler)
    answers = await asyncio.gather(*(coalescer.submit(f"r{n}") for n in range(50)))
    assert answers == [f"R{n}" for n in range(50)]
    assert len(handler.calls) == 1


async def test_requests_arriving_during_a_batch_form_the_next_one() -> None:
    handler = Recorder()
    handler.release.clear()
    coalescer: Coalescer[str, str] = Coalescer(handler)
    first = asyncio.create_task(coalescer.submit("a"))
    await asyncio.sleep(0.01)  # "a" is being handled now
    later = [asyncio.create_task(coalescer.submit(x)) for x in ("b", "c")]
    await asyncio.sleep(0.01)
    handler.release.set()
    assert await first == "A"
    assert [await t for t in later] == ["B", "C"]
    assert handler.calls == [["a"], ["b", "c"]]


async def test_max_batch_splits_a_crowd() -> None:
    handler = Recorder()
    coalescer: Coalescer[str, str] = Coalescer(handler, max_batch=4)
    await asyncio.gather(*(coalescer.submit(str(n)) for n in range(10)))
    assert [len(call) for call in handler.calls] == [4, 4, 2]


async def test_a_failing_request_fails_alone() -> None:
    handler = Recorder()
    coalescer: Coalescer[str, str] = Coalescer(handler)
    results = await asyncio.gather(
        *(coalescer.submit(x) for x in ("a", "bad", "refused", "b")), return_exceptions=True
    )
    assert results[0] == "A" and results[3] == "B"
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], ValueError)
    # The whole batch first, then each request on its own.
    assert handler.calls == [["a", "bad", "refused", "b"], ["a"], ["bad"], ["refused"], ["b"]]


async def test_a_caller_cancelled_before_its_batch_is_dropped() -> None:
    handler = Recorder()
    handler.release.clear()
    coalescer: Coalescer[str, str] = Coalescer(handler)
    running = asyncio.create_task(coalescer.submit("a"))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(coalescer.submit("dropped"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    handler.release.set()
    assert await running == "A"
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.01)
    assert handler.calls == [["a"]]


async def test_a_caller_cancelled_during_its_batch_waits_for_the_commit() -> None:
    handler = Recorder()
    handler.release.clear()
    coalescer: Coalescer[str, str] = Coalescer(handler)
    task = asyncio.create_task(coalescer.submit("a"))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # still waiting for the batch it is part of
    handler.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handler.calls == [["a"]]


# --- many syncs in one process ---------------------------------------------------------------------------


async def practices_with_sales(
    db: Database, tmp_path: Path, count: int, sales: int
) -> list[tuple[Connection, SandboxConnector]]:
    out = []
    for n in range(count):
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug=f"p{n}", name=f"P{n}", timezone="America/Chicago")
            connection = await add_connection(
                session, practice, name="pms", kind="sandbox", settings={"path": f"pms{n}.db"}
            )
        pms = SandboxConnector(SandboxSettings(path=tmp_path / f"pms{n}.db"))
        patient = await add_patient(db, practice, connection, f"pat{n}", sandbox_patient(pms.office))
        for k in range(sales):
            await add_transaction(db, practice, f"ch_{n}_{k}", gross=1000 + k, fee=0, patient=patient)
        out.append((connection, pms))
    return out


async def test_many_connections_synced_at_once_share_batches_and_post_everything_once(
    db: Database, tmp_path: Path
) -> None:
    pairs = await practices_with_sales(db, tmp_path, 12, 5)
    calls: list[int] = []
    store = SyncStore.of(db)
    original = store.start._handler

    async def counting(requests: Sequence[object]) -> object:
        calls.append(len(requests))
        return await original(requests)  # type: ignore[arg-type]

    store.start._handler = counting  # type: ignore[assignment]
    outcomes = await asyncio.gather(*(run_sync(db, c.id, pms) for c, pms in pairs))
    assert calls == [12]  # every run started in one transaction
    for (_, pms), outcome in zip(pairs, outcomes, strict=True):
        assert outcome.report.line(ReportCategory.SALES).count == 5
        assert sorted(p.amount_cents for p in pms.office.payments()) == [1000, 1001, 1002, 1003, 1004]
        assert pms.office.integrity_problems() == []
    async with db.sessions() as session:
        runs = (await session.execute(select(SyncRun.status, func.count()).group_by(SyncRun.status))).all()
        assert runs == [("done", 12)]
        holders = await session.scalars(select(Connection.sync_owner))
        assert set(holders) == {None}
    again = await asyncio.gather(*(run_sync(db, c.id, pms) for c, pms in pairs))
    for (_, pms), outcome in zip(pairs, again, strict=True):
        assert outcome.report.line(ReportCategory.ALREADY_PROCESSED).count == 5
        assert len(pms.office.payments()) == 5
        await pms.close()


async def test_two_syncs_of_one_connection_at_once_one_refused_nothing_twice(
    db: Database, tmp_path: Path
) -> None:
    [(connection, pms)] = await practices_with_sales(db, tmp_path, 1, 3)
    results = await asyncio.gather(
        run_sync(db, connection.id, pms), run_sync(db, connection.id, pms), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, SyncAlreadyRunning)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 1 and len(done) == 1
    assert len(pms.office.payments()) == 3
    await pms.close()


async def test_a_missing_connection_fails_alone(db: Database, tmp_path: Path) -> None:
    [(connection, pms)] = await practices_with_sales(db, tmp_path, 1, 2)
    results = await asyncio.gather(
        run_sync(db, connection.id, pms), run_sync(db, 999_999, pms), return_exceptions=True
    )
    assert isinstance(results[1], LookupError)
    assert not isinstance(results[0], BaseException)
    assert len(pms.office.payments()) == 2
    await pms.close()


async def test_claim_many_keeps_each_connections_cursor_and_limit(db: Database) -> None:
    """More connections than one claim statement holds, each with its own cursor, limited per connection."""
    count = CLAIMS_PER_STATEMENT + 5
    ids: list[int] = []
    for n in range(count):
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug=f"c{n}", name=f"C{n}", timezone="UTC")
            connection = await add_connection(session, practice, name="pms", kind="sandbox")
            ids.append(connection.id)
        stored = await _practice(db, practice.id)
        for k in range(4):
            await add_transaction(db, stored, f"t{n}_{k}")
    async with db.sessions.begin() as session:
        await enroll_many(session, ids)
        assert await session.scalar(select(func.count()).select_from(Writeback)) == 4 * count
    async with db.sessions() as session:
        first = {
            cid: min(await session.scalars(select(Writeback.id).where(Writeback.connection_id == cid)))
            for cid in ids
        }
        claimed = await claim_many(
            session, [(cid, first[cid] if n % 2 else 0) for n, cid in enumerate(ids)], 3
        )
    for n, cid in enumerate(ids):
        got = [item.writeback_id for item in claimed[cid]]
        expected_start = first[cid] + (1 if n % 2 else 0)
        assert got == list(range(expected_start, expected_start + 3)), (n, got)
        assert all(item.txn.processor_ref.startswith(f"t{n}_") for item in claimed[cid])


async def _practice(db: Database, practice_id: int) -> Practice:
    async with db.sessions() as session:
        practice = await session.get(Practice, practice_id)
        assert practice is not None
        return practice


@pytest.mark.postgres
async def test_a_transaction_committed_after_a_later_one_is_still_enrolled(postgres_url: str) -> None:
    """Sequence ids commit out of order on PostgreSQL: an import holding id N that commits after one
    holding N+1 must not be skipped by an enrolment that ran in between (store/ingest_lock.py)."""
    from ledgerlink.sources.transaction_import import ingest_objects

    db = await Database.open(postgres_url)
    try:
        async with db.sessions.begin() as session:
            practice = await create_practice(session, slug="race", name="Race", timezone="UTC")
            connection = await add_connection(session, practice, name="pms", kind="sandbox")

        def txn(ref: str) -> dict[str, str]:  # a patient each: a shared new patient would make one wait
            return {"reference": ref, "time": "2026-12-01T10:00:00Z", "kind": "sale",
                    "payment_type": "terminal", "gross": "10.00", "patient_id": f"p_{ref}"}  # fmt: skip

        slow = await db.engine.connect()
        try:
            assert (await ingest_objects(slow, practice, [txn("first")])).imported == 1  # id N, not committed
            async with db.engine.connect() as fast:
                assert (await ingest_objects(fast, practice, [txn("second")])).imported == 1  # id N+1
                await fast.commit()
            async with db.sessions.begin() as session:
                await enroll_many(session, [connection.id])  # an import is running: enrols nothing yet
            await slow.commit()
        finally:
            await slow.close()
        async with db.sessions.begin() as session:
            await enroll_many(session, [connection.id])
        async with db.sessions() as session:
            refs = await session.scalars(
                select(Transaction.processor_ref)
                .join(Writeback, Writeback.transaction_id == Transaction.id)
                .where(Writeback.connection_id == connection.id)
            )
            assert sorted(refs) == ["first", "second"]
    finally:
        await db.close()
